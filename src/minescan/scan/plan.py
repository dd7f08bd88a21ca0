"""A scan plan: which tiles and quadrant jobs a config implies. Computed without network or imagery, so
Snakemake can lay out the whole DAG (and a dry run can show it) before anything is downloaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from minescan.errors import InputDataError
from minescan.grid import (
    GridSpec,
    Tile,
    TileId,
    check_halo,
    geodesic_area_m2,
    quadrants_for_region,
    tiles_for_region,
)
from minescan.models.imported import is_patch_model
from minescan.models.networks import FcnGeometry
from minescan.models.store import CARD_FILE, read_card
from minescan.sources.local import check_source_headers, expand_sources
from minescan.vector_io import read_region


@dataclass
class ScanPlan:
    region_name: str
    region: object  # shapely geometry, EPSG:4326
    grid: GridSpec
    tiles: list[str] = field(default_factory=list)
    quadrants: list[tuple[str, str]] = field(default_factory=list)

    def tile(self, name: str) -> Tile:
        return Tile(TileId.parse(name), self.grid)

    @property
    def region_area_km2(self) -> float:
        return geodesic_area_m2(self.region) / 1e6

    def as_dict(self) -> dict:
        return {"region": self.region_name, "area_km2": round(self.region_area_km2, 3),
                "grid": {"tile_px": self.grid.tile_px, "resolution_m": self.grid.resolution_m,
                         "halo_px": self.grid.halo_px},
                "tiles": self.tiles, "quadrants": [f"{t}_{q}" for t, q in self.quadrants]}


def tile_batches(tiles: list[str], size: int) -> list[list[str]]:
    """``tiles`` in batches of at most ``size`` neighbours along a row of the fixed grid (same zone and row,
    columns ``size * k`` to ``size * k + size - 1``), for ``detect.tiles_per_job``: a tile's batch depends
    on its position only, not on which other tiles a region holds, so growing the region (or new imagery of
    another batch) re-runs no batch it did not touch. Sorted, each batch's tiles by column."""
    if size < 1:
        raise ValueError(f"tiles per batch must be >= 1, not {size}")
    groups: dict[tuple, list[TileId]] = {}
    for name in tiles:
        t = TileId.parse(name)
        groups.setdefault((t.zone, t.hemisphere, t.row, t.col // size), []).append(t)
    return [[str(t) for t in sorted(ids, key=lambda t: t.col)] for _, ids in sorted(groups.items())]


def scan_plan(cfg: dict) -> ScanPlan:
    grid = GridSpec.from_config(cfg)
    region_file = cfg["region"]["file"]
    region = read_region(region_file, cfg["region"]["layer"])
    tiles = tiles_for_region(region, grid, source=region_file)
    plan = ScanPlan(cfg["region"]["name"], region, grid)
    for tile in tiles:
        qs = quadrants_for_region(region, tile)
        if qs:
            plan.tiles.append(tile.name)
            plan.quadrants.extend((tile.name, q) for q in qs)
    preflight(cfg, grid)
    return plan


def preflight(cfg: dict, grid: GridSpec) -> None:
    """What can be checked before any job runs, so a mistake stops the workflow once instead of failing
    every job: the halo against the discovery model's receptive field (when the model directory already
    exists and is not to be trained by this workflow; reading its card is enough, TensorFlow is not
    started), and the header of every local source GeoTIFF of every period (a file whose header cannot be
    read has no footprint, so it would be handed to, and fail, every tile)."""
    models, train = cfg.get("models") or {}, cfg.get("train") or {}
    model_dir = Path(models.get("discovery") or "")
    if models.get("discovery") and not train.get("discovery") and (model_dir / CARD_FILE).is_file():
        card = read_card(model_dir)
        # the discovery FCN's receptive field; a pixel model or an imported patch model checks the halo its
        # own features or patches need in each detect job
        if card.get("kind") == "discovery" and not is_patch_model(card):
            window = int(card["window"])
            check_halo(grid, FcnGeometry(window).halo_px, f"the {window} px discovery model {model_dir}")
    if (cfg.get("source") or {}).get("kind") == "local":
        for period in cfg.get("periods") or [None]:
            try:
                sources = expand_sources(cfg["source"]["local"]["paths"], period)
            except InputDataError:
                continue  # missing imagery is reported by the tile jobs that need it, naming the path
            check_source_headers(sources)

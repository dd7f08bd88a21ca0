"""Earth Engine acquisition against fakes (Earth Engine itself is never contacted here): the composite
expression, computePixels blocks and their reassembly, retries, resume after a crash, the cache, the
batch-export route with its downloads, and training chips that `minescan train` can read."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml
from test_gee_fakes import (
    BANDS,
    EEException,
    FakeData,
    FakeEE,
    FakeExporter,
    FakeSession,
    HttpError,
    expected_tile,
    pattern,
)

from minescan import config as cfgmod
from minescan.errors import ConfigError, InputDataError
from minescan.grid import GridSpec, Tile, TileId
from minescan.sources.gee import compute_pixels as cp
from minescan.sources.gee import export as ex
from minescan.sources.gee.chips import chip_frame, fetch_chips, read_chip_points
from minescan.sources.gee.composite import build_composite, qa60_gap_warning, rectangle
from minescan.sources.gee.recorder import RecordingEE
from minescan.sources.gee.retry import Retrier, is_retryable
from minescan.sources.gee.settings import REQUEST_LIMIT_BYTES, GeeSettings
from minescan.sources.gee.tiles import acquire_tile

GRID = GridSpec(tile_px=512, resolution_m=10.0, halo_px=64)  # 640 x 640 px tiles: quick
TILE = Tile(TileId(21, "S", 93, 1440), GRID)


def settings(tmp_path, **kw) -> GeeSettings:
    return replace(GeeSettings(cache_dir=str(tmp_path / "cache")), **kw)


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


def retrier(sleeps=None, retries=6):
    return Retrier(retries=retries, backoff_seconds=2.0, max_backoff_seconds=120.0, sleep=sleeps if sleeps is not None else Sleeps(),
                   rand=lambda: 1.0)


# ------------------------------------------------------------------------------------------ settings
def _cfg(**gee):
    return cfgmod.validate({"region": {"name": "r", "file": "x.geojson"}, "periods": ["2026Q1"],
                            "source": {"kind": "gee", "gee": gee}})


def test_schema_gee_block_is_complete():
    node = cfgmod.schema()["properties"]["source"]["properties"]["gee"]
    assert node["additionalProperties"] is False

    def walk(props, where):
        for key, sub in props.items():
            assert sub.get("description"), f"{where}.{key} has no description"
            assert "default" in sub, f"{where}.{key} has no default"
            if sub.get("type") == "object":
                assert sub["additionalProperties"] is False
                walk(sub["properties"], f"{where}.{key}")

    walk(node["properties"], "source.gee")
    with pytest.raises(ConfigError, match="'source.gee.bukcet'"):
        _cfg(bukcet="x")
    with pytest.raises(ConfigError, match="source.gee.export.colour"):
        _cfg(export={"colour": 1})


def test_settings_refuse_deprecated_and_mismatched_collections():
    with pytest.raises(ConfigError, match=r"'COPERNICUS/S2' is deprecated.*use 'COPERNICUS/S2_HARMONIZED'"):
        GeeSettings.from_config(_cfg(collection="COPERNICUS/S2"))
    with pytest.raises(ConfigError, match="not supported"):
        GeeSettings.from_config(_cfg(collection="LANDSAT/LC09/C02/T1_L2"))
    cfg = _cfg(collection="COPERNICUS/S2_SR_HARMONIZED")
    cfg["bands"] = ["B2", "B10"]
    with pytest.raises(ConfigError, match="B10 not in COPERNICUS/S2_SR_HARMONIZED"):
        GeeSettings.from_config(cfg)
    with pytest.raises(ConfigError, match="export.bucket"):
        GeeSettings.from_config(_cfg(route="export"))
    s = GeeSettings.from_config(_cfg(cs_threshold=0.7))
    assert s.cache_dir == str(Path("results/cache/gee")) and s.bands == tuple(BANDS)
    assert GeeSettings.from_json(s.to_json()) == s
    with pytest.raises(ConfigError, match="unknown key"):
        GeeSettings.from_dict({**s.to_dict(), "colour": 1})


def test_composite_key_changes_with_the_definition_only(tmp_path):
    s = settings(tmp_path)
    k = s.composite_key("2026Q1", GRID)
    assert replace(s, concurrency=9, retries=1, route="export", cache_dir="/x").composite_key("2026Q1", GRID) == k
    for other in (replace(s, cs_threshold=0.65), replace(s, collection="COPERNICUS/S2_SR_HARMONIZED"),
                  replace(s, bands=tuple(BANDS[::-1])), replace(s, cloud_mask="qa60"),
                  replace(s, max_cloudy_pixel_percentage=30)):
        assert other.composite_key("2026Q1", GRID) != k
    assert s.composite_key("2026Q2", GRID) != k
    assert s.composite_key("2026Q1", GridSpec(512, 10.0, 32)) != k


# ------------------------------------------------------------------------------------------ the composite
L1C_CS = (
    "ee.ImageCollection('COPERNICUS/S2_HARMONIZED').filterDate('2026-01-01', '2026-04-01')"
    ".filterBounds(ee.Geometry.Rectangle([{b}], proj='EPSG:32721', geodesic=False))"
    ".linkCollection(ee.ImageCollection('GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED'), ['cs_cdf'])"
    ".map(lambda img: img.updateMask(img.select('cs_cdf').gte(0.6)))"
    ".select(['B1', 'B2', 'B3', 'B4', 'B5', 'B6', 'B7', 'B8', 'B8A', 'B9', 'B11', 'B12'])"
    ".map(lambda img: img.updateMask(img.mask().reduce(ee.Reducer.min())))"
    ".merge(ee.ImageCollection([ee.Image.constant([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])"
    ".rename(['B1', 'B2', 'B3', 'B4', 'B5', 'B6', 'B7', 'B8', 'B8A', 'B9', 'B11', 'B12']).toUint16().selfMask()]))"
    ".median().round().clamp(1, 65535).unmask(0, False).toUint16()"
)


def test_composite_expression_cloud_score_plus(tmp_path):
    ee = RecordingEE()
    bounds = TILE.bounds
    # the halo is included: 640 px of 10 m from the tile's top-left corner
    assert bounds == (93 * 5120 - 640, 1440 * 5120 - 640, 94 * 5120 + 640, 1441 * 5120 + 640)
    image = build_composite(ee, settings(tmp_path), "2026Q1", rectangle(ee, bounds, TILE.id.epsg))
    assert repr(image) == L1C_CS.format(b=", ".join(repr(float(v)) for v in bounds))


def test_composite_expression_qa60_scene_filter_resampling_l2a(tmp_path, caplog):
    ee = RecordingEE()
    s = settings(tmp_path, collection="COPERNICUS/S2_SR_HARMONIZED", cloud_mask="qa60",
                 max_cloudy_pixel_percentage=20, resampling="bilinear", bands=("B4", "B3", "B2"))
    with caplog.at_level(logging.WARNING):
        image = repr(build_composite(ee, s, "2019", None))
    assert image == (
        "ee.ImageCollection('COPERNICUS/S2_SR_HARMONIZED').filterDate('2019-01-01', '2020-01-01')"
        ".filter(ee.Filter.lte('CLOUDY_PIXEL_PERCENTAGE', 20))"
        ".map(lambda img: img.updateMask(img.select('QA60').bitwiseAnd(3072).eq(0)))"
        ".select(['B4', 'B3', 'B2']).map(lambda img: img.resample('bilinear'))"
        ".map(lambda img: img.updateMask(img.mask().reduce(ee.Reducer.min())))"
        ".merge(ee.ImageCollection([ee.Image.constant([0, 0, 0]).rename(['B4', 'B3', 'B2']).toUint16().selfMask()]))"
        ".median().round().clamp(1, 65535).unmask(0, False).toUint16()")
    assert not caplog.records  # 2019 is before the QA60 gap
    with caplog.at_level(logging.WARNING):
        build_composite(ee, s, "2023Q2", None)
    assert "QA60 is empty" in caplog.text and "cloud_score_plus" in caplog.text
    none = repr(build_composite(ee, settings(tmp_path, cloud_mask="none"), "2026Q1", None))
    assert "QA60" not in none and "CLOUD_SCORE_PLUS" not in none and ".median()" in none


@pytest.mark.parametrize("period,warn", [("2021", False), ("2021Q4", False), ("2022Q1", True), ("2022", True),
                                         ("2023", True), ("2024Q1", True), ("2024Q2", False), ("2024", True),
                                         ("2025", False)])
def test_qa60_gap_warning(period, warn):
    assert bool(qa60_gap_warning(period)) is warn


# ------------------------------------------------------------------------------------------ block planning
@pytest.mark.parametrize("size,bands,limit", [(9536, 12, REQUEST_LIMIT_BYTES), (4608, 12, REQUEST_LIMIT_BYTES),
                                              (640, 12, 2**20), (1344, 3, REQUEST_LIMIT_BYTES),
                                              (700, 200, 4 * 2**20), (9536, 13, 10 * 2**20)])
def test_blocks_cover_the_tile_once_under_the_limit(size, bands, limit):
    blocks = cp.plan_blocks(size, size, bands, limit)
    cover = np.zeros((size, size), np.uint8)
    for b in blocks:
        assert cp.request_bytes(b.width, b.height, bands) <= limit
        cover[b.row0:b.row0 + b.height, b.col0:b.col0 + b.width] += 1
    assert (cover == 1).all()
    if bands * 2 + 1 <= limit // 512**2:  # room for 512 px rows: blocks follow the GeoTIFF's 512 px tiles
        assert all(b.row0 % 512 == 0 and b.col0 % 512 == 0 for b in blocks)


def test_block_counts_for_published_sizes():
    # a 9216 + 2 x 160 px tile of 12 uint16 bands is 2.2 GB: 3 x 19 blocks of 512 x 3584 px (~44 MiB each)
    blocks = cp.plan_blocks(9536, 9536, 12, REQUEST_LIMIT_BYTES)
    assert len(blocks) == 57 and (blocks[0].width, blocks[0].height) == (3584, 512)
    assert cp.request_bytes(3584, 512, 12) == 45_875_200 <= 50_331_648
    # the ~510 MB quadrant of the brief needs at least 11 requests
    assert len(cp.plan_blocks(4608, 4608, 12, REQUEST_LIMIT_BYTES)) >= 4608 * 4608 * 25 / REQUEST_LIMIT_BYTES


def test_block_grid_is_the_tile_grid_shifted():
    block = cp.Block(col0=512, row0=128, width=100, height=50)
    g = cp.block_grid(TILE.id.epsg, TILE.transform, block)
    t = TILE.transform
    assert g == {"dimensions": {"width": 100, "height": 50},
                 "affineTransform": {"scaleX": 10.0, "shearX": 0.0, "translateX": t.c + 5120.0,
                                     "shearY": 0.0, "scaleY": -10.0, "translateY": t.f - 1280.0},
                 "crsCode": "EPSG:32721"}


# ------------------------------------------------------------------------------------------ computePixels route
def check_tile_file(path: Path, tile: Tile, expected: np.ndarray | None = None, bands=BANDS):
    with rasterio.open(path) as ds:
        assert ds.crs.to_epsg() == tile.id.epsg
        assert ds.transform.almost_equals(tile.transform)
        assert (ds.width, ds.height, ds.count) == (tile.size_px, tile.size_px, len(bands))
        assert ds.dtypes == tuple(["uint16"] * len(bands)) and ds.nodata == 0
        assert list(ds.descriptions) == list(bands)
        assert ds.profile["tiled"] and ds.block_shapes[0] == (512, 512)
        assert ds.overviews(1), "a cloud-optimised GeoTIFF has overviews"
        tags = ds.tags()
        assert tags["TILE_ID"] == tile.name and tags["HALO_PX"] == str(tile.grid.halo_px)
        data = ds.read()
    if expected is None:
        expected = expected_tile(tile)
    np.testing.assert_array_equal(data, expected)
    return tags


def test_compute_pixels_tile_values_georeferencing_and_requests(tmp_path):
    data = FakeData()
    ee = FakeEE(data)
    s = settings(tmp_path, max_request_mb=1.0)  # small requests: 640 x 640 px in several blocks
    out = tmp_path / "scan" / "tiles" / f"{TILE.name}.tif"
    info = acquire_tile(TILE, "2026Q1", s, out, ee=ee, retrier=retrier())
    blocks = cp.plan_blocks(640, 640, 12, 2**20)
    assert info["source"] == "computePixels" and info["requests"] == len(blocks) == len(data.requests) > 4
    tags = check_tile_file(out, TILE)
    assert tags["GEE_PERIOD"] == "2026Q1" and tags["GEE_START"] == "2026-01-01" and tags["VALID_FRACTION"] == "1.000000"
    assert json.loads(tags["GEE_DEFINITION"])["cs_threshold"] == 0.6
    expr = L1C_CS.format(b=", ".join(repr(float(v)) for v in TILE.bounds))
    seen = set()
    for req in data.requests:
        assert repr(req["expression"]) == expr
        assert req["fileFormat"] == "NUMPY_NDARRAY" and req["bandIds"] == BANDS
        g = req["grid"]
        assert g["crsCode"] == "EPSG:32721" and g["affineTransform"]["scaleX"] == 10.0
        assert cp.request_bytes(g["dimensions"]["width"], g["dimensions"]["height"], 12) <= 2**20
        seen.add((g["affineTransform"]["translateX"], g["affineTransform"]["translateY"]))
    assert len(seen) == len(blocks)  # no block asked twice
    assert not list((tmp_path / "cache").glob("**/*.parts"))  # the blocks are removed once the tile is written


@pytest.mark.parametrize(("compression", "stored", "predictor"), [("zstd", "zstd", 2), ("none", None, None)])
def test_tile_cog_is_stored_as_configured_and_read_by_the_block_decoder(tmp_path, compression, stored, predictor):
    """source.tile_compression reaches the COG (ZSTD + predictor by default, not DEFLATE), whose
    full-resolution blocks the detect job's block decoder reads as GDAL does."""
    from minescan.sources.blocks import BlockDecoder

    out = tmp_path / "t.tif"
    cfg = cfgmod.validate({"region": {"name": "r", "file": "x.geojson"}, "periods": ["2026Q1"],
                           "source": {"kind": "gee", "tile_compression": compression}})
    s = replace(GeeSettings.from_config(cfg), cache_dir=str(tmp_path / "cache"))
    assert s.tile_compression == compression
    acquire_tile(TILE, "2026Q1", s, out, ee=FakeEE(FakeData()), retrier=retrier())
    check_tile_file(out, TILE)
    with rasterio.open(out) as ds:
        assert (ds.compression.name if ds.compression else None) == stored
        assert ds.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR") == (str(predictor) if predictor else None)
        gdal = ds.read(window=rasterio.windows.Window(37, 401, 530, 190)).transpose(1, 2, 0)
    dec = BlockDecoder(out)
    try:
        np.testing.assert_array_equal(dec.read(37, 401, 567, 591, list(range(12))), gdal)
    finally:
        dec.close()


def test_tile_compression_from_a_spec_is_checked():
    with pytest.raises(ConfigError, match="source.tile_compression"):
        GeeSettings.from_dict({"tile_compression": "lzma"})


def test_band_order_follows_the_config(tmp_path):
    order = ("B12", "B4", "B8A", "B1")
    data = FakeData()
    out = tmp_path / "t.tif"
    acquire_tile(TILE, "2026Q1", settings(tmp_path, bands=order), out, ee=FakeEE(data), retrier=retrier())
    full = expected_tile(TILE)
    check_tile_file(out, TILE, full[[BANDS.index(b) for b in order]], bands=order)
    assert all(r["bandIds"] == list(order) for r in data.requests)


def test_nodata_pixels_are_zero_in_every_band(tmp_path):
    data = FakeData(nodata_fn=lambda p, q: (p + q) % 5 == 0)
    out = tmp_path / "t.tif"
    info = acquire_tile(TILE, "2026Q1", settings(tmp_path), out, ee=FakeEE(data), retrier=retrier())
    full = expected_tile(TILE)
    p0, q0 = TILE.origin_px
    q, p = np.mgrid[q0:q0 + 640, p0:p0 + 640]
    full[:, (p + q) % 5 == 0] = 0
    tags = check_tile_file(out, TILE, full)
    assert abs(float(tags["VALID_FRACTION"]) - 0.8) < 0.01 and abs(info["valid_fraction"] - 0.8) < 0.01


def test_concurrency_limit(tmp_path):
    data = FakeData(delay=0.02)
    acquire_tile(TILE, "2026Q1", settings(tmp_path, max_request_mb=0.5, concurrency=3), tmp_path / "t.tif",
                 ee=FakeEE(data), retrier=retrier())
    assert len(data.requests) >= 8
    assert 1 < data.max_in_flight <= 3


# ------------------------------------------------------------------------------------------ retries
def test_retry_with_backoff_on_quota_and_5xx(tmp_path):
    errors = {0: EEException("Too many concurrent aggregations."), 1: HttpError(503, "Service Unavailable"),
              2: EEException("Quota exceeded for quota metric 'Requests'"), 3: HttpError(429)}
    data = FakeData(fail=lambda i, req: errors.get(i))
    sleeps = Sleeps()
    out = tmp_path / "t.tif"
    acquire_tile(TILE, "2026Q1", settings(tmp_path, concurrency=1), out, ee=FakeEE(data), retrier=retrier(sleeps))
    assert sleeps == [2.0, 4.0, 8.0, 16.0]  # doubling (jitter fixed at its maximum here)
    check_tile_file(out, TILE)


def test_backoff_is_capped_and_jittered():
    r = Retrier(retries=10, backoff_seconds=2, max_backoff_seconds=30, sleep=Sleeps(), rand=lambda: 0.0)
    assert [r.delay(a) for a in range(6)] == [1.0, 2.0, 4.0, 8.0, 15.0, 15.0]
    r.rand = lambda: 1.0
    assert r.delay(10) == 30.0


def test_permanent_errors_are_not_retried(tmp_path):
    data = FakeData(fail=lambda i, req: EEException("Image.select: Pattern 'B10' did not match any bands."))
    sleeps = Sleeps()
    with pytest.raises(EEException, match="did not match"):
        acquire_tile(TILE, "2026Q1", settings(tmp_path, concurrency=1), tmp_path / "t.tif", ee=FakeEE(data),
                     retrier=retrier(sleeps))
    assert sleeps == [] and len(data.requests) == 1
    assert not (tmp_path / "t.tif").exists()


def test_retries_give_up_after_the_configured_number(tmp_path):
    data = FakeData(fail=lambda i, req: HttpError(500, "Internal error"))
    sleeps = Sleeps()
    with pytest.raises(HttpError):
        acquire_tile(TILE, "2026Q1", settings(tmp_path, concurrency=1), tmp_path / "t.tif", ee=FakeEE(data),
                     retrier=retrier(sleeps, retries=3))
    assert len(sleeps) == 3 and len(data.requests) == 4


@pytest.mark.parametrize("exc,retry", [
    (EEException("Too many concurrent aggregations."), True), (EEException("Computation timed out."), True),
    (EEException("Internal error."), True), (HttpError(502), True), (ConnectionResetError(), True),
    (TimeoutError(), True), (EEException("User memory limit exceeded."), False),
    (EEException("Total request size (56623104 bytes) must be less than or equal to 50331648 bytes."), False),
    (EEException("Image.load: Asset 'X' not found."), False), (HttpError(400, "bad"), False),
    (HttpError(403, "Permission denied"), False), (ValueError("x"), False)])
def test_is_retryable(exc, retry):
    assert is_retryable(exc) is retry


# ------------------------------------------------------------------------------------------ resume, cache
def test_resume_after_crash_fetches_only_missing_blocks(tmp_path):
    s = settings(tmp_path, max_request_mb=0.5, concurrency=1)
    blocks = cp.plan_blocks(640, 640, 12, s.request_limit_bytes)
    assert len(blocks) >= 6

    class Crash(Exception):
        pass

    crashing = FakeData(fail=lambda i, req: Crash("power cut") if i == 3 else None)
    out = tmp_path / "t.tif"
    with pytest.raises(Crash):
        acquire_tile(TILE, "2026Q1", s, out, ee=FakeEE(crashing), retrier=retrier())
    assert not out.exists()
    key = s.composite_key("2026Q1", GRID)
    cached = Path(s.cache_dir) / key / "2026Q1" / f"{TILE.name}.tif"
    assert not cached.exists()  # a half-fetched tile never looks complete
    block_dir = cached.with_name(f"{TILE.name}.parts") / "blocks"
    stored = sorted(block_dir.glob("r*.npy"))
    # blocks 0-2 were saved (and maybe the next one, which the worker had started before the crash stopped it)
    assert 3 <= len(stored) < len(blocks)
    # a block damaged by the crash and a temporary file left mid-write: both must be handled
    stored[1].write_bytes(stored[1].read_bytes()[:100])
    (block_dir / ".r00000_c00000_x.partial-1-2.npy").write_bytes(b"junk")

    data = FakeData()
    info = acquire_tile(TILE, "2026Q1", s, out, ee=FakeEE(data), retrier=retrier())
    assert info["requests"] == len(data.requests) == len(blocks) - len(stored) + 1  # 1 stored block was damaged
    asked = {(r["grid"]["affineTransform"]["translateX"], r["grid"]["affineTransform"]["translateY"])
             for r in data.requests}
    assert len(asked) == len(data.requests)
    check_tile_file(out, TILE)
    assert not block_dir.parent.exists()  # cleaned once the tile is complete


def test_changed_block_layout_discards_stored_blocks(tmp_path):
    s = settings(tmp_path, max_request_mb=0.5, concurrency=1)
    with pytest.raises(RuntimeError):
        acquire_tile(TILE, "2026Q1", s, tmp_path / "t.tif",
                     ee=FakeEE(FakeData(fail=lambda i, r: RuntimeError("x") if i == 2 else None)), retrier=retrier())
    data = FakeData()
    s2 = replace(s, max_request_mb=0.25)
    acquire_tile(TILE, "2026Q1", s2, tmp_path / "t.tif", ee=FakeEE(data), retrier=retrier())
    assert len(data.requests) == len(cp.plan_blocks(640, 640, 12, s2.request_limit_bytes))
    check_tile_file(tmp_path / "t.tif", TILE)


def test_cache_serves_reruns_without_network(tmp_path):
    s = settings(tmp_path)
    first = tmp_path / "a" / "t.tif"
    data0 = FakeData()
    acquire_tile(TILE, "2026Q1", s, first, ee=FakeEE(data0), retrier=retrier())
    first_requests = len(data0.requests)
    assert first_requests >= 1

    class NoNetwork:
        def __getattr__(self, name):
            raise AssertionError(f"ee.{name} used for a cached tile")

    calls = []
    second = tmp_path / "b" / "t.tif"
    info = acquire_tile(TILE, "2026Q1", s, second, ee=NoNetwork(), before_fetch=lambda: calls.append(1))
    assert info["source"] == "cache" and calls == []
    assert os.stat(first).st_ino == os.stat(second).st_ino  # a hard link: no second copy on disk
    check_tile_file(second, TILE)
    # Snakemake deletes the output before a rerun: the cache still serves it
    second.unlink()
    acquire_tile(TILE, "2026Q1", s, second, ee=NoNetwork())
    check_tile_file(second, TILE)
    # another composite definition or period is fetched anew
    data = FakeData()
    acquire_tile(TILE, "2026Q1", replace(s, cs_threshold=0.7), tmp_path / "c.tif", ee=FakeEE(data), retrier=retrier())
    n_other_definition = len(data.requests)
    acquire_tile(TILE, "2026Q2", s, tmp_path / "d.tif", ee=FakeEE(data), retrier=retrier())
    # each was fetched in full: as many requests as the first fetch of this tile made, none served by cache
    assert n_other_definition == first_requests and len(data.requests) == 2 * first_requests
    assert len({os.stat(p).st_ino for p in (first, tmp_path / "c.tif", tmp_path / "d.tif")}) == 3


def test_damaged_cache_entry_is_fetched_again(tmp_path):
    s = settings(tmp_path)
    acquire_tile(TILE, "2026Q1", s, tmp_path / "t.tif", ee=FakeEE(), retrier=retrier())
    cached = Path(acquire_tile(TILE, "2026Q1", s, tmp_path / "u.tif", ee=FakeEE())["cache"])
    (tmp_path / "t.tif").unlink()
    (tmp_path / "u.tif").unlink()
    cached.write_bytes(cached.read_bytes()[:5000])
    data = FakeData()
    info = acquire_tile(TILE, "2026Q1", s, tmp_path / "t.tif", ee=FakeEE(data), retrier=retrier())
    assert info["source"] == "computePixels" and data.requests
    check_tile_file(tmp_path / "t.tif", TILE)


# ------------------------------------------------------------------------------------------ export route
def export_settings(tmp_path, **kw):
    s = settings(tmp_path, route="export")
    return replace(s, export=replace(s.export, bucket="my-bucket", prefix="scans/minescan", poll_seconds=5, **kw))


def test_export_parameters(tmp_path):
    s = export_settings(tmp_path, priority=200)
    key = s.composite_key("2026Q1", GRID)
    params = ex.export_params("IMAGE", TILE, "2026Q1", key, s)
    t = TILE.transform
    assert params == {
        "image": "IMAGE", "description": f"minescan_{TILE.name}_2026Q1_{key}",
        "fileNamePrefix": f"scans/minescan/{key}/2026Q1/{TILE.name}", "bucket": "my-bucket",
        "dimensions": "640x640", "crs": "EPSG:32721",
        "crsTransform": [10.0, 0.0, 93 * 5120 - 640.0, 0.0, -10.0, 1441 * 5120 + 640.0],
        "maxPixels": 2 * 640 * 640, "fileFormat": "GeoTIFF",
        "formatOptions": {"cloudOptimized": True, "noData": 0}, "priority": 200}
    assert params["crsTransform"][2] == t.c and params["crsTransform"][5] == t.f
    # crs + crsTransform + dimensions, no region/scale: the exact pixel grid, not a resampled region
    assert "region" not in params and "scale" not in params
    drive = replace(s, export=replace(s.export, destination="drive", drive_folder="mines"))
    dp = ex.export_params("IMAGE", TILE, "2026Q1", key, drive)
    assert dp["folder"] == "mines" and "/" not in dp["fileNamePrefix"] and "bucket" not in dp


def test_export_route_polls_downloads_resumes_and_assembles(tmp_path):
    bucket = tmp_path / "bucket"
    data = FakeData()
    exporter = FakeExporter(data, bucket, shards=2)
    ee = FakeEE(data, exporter)
    session = FakeSession("my-bucket", bucket, cut_first_download_at=0.4)
    s = export_settings(tmp_path, delete_after_download=True)
    sleeps = Sleeps()
    out = tmp_path / "t.tif"
    info = acquire_tile(TILE, "2026Q1", s, out, ee=ee, retrier=retrier(), sleep=sleeps,
                        store_factory=lambda: ex.GcsStore(session, "my-bucket"))
    assert info["source"] == "export" and info["files"] == 2
    assert len(exporter.calls) == 1 and exporter.calls[0][0] == "gcs"
    assert data.op_calls == ["projects/test-proj/operations/OP1"] * 3  # PENDING, RUNNING, SUCCEEDED
    assert sleeps == [5, 5]  # poll_seconds between status requests
    ranges = [h.get("Range") for m, url, h in session.calls if "alt=media" in url]
    assert len(ranges) == 3 and ranges[0] is None and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"
    assert len(session.deleted) == 2
    check_tile_file(out, TILE)
    assert data.requests == []  # no computePixels on this route


def test_export_resumes_the_same_task_after_a_crash(tmp_path):
    bucket = tmp_path / "bucket"
    data = FakeData()
    exporter = FakeExporter(data, bucket, shards=1, states=("PENDING", "RUNNING", "RUNNING", "SUCCEEDED"))
    session = FakeSession("my-bucket", bucket)
    s = export_settings(tmp_path)

    class Crash(BaseException):
        pass

    def crash_while_waiting(seconds, n=[0]):  # noqa: B006 (a counter)
        n[0] += 1
        if n[0] == 2:  # killed during the second wait between status requests
            raise Crash()

    with pytest.raises(Crash):
        acquire_tile(TILE, "2026Q1", s, tmp_path / "t.tif", ee=FakeEE(data, exporter), retrier=retrier(),
                     sleep=crash_while_waiting, store_factory=lambda: ex.GcsStore(session, "my-bucket"))
    assert len(exporter.calls) == 1
    acquire_tile(TILE, "2026Q1", s, tmp_path / "t.tif", ee=FakeEE(data, exporter), retrier=retrier(),
                 sleep=Sleeps(), store_factory=lambda: ex.GcsStore(session, "my-bucket"))
    assert len(exporter.calls) == 1  # picked up, not exported twice
    check_tile_file(tmp_path / "t.tif", TILE)


def test_export_found_by_description_when_its_name_was_lost(tmp_path):
    bucket = tmp_path / "bucket"
    data = FakeData()
    exporter = FakeExporter(data, bucket, shards=1)
    s = export_settings(tmp_path)
    key = s.composite_key("2026Q1", GRID)
    # an earlier job started the task and died before saving its name
    exporter.toCloudStorage(**ex.export_params("IMAGE", TILE, "2026Q1", key, s)).start()
    name = "projects/test-proj/operations/OP1"
    data.listing = [{"name": "projects/test-proj/operations/OLD", "metadata": {
        "state": "FAILED", "description": f"minescan_{TILE.name}_2026Q1_{key}"}},
        {"name": name, "metadata": {"state": "RUNNING", "description": f"minescan_{TILE.name}_2026Q1_{key}"}}]
    acquire_tile(TILE, "2026Q1", s, tmp_path / "t.tif", ee=FakeEE(data, exporter), retrier=retrier(),
                 sleep=Sleeps(), store_factory=lambda: ex.GcsStore(FakeSession("my-bucket", bucket), "my-bucket"))
    assert len(exporter.calls) == 1 and data.listed == 1 and set(data.op_calls) == {name}
    check_tile_file(tmp_path / "t.tif", TILE)


def test_failed_export_reports_the_task_error(tmp_path):
    data = FakeData()
    exporter = FakeExporter(data, tmp_path / "bucket", states=("RUNNING", "FAILED"),
                            error="Earth Engine memory capacity exceeded.")
    s = export_settings(tmp_path)
    with pytest.raises(InputDataError, match="FAILED: Earth Engine memory capacity exceeded"):
        acquire_tile(TILE, "2026Q1", s, tmp_path / "t.tif", ee=FakeEE(data, exporter), retrier=retrier(),
                     sleep=Sleeps(), store_factory=lambda: ex.GcsStore(FakeSession("b", tmp_path), "b"))
    assert not list(Path(s.cache_dir).glob("**/export.json"))  # a rerun starts a new task


def test_export_listing_retried_and_shards_checked_against_the_grid(tmp_path):
    bucket = tmp_path / "bucket"
    data = FakeData()
    exporter = FakeExporter(data, bucket, shards=3)
    session = FakeSession("my-bucket", bucket, fail_list=2)
    sleeps = Sleeps()
    acquire_tile(TILE, "2026Q1", export_settings(tmp_path), tmp_path / "t.tif", ee=FakeEE(data, exporter),
                 retrier=retrier(sleeps), sleep=Sleeps(), store_factory=lambda: ex.GcsStore(session, "my-bucket"))
    assert sleeps == [2.0, 4.0]  # the two 503 answers of the listing
    check_tile_file(tmp_path / "t.tif", TILE)
    # a piece off the grid is refused
    off = tmp_path / "off.tif"
    with rasterio.open(off, "w", driver="GTiff", dtype="uint16", count=12, width=10, height=10, crs="EPSG:32721",
                       transform=rasterio.Affine(10, 0, TILE.transform.c + 5, 0, -10, TILE.transform.f)) as dst:
        dst.write(np.ones((12, 10, 10), np.uint16))
    with rasterio.open(tmp_path / "dst.tif", "w", driver="GTiff", dtype="uint16", count=12, width=640, height=640,
                       crs="EPSG:32721", transform=TILE.transform) as dst, \
            pytest.raises(InputDataError, match="not aligned"):
        ex.write_shards([off], TILE, 12, dst)


# ------------------------------------------------------------------------------------------ chips
def points_csv(tmp_path) -> Path:
    df = pd.DataFrame({
        "id": ["mine-1", "bg 2", "mine_3"],
        # the first two straddle the UTM zone 21/22 boundary at 54 W
        "lon": [-54.0004, -53.9996, -56.1234567],
        "lat": [-6.5, -6.5001, -4.4321],
        "class": ["mine", "background", 1],
        "impact": ["high", None, "low"]})
    path = tmp_path / "points.csv"
    df.to_csv(path, index=False)
    return path


def test_chip_points_both_schemes(tmp_path):
    centre = read_chip_points(points_csv(tmp_path))
    assert list(centre["id"]) == ["mine-1", "bg_2", "mine_3"] and list(centre["class"]) == [1, 0, 1]
    assert (centre["scheme"] == "centre").all()
    corners = tmp_path / "corners.csv"
    pd.DataFrame({"ll_lon": [-56.01], "ll_lat": [-4.51], "ur_lon": [-55.99], "ur_lat": [-4.49],
                  "class": [1]}).to_csv(corners, index=False)
    c = read_chip_points(corners)
    assert c.loc[0, "scheme"] == "corners" and c.loc[0, "id"] == "p00000"
    assert abs(c.loc[0, "lon"] + 56.0) < 1e-4 and abs(c.loc[0, "lat"] + 4.5) < 1e-4
    assert 2200 < c.loc[0, "side_m"] < 2300  # 0.02 degree
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"ll_lon": [-55.0], "ll_lat": [-4.5], "ur_lon": [-56.0], "ur_lat": [-4.4],
                  "class": [1]}).to_csv(bad, index=False)
    with pytest.raises(InputDataError, match="lower-left"):
        read_chip_points(bad)
    none = tmp_path / "none.csv"
    pd.DataFrame({"x": [1], "class": [1]}).to_csv(none, index=False)
    with pytest.raises(InputDataError, match="lon, lat.*ll_lon"):
        read_chip_points(none)


def test_chips_are_centred_consistent_and_train_ready(tmp_path, caplog):
    data = FakeData()
    s = settings(tmp_path, chip_sizes=(201, 21))
    out = tmp_path / "chips"
    points = read_chip_points(points_csv(tmp_path))
    info = fetch_chips(points, "2020", s, out, ee=FakeEE(data), retrier=retrier())
    assert info["fetched"] == 3 and len(data.requests) == 3  # one request per point, the 21 px chip is cut
    zones = set()
    for r in points.to_dict("records"):
        epsg, _ = chip_frame(r["lon"], r["lat"], 201, 10.0)
        zones.add(epsg)
        with rasterio.open(out / "201px" / f"{r['id']}.tif") as big, rasterio.open(out / "21px" / f"{r['id']}.tif") as small:
            assert big.crs.to_epsg() == epsg and (big.width, big.height, big.count) == (201, 201, 12)
            assert list(big.descriptions) == BANDS and big.nodata == 0 and small.nodata == 0
            # the point lies in the centre pixel of both chips
            from pyproj import Transformer

            x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(r["lon"], r["lat"])
            for ds, half in ((big, 100), (small, 10)):
                col, row = ~ds.transform @ (x, y)
                assert (int(np.floor(col)), int(np.floor(row))) == (half, half)
                assert ds.transform.c % 10 == 0 and ds.transform.f % 10 == 0  # on the 10 m grid
            b, sm = big.read(), small.read()
            np.testing.assert_array_equal(sm, b[:, 90:111, 90:111])
            p0, q0 = round(big.transform.c / 10), round(-big.transform.f / 10)
            q, p = np.mgrid[q0:q0 + 201, p0:p0 + 201]
            np.testing.assert_array_equal(b[3], pattern(p, q, 3))
            assert big.tags()["CLASS"] == str(r["class"]) and big.tags()["PERIOD"] == "2020"
    assert zones == {32721, 32722}
    assert all(req["grid"]["dimensions"] == {"width": 201, "height": 201} for req in data.requests)
    assert all("filterDate('2020-01-01', '2021-01-01')" in repr(req["expression"]) for req in data.requests)

    # what `minescan train` does with them
    from minescan.models.train_points import extract_chips, read_points

    train_points = read_points(out / "points.csv")
    for window, folder in ((201, "201px"), (21, "21px")):
        chips, valid, used = extract_chips(train_points, sorted((out / folder).glob("*.tif")), window, BANDS, 1e-4)
        assert sorted(used) == [0, 1, 2] and chips.shape == (3, window, window, 12) and valid.all()

    # rerun: everything is there, nothing is fetched
    again = FakeData()
    assert fetch_chips(points, "2020", s, out, ee=FakeEE(again), retrier=retrier())["fetched"] == 0
    assert again.requests == []


def test_failed_chip_does_not_lose_the_others(tmp_path):
    data = FakeData(fail=lambda i, req: EEException("Image.load: not found") if "EPSG:32722" == req["grid"]["crsCode"] else None)
    s = settings(tmp_path)
    points = read_chip_points(points_csv(tmp_path))
    with pytest.raises(InputDataError, match=r"1 of 3 chips could not be fetched \(bg_2"):
        fetch_chips(points, "2020", s, tmp_path / "c", ee=FakeEE(data), retrier=retrier())
    assert sorted(p.stem for p in (tmp_path / "c" / "201px").glob("*.tif")) == ["mine-1", "mine_3"]
    again = FakeData()
    fetch_chips(points, "2020", s, tmp_path / "c", ee=FakeEE(again), retrier=retrier())
    assert len(again.requests) == 1


def test_sample_config_is_valid():
    root = Path(__file__).resolve().parents[1]
    raw = yaml.safe_load((root / "config" / "gee-example.yaml").read_text())
    cfg = cfgmod.validate(raw, "config/gee-example.yaml")
    s = GeeSettings.from_config(cfg)
    assert cfg["source"]["kind"] == "gee" and s.collection == "COPERNICUS/S2_HARMONIZED"

"""Training chips from Earth Engine: a small GeoTIFF of the scan's composite around every labelled point.

Points (CSV, or any vector file GeoPandas reads) come in either of the published input schemes:

- centre point: ``lon, lat, class[, impact][, side_m]`` (``side_m``: side of the object's square, metres);
- corners: ``ll_lon, ll_lat, ur_lon, ur_lat, class[, impact]`` (lower-left and upper-right corners); a
  vector file of polygons is read this way too (their bounding boxes).

``class`` is 1/0 or mine/background, ``impact`` high/low/no_ore, as ``minescan train`` reads them; an
``id`` column names the files (else ``p00000``, ``p00001``, ...). The corner scheme's centre is the middle
of the box in the point's UTM zone.

For every point one ``computePixels`` request fetches the largest chip (201 x 201 px by default) in the
UTM zone of the point, on the scan's 10 m pixel grid, with the point in its centre pixel; smaller chips (21
x 21 px) are cut from its centre, so both sizes show the same pixels. Each size goes to
``{out}/{size}px/{id}.tif`` (uint16, band names as descriptions, nodata 0) and ``{out}/points.csv`` lists
the centre points, ready for::

    minescan train discovery --points {out}/points.csv --images {out}/201px/*.tif ...
    minescan train impact    --points {out}/points.csv --images {out}/21px/*.tif ...

Chips already written (same composite) are skipped, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import math
import re
from concurrent.futures import ThreadPoolExecutor, as_completed
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from affine import Affine
from pyproj import Transformer

from minescan.errors import InputDataError
from minescan.grid import utm_epsg, zone_of
from minescan.io_utils import atomic_output, atomic_write_text
from minescan.models.networks import IMPACT_CLASSES
from minescan.sources.gee.auth import redact
from minescan.sources.gee.composite import build_composite, rectangle

log = logging.getLogger(__name__)

CORNERS = ("ll_lon", "ll_lat", "ur_lon", "ur_lat")
SIDE_COLUMNS = ("side_m", "side")
CHIP_PROFILE = {"driver": "GTiff", "dtype": "uint16", "compress": "deflate", "predictor": 2, "tiled": False,
                "interleave": "pixel"}
_ID_RE = re.compile(r"[^A-Za-z0-9_.-]+")


@lru_cache(maxsize=64)
def _to_utm(epsg: int) -> Transformer:
    return Transformer.from_crs(4326, epsg, always_xy=True)


@lru_cache(maxsize=64)
def _from_utm(epsg: int) -> Transformer:
    return Transformer.from_crs(epsg, 4326, always_xy=True)


def _class_values(series: pd.Series, path) -> pd.Series:
    mapped = series.map(lambda v: {"mine": 1, "background": 0, "1": 1, "0": 0, "1.0": 1, "0.0": 0}.get(
        str(v).strip().lower(), v))
    try:
        out = mapped.astype(int)
    except (TypeError, ValueError) as exc:
        raise InputDataError(f"{path}: column 'class' must be 1/0 or mine/background ({exc})") from exc
    if not set(out) <= {0, 1}:
        raise InputDataError(f"{path}: column 'class' has values other than 0/1: {sorted(set(out))}")
    return out


def chip_id(name: str) -> str:
    """A point's id as its chip file name: runs of characters other than letters, digits, '_', '.' and '-'
    become one '_'."""
    return _ID_RE.sub("_", str(name).strip()) or "_"


def read_chip_points(path) -> pd.DataFrame:
    """Points in either scheme -> DataFrame id, lon, lat (centre), class[, impact][, side_m], scheme."""
    path = Path(path)
    if not path.exists():
        raise InputDataError(f"{path}: points file not found")
    if path.suffix.lower() == ".csv":
        try:
            df = pd.read_csv(path)
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
            raise InputDataError(f"{path}: not a readable CSV ({exc})") from exc
    else:
        from minescan.vector_io import read_vector

        gdf = read_vector(path, what="points file").to_crs(4326)
        df = pd.DataFrame(gdf.drop(columns="geometry"))
        if (gdf.geom_type == "Point").all():
            df["lon"], df["lat"] = gdf.geometry.x, gdf.geometry.y
        else:
            b = gdf.geometry.bounds
            df["ll_lon"], df["ll_lat"], df["ur_lon"], df["ur_lat"] = b.minx, b.miny, b.maxx, b.maxy
    df.columns = [str(c).strip() for c in df.columns]
    if "class" not in df.columns:
        raise InputDataError(f"{path}: column 'class' is missing (1/0 or mine/background)")
    if {"lon", "lat"} <= set(df.columns):
        scheme = "centre"
        side_col = next((c for c in SIDE_COLUMNS if c in df.columns), None)
        out = pd.DataFrame({"lon": pd.to_numeric(df["lon"], errors="coerce"),
                            "lat": pd.to_numeric(df["lat"], errors="coerce")})
        if side_col:
            out["side_m"] = pd.to_numeric(df[side_col], errors="coerce")
    elif set(CORNERS) <= set(df.columns):
        scheme = "corners"
        c = {k: pd.to_numeric(df[k], errors="coerce") for k in CORNERS}
        if c["ll_lon"].isna().any() or c["ur_lat"].isna().any() or c["ll_lat"].isna().any() or c["ur_lon"].isna().any():
            raise InputDataError(f"{path}: non-numeric corner coordinates (rows "
                                 f"{', '.join(str(i + 2) for i in df.index[pd.concat(c, axis=1).isna().any(axis=1)][:5])})")
        bad = df.index[(c["ll_lon"] >= c["ur_lon"]) | (c["ll_lat"] >= c["ur_lat"])]
        if len(bad):
            raise InputDataError(f"{path}: lower-left corner not below/left of the upper-right one (rows "
                                 f"{', '.join(str(i + 2) for i in bad[:5])})")
        lons, lats, sides = [], [], []
        for i in df.index:
            lon0, lat0 = (c["ll_lon"][i] + c["ur_lon"][i]) / 2, (c["ll_lat"][i] + c["ur_lat"][i]) / 2
            epsg = utm_epsg(*zone_of(lon0, lat0))
            xs, ys = _to_utm(epsg).transform([c["ll_lon"][i], c["ur_lon"][i]], [c["ll_lat"][i], c["ur_lat"][i]])
            lon, lat = _from_utm(epsg).transform((xs[0] + xs[1]) / 2, (ys[0] + ys[1]) / 2)
            lons.append(lon)
            lats.append(lat)
            sides.append(max(abs(xs[1] - xs[0]), abs(ys[1] - ys[0])))
        out = pd.DataFrame({"lon": lons, "lat": lats, "side_m": sides}, index=df.index)
    else:
        raise InputDataError(f"{path}: needs columns lon, lat (centre point [+ side_m]) or "
                             f"{', '.join(CORNERS)} (lower-left / upper-right corners), and class")
    bad = out.index[out["lon"].isna() | out["lat"].isna() | (out["lat"] < -80) | (out["lat"] > 84)
                    | (out["lon"] < -180) | (out["lon"] > 180)]
    if len(bad):
        raise InputDataError(f"{path}: missing or out-of-range coordinates (UTM covers latitudes -80..84) in rows "
                             f"{', '.join(str(i + 2) for i in bad[:5])}")
    out["class"] = _class_values(df["class"], path)
    if "impact" in df.columns:
        impact = df["impact"].where(df["impact"].notna(), None)
        unknown = sorted({str(v) for v in impact.dropna()} - set(IMPACT_CLASSES))
        if unknown:
            raise InputDataError(f"{path}: column 'impact' has unknown classes {unknown} "
                                 f"(use {', '.join(IMPACT_CLASSES)})")
        out["impact"] = impact
    if "id" in df.columns:
        ids = df["id"].astype(str).map(chip_id)
        dup = ids[ids.duplicated()].unique()
        if len(dup):
            raise InputDataError(f"{path}: column 'id' repeats {', '.join(dup[:5])}")
        out.insert(0, "id", ids)
    else:
        out.insert(0, "id", [f"p{i:05d}" for i in range(len(out))])
    out["scheme"] = scheme
    return out.reset_index(drop=True)


def chip_frame(lon: float, lat: float, size: int, resolution_m: float) -> tuple[int, Affine]:
    """(EPSG, transform) of a size x size chip on the scan grid of the point's UTM zone, the point in the
    pixel at (size // 2, size // 2) -- where ``minescan train`` looks for it."""
    epsg = utm_epsg(*zone_of(lon, lat))
    x, y = _to_utm(epsg).transform(lon, lat)
    p, q = math.floor(x / resolution_m), math.floor(-y / resolution_m)
    p0, q0 = p - size // 2, q - size // 2
    return epsg, Affine(resolution_m, 0.0, p0 * resolution_m, 0.0, -resolution_m, -q0 * resolution_m)


def chip_paths(out_dir: Path, sizes, point_id: str) -> dict[int, Path]:
    return {s: Path(out_dir) / f"{s}px" / f"{point_id}.tif" for s in sizes}


def _chip_ok(path: Path, size: int, n_bands: int, key: str) -> bool:
    try:
        with rasterio.open(path) as ds:
            return (ds.width, ds.height, ds.count) == (size, size, n_bands) and \
                ds.tags().get("GEE_COMPOSITE_KEY") == key
    except Exception:
        return False


def write_chip(path: Path, data: np.ndarray, epsg: int, transform: Affine, bands, tags: dict) -> None:
    profile = dict(CHIP_PROFILE, count=data.shape[0], width=data.shape[2], height=data.shape[1],
                   crs=f"EPSG:{epsg}", transform=transform, nodata=0)
    with atomic_output(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.descriptions = tuple(bands)
            dst.update_tags(**{k: str(v) for k, v in tags.items()})
            dst.write(data)


def fetch_chips(points: pd.DataFrame, period: str, settings, out_dir, *, resolution_m: float = 10.0, ee=None,
                retrier=None) -> dict:
    """Fetch and write every chip not yet written; return counts. Failed points are listed in the error."""
    from minescan.sources.gee import compute_pixels as cp
    from minescan.sources.gee import get_ee
    from minescan.sources.gee.retry import Retrier

    out_dir = Path(out_dir)
    sizes = sorted({int(s) for s in settings.chip_sizes}, reverse=True)
    big = sizes[0]
    bands = list(settings.bands)
    key = settings.composite_key(period) + f"-r{resolution_m:g}"
    definition = settings.composite_definition(period)
    ee = ee or get_ee()
    retrier = retrier or Retrier.from_settings(settings)
    block = cp.Block(0, 0, big, big)
    if cp.request_bytes(big, big, len(bands)) > settings.request_limit_bytes:
        raise InputDataError(f"a {big} x {big} px chip of {len(bands)} bands exceeds one computePixels request")

    records = points.to_dict("records")
    todo = [r for r in records
            if not all(_chip_ok(p, s, len(bands), key) for s, p in chip_paths(out_dir, sizes, r["id"]).items())]
    log.info("chips %s: %d points, %d already written, %d to fetch (%s px)", period, len(points),
             len(points) - len(todo), len(todo), ", ".join(map(str, sizes)))

    def one(r: dict) -> float:
        epsg, transform = chip_frame(r["lon"], r["lat"], big, resolution_m)
        bounds = (transform.c, transform.f - big * resolution_m, transform.c + big * resolution_m, transform.f)
        image = build_composite(ee, settings, period, rectangle(ee, bounds, epsg), warn=False)
        request = {"expression": image, "fileFormat": "NUMPY_NDARRAY", "bandIds": bands,
                   "grid": cp.block_grid(epsg, transform, block)}
        label = f"chip {r['id']}"
        data = cp.to_band_array(retrier.call(ee.data.computePixels, request, what=label), bands, block, label)
        for size, path in chip_paths(out_dir, sizes, r["id"]).items():
            off = big // 2 - size // 2
            sub = np.ascontiguousarray(data[:, off:off + size, off:off + size])
            tags = {"POINT_ID": r["id"], "CLASS": r["class"], "LON": f"{r['lon']:.7f}", "LAT": f"{r['lat']:.7f}",
                    "PERIOD": period, "GEE_COMPOSITE_KEY": key, "GEE_DEFINITION": json.dumps(definition, sort_keys=True),
                    "VALID_FRACTION": f"{float(np.all(sub != 0, axis=0).mean()):.4f}"}
            if isinstance(r.get("impact"), str):
                tags["IMPACT"] = r["impact"]
            write_chip(path, sub, epsg, transform @ Affine.translation(off, off), bands, tags)
        return float(np.all(data != 0, axis=0).mean())

    wide = [r["id"] for r in todo if not pd.isna(r.get("side_m", float("nan"))) and r["side_m"] > big * resolution_m]
    if wide:
        log.warning("chips: %d point(s) describe an object wider than the %d px chip (%.0f m), e.g. %s; the chip "
                    "shows its centre part only", len(wide), big, big * resolution_m, ", ".join(wide[:3]))

    failed: list[tuple[str, str]] = []
    low = 0
    with ThreadPoolExecutor(max_workers=max(1, settings.concurrency), thread_name_prefix="ee-chip") as pool:
        futures = {pool.submit(one, r): r["id"] for r in todo}
        for n, fut in enumerate(as_completed(futures), 1):
            try:
                if fut.result() < 0.9:
                    low += 1
            except Exception as exc:
                failed.append((futures[fut], redact(str(exc))[:200]))
            if n % 100 == 0:
                log.info("chips: %d/%d fetched", n, len(todo))
    points_csv = out_dir / "points.csv"
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(points_csv, points.drop(columns=["scheme"]).to_csv(index=False))
    if low:
        log.warning("chips: %d chip(s) are more than 10 %% no data (clouds all period?); `minescan train` "
                    "skips those", low)
    if failed:
        first = "; ".join(f"{pid}: {msg}" for pid, msg in failed[:3])
        raise InputDataError(f"{len(failed)} of {len(todo)} chips could not be fetched ({first}); the other "
                             "chips are written, rerun to fetch the missing ones")
    return {"points": len(points), "fetched": len(todo), "skipped": len(points) - len(todo), "sizes": sizes,
            "points_csv": str(points_csv), "low_valid": low}

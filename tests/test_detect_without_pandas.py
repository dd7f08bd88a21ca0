"""A detect process imports neither pandas nor GeoPandas (issue 19: 0.3-0.4 s of a job): its candidates are a
:class:`minescan.scan.table.Table` written as ``DataFrame.to_csv`` writes them, and its region is read by
:func:`minescan.vector_io.read_lonlat_geometries` as ``read_vector(...).to_crs(4326)`` reads it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import shapely
from conftest import bright_square_fcn, grid_tile, save_test_model, write_scene
from shapely.geometry import box, mapping

from minescan import SENTINEL2_BANDS
from minescan.errors import InputDataError
from minescan.grid import to_crs
from minescan.models.networks import build_impact_cnn
from minescan.models.store import load_model
from minescan.scan.detect import CANDIDATE_COLUMNS, candidates_table, run_detect, with_ratings
from minescan.scan.table import Table
from minescan.sources.local import make_tile
from minescan.vector_io import read_lonlat_geometries, read_region, read_vector

SHARED_VECTORS = Path(__file__).resolve().parents[2] / "shared" / "data" / "vectors"


def _columns():
    return {
        "i": np.array([3, -7, 0, 2**40], dtype=np.int64),
        "text": "21S",  # a scalar: repeated
        "names": ["a,b", 'say "hi"', None, "plain"],  # quoted where CSV needs it; None as an empty field
        "f": np.array([0.1, np.nan, 1e-07, -0.0]),
        "g": np.array([123456.78, 1e16, 5.0, 0.30000000000000004]),
        "f32": np.array([0.1, 2.5, np.nan, 3e-8], dtype=np.float32),
        "objects": np.array(["x", None, np.nan, "y"], dtype=object),  # text as an object array
    }


def _same_csv(table: Table, frame: pd.DataFrame, tmp_path) -> None:
    table.to_csv(tmp_path / "t.csv", index=False)
    frame.to_csv(tmp_path / "p.csv", index=False)
    assert (tmp_path / "t.csv").read_bytes() == (tmp_path / "p.csv").read_bytes()


def test_table_writes_the_bytes_pandas_writes(tmp_path):
    cols = _columns()
    table, frame = Table(cols), pd.DataFrame(cols)
    _same_csv(table, frame, tmp_path)
    _same_csv(table[["g", "i"]], frame[["g", "i"]], tmp_path)  # a column subset, in that order
    _same_csv(table.take([2, 0]), frame.iloc[[2, 0]], tmp_path)
    _same_csv(table.sorted_by("g", "i"), frame.sort_values(["g", "i"]), tmp_path)
    empty = {k: v[:0] if not isinstance(v, str) else v for k, v in cols.items()}
    _same_csv(Table(empty, list(cols)), pd.DataFrame(empty, columns=list(cols)), tmp_path)
    # the ratings the detect job adds, rated or not
    probs = np.array([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7], [0.3, 0.6, 0.1], [1 / 3, 1 / 3, 1 / 3]], np.float32)
    for p in (probs, None):
        _same_csv(with_ratings(table, p), with_ratings(frame, p), tmp_path)
    assert with_ratings(table, None).columns[-1] == "impact" and "impact" not in table.columns  # a copy
    with pytest.raises(ValueError, match="column 'x' has 2 values, the table 4 rows"):
        table["x"] = [1, 2]


def test_candidates_table_as_pandas_sorted_it(tmp_path):
    """The candidates (unsorted cells in, sorted by row then column) give the CSV the pandas version gave."""
    t = grid_tile()
    c0, r0, _, _ = t.core_px()
    kx, ky = range(c0 // 27 + 2, c0 // 27 + 14), range(r0 // 27 + 3, r0 // 27 + 11)  # cells of the core
    rng = np.random.default_rng(4)
    prob = rng.uniform(0, 1, (len(ky), len(kx))).astype(np.float32)
    prob[2, 5] = np.nan
    region = to_crs(box(*t.core_bounds), t.id.epsg, 4326)
    table = candidates_table(prob, kx, ky, t, "NW", region, 0.5)
    assert len(table) > 10 and table.columns == CANDIDATE_COLUMNS
    frame = pd.DataFrame({c: table[c] for c in CANDIDATE_COLUMNS}).sort_values(["cell_y", "cell_x"])
    assert (np.diff(np.asarray(table["cell_y"])) >= 0).all()
    _same_csv(table, frame, tmp_path)


def _geojson(path, geoms, crs=None, **extra):
    d = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"n": i}, "geometry": None if g is None else mapping(g)}
        for i, g in enumerate(geoms)], **extra}
    if crs:
        d["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(d))
    return path


def _same_geometries(path, layer=None):
    got = read_lonlat_geometries(path, layer)
    ref = np.asarray(read_vector(path, layer).to_crs(4326).geometry.values)
    assert len(got) == len(ref)
    for a, b in zip(got, ref, strict=True):
        assert (a is None and b is None) or shapely.to_wkb(a) == shapely.to_wkb(b), (a, b)
    return got


def test_region_geometries_as_geopandas_reads_them(tmp_path):
    lonlat = box(-56.5, -7.2, -56.1, -6.9)
    utm = to_crs(lonlat, 4326, 32721)
    z = shapely.force_3d(utm, 12.5)
    cases = {
        "rfc7946.geojson": _geojson(tmp_path / "a.geojson", [lonlat, None, lonlat.buffer(0.1)]),
        "crs84.geojson": _geojson(tmp_path / "b.geojson", [lonlat], "urn:ogc:def:crs:OGC:1.3:CRS84"),
        "utm.geojson": _geojson(tmp_path / "c.geojson", [utm, z], "urn:ogc:def:crs:EPSG::32721"),
        "epsg.json": _geojson(tmp_path / "d.json", [utm], "EPSG:32721"),
        "other-name.geojson": _geojson(tmp_path / "e.geojson", [utm], "WGS 84 / UTM zone 21S"),  # GDAL reads it
    }
    (tmp_path / "f.geojson").write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": mapping(lonlat)}))
    (tmp_path / "g.geojson").write_text(json.dumps(mapping(lonlat)))  # a bare geometry
    gpkg = tmp_path / "h.gpkg"
    read_vector(cases["utm.geojson"]).to_file(gpkg, layer="zones")
    for path in [*cases.values(), tmp_path / "f.geojson", tmp_path / "g.geojson", gpkg]:
        _same_geometries(path)
    _same_geometries(gpkg, "zones")
    assert read_region(cases["utm.geojson"]).equals_exact(read_region(gpkg), 0)


def test_region_errors_as_before(tmp_path):
    with pytest.raises(InputDataError, match="missing.geojson: region file not found"):
        read_region(tmp_path / "missing.geojson")
    (tmp_path / "bad.geojson").write_text('{"type": "FeatureCollection", "features": [')
    with pytest.raises(InputDataError, match=r"bad.geojson: cannot be read as a region file \("):
        read_region(tmp_path / "bad.geojson")
    _geojson(tmp_path / "empty.geojson", [None])
    with pytest.raises(InputDataError, match="empty.geojson: region file has no geometry"):
        read_region(tmp_path / "empty.geojson")


@pytest.mark.skipif(not SHARED_VECTORS.is_dir(), reason="../shared/data/vectors not present")
def test_real_vectors_as_geopandas_reads_them():
    for path in sorted(SHARED_VECTORS.glob("*.geojson")) + sorted(SHARED_VECTORS.glob("*.gpkg")):
        assert len(_same_geometries(path)) > 0, path


_CLI = """import sys
from minescan.cli import run
code = run(sys.argv[1:])
print(code, 'pandas' in sys.modules, 'geopandas' in sys.modules)
"""


def test_detect_command_imports_neither_pandas_nor_geopandas(tmp_path):
    t = grid_tile()
    c0, r0, _, _ = t.core_px()
    squares = [(c0 + 40, r0 + 60, c0 + 100, r0 + 110), (c0 + 200, r0 + 190, c0 + 260, r0 + 250)]
    make_tile(t, [write_scene(tmp_path / "scene.tif", [t], squares=squares)], list(SENTINEL2_BANDS), tmp_path / "t.tif")
    keras.utils.set_random_seed(5)
    fcn = save_test_model(tmp_path / "bright", "discovery", bright_square_fcn())
    impact = save_test_model(tmp_path / "impact", "impact", build_impact_cnn(12))
    region = to_crs(box(*t.core_bounds), t.id.epsg, 4326)
    _geojson(tmp_path / "region.geojson", [region])
    args = ["detect", "--tile", t.name, "--quadrant", "NW", "--tile-path", str(tmp_path / "t.tif"), "--model", str(fcn),
            "--impact-model", str(impact), "--region", str(tmp_path / "region.geojson"), "--prob-out",
            str(tmp_path / "p.tif"), "--candidates-out", str(tmp_path / "c.csv"), "--tile-px", str(t.grid.tile_px),
            "--halo-px", str(t.grid.halo_px), "--resolution-m", str(t.grid.resolution_m), "--block-cells", "8"]
    r = subprocess.run([sys.executable, "-c", _CLI, *args], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-3:] == ["0", "False", "False"]
    # the same job in this process (pandas loaded): the same bytes, and rated candidates to write
    run_detect(tmp_path / "t.tif", t, "NW", load_model(fcn), read_region(tmp_path / "region.geojson"), 1e-4, None,
               8, tmp_path / "p2.tif", tmp_path / "c2.csv", impact=load_model(impact))
    assert (tmp_path / "c.csv").read_bytes() == (tmp_path / "c2.csv").read_bytes()
    got = pd.read_csv(tmp_path / "c.csv")
    assert len(got) > 0 and got["impact"].isin(["high", "low", "no_ore"]).all() and got["impact_model"].nunique() == 1

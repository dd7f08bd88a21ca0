"""The dual-threshold spatial prior: isolation by the k-th nearest other candidate, on hand-computed cases,
and its effect inside merge (rejected.csv reasons, summary.json counts)."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from conftest import grid_tile, write_classified
from pyproj import Geod
from shapely.geometry import box

from minescan.errors import ConfigError
from minescan.grid import _transformer, cells_in_core, to_crs
from minescan.scan.merge import merge_scan
from minescan.scan.spatial_prior import SpatialPrior, isolated_removals, kth_neighbour_distance_m

UTM21S = 32721


def _lonlat(e, n):
    lon, lat = _transformer(UTM21S, 4326).transform(np.asarray(e, float), np.asarray(n, float))
    return lon, lat


def _candidates(points_m, probs, impacts=None):
    """Candidates at UTM offsets (m) from E 600000, N 9340000 (zone 21S, near the Tapajos)."""
    e = 600_000 + np.array([p[0] for p in points_m], float)
    n = 9_340_000 + np.array([p[1] for p in points_m], float)
    lon, lat = _lonlat(e, n)
    return pd.DataFrame({"lon": lon, "lat": lat, "probability": probs,
                         "impact": impacts or ["high"] * len(probs)})


# Hand-made layout (metres): a 3-cell cluster in a row, a pair 10 km east, a lone cell 5 km north.
CLUSTER = [(0, 0), (270, 0), (540, 0)]
PAIR = [(10_000, 0), (10_270, 0)]
LONE = [(0, 5_000)]


def test_kth_neighbour_distance_by_hand():
    df = _candidates(CLUSTER + PAIR + LONE, [0.7] * 6)
    d1 = kth_neighbour_distance_m(df["lon"], df["lat"], 1)
    d2 = kth_neighbour_distance_m(df["lon"], df["lat"], 2)
    # nearest other: 270 m inside the cluster and the pair, 5 km for the lone cell
    # (UTM distances are true ground distances times the scale factor, 0.99962 here)
    assert d1 == pytest.approx([270, 270, 270, 270, 270, 5000], rel=1e-3)
    # 2nd nearest: 540 for the cluster ends, 270 for its middle; the pair's 2nd neighbour is the cluster's
    # east end (10000 - 540 = 9460 m; 10270 - 540 = 9730 m); the lone cell's is (270, 0): hypot(270, 5000)
    assert d2 == pytest.approx([540, 270, 540, 9460, 9730, math.hypot(270, 5000)], rel=1e-3)


def test_distances_are_geodesic_metres():
    lon = np.array([-56.0, -56.0, -55.95, 120.0, 120.001])
    lat = np.array([-6.0, -5.99, -6.0, 60.0, 60.0])
    d = kth_neighbour_distance_m(lon, lat, 1)
    geod = Geod(ellps="WGS84")
    north = geod.inv(-56.0, -6.0, -56.0, -5.99)[2]
    east = geod.inv(120.0, 60.0, 120.001, 60.0)[2]
    assert d[:2] == pytest.approx([north, north], abs=1e-3)
    assert d[3:] == pytest.approx([east, east], abs=1e-3)


def test_fewer_than_k_others_is_isolated_and_empty_input():
    df = _candidates([(0, 0), (270, 0)], [0.7, 0.7])
    assert np.isinf(kth_neighbour_distance_m(df["lon"], df["lat"], 2)).all()
    assert len(kth_neighbour_distance_m([], [], 2)) == 0
    assert not isolated_removals(df.iloc[:0], SpatialPrior(0.9)).any()


def test_dual_threshold_hand_computed():
    probs = [0.70, 0.70, 0.70,  # cluster: low probability but not isolated -> kept
             0.95, 0.80,  # pair: isolated for k=2 (2nd neighbour ~9.5 km): 0.95 kept, 0.80 removed
             0.85]  # lone: isolated, below 0.9 -> removed
    df = _candidates(CLUSTER + PAIR + LONE, probs)
    removed = isolated_removals(df, SpatialPrior(isolated_threshold=0.9, k=2, km=1.0))
    assert removed.tolist() == [False, False, False, False, True, True]
    # k = 1: the pair keeps each other company; only the lone cell goes
    assert isolated_removals(df, SpatialPrior(0.9, k=1, km=1.0)).tolist() == [False] * 5 + [True]
    # D = 10 km: everyone has two others within 10 km (the lone cell: hypot(270, 5000) = 5.0 km)
    assert not isolated_removals(df, SpatialPrior(0.9, k=2, km=10.0)).any()
    # threshold at or below the isolated probabilities removes nothing; prior off removes nothing
    assert not isolated_removals(df, SpatialPrior(0.8, k=2, km=1.0)).any()
    assert not isolated_removals(df, SpatialPrior(None)).any()
    assert not isolated_removals(df, None).any()


def test_exactly_d_km_still_has_company():
    # three points 1000 m apart along a meridian: the middle one's 2nd neighbour is exactly 1000 m away
    geod = Geod(ellps="WGS84")
    lats = [-6.0]
    for _ in range(2):
        lats.append(geod.fwd(-56.0, lats[-1], 0.0, 1000.0)[1])
    df = pd.DataFrame({"lon": [-56.0] * 3, "lat": lats, "probability": [0.5] * 3})
    assert kth_neighbour_distance_m(df["lon"], df["lat"], 2)[1] == pytest.approx(1000.0, abs=1e-4)
    assert isolated_removals(df, SpatialPrior(0.9, k=2, km=1.0)).tolist() == [True, False, True]
    assert isolated_removals(df, SpatialPrior(0.9, k=2, km=0.999)).tolist() == [True, True, True]


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="merge.isolated_threshold"):
        SpatialPrior(1.5)
    with pytest.raises(ConfigError, match="merge.isolation_k"):
        SpatialPrior(0.9, k=0)
    with pytest.raises(ConfigError, match="merge.isolation_km"):
        SpatialPrior(0.9, km=0)


# ------------------------------------------------------------------------------------------ inside merge


@pytest.fixture
def scan(tmp_path):
    tile = grid_tile()
    kx, ky = cells_in_core(tile.quadrant_core_px("NW"))
    x0, y0 = kx.start + 1, ky.start + 1
    cluster = [(x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)]  # one 2 x 2 site, p 0.7
    lone_high = (x0 + 8, y0 + 8)  # 7 diagonal cells (2.67 km) from the cluster
    lone_no_ore = (x0 + 8, y0)  # 1.89 km from the cluster, 2.16 km from lone_high
    path = write_classified(tmp_path, cluster + [lone_high, lone_no_ore], [0.7, 0.7, 0.7, 0.7, 0.8, 0.75],
                            ["high"] * 5 + ["no_ore"], tile)
    region = to_crs(box(*tile.core_bounds), tile.id.epsg, 4326)
    kw = dict(region_name="t", period="2026Q1", region_lonlat=region, tiles=[tile.name], quadrants=["x"],
              models={}, thresholds={"discovery": 0.6}, resolution_m=10.0)
    return tmp_path, path, kw


def test_merge_removes_isolated_candidates_and_reports_them(scan):
    tmp_path, path, kw = scan
    s = merge_scan([path], tmp_path / "on", prior=SpatialPrior(0.9, k=2, km=1.0), **kw)
    assert s["candidates"] == 6 and s["detections"] == 4 and s["sites"] == 1 and s["rejected_no_ore"] == 0
    sp = s["spatial_prior"]
    assert sp == {"enabled": True, "isolated_threshold": 0.9, "isolation_k": 2, "isolation_km": 1.0,
                  "candidates_removed": 2, "detections_removed": 1, "removed_by_impact": {"high": 1, "no_ore": 1}}
    rej = pd.read_csv(tmp_path / "on" / "rejected.csv")
    assert sorted(zip(rej["reason"], rej["impact"], strict=True)) == [("isolated", "high"), ("isolated", "no_ore")]
    assert json.loads((tmp_path / "on" / "summary.json").read_text())["spatial_prior"] == sp


def test_merge_without_prior_keeps_them(scan):
    tmp_path, path, kw = scan
    s = merge_scan([path], tmp_path / "off", **kw)
    assert s["detections"] == 5 and s["sites"] == 2 and s["rejected_no_ore"] == 1
    assert s["spatial_prior"]["enabled"] is False and s["spatial_prior"]["candidates_removed"] == 0
    assert pd.read_csv(tmp_path / "off" / "rejected.csv")["reason"].tolist() == ["no_ore"]


def test_merge_with_prior_is_byte_identical_on_rerun(scan):
    tmp_path, path, kw = scan
    for out in ("a", "b"):
        merge_scan([path], tmp_path / out, prior=SpatialPrior(0.9), **kw)
    for name in ("detections.csv", "rejected.csv", "sites.gpkg", "summary.json", "detections.kml"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name

"""Change layers between periods, on hand-made site polygons; schedules; the evolving demo scene."""

import datetime as dt
import json
import subprocess
import sys

import geopandas as gpd
import pandas as pd
import pytest
import yaml
from shapely.geometry import box

from minescan import config as cfgmod
from minescan.errors import ConfigError, InputDataError
from minescan.layers.change import (
    compare_sites,
    cumulative_sites,
    run_change,
)
from minescan.periods import expand_schedule, previous_period, scan_periods

EPSG = 32721  # UTM 21S, where the test grid lives
X0, Y0 = 500_000.0, 9_300_000.0
HA = 1e4


def sites(*specs) -> gpd.GeoDataFrame:
    """specs: (site_id, x0, y0, x1, y1) in metres relative to (X0, Y0) -> sites in EPSG:4326 as merge writes."""
    geoms = [box(X0 + a, Y0 + b, X0 + c, Y0 + d) for _, a, b, c, d in specs]
    g = gpd.GeoDataFrame({"site_id": [s[0] for s in specs], "area_ha": [round(p.area / HA, 4) for p in geoms],
                          "impact": "high", "zone": "21S"}, geometry=geoms, crs=EPSG)
    return g.to_crs(4326)


def by_status(layer):
    return {s: sorted(layer.loc[layer["status"] == s, "site_id" if s != "vanished" else "previous_site_id"])
            for s in sorted(set(layer["status"]))}


PREV = sites(
    ("grows", 0, 0, 1000, 1000),          # 100 ha -> 150 ha
    ("shrinks", 3000, 0, 4000, 1000),     # 100 ha -> 50 ha
    ("stays", 6000, 0, 7000, 1000),       # 100 ha, same
    ("goes", 9000, 0, 10000, 1000),       # vanishes
    ("left", 12000, 0, 12500, 500),       # merges with 'right' into one site
    ("right", 12500, 0, 13000, 500),
)
CURR = sites(
    ("grows-new-id", 0, -500, 1000, 1000),  # its id moved with its north-west corner: matched by geometry
    ("shrinks", 3000, 0, 4000, 500),
    ("stays", 6000, 0, 7000, 1000),
    ("merged", 12000, 0, 13000, 600),
    ("fresh", 20000, 0, 20500, 500),      # new
)


def test_change_classifies_new_grown_shrunk_unchanged_vanished_with_area_differences():
    layer = compare_sites(PREV, CURR, min_overlap=0.1, min_growth=0.1)
    assert by_status(layer) == {"new": ["fresh"], "grown": ["grows-new-id", "merged"], "shrunk": ["shrinks"],
                                "unchanged": ["stays"], "vanished": ["goes"]}
    row = layer.set_index("site_id").loc["grows-new-id"]
    assert row["previous_site_id"] == "grows" and row["area_ha"] == 150 and row["previous_area_ha"] == 100
    assert row["area_change_ha"] == 50 and row["area_change_pct"] == 50
    merged = layer.set_index("site_id").loc["merged"]
    assert merged["previous_site_id"] == "left,right" and merged["n_previous_sites"] == 2
    assert merged["area_change_ha"] == pytest.approx(60 - 50)
    assert layer.set_index("site_id").loc["shrinks", "area_change_ha"] == -50
    vanished = layer[layer["status"] == "vanished"].iloc[0]
    assert vanished["area_ha"] == 0 and vanished["area_change_ha"] == -100 and vanished["site_id"] == ""
    new = layer.set_index("site_id").loc["fresh"]
    assert new["previous_area_ha"] == 0 and new["area_change_ha"] == 25 and pd.isna(new["area_change_pct"])
    # geometry: the current polygon (the previous one for a vanished site), in lon/lat
    assert layer.crs.to_epsg() == 4326
    goes = PREV.set_index("site_id").loc["goes", "geometry"]
    assert vanished.geometry.symmetric_difference(goes).area < 1e-12
    # totals balance: sum of changes = current total - previous total
    assert layer["area_change_ha"].sum() == pytest.approx(CURR["area_ha"].sum() - PREV["area_ha"].sum())


def test_growth_threshold_and_overlap_threshold():
    prev = sites(("a", 0, 0, 1000, 1000))
    slightly = sites(("a", 0, 0, 1000, 1050))  # +5 %
    assert by_status(compare_sites(prev, slightly, min_growth=0.1)) == {"unchanged": ["a"]}
    assert by_status(compare_sites(prev, slightly, min_growth=0.04)) == {"grown": ["a"]}
    # a new pit that only grazes an old one (4 % of the smaller) is a different site at min_overlap 0.1
    graze = sites(("b", 960, 0, 1960, 1000))
    assert by_status(compare_sites(prev, graze, min_overlap=0.1)) == {"new": ["b"], "vanished": ["a"]}
    assert by_status(compare_sites(prev, graze, min_overlap=0.01)) == {"unchanged": ["b"]}
    # sharing only an edge is no overlap, whatever the threshold
    touching = sites(("c", 1000, 0, 2000, 1000))
    assert by_status(compare_sites(prev, touching, min_overlap=1e-9)) == {"new": ["c"], "vanished": ["a"]}


def test_empty_periods():
    empty = sites()
    assert by_status(compare_sites(empty, CURR)) == {"new": sorted(CURR["site_id"])}
    assert by_status(compare_sites(PREV, empty)) == {"vanished": sorted(PREV["site_id"])}
    assert len(compare_sites(empty, empty)) == 0


def test_cumulative_follows_sites_across_periods():
    p1 = sites(("a", 0, 0, 1000, 1000), ("b", 3000, 0, 4000, 1000), ("c", 6000, 0, 7000, 1000))
    p2 = sites(("a2", 0, -1000, 1000, 1000),                         # a grows
               ("d", 9000, 0, 9500, 500))                           # d opens; b and c missed this period
    p3 = sites(("a3", 0, -1000, 1000, 1000), ("c", 6000, 0, 7000, 1000),  # c seen again
               ("e", 12000, 0, 12500, 500))                         # e opens; d closed again
    cum = cumulative_sites([("2026Q1", p1), ("2026Q2", p2), ("2026Q3", p3)], min_growth=0.1).set_index("track_id")
    assert sorted(cum.index) == ["2026Q1:a", "2026Q1:b", "2026Q1:c", "2026Q2:d", "2026Q3:e"]
    a = cum.loc["2026Q1:a"]
    assert (a["status"], a["site_id"], a["first_seen"], a["last_seen"], a["n_periods"]) == \
        ("grown", "a3", "2026Q1", "2026Q3", 3)
    assert (a["base_area_ha"], a["area_ha"], a["area_change_ha"], a["max_area_ha"]) == (100, 200, 100, 200)
    assert a["footprint_ha"] == pytest.approx(200, rel=1e-3)
    assert cum.loc["2026Q1:b", "status"] == "vanished" and cum.loc["2026Q1:b", "last_seen"] == "2026Q1"
    c = cum.loc["2026Q1:c"]
    assert (c["status"], c["periods"], c["area_change_ha"]) == ("unchanged", "2026Q1,2026Q3", 0)
    d = cum.loc["2026Q2:d"]
    assert (d["status"], d["periods"], d["base_area_ha"], d["area_ha"]) == ("vanished", "2026Q2", 0, 0)
    e = cum.loc["2026Q3:e"]
    assert (e["status"], e["area_change_ha"], e["first_seen"]) == ("new", 25, "2026Q3")


def test_run_change_writes_gpkg_csv_kml_json_deterministically(tmp_path):
    paths = []
    for period, frame in (("2026Q1", PREV), ("2026Q2", CURR)):
        p = tmp_path / period / "sites.gpkg"
        p.parent.mkdir()
        frame.to_file(p, layer="sites")
        paths.append(p)
    out1, out2 = tmp_path / "a", tmp_path / "b"
    s = run_change(region_name="r", periods=["2026Q1", "2026Q2"], history=paths, outdir=out1)
    run_change(region_name="r", periods=["2026Q1", "2026Q2"], history=paths, outdir=out2)
    names = ["change.gpkg", "change.csv", "change.kml", "cumulative.gpkg", "cumulative.csv", "cumulative.kml",
             "change.json"]
    for n in names:
        assert (out1 / n).read_bytes() == (out2 / n).read_bytes(), f"{n} differs between two runs"
    assert {k: v["count"] for k, v in s["change"].items()} == \
        {"new": 1, "grown": 2, "shrunk": 1, "unchanged": 1, "vanished": 1}
    assert s["change"]["vanished"]["area_change_ha"] == -100
    assert json.loads((out1 / "change.json").read_text())["previous_period"] == "2026Q1"
    csv = pd.read_csv(out1 / "change.csv")
    assert list(csv["status"]) == ["new", "grown", "grown", "shrunk", "unchanged", "vanished"]
    gpkg = gpd.read_file(out1 / "change.gpkg")
    assert len(gpkg) == 6 and gpkg.crs.to_epsg() == 4326
    kml = (out1 / "change.kml").read_text()
    assert kml.count("<Placemark>") == 6 and kml.count("<Polygon>") == 6 and "#vanished" in kml
    with pytest.raises(InputDataError, match="oldest first"):
        run_change(region_name="r", periods=["2026Q2", "2026Q1"], history=paths, outdir=tmp_path / "c")


def test_schedule_expands_into_periods():
    assert expand_schedule({"every": "quarter", "from": "2025Q3", "to": "2026Q2"}) == \
        ["2025Q3", "2025Q4", "2026Q1", "2026Q2"]
    assert expand_schedule({"every": "year", "from": "2023", "to": "2025"}) == ["2023", "2024", "2025"]
    # to: null = every period over on the day of the run
    q = {"every": "quarter", "from": "2026Q1", "to": None}
    assert expand_schedule(q, dt.date(2026, 7, 1)) == ["2026Q1", "2026Q2"]
    assert expand_schedule(q, dt.date(2026, 6, 30)) == ["2026Q1"]
    assert expand_schedule(q, dt.date(2027, 1, 2)) == ["2026Q1", "2026Q2", "2026Q3", "2026Q4"]
    assert expand_schedule(q, dt.date(2026, 3, 31)) == []
    assert expand_schedule({"every": "year", "from": "2024", "to": None}, dt.date(2026, 2, 1)) == ["2024", "2025"]
    with pytest.raises(ConfigError, match="schedule.from"):
        expand_schedule({"every": "quarter", "from": "2026", "to": "2026Q4"})
    cfg = cfgmod.validate({"region": {"name": "x", "file": "r"}, "periods": ["2026Q4", "2025"],
                           "schedule": {"every": "quarter", "from": "2026Q1", "to": "2026Q2"}})
    assert scan_periods(cfg) == ["2025", "2026Q1", "2026Q2", "2026Q4"]
    assert previous_period(scan_periods(cfg), "2026Q4") == "2026Q2"
    with pytest.raises(ConfigError, match="no period to scan"):
        scan_periods(cfgmod.validate({"region": {"name": "x", "file": "r"},
                                      "schedule": {"every": "quarter", "from": "2026Q1"}}, today=dt.date(2026, 2, 1)))
    with pytest.raises(ConfigError, match="schedule"):
        cfgmod.validate({"region": {"name": "x", "file": "r"}, "schedule": {"every": "month", "from": "2026Q1"}})


def test_periods_command_prints_the_schedule(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"region": {"name": "x", "file": "r.geojson"},
                                   "schedule": {"every": "quarter", "from": "2025Q4", "to": "2026Q2"}}))
    r = subprocess.run([sys.executable, "-m", "minescan.cli", "periods", "--config", str(cfg)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["2025Q4", "2026Q1", "2026Q2"]


def test_demo_scene_evolves_with_the_period_and_keeps_the_first():
    from minescan.sources.demo import demo_steps, simulate_scene

    assert [demo_steps(p) for p in ("", "2025", "2025Q4", "2026Q1", "2026Q2", "2026", "2027Q1")] == \
        [0, 0, 0, 0, 1, 3, 4]
    bounds = (500_000.0, 9_300_000.0, 512_000.0, 9_312_000.0)
    args = (bounds, EPSG, 20.0, 11, 0.08)
    base = simulate_scene(*args)
    q1, q2, q3 = (simulate_scene(*args, period=p) for p in ("2026Q1", "2026Q2", "2026Q3"))
    assert (q1.data == base.data).all() and list(q1.truth["site"]) == list(base.truth["site"])
    again = simulate_scene(*args, period="2026Q3")
    assert (again.data == q3.data).all() and again.truth.geometry.equals(q3.truth.geometry)
    mines = [set(s.truth.loc[s.truth["class"] == "mine", "site"]) for s in (q1, q2, q3)]
    assert mines[1] - mines[0] and mines[0] - mines[1], "a quarter opens and closes mines"
    opened_q2 = mines[1] - mines[0]
    assert opened_q2 <= mines[2], "a mine opened in 2026Q2 is still there in 2026Q3"
    assert mines[2] != mines[1]
    # a grown mine keeps its id and covers more ground; confusers never change
    t1, t2 = q1.truth.set_index("site").to_crs(EPSG), q2.truth.set_index("site").to_crs(EPSG)
    both = sorted(mines[0] & mines[1])
    grown = [s for s in both if t2.loc[s].geometry.area > 1.05 * t1.loc[s].geometry.area]
    assert grown and all(t2.loc[s].geometry.contains(t1.loc[s].geometry.buffer(-1)) for s in grown)
    conf = q1.truth.loc[q1.truth["class"] != "mine", "site"]
    assert t2.loc[conf].geometry.geom_equals(t1.loc[conf].geometry).all()
    assert (q2.data != q1.data).any()

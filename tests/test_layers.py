"""Registry cross-check and overlays on small hand-made vectors (inside / outside / on the boundary, every
layer in another CRS), the layers stage outputs, the CLI, the SIMULATED demo layers, and the real shared
vectors (skipped when ../shared is absent)."""

import json
import xml.etree.ElementTree as ET

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from conftest import SHARED
from shapely.geometry import Point, box

from minescan.cli import main
from minescan.errors import ConfigError, InputDataError
from minescan.layers.overlays import (
    annotate_sites,
    cross_check,
    load_layer,
    reference_files,
    resolved_settings,
    run_layers,
)

UTM21S, SIRGAS_UTM21S, SIRGAS = 32721, 31981, 4674
E0, N0 = 600_000.0, 9_340_000.0  # near the Tapajos, UTM zone 21S
VECTORS = SHARED / "data" / "vectors"


def sq(x0, y0, x1, y1):
    return box(E0 + x0, N0 + y0, E0 + x1, N0 + y1)


# sites (metres from E0, N0): S1 inside concession P1; S2 shares an edge with concession P2; S3 200 m from a
# registered dam (a point); S4 2.5 km from P1; S5 straddles the West/East admin boundary at x = 600.
SITES = {"S1": (sq(0, 0, 270, 270), 0.99, "high"), "S2": (sq(1000, 0, 1270, 270), 0.80, "low"),
         "S3": (sq(5000, 0, 5270, 270), 0.95, "high"), "S4": (sq(0, 3000, 270, 3270), 0.90, "low"),
         "S5": (sq(500, 1500, 770, 1770), 0.90, "high")}


def make_sites() -> gpd.GeoDataFrame:
    rows = []
    for sid, (g, p, impact) in SITES.items():
        c = gpd.GeoSeries([g.centroid], crs=UTM21S).to_crs(4326).iloc[0]
        rows.append({"site_id": sid, "n_cells": 1, "area_ha": round(g.area / 1e4, 4), "max_probability": p,
                     "mean_probability": p, "impact": impact, "zone": "21S", "lon": round(c.x, 7),
                     "lat": round(c.y, 7), "tiles": "21S-E059-N0911", "geometry": g})
    return gpd.GeoDataFrame(rows, geometry="geometry", crs=UTM21S).to_crs(4326)


@pytest.fixture
def vectors(tmp_path):
    d = tmp_path / "vectors"
    d.mkdir()
    make_sites().to_file(d / "sites.gpkg", layer="sites")
    # concessions in UTM (EPSG:32721), in a named layer of a two-layer GeoPackage
    gpd.GeoDataFrame({"processo": ["850.001/2020", "850.002/2021"], "titular": ["Mina Um", "Mina Dois"]},
                     geometry=[sq(0, 0, 500, 500), sq(1270, 0, 1500, 270)], crs=UTM21S
                     ).to_file(d / "registry.gpkg", layer="concessions")
    gpd.GeoDataFrame({"x": [1]}, geometry=[sq(90_000, 0, 90_100, 100)], crs=UTM21S
                     ).to_file(d / "registry.gpkg", layer="other")
    # a registered dam: a point 200 m east of S3, in SIRGAS 2000 geographic (EPSG:4674), as GeoJSON
    dam = gpd.GeoSeries([Point(E0 + 5270 + 200, N0 + 135)], crs=UTM21S).to_crs(SIRGAS)
    gpd.GeoDataFrame({"dam": ["BARR-9"], "nome": ["Barragem Nove"]}, geometry=dam, crs=SIRGAS
                     ).to_file(d / "dams.geojson", driver="GeoJSON")
    # protected areas in SIRGAS 2000 / UTM 21S: Terra A covers the west half of S1; Parque B only touches S2
    gpd.GeoDataFrame({"nome": ["Terra A", "Parque B"]},
                     geometry=[sq(-100, -100, 135, 400), sq(1270, 0, 2000, 270)], crs=SIRGAS_UTM21S
                     ).to_file(d / "protected.gpkg")
    # admin units in EPSG:4326, split at x = 600
    gpd.GeoDataFrame({"municipio": ["West", "East"]},
                     geometry=[sq(-1000, -1000, 600, 4000), sq(600, -1000, 6000, 4000)], crs=UTM21S
                     ).to_crs(4326).to_file(d / "admin.geojson", driver="GeoJSON")
    settings = {
        "registry": [{"file": str(d / "registry.gpkg"), "layer": "concessions", "label": "concessions",
                      "id_column": "processo", "name_column": "titular"},
                     {"file": str(d / "dams.geojson"), "label": "dams", "id_column": "dam",
                      "name_column": "nome"}],
        "match_distance_m": 250, "search_distance_m": 50_000,
        "overlays": [{"file": str(d / "protected.gpkg"), "name_column": "nome", "kind": "protected"}],
        "admin": {"file": str(d / "admin.geojson"), "name_column": "municipio"},
    }
    region = gpd.GeoSeries([sq(-200, -200, 6000, 3500)], crs=UTM21S).to_crs(4326).iloc[0]
    return d, settings, region


def _layers(settings):
    reg = [load_layer(e, "registry", {}) for e in settings["registry"]]
    ov = [load_layer(e, "overlay", {}) for e in settings["overlays"]]
    return reg, ov, load_layer(settings["admin"], "admin", {})


def test_cross_check_inside_boundary_near_and_far(vectors):
    _, settings, _ = vectors
    reg, _, _ = _layers(settings)
    sites = make_sites()
    out = cross_check(sites, reg, match_distance_m=250).set_index(sites["site_id"])
    assert out.loc["S1"].tolist() == ["yes", "concessions", "850.001/2020", "Mina Um", 0.0]  # inside
    assert out.loc["S2"].tolist() == ["yes", "concessions", "850.002/2021", "Mina Dois", 0.0]  # shared edge
    assert out.loc["S3", "registered"] == "yes" and out.loc["S3", "registry_id"] == "BARR-9"
    assert out.loc["S3", "registry_distance_m"] == pytest.approx(200.0, abs=0.1)  # point in EPSG:4674
    assert out.loc["S4"].tolist() == ["no", "concessions", "850.001/2020", "Mina Um", 2500.0]  # 3000 - 500
    assert out.loc["S5", "registered"] == "no"
    assert out.loc["S5", "registry_distance_m"] == pytest.approx(1000.0, abs=0.1)  # 1500 - 500 to P1
    # a stricter match distance turns the dam 200 m away into a near miss, still reported as nearest
    strict = cross_check(sites, reg, match_distance_m=150).set_index(sites["site_id"])
    assert strict.loc["S3", "registered"] == "no" and strict.loc["S3", "registry_id"] == "BARR-9"
    # exactly at the match distance counts as registered
    assert cross_check(sites, reg, 200.0).set_index(sites["site_id"]).loc["S3", "registered"] == "yes"
    # beyond the search distance nothing is reported
    far = cross_check(sites, reg, 250, search_distance_m=100).set_index(sites["site_id"])
    assert far.loc["S4", "registry_id"] == "" and np.isnan(far.loc["S4", "registry_distance_m"])


def test_no_registry_means_unchecked(vectors):
    out = cross_check(make_sites(), [], 250)
    assert set(out["registered"]) == {"unchecked"}


def test_overlays_share_area_not_edges_and_admin_splits_straddlers(vectors):
    _, settings, region = vectors
    reg, ov, admin = _layers(settings)
    sites, areas, admin_rows = annotate_sites(make_sites(), reg, ov, admin, 250, 50_000, region)
    s = sites.set_index("site_id")
    assert s.loc["S1", "areas"] == "Terra A (protected)" and s.loc["S1", "in_protected_area"] == "yes"
    assert s.loc["S2", "areas"] == "" and s.loc["S2", "in_protected_area"] == "no"  # edge only
    assert s.loc["S5", "admin"] == "East; West"  # 170 m east, 100 m west: largest share first
    assert s.loc["S1", "admin"] == "West" and s.loc["S3", "admin"] == "East"
    by_name = {r["name"]: r for r in areas}
    assert by_name["Terra A"]["sites"] == 1
    assert by_name["Terra A"]["mined_area_ha"] == pytest.approx(135 * 270 / 1e4, abs=1e-3)
    assert by_name["Terra A"]["unregistered_sites"] == 0
    # Parque B meets the region, so it is listed, with nothing mined in it
    assert by_name["Parque B"]["sites"] == 0 and by_name["Parque B"]["mined_area_ha"] == 0
    adm = {r["name"]: r for r in admin_rows}
    assert adm["West"]["mined_area_ha"] == pytest.approx((2 * 7.29) + 100 * 270 / 1e4, abs=1e-3)
    assert adm["East"]["mined_area_ha"] == pytest.approx((2 * 7.29) + 170 * 270 / 1e4, abs=1e-3)
    assert adm["West"]["mined_area_ha"] + adm["East"]["mined_area_ha"] == pytest.approx(5 * 7.29, abs=1e-3)
    assert adm["West"]["unregistered_sites"] == 2 and adm["East"]["unregistered_sites"] == 1  # S4, S5 | S5


def test_run_layers_outputs_sorted_and_byte_identical(vectors, tmp_path):
    d, settings, region = vectors
    s = run_layers(d / "sites.gpkg", tmp_path / "a", {**settings, "match_distance_m": 150},
                   region_name="t", period="2026Q1", region_lonlat=region)
    run_layers(d / "sites.gpkg", tmp_path / "b", {**settings, "match_distance_m": 150},
               region_name="t", period="2026Q1", region_lonlat=region)
    names = ["sites_annotated.gpkg", "sites_annotated.csv", "unregistered.csv", "unregistered.kml",
             "unregistered.gpkg", "areas.csv", "layers.json"]
    for n in names:
        assert (tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes(), n
    unreg = pd.read_csv(tmp_path / "a" / "unregistered.csv")
    # S3 (0.95), then S4 and S5 (both 0.90, same area: by site id)
    assert unreg["site_id"].tolist() == ["S3", "S4", "S5"]
    gpkg = gpd.read_file(tmp_path / "a" / "unregistered.gpkg")
    assert gpkg["site_id"].tolist() == ["S3", "S4", "S5"] and gpkg.crs.to_epsg() == 4326
    ns = {"k": "http://www.opengis.net/kml/2.2"}
    marks = ET.parse(tmp_path / "a" / "unregistered.kml").getroot().findall(".//k:Placemark", ns)
    assert [m.find("k:name", ns).text for m in marks] == ["S3", "S4", "S5"]
    assert marks[0].find(".//k:Polygon", ns) is not None and "BARR-9" in marks[0].find("k:description", ns).text
    j = json.loads((tmp_path / "a" / "layers.json").read_text())
    assert j["registry"]["registered_sites"] == 2 and j["registry"]["unregistered_sites"] == 3
    assert j["registry"]["unregistered_by_impact"] == {"high": 2, "low": 1}
    assert j["overlays"]["sites_in_areas"] == 1 and j == s
    areas = pd.read_csv(tmp_path / "a" / "areas.csv")
    assert areas["kind"].tolist() == ["protected", "protected", "admin", "admin"]


def test_segmented_scan_measures_areas_on_the_extents(vectors, tmp_path):
    """A segmented scan's sites.gpkg (layer site_extents): hectares per area, the registered/unregistered
    hectares and area_basis come from the segmented extents; a site with nothing segmented keeps its cells."""
    d, settings, region = vectors
    sites = make_sites()
    seg = {"S1": sq(0, 0, 100, 270), "S5": sq(550, 1500, 650, 1770)}  # S1: 100 m inside Terra A; S5 straddles
    sites.insert(3, "area_ha_segmented", [round(seg[s].area / 1e4, 4) if s in seg else 0.0
                                          for s in sites["site_id"]])
    extents = gpd.GeoDataFrame({"site_id": list(seg), "area_ha_segmented": [2.7, 2.7]},
                               geometry=list(seg.values()), crs=UTM21S).to_crs(4326)
    path = tmp_path / "sites.gpkg"
    sites.to_file(path, layer="sites")
    extents.to_file(path, layer="site_extents")
    s = run_layers(path, tmp_path / "out", {**settings, "match_distance_m": 150}, region_name="t",
                   period="2026Q1", region_lonlat=region)
    assert s["area_basis"] == "segmented"
    ann = pd.read_csv(tmp_path / "out" / "sites_annotated.csv").set_index("site_id")
    assert ann["area_basis"].to_dict() == {"S1": "segmented", "S2": "cells", "S3": "cells", "S4": "cells",
                                           "S5": "segmented"}
    assert ann.loc["S1", "area_ha_reported"] == pytest.approx(2.7) and ann.loc["S2", "area_ha_reported"] == 7.29
    by_name = {r["name"]: r for r in s["areas"]}
    assert by_name["Terra A"]["mined_area_ha"] == pytest.approx(100 * 270 / 1e4, abs=1e-3)  # cells: 135 m
    adm = {r["name"]: r for r in s["admin"]["units"]}
    assert adm["West"]["mined_area_ha"] == pytest.approx(2.7 + 7.29 + 50 * 270 / 1e4, abs=1e-3)  # S1 S4 S5
    assert adm["East"]["mined_area_ha"] == pytest.approx(7.29 * 2 + 50 * 270 / 1e4, abs=1e-3)  # S2 S3 S5
    # unregistered at 150 m: S3 (cells 7.29), S4 (cells 7.29), S5 (segmented 2.7)
    assert s["registry"]["unregistered_area_ha"] == pytest.approx(7.29 * 2 + 2.7, abs=1e-3)
    assert s["site_area_ha"] == pytest.approx(5 * 7.29) and s["site_area_ha_reported"] == pytest.approx(
        2.7 * 2 + 7.29 * 3, abs=1e-3)
    # without the extents layer: everything on cells, as before
    plain = run_layers(d / "sites.gpkg", tmp_path / "plain", settings, region_name="t", period="2026Q1",
                       region_lonlat=region)
    assert plain["area_basis"] == "cells" and plain["site_area_ha_reported"] == plain["site_area_ha"]
    assert "area_basis" not in pd.read_csv(tmp_path / "plain" / "sites_annotated.csv").columns


def test_layer_errors_name_the_file_and_column(vectors):
    d, settings, _ = vectors
    with pytest.raises(InputDataError, match="no column 'nope'"):
        load_layer({"file": str(d / "dams.geojson"), "id_column": "nope"}, "registry", {})
    with pytest.raises(InputDataError, match="holds no polygon"):
        load_layer({"file": str(d / "dams.geojson")}, "overlay", {})
    with pytest.raises(InputDataError, match="not found"):
        load_layer({"file": str(d / "missing.gpkg")}, "registry", {})


def test_placeholders_and_reference_files():
    cfg = {"results_dir": "out", "layers": {
        "registry": [{"file": "{results_dir}/{region}/{period}/reg.gpkg"}], "overlays": [{"file": "ti.geojson"}],
        "admin": {"file": "adm.gpkg"}}}
    assert reference_files(cfg, "br", "2026Q1") == ["adm.gpkg", "out/br/2026Q1/reg.gpkg", "ti.geojson"]
    assert json.loads(resolved_settings(cfg, "br", "2026"))["registry"][0]["file"] == "out/br/2026/reg.gpkg"
    with pytest.raises(ConfigError, match="placeholder"):
        reference_files({"layers": {"registry": [{"file": "{tile}.gpkg"}]}}, "br", "2026")


def test_cli_layers(vectors, tmp_path, capsys):
    d, settings, _ = vectors
    main_args = ["layers", "--sites", str(d / "sites.gpkg"), "--outdir", str(tmp_path / "cli"),
                 "--settings", json.dumps(settings), "--region-name", "t", "--period", "2026Q1"]
    with pytest.raises(SystemExit) as e:
        main(main_args)
    assert e.value.code == 0 and "3 registered, 2 unregistered" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(main_args[:5] + ["--settings", json.dumps({**settings, "match_distance_m": -1})])
    assert e.value.code == 2 and "layers.match_distance_m" in capsys.readouterr().err


def test_demo_reference_layers_are_drawn_from_the_truth():
    from minescan.sources.demo_layers import simulate_reference_layers

    region = box(-56.05, -6.07, -55.88, -5.89)
    pts = [(-56.0 + 0.01 * i, -6.0 + 0.005 * i) for i in range(6)]
    truth = gpd.GeoDataFrame({"site": [f"demo-{i:03d}" for i in range(6)],
                              "class": ["mine", "mine", "confuser", "mine", "mine", "confuser"],
                              "kind": ["sand_pit", "open_pit_tailings", "reservoir", "clay_pit", "sand_pit",
                                       "river_bank"], "impact": ["low", "high", "no_ore", "low", "low", "no_ore"]},
                             geometry=[Point(p).buffer(0.002) for p in pts], crs=4326)
    layers = simulate_reference_layers(truth, region)
    conc = layers["concessions"]
    assert conc.crs.to_epsg() == 4674 and (conc["holder"].str.endswith("(SIMULATED)")).all()
    mines = truth[truth["class"] == "mine"].to_crs(4674)
    covered = [bool(conc.contains(g).any()) for g in mines.geometry]
    assert covered == [True, False, True, False]  # every other mine has a concession
    assert len(layers["dams"]) == 1  # the one reservoir
    assert layers["admin"].union_all().contains(region.buffer(-1e-6).envelope.buffer(-1e-3))
    again = simulate_reference_layers(truth, region)
    assert all(again[k].geometry.geom_equals(layers[k].geometry).all() for k in layers)


@pytest.mark.skipif(not (VECTORS / "amw_mining_2024_simplified.geojson").exists(),
                    reason="shared vectors not found (../shared/data/vectors)")
def test_real_known_mines_and_indigenous_land():
    amw = gpd.read_file(VECTORS / "amw_mining_2024_simplified.geojson")
    ti = gpd.read_file(VECTORS / "yanomami_and_munduruku.geojson")
    mine_pt = amw.geometry.iloc[0].representative_point()
    mund_pt = ti.loc[ti["name"] == "Munduruku"].geometry.iloc[0].representative_point()
    rows = []
    for sid, pt in (("at-a-known-mine", mine_pt), ("in-munduruku", mund_pt), ("open-sea", Point(-30.0, -10.0))):
        zone = int((pt.x + 180) // 6) + 1
        epsg = 32700 + zone
        c = gpd.GeoSeries([pt], crs=4326).to_crs(epsg).iloc[0]
        g = gpd.GeoSeries([box(c.x - 135, c.y - 135, c.x + 135, c.y + 135)], crs=epsg).to_crs(4326).iloc[0]
        rows.append({"site_id": sid, "area_ha": 7.29, "impact": "high", "max_probability": 0.9,
                     "zone": f"{zone}S", "geometry": g})
    sites = gpd.GeoDataFrame(rows, geometry="geometry", crs=4326)
    reg = [load_layer({"file": str(VECTORS / "amw_mining_2024_simplified.geojson"), "label": "AMW 2024"},
                      "registry", {})]
    ov = [load_layer({"file": str(VECTORS / "yanomami_and_munduruku.geojson"), "name_column": "name",
                      "kind": "indigenous"}, "overlay", {})]
    out, areas, _ = annotate_sites(sites, reg, ov, None, 500, 50_000)
    s = out.set_index("site_id")
    assert s.loc["at-a-known-mine", "registered"] == "yes"
    assert s.loc["at-a-known-mine", "registry_distance_m"] == 0 and s.loc["at-a-known-mine", "registry_id"] == "1"
    assert s.loc["in-munduruku", "areas"] == "Munduruku (indigenous)"
    assert s.loc["open-sea", "registered"] == "no" and s.loc["open-sea", "registry_id"] == ""
    assert {r["name"]: r["sites"] for r in areas} == {"Munduruku": 1}

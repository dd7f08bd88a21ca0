"""map.html: self-contained (no CDN), deterministic, evidence in the popups, and it really loads: headless
Chromium opens it from a file with the network unused, logs no console error, and shows one marker per site.
A map built from hostile attributes (markup and script in names, labels, ids, the title) runs none of it.

Without Chromium the browser tests are skipped, except in CI (environment CI set), where they fail."""

import base64
import io
import json
import os
import re

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import grid_tile, write_scene
from headless_chromium import find_chromium, inspect_page
from PIL import Image

from minescan.grid import cell_polygon, cells_in_core, to_crs
from minescan.layers.overlays import RefLayer
from minescan.layers.webmap import (
    build_map,
    leaflet_assets,
    map_stats,
    probability_overlay,
    site_thumbnail,
    write_map,
)

CHROMIUM = find_chromium()


@pytest.fixture
def chromium():
    """The Chromium executable; the test is skipped without it, or fails in CI (CI set)."""
    if CHROMIUM is None:
        why = "headless Chromium not installed (Debian: apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{why}; CI is set, so the browser tests must run")
        pytest.skip(why)
    return CHROMIUM


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """One tile (RGB noise + bright squares), a probability COG, three sites, a registry, an overlay."""
    d = tmp_path_factory.mktemp("map")
    tile = grid_tile()
    c0, r0, _, _ = tile.core_px()
    (d / "tiles").mkdir()
    tif = write_scene(d / "tiles" / f"{tile.name}.tif", [tile], squares=[(c0 + 60, r0 + 60, c0 + 120, r0 + 120)],
                      noise_seed=1, margin_px=0)
    kx, ky = cells_in_core(tile.quadrant_core_px("NW"))
    cells = {"A": [(kx.start + 2, ky.start + 2), (kx.start + 3, ky.start + 2)],
             "B": [(kx.start + 8, ky.start + 8)], "C": [(kx.start + 5, ky.start + 10)]}
    rows = []
    for sid, cs in cells.items():
        from shapely.ops import unary_union

        g = unary_union([cell_polygon(x, y, 10.0) for x, y in cs])
        gl = to_crs(g, tile.id.epsg, 4326)
        rows.append({"site_id": f"21S-{sid}", "n_cells": len(cs), "area_ha": 7.29 * len(cs),
                     "max_probability": 0.9, "mean_probability": 0.8, "impact": "high" if sid != "B" else "low",
                     "zone": "21S", "lon": gl.centroid.x, "lat": gl.centroid.y, "tiles": tile.name,
                     "registered": "yes" if sid == "A" else "no", "registry_layer": "concessions",
                     "registry_id": "850.001/2020", "registry_name": "Mina <Um> & Cia", "registry_distance_m": 0.0
                     if sid == "A" else 812.5, "areas": "Terra A (indigenous)" if sid == "C" else "",
                     "in_protected_area": "yes" if sid == "C" else "no", "admin": "West", "geometry": gl})
    sites = gpd.GeoDataFrame(rows, geometry="geometry", crs=4326)
    # probability raster on the 270 m cells of the NW quadrant, NaN in its first row
    prob = np.linspace(0, 1, len(kx) * len(ky), dtype=np.float32).reshape(len(ky), len(kx))
    prob[0, :] = np.nan
    ppath = d / "probability.tif"
    with rasterio.open(ppath, "w", driver="GTiff", width=len(kx), height=len(ky), count=1, dtype="float32",
                       crs=tile.crs, nodata=np.nan,
                       transform=Affine(270, 0, kx.start * 270, 0, -270, -ky.start * 270)) as dst:
        dst.write(prob, 1)
    region = to_crs(tile.quadrant_polygon("NW"), tile.id.epsg, 4326)
    conc = gpd.GeoDataFrame({"ref_id": ["850.001/2020"], "ref_name": ["Mina Um"]},
                            geometry=[sites.geometry.iloc[0].buffer(0.001)], crs=4326)
    ti = gpd.GeoDataFrame({"ref_id": ["1"], "ref_name": ["Terra A"]},
                          geometry=[sites.geometry.iloc[2].buffer(0.003)], crs=4326)
    kw = dict(title="test scan", region_lonlat=region, tile_paths=[tif], prob_paths=[ppath],
              registry=[RefLayer("concessions", "registry", "c.gpkg", conc)],
              overlays=[RefLayer("TI", "indigenous", "t.gpkg", ti)], max_px=256)
    return d, sites, kw, tile


def test_map_is_self_contained_and_deterministic(scan):
    d, sites, kw, _ = scan
    html = build_map(sites, **kw)
    assert html == build_map(sites, **kw)
    stats = map_stats(html)
    assert stats["markers"] == 3 and stats["external_scripts"] == [] and stats["external_css"] == []
    assert "Leaflet 1.9.4" in html and "$(" not in html  # Leaflet inlined; folium's jQuery popups not used
    assert not re.search(r'<(script|img|iframe)[^>]*\ssrc="https?://|<link[^>]*\shref="https?://', html)
    assert not re.search(r"url\((?!data:|#default#VML)", html)  # every CSS image inlined
    # exactly: Leaflet's CSS images, 3 site thumbnails and the probability layer
    css_pngs = leaflet_assets()[1].count("data:image/png;base64,")
    assert css_pngs >= 1 and html.count("data:image/png;base64,") == css_pngs + 3 + 1
    assert "data:image/jpeg;base64," in html  # the RGB layer


def test_thumbnail_is_true_colour_with_outline(scan):
    _, sites, kw, tile = scan
    png = site_thumbnail(sites.geometry.iloc[0], tile.id.epsg, kw["tile_paths"])
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    # 2 cells (540 m) + 2 x 200 m margin at 10 m -> 94 px square
    assert img.shape == (94, 94, 3)
    yellow = (img[..., 0] > 220) & (img[..., 1] > 220) & (img[..., 2] < 60)
    assert yellow.sum() > 100  # the site outline
    assert site_thumbnail(sites.geometry.iloc[0], 32722, kw["tile_paths"]) is None  # tile in another zone


def test_probability_layer_is_transparent_where_no_data(scan):
    _, _, kw, _ = scan
    png, bounds = probability_overlay(kw["prob_paths"], kw["region_lonlat"].bounds, 256)
    rgba = np.asarray(Image.open(io.BytesIO(png)))
    assert rgba.shape[2] == 4 and (rgba[..., 3] == 0).any() and (rgba[..., 3] > 200).any()
    (s, w), (n, e) = bounds
    x0, y0, x1, y1 = kw["region_lonlat"].bounds
    eps = 1e-9
    assert s <= y0 + eps and w <= x0 + eps and n >= y1 - eps and e >= x1 - eps


def test_map_loads_in_headless_chromium(scan, tmp_path, chromium):
    d, sites, kw, _ = scan
    page = tmp_path / "map.html"
    write_map(page, sites, **kw)
    report = inspect_page(page.as_uri(), screenshot=tmp_path / "map.png", expressions={
        "markers": "document.querySelectorAll('.leaflet-marker-pane .minescan-site').length",
        "unregistered": "document.querySelectorAll('.minescan-site.unregistered').length",
        "leaflet": "window.L && L.version",
        "rasters": "document.querySelectorAll('img.leaflet-image-layer').length",
        "popup_img": "(async () => { document.querySelector('.minescan-site.unregistered').click();"
                     "const i = document.querySelector('.leaflet-popup-content img');"
                     "if (!i) return 0; await i.decode(); return i.naturalWidth })()",
        "layers_listed": "document.querySelectorAll('.leaflet-control-layers-overlays label').length",
    })
    assert report.errors == [], report["console"]
    assert report.external_requests == [], report.external_requests
    v = report["values"]
    assert v["markers"] == 3 and v["unregistered"] == 2 and v["leaflet"] == "1.9.4"
    assert v["rasters"] == 1  # the RGB layer is on; the probability layer is off until ticked
    assert v["popup_img"] > 0  # the thumbnail decoded in the popup
    assert v["layers_listed"] >= 7
    shot = Image.open(tmp_path / "map.png")
    assert shot.size == (1280, 900) and len(np.unique(np.asarray(shot.convert("L")))) > 20


def test_map_without_sites_or_rasters_loads(scan, tmp_path, chromium):
    _, sites, kw, _ = scan
    page = tmp_path / "empty.html"
    write_map(page, sites.iloc[:0], title="no sites", region_lonlat=kw["region_lonlat"])
    report = inspect_page(page.as_uri(), expressions={"markers": "document.querySelectorAll('.minescan-site').length"})
    assert report.errors == [] and report.external_requests == [] and report["values"]["markers"] == 0


def popups(html: str) -> list[str]:
    """The HTML of every marker popup (JSON strings passed to Leaflet's bindPopup)."""
    return [json.loads(m) for m in re.findall(r'\.bindPopup\(("(?:[^"\\]|\\.)*")', html)]


def test_popups_hold_the_evidence(scan):
    _, sites, kw, _ = scan
    pops = popups(build_map(sites, **kw))
    assert len(pops) == 3
    a, b, c = pops  # sorted by site id
    assert "REGISTERED" in a and "UNREGISTERED" in b and "UNREGISTERED" in c
    assert "Mina &lt;Um&gt; &amp; Cia" in a and "0 m away" in a and "812 m away" in b  # escaped, nearest feature
    assert "Terra A (indigenous)" in c and "falls in" in c and "falls in" not in a
    assert "max probability" in a and "0.900" in a and "14.58 ha (2 cells)" in a
    for p in pops:
        b64 = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', p).group(1)
        assert Image.open(io.BytesIO(base64.b64decode(b64))).format == "PNG"


# ------------------------------------------------------------------------------ hostile attributes

# Each payload, if it ever ran, would add its tag to window.__pwned. Attributes, labels and ids come from
# outside (government downloads, NGO files): markup in tooltips, layer names, popups and the legend, a
# breakout from the <script> that holds the GeoJSON, and a template-literal breakout in a tooltip.
def _payload(tag: str) -> str:
    return f'<img src=x onerror="(window.__pwned=window.__pwned||[]).push(\'{tag}\')">'


HOSTILE = {
    "registry_name": _payload("registry-name"),
    "registry_id": "</script><script>(window.__pwned=window.__pwned||[]).push('script-breakout')</script>",
    "registry_label": _payload("registry-label"),
    "overlay_name": _payload("overlay-name"),
    "overlay_label": _payload("overlay-label")
    + "<script>(window.__pwned=window.__pwned||[]).push('s')</script>",
    "admin_name": "`+(window.__pwned=window.__pwned||[]).push('backtick')+`${(window.__pwned=[]).push(1)}",
    "site_id": "21S-`${(window.__pwned=window.__pwned||[]).push('site-id')}`" + _payload("site-id"),
    "title": _payload("title"),
}

OPEN_EVERYTHING = """(async () => {
  const map = Object.values(window).find(v => v instanceof L.Map);
  let opened = 0;
  const texts = [], errors = [];
  const at = c => c.getBounds ? c.getBounds().getCenter() : c.getLatLng();
  const open = (f, el) => { try { f(); opened++; texts.push(el().getElement().textContent); }
                            catch (e) { errors.push(String(e)); } };
  map.eachLayer(l => {
    if (l.getTooltip && l.getTooltip()) {
      if (l.getLayers) {  // a GeoJSON layer's tooltip, opened on each of its features in turn
        l.getLayers().forEach(c => open(() => { l.getTooltip()._source = c; l.openTooltip(at(c)); },
                                        () => l.getTooltip()));
      }
      else { open(() => l.openTooltip(), () => l.getTooltip()); }
    }
    if (l.getPopup && l.getPopup() && !l.getLayers) { open(() => l.openPopup(), () => l.getPopup()); }
  });
  await new Promise(r => setTimeout(r, 500));
  window.__texts = texts.join('|');
  return JSON.stringify({opened, errors});
})()"""


def hostile_map(scan, tmp_path):
    """The test scan's map with every outside text replaced by a payload."""
    _, sites, kw, _ = scan
    sites = sites.copy()
    sites["site_id"] = [HOSTILE["site_id"] + str(i) for i in range(len(sites))]
    sites["registry_name"] = HOSTILE["registry_name"]
    sites["areas"] = HOSTILE["overlay_name"]
    sites["admin"] = HOSTILE["admin_name"]
    reg, ov = kw["registry"][0], kw["overlays"][0]
    reg_f = reg.features.assign(ref_id=HOSTILE["registry_id"], ref_name=HOSTILE["registry_name"])
    ov_f = ov.features.assign(ref_name=HOSTILE["overlay_name"])
    admin_f = ov.features.assign(ref_name=HOSTILE["admin_name"], geometry=ov.features.envelope)
    page = tmp_path / "hostile.html"
    write_map(page, sites, **{**kw, "title": HOSTILE["title"],
                               "registry": [RefLayer(HOSTILE["registry_label"], "registry", "r.gpkg", reg_f)],
                               "overlays": [RefLayer(HOSTILE["overlay_label"], "indigenous", "o.gpkg", ov_f)],
                               "admin": RefLayer(HOSTILE["admin_name"], "admin", "a.gpkg", admin_f)})
    return page


def test_hostile_attributes_run_no_script_in_chromium(scan, tmp_path, chromium):
    page = hostile_map(scan, tmp_path)
    report = inspect_page(page.as_uri(), expressions={
        "opened": OPEN_EVERYTHING,
        "pwned": "JSON.stringify(window.__pwned || [])",
        "injected_imgs": "document.querySelectorAll('img[src=\"x\"]').length",
        "texts": "window.__texts",
        "layers_text": "document.querySelector('.leaflet-control-layers-overlays').textContent",
        "legend_text": "document.querySelector('.minescan-legend').textContent",
    })
    v = report["values"]
    opened = json.loads(v["opened"])
    # the registry, overlay and admin tooltips, and the 3 sites' tooltips and popups were all opened
    assert opened["errors"] == [] and opened["opened"] == 9, opened
    assert v["pwned"] == "[]", v["pwned"]
    assert v["injected_imgs"] == 0
    assert report.external_requests == [], report.external_requests
    # the hostile text is shown as text, not dropped
    assert "<img src=x onerror=" in v["layers_text"] and "<img src=x onerror=" in v["legend_text"]
    assert "<img src=x onerror=" in v["texts"] and "`+(window.__pwned" in v["texts"], v["texts"]


def test_hostile_attributes_are_escaped_in_the_html(scan, tmp_path):
    """Without a browser: no markup of a payload survives in the file (the browser test also covers the
    backtick payloads, harmless in HTML text but not inside a JavaScript template literal)."""
    html = hostile_map(scan, tmp_path).read_text()
    assert "<img src=x" not in html
    assert "<script>(window.__pwned" not in html and "</script><script>(window" not in html

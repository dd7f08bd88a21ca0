"""map.html: one self-contained interactive map of a scan, for an analyst or an agency.

Built with folium (Leaflet), but with nothing fetched at view time: Leaflet's script and stylesheet (its
images as data URIs) are inlined from the installed Leaflet release files (the PyPI package
``django-js-lib-leaflet``, a dependency; nothing of Leaflet is kept in this repository), and every raster is a
data URI. The map opens from a file, an e-mail attachment or a Snakemake report without network access.
Layers:

- Sentinel-2 RGB (B4, B3, B2) of the scan tiles and the discovery network's mine probability (from the
  quadrant probability COGs), both warped to Web Mercator and at most ``max_px`` pixels a side;
- site polygons, filled by impact class, outlined solid black when unregistered and dashed white when a
  registry feature matches; one marker per site (a Leaflet ``divIcon`` of class ``minescan-site``) whose
  popup holds the evidence: probabilities, area, the nearest registry feature, the areas it falls in and an
  RGB thumbnail of the site cut from the tiles, as a base64 PNG;
- the registry features, protected/indigenous overlays and admin units near the scan, and the region.

The file is deterministic (same inputs, same bytes): folium's random element ids are replaced by a counter.

Every text that comes from outside (registry, overlay and admin attributes and labels, site fields, the
title) is untrusted: it reaches the page only HTML-escaped (tooltips, popups, layer-control names, legend)
and inside scripts only as JSON (Jinja's ``tojson`` escapes ``<``, ``>``, ``&`` and quotes), never pasted
into JavaScript source. tests/test_webmap.py opens a map built from hostile attributes in Chromium.
"""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import logging
import math
import re
from collections.abc import Iterable
from html import escape
from importlib import resources
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from affine import Affine
from branca.element import Element, MacroElement
from jinja2 import Template
from PIL import Image, ImageDraw
from rasterio.enums import Resampling
from rasterio.warp import reproject, transform_bounds
from shapely.geometry import box, mapping

from minescan.errors import InputDataError
from minescan.grid import to_crs
from minescan.io_utils import atomic_write_text
from minescan.layers.overlays import RefLayer, site_epsg

log = logging.getLogger(__name__)

IMPACT_COLOURS = {"high": "#d7191c", "low": "#fdae61", "unrated": "#f7f7f7", "no_ore": "#999999"}
OVERLAY_COLOURS = ["#ff7f00", "#33a02c", "#6a3d9a", "#b15928", "#e7298a"]
REGISTRY_COLOUR = "#1f78b4"
RGB_BANDS = ("B4", "B3", "B2")
WEB_MERCATOR = 3857
THUMB_MAX_PX = 160
THUMB_MARGIN_M = 200.0
THUMB_COLOURS = 128

_CSS = """
.minescan-site { border-radius: 50%; box-sizing: border-box; box-shadow: 0 0 2px #000; }
.minescan-site.unregistered { border: 3px solid #000; }
.minescan-site.registered { border: 2px dashed #fff; }
.minescan-site.unchecked { border: 2px solid #666; }
""" + "".join(f".minescan-site.impact-{k} {{ background: {v}; }}\n" for k, v in IMPACT_COLOURS.items()) + """
.minescan-popup table { border-collapse: collapse; font-size: 12px; }
.minescan-popup td { padding: 1px 6px 1px 0; vertical-align: top; }
.minescan-popup img { width: 160px; image-rendering: pixelated; display: block; margin: 4px 0; }
.minescan-tag { padding: 0 4px; border-radius: 3px; color: #fff; font-weight: bold; }
.minescan-tag.unregistered { background: #000; } .minescan-tag.registered { background: #1a9850; }
.minescan-tag.unchecked { background: #666; }
.minescan-panel { position: fixed; z-index: 1000; background: rgba(255,255,255,0.92); padding: 6px 10px;
  border-radius: 4px; font: 12px/1.4 sans-serif; box-shadow: 0 1px 4px rgba(0,0,0,0.4); }
.minescan-legend { bottom: 56px; left: 10px; } .minescan-title { top: 10px; left: 54px; font-size: 14px; }
.minescan-swatch { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: middle;
  box-sizing: border-box; }
.minescan-ramp { display: inline-block; width: 120px; height: 10px; vertical-align: middle; }
"""


# --------------------------------------------------------------------------------------------- assets


def leaflet_assets() -> tuple[str, str]:
    """Leaflet's JS and CSS (images inlined as data URIs) from the installed Leaflet 1.9.4 release files."""
    try:
        root = resources.files("js_lib_leaflet").joinpath("static", "js_lib_leaflet")
    except ModuleNotFoundError as exc:
        raise InputDataError("Leaflet is not installed: pip install 'django-js-lib-leaflet==1.9.4.1' "
                             "(a minescan dependency)") from exc
    try:
        js = root.joinpath("leaflet.js").read_text(encoding="utf-8")
        css = root.joinpath("leaflet.css").read_text(encoding="utf-8")
    except (FileNotFoundError, OSError) as exc:
        raise InputDataError(f"Leaflet's files are missing from the installed django-js-lib-leaflet ({exc}); "
                             "reinstall it") from exc
    js = re.sub(r"//# sourceMappingURL=\S+\s*$", "", js)

    def inline(m):
        name = m.group(1)
        data = root.joinpath("images", name).read_bytes()
        return f"url(data:image/png;base64,{base64.b64encode(data).decode()})"

    css = re.sub(r"url\(images/([\w.-]+\.png)\)", inline, css)
    return js.replace("</script", "<\\/script"), css


@contextlib.contextmanager
def sequential_ids():
    """Give every branca/folium element created inside the block a counter id instead of a random one."""
    counter = itertools.count(1)
    original = Element.__dict__["_generate_id"]
    Element._generate_id = classmethod(lambda cls: f"{next(counter):05d}")
    try:
        yield
    finally:
        Element._generate_id = original


class _Tooltip(MacroElement):
    """Bind an escaped text tooltip to its parent marker (folium's Tooltip pastes its text, unescaped, into a
    JavaScript template literal)."""

    _template = Template("""
        {% macro script(this, kwargs) %}
            {{ this._parent.get_name() }}.bindTooltip({{ this.html|tojson }});
        {% endmacro %}
    """)

    def __init__(self, text: str):
        super().__init__()
        self._name = "Tooltip"
        self.html = escape(text)


class _Popup(MacroElement):
    """Bind an HTML popup to its parent marker without folium's jQuery-based Popup."""

    _template = Template("""
        {% macro script(this, kwargs) %}
            {{ this._parent.get_name() }}.bindPopup({{ this.html|tojson }}, {"maxWidth": 380});
        {% endmacro %}
    """)

    def __init__(self, html: str):
        super().__init__()
        self._name = "Popup"
        self.html = html


def _data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _png(rgba: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------- rasters


def _band_indexes(src, bands: Iterable[str]) -> list[int] | None:
    desc = list(src.descriptions or [])
    try:
        return [desc.index(b) + 1 for b in bands]
    except ValueError:
        return None


def _stretch(refl: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Reflectance (bands, h, w) to uint8 with one 2-98 % stretch over all bands (keeps colour balance)."""
    if not valid.any():
        return np.zeros(refl.shape, dtype=np.uint8)
    vals = refl[:, valid]
    lo, hi = np.percentile(vals, [2, 98])
    if hi <= lo:
        hi = lo + 1e-6
    return (np.clip((refl - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8)


def site_thumbnail(geom_lonlat, epsg: int, tile_paths: list[Path], scale: float = 1e-4,
                   bands=RGB_BANDS, margin_m: float = THUMB_MARGIN_M, max_px: int = THUMB_MAX_PX) -> bytes | None:
    """PNG of the site (plus a margin) in true colour from the tiles it lies in, outline in yellow."""
    geom = to_crs(geom_lonlat, 4326, epsg)
    x0, y0, x1, y1 = geom.bounds
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = max(x1 - x0, y1 - y0) / 2 + margin_m
    bounds = (cx - half, cy - half, cx + half, cy + half)
    canvas = None
    transform = None
    for path in tile_paths:
        with rasterio.open(path) as src:
            if src.crs is None or src.crs.to_epsg() != epsg:
                continue
            idx = _band_indexes(src, bands)
            if idx is None:
                log.warning("%s: no band %s; no thumbnails", path, "/".join(bands))
                return None
            res = src.res[0]
            if canvas is None:
                n = max(1, int(round(2 * half / res)))
                gx0 = math.floor(bounds[0] / res) * res
                gy1 = math.ceil(bounds[3] / res) * res
                transform = Affine(res, 0, gx0, 0, -res, gy1)
                canvas = np.zeros((3, n, n), dtype=np.uint16)
            col = int(round((transform.c - src.transform.c) / res))
            row = int(round((src.transform.f - transform.f) / res))
            win = rasterio.windows.Window(col, row, canvas.shape[2], canvas.shape[1])
            data = src.read(idx, window=win, boundless=True, fill_value=0,
                            out_shape=(3, canvas.shape[1], canvas.shape[2]))
            fill = (canvas == 0).all(axis=0) & (data > 0).all(axis=0)
            canvas[:, fill] = data[:, fill]
    if canvas is None:
        return None
    valid = (canvas > 0).all(axis=0)
    rgb = np.moveaxis(_stretch(canvas.astype(np.float32) * scale, valid), 0, -1)
    img = Image.fromarray(np.ascontiguousarray(rgb))
    inv = ~transform
    draw = ImageDraw.Draw(img)
    polys = list(geom.geoms) if geom.geom_type == "MultiPolygon" else [geom]
    for p in polys:
        for ring in [p.exterior, *p.interiors]:
            draw.line([inv @ xy for xy in ring.coords], fill=(255, 255, 0), width=1)
    if max(img.size) > max_px:
        img = img.resize((max_px, max_px), Image.Resampling.BILINEAR)
    buf = io.BytesIO()  # a 128-colour palette: half the bytes of full RGB, the same to the eye at this size
    img.quantize(THUMB_COLOURS, method=Image.Quantize.MEDIANCUT).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def mercator_grid(bounds_lonlat, max_px: int, min_res_m: float):
    """(transform, width, height, lat/lon bounds) of a Web Mercator grid covering lon/lat bounds."""
    west, south, east, north = bounds_lonlat
    x0, y0, x1, y1 = transform_bounds(4326, WEB_MERCATOR, west, south, east, north)
    lat = math.radians((south + north) / 2)
    res = max(max(x1 - x0, y1 - y0) / max_px, min_res_m / max(math.cos(lat), 0.05))
    w, h = max(1, math.ceil((x1 - x0) / res)), max(1, math.ceil((y1 - y0) / res))
    transform = Affine(res, 0, x0, 0, -res, y1)
    w_, s_, e_, n_ = transform_bounds(WEB_MERCATOR, 4326, x0, y1 - h * res, x0 + w * res, y1)
    return transform, w, h, [[s_, w_], [n_, e_]]


def probability_overlay(paths: list[Path], bounds_lonlat, max_px: int) -> tuple[bytes, list] | None:
    """PNG of the highest mine probability over the quadrant COGs, coloured, transparent where absent or low."""
    if not paths:
        return None
    with rasterio.open(paths[0]) as src:
        cell = src.res[0]
    transform, w, h, latlon = mercator_grid(bounds_lonlat, max_px, cell / 3)
    mosaic = np.full((h, w), np.nan, dtype=np.float32)
    for path in paths:
        with rasterio.open(path) as src:
            tmp = np.full((h, w), np.nan, dtype=np.float32)
            reproject(rasterio.band(src, 1), tmp, dst_transform=transform, dst_crs=WEB_MERCATOR,
                      src_nodata=np.nan, dst_nodata=np.nan, resampling=Resampling.nearest)
            mosaic = np.fmax(mosaic, tmp)
    if np.isnan(mosaic).all():
        return None
    from matplotlib import colormaps

    p = np.nan_to_num(mosaic, nan=0.0)
    rgba = (colormaps["inferno"](p) * 255).round().astype(np.uint8)
    alpha = np.where(np.isnan(mosaic) | (p < 0.1), 0, 90 + 150 * p)
    rgba[..., 3] = alpha.round().astype(np.uint8)
    return _png(rgba), latlon


def rgb_overlay(tile_paths: list[Path], bounds_lonlat, max_px: int, scale: float = 1e-4,
                bands=RGB_BANDS) -> tuple[bytes, list] | None:
    """JPEG of the tiles in true colour (B4, B3, B2), warped to Web Mercator."""
    if not tile_paths:
        return None
    transform, w, h, latlon = mercator_grid(bounds_lonlat, max_px, 10.0)
    mosaic = np.zeros((3, h, w), dtype=np.uint16)
    ground = transform.a * math.cos(math.radians((latlon[0][0] + latlon[1][0]) / 2))
    for path in tile_paths:
        with rasterio.open(path) as src:
            idx = _band_indexes(src, bands)
            if idx is None:
                log.warning("%s: no band %s; no RGB layer", path, "/".join(bands))
                return None
            f = max(1, int(ground // src.res[0]))
            shape = (3, max(1, src.height // f), max(1, src.width // f))
            data = src.read(idx, out_shape=shape, resampling=Resampling.average)
            src_t = src.transform @ Affine.scale(src.width / shape[2], src.height / shape[1])
            tmp = np.zeros((3, h, w), dtype=np.uint16)
            reproject(data, tmp, src_transform=src_t, src_crs=src.crs, dst_transform=transform,
                      dst_crs=WEB_MERCATOR, src_nodata=0, dst_nodata=0, resampling=Resampling.bilinear)
            fill = (mosaic == 0).all(axis=0) & (tmp > 0).all(axis=0)
            mosaic[:, fill] = tmp[:, fill]
    valid = (mosaic > 0).all(axis=0)
    if not valid.any():
        return None
    rgb = np.moveaxis(_stretch(mosaic.astype(np.float32) * scale, valid), 0, -1)
    return _jpeg(np.ascontiguousarray(rgb)), latlon


# --------------------------------------------------------------------------------------------- vectors


def _clip(layer: RefLayer, window) -> gpd.GeoDataFrame:
    f = layer.features
    if f.empty:
        return f
    f = f.iloc[np.sort(f.sindex.query(window, predicate="intersects"))].copy()
    f["geometry"] = f.geometry.intersection(window).simplify(0.00002)
    return f[~f.geometry.is_empty]


def _geojson(gdf: gpd.GeoDataFrame, props: list[str], html_escape: bool = False) -> dict:
    """GeoJSON of ``gdf`` with the columns ``props``; ``html_escape``: string values HTML-escaped, for
    properties shown by folium's GeoJsonTooltip (which inserts them into the page as HTML)."""
    feats = []
    for _, r in gdf.iterrows():
        values = {p: _jsonable(r[p]) for p in props}
        if html_escape:
            values = {k: escape(v) if isinstance(v, str) else v for k, v in values.items()}
        feats.append({"type": "Feature", "geometry": _round_geom(mapping(r.geometry)), "properties": values})
    return {"type": "FeatureCollection", "features": feats}


def _round_geom(g):
    if isinstance(g, dict):
        return {k: _round_geom(v) for k, v in g.items()}
    if isinstance(g, list | tuple):
        return [_round_geom(v) for v in g]
    if isinstance(g, float):
        return round(g, 7)
    return g


def _jsonable(v):
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def _fmt(v, digits=3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v == "":
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def popup_html(site: pd.Series, thumbnail: bytes | None, impact_probs: dict | None) -> str:
    reg = site.get("registered", "unchecked")
    tag = {"no": "UNREGISTERED", "yes": "REGISTERED"}.get(reg, "NOT CHECKED")
    cls = registration_class(reg)
    rows = [("max probability", _fmt(site["max_probability"])), ("mean probability", _fmt(site["mean_probability"])),
            ("impact", escape(str(site["impact"])))]
    if impact_probs:
        rows.append(("p(high) / p(low) / p(no ore)", " / ".join(_fmt(impact_probs.get(k)) for k in
                                                                   ("p_high", "p_low", "p_no_ore"))))
    rows += [("area", f"{site['area_ha']:.2f} ha ({int(site['n_cells'])} cells)")]
    seg = site.get("area_ha_segmented")
    if seg is not None and not (isinstance(seg, float) and math.isnan(seg)):
        rows.append(("segmented disturbed area", f"{float(seg):.2f} ha"))
    if reg != "unchecked":
        near = site.get("registry_id", "")
        if near:
            dist = site.get("registry_distance_m")
            rows.append(("nearest registry feature", escape(
                f"{site.get('registry_layer', '')}: {near} {site.get('registry_name', '')}".strip())
                + f"<br>{_fmt(dist, 0)} m away"))
        else:
            rows.append(("nearest registry feature", "none within the search distance"))
    if site.get("areas"):
        rows.append(("falls in", escape(str(site["areas"]))))
    if site.get("admin"):
        rows.append(("admin unit", escape(str(site["admin"]))))
    rows.append(("lon, lat", f"{site['lon']:.5f}, {site['lat']:.5f}"))
    rows.append(("tiles", escape(str(site.get("tiles", "")))))
    img = (f'<img alt="RGB thumbnail (B4,B3,B2)" src="{_data_url(thumbnail, "image/png")}">'
           if thumbnail else "")
    table = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows)
    return (f'<div class="minescan-popup"><b>{escape(str(site["site_id"]))}</b> '
            f'<span class="minescan-tag {cls}">{tag}</span>{img}<table>{table}</table></div>')


def _legend(overlay_styles: list[tuple[str, str]], has_prob: bool) -> str:
    items = [f'<div><span class="minescan-swatch" style="background:{c};border-radius:50%;border:1px solid #999">'
             f"</span>{k} impact</div>" for k, c in IMPACT_COLOURS.items() if k != "no_ore"]
    items += ['<div><span class="minescan-swatch" style="border:3px solid #000"></span>unregistered</div>',
              '<div><span class="minescan-swatch" style="border:2px dashed #888"></span>registered</div>',
              f'<div><span class="minescan-swatch" style="border:2px solid {REGISTRY_COLOUR}"></span>registry</div>']
    items += [f'<div><span class="minescan-swatch" style="border:2px dashed {c}"></span>{escape(n)}</div>'
              for n, c in overlay_styles]
    if has_prob:
        from matplotlib import colormaps
        from matplotlib.colors import to_hex

        stops = ", ".join(to_hex(colormaps["inferno"](x)) for x in np.linspace(0.1, 1, 6))
        items.append(f'<div>mine probability 0.1 <span class="minescan-ramp" '
                     f'style="background:linear-gradient(to right, {stops})"></span> 1</div>')
    return f'<div class="minescan-panel minescan-legend">{"".join(items)}</div>'


# --------------------------------------------------------------------------------------------- the map


def build_map(sites: gpd.GeoDataFrame, *, title: str, region_lonlat=None, tile_paths=(), prob_paths=(),
              registry: list[RefLayer] = (), overlays: list[RefLayer] = (), admin: RefLayer | None = None,
              detections: pd.DataFrame | None = None, scale: float = 1e-4, max_px: int = 1024,
              thumbnails: bool = True, extents: gpd.GeoDataFrame | None = None) -> str:
    """The map as an HTML string (see the module docstring). ``extents``: the scan's segmented extents
    (extents.gpkg), shown as a layer that can be toggled."""
    import folium

    sites = sites.to_crs(4326).sort_values("site_id", kind="stable").reset_index(drop=True)
    extent = region_lonlat if region_lonlat is not None else box(*sites.total_bounds)
    if extent.is_empty:
        raise InputDataError("nothing to map: no region and no site")
    x0, y0, x1, y1 = extent.bounds
    pad = max(x1 - x0, y1 - y0) * 0.08 + 0.005
    window = box(x0 - pad, y0 - pad, x1 + pad, y1 + pad)
    tiles_by_name = {Path(p).stem: Path(p) for p in tile_paths}
    impact_probs = {}
    if detections is not None and len(detections):
        impact_probs = detections.groupby("site_id")[["p_high", "p_low", "p_no_ore"]].mean().to_dict("index")
    js, css = leaflet_assets()

    with sequential_ids():
        m = folium.Map(location=[(y0 + y1) / 2, (x0 + x1) / 2], tiles=None, control_scale=True,
                       prefer_canvas=False)
        m.default_js, m.default_css = [], []
        root = m.get_root()
        root.header.add_child(Element(f"<style>{css}</style>"), name="leaflet_css")
        root.header.add_child(Element(f"<script>{js}</script>"), name="leaflet_js")
        root.header.add_child(Element(f"<style>{_CSS}</style>"), name="minescan_css")
        root.header.add_child(Element(f"<title>{escape(title)}</title>"), name="title")
        folium.TileLayer("OpenStreetMap", name="OpenStreetMap (needs internet)", overlay=True, show=False).add_to(m)

        rgb = rgb_overlay([Path(p) for p in tile_paths], window.bounds, max_px, scale) if tile_paths else None
        if rgb:
            folium.raster_layers.ImageOverlay(_data_url(rgb[0], "image/jpeg"), rgb[1], name="Sentinel-2 RGB (B4,B3,B2)",
                                              pixelated=False, zIndex=1).add_to(m)
        prob = probability_overlay([Path(p) for p in prob_paths], window.bounds, max_px) if prob_paths else None
        if prob:
            folium.raster_layers.ImageOverlay(_data_url(prob[0], "image/png"), prob[1], name="mine probability",
                                              pixelated=True, zIndex=2, show=False).add_to(m)
        if region_lonlat is not None:
            folium.GeoJson(_round_geom(mapping(region_lonlat)), name="scan region",
                           style_function=lambda f: {"color": "#ffffff", "weight": 2, "dashArray": "6 4",
                                                     "fill": False}).add_to(m)
        overlay_styles = []
        for i, layer in enumerate([*overlays, *([admin] if admin is not None else [])]):
            colour = "#bbbbbb" if layer.kind == "admin" else OVERLAY_COLOURS[i % len(OVERLAY_COLOURS)]
            clipped = _clip(layer, window)
            name = f"{layer.label} ({layer.kind})"
            overlay_styles.append((name, colour))  # the legend escapes it
            if clipped.empty:
                continue
            # Leaflet's layer control shows layer names as HTML: escape them
            folium.GeoJson(_geojson(clipped, ["ref_name"], html_escape=True), name=escape(name),
                           style_function=lambda f, c=colour: {"color": c, "weight": 2, "dashArray": "8 4",
                                                               "fillOpacity": 0.06},
                           tooltip=folium.GeoJsonTooltip(["ref_name"], labels=False)).add_to(m)
        for layer in registry:
            clipped = _clip(layer, window)
            if clipped.empty:
                continue
            folium.GeoJson(_geojson(clipped, ["ref_id", "ref_name"], html_escape=True),
                           name=escape(f"registry: {layer.label}"),
                           style_function=lambda f: {"color": REGISTRY_COLOUR, "weight": 2, "fillOpacity": 0.05},
                           marker=folium.CircleMarker(radius=5, fill=True, fill_opacity=0.8),
                           tooltip=folium.GeoJsonTooltip(["ref_id", "ref_name"], labels=False)).add_to(m)
        if extents is not None and len(extents):
            folium.GeoJson(_geojson(extents.to_crs(4326), ["extent_id", "area_ha"]), name="segmented extents",
                           style_function=lambda f: {"color": "#00e5ff", "weight": 1.5, "fillOpacity": 0.25},
                           tooltip=folium.GeoJsonTooltip(["extent_id", "area_ha"])).add_to(m)
        if len(sites):
            props = [c for c in ("site_id", "impact", "registered", "max_probability", "area_ha",
                                 "area_ha_segmented") if c in sites]
            folium.GeoJson(_geojson(sites, props), name="site polygons", style_function=lambda f: {
                "fillColor": IMPACT_COLOURS.get(f["properties"].get("impact"), "#ffffff"), "fillOpacity": 0.45,
                "color": "#000000" if f["properties"].get("registered") == "no" else "#ffffff",
                "weight": 2.5 if f["properties"].get("registered") == "no" else 1.5,
                "dashArray": "4 3" if f["properties"].get("registered") == "yes" else None}).add_to(m)
        markers = folium.FeatureGroup(name=f"sites ({len(sites)})").add_to(m)  # a number: nothing to escape
        epsg = site_epsg(sites) if len(sites) else pd.Series(dtype=int)
        for i, site in sites.iterrows():
            thumb = None
            if thumbnails and tiles_by_name:
                names = [t for t in str(site.get("tiles", "")).split(",") if t in tiles_by_name]
                thumb = site_thumbnail(site.geometry, int(epsg.loc[i]), [tiles_by_name[t] for t in names], scale)
            reg = site.get("registered", "unchecked")
            cls = registration_class(reg)
            size = 16 if reg == "no" else 13
            impact_cls = re.sub(r"[^A-Za-z0-9_-]", "_", str(site["impact"]))  # a CSS class name, no markup
            marker = folium.Marker([float(site["lat"]), float(site["lon"])],
                                   icon=folium.DivIcon(html="", icon_size=(size, size),
                                                       icon_anchor=(size // 2, size // 2),
                                                       class_name=f"minescan-site impact-{impact_cls} {cls}"))
            marker.add_child(_Tooltip(str(site["site_id"])))
            marker.add_child(_Popup(popup_html(site, thumb, impact_probs.get(site["site_id"]))))
            marker.add_to(markers)
        folium.LayerControl(collapsed=False).add_to(m)
        m.fit_bounds([[y0, x0], [y1, x1]])
        n_unreg = int((sites["registered"] == "no").sum()) if "registered" in sites else 0
        col = "area_ha_reported" if "area_ha_reported" in sites else "area_ha"  # segmented where measured
        what = " (segmented)" if col == "area_ha_reported" else ""
        head = (f'<div class="minescan-panel minescan-title"><b>{escape(title)}</b><br>{len(sites)} sites, '
                f'{n_unreg} unregistered, {sites[col].sum() if len(sites) else 0:.1f} ha{what}</div>')
        root.html.add_child(Element(head + _legend(overlay_styles, prob is not None)), name="minescan_panels")
        html = root.render()
    return html


def registration_class(registered) -> str:
    """CSS class of a site's registry status ('no' -> unregistered, 'yes' -> registered, else unchecked)."""
    return {"no": "unregistered", "yes": "registered"}.get(registered, "unchecked")


def write_map(path, sites, **kwargs) -> str:
    """Build the map (:func:`build_map`), write it atomically to ``path`` and return its HTML."""
    html = build_map(sites, **kwargs)
    atomic_write_text(path, html)
    return html


def map_stats(html: str) -> dict:
    """What a map holds, read back from its HTML (for tests and logs)."""
    return {"markers": len(re.findall(r'"className": "minescan-site ', html)),
            "bytes": len(html.encode()), "external_scripts": re.findall(r'<script[^>]+src="(http[^"]+)"', html),
            "external_css": re.findall(r'<link[^>]+href="(http[^"]+)"', html)}


def load_detections(path) -> pd.DataFrame | None:
    if path is None or not Path(path).exists():
        return None
    return pd.read_csv(path, dtype={"site_id": str})


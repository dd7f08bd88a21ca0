"""KML writing shared by every layer that has a KML form (detections, sites, unregistered sites, change
and cumulative layers): one document writer, styles, placemarks and polygon geometry. Every text that
comes from data is escaped."""

from __future__ import annotations

from html import escape

from minescan.io_utils import atomic_write_text


def write_kml_document(path, title: str, styles: list[str], placemarks: list[str]) -> None:
    """A KML file: one document named ``title`` holding the ``<Style>`` and ``<Placemark>`` elements."""
    parts = ['<?xml version="1.0" encoding="UTF-8"?>', '<kml xmlns="http://www.opengis.net/kml/2.2">',
             "<Document>", f"<name>{escape(title)}</name>", *styles, *placemarks, "</Document>", "</kml>", ""]
    atomic_write_text(path, "\n".join(parts))


def kml_polygon_styles(colours: dict[str, str]) -> list[str]:
    """One ``<Style>`` per id in ``colours`` (KML aabbggrr): outline in the colour, fill half transparent."""
    return [f'<Style id="{sid}"><LineStyle><color>{colour}</color><width>2</width></LineStyle>'
            f"<PolyStyle><color>{'80' + colour[2:]}</color></PolyStyle></Style>" for sid, colour in colours.items()]


def kml_placemark(name, style, fields, geometry: str) -> str:
    """A placemark styled ``#style`` whose description is a table of the ``(label, value)`` pairs in ``fields``."""
    table = "".join(f"<tr><td>{k}</td><td>{escape(str(v))}</td></tr>" for k, v in fields)
    return (f"<Placemark><name>{escape(str(name))}</name><styleUrl>#{escape(str(style))}</styleUrl>"
            f"<description><![CDATA[<table>{table}</table>]]></description>{geometry}</Placemark>")


def _kml_coordinates(ring) -> str:
    return " ".join(f"{x:.7f},{y:.7f},0" for x, y in ring.coords)


def kml_polygon_geometry(geom) -> str:
    """KML of the polygons of ``geom`` (lon/lat): a ``<Polygon>``, or a ``<MultiGeometry>`` of several; other
    parts of a collection are left out."""
    polys = [geom] if geom.geom_type == "Polygon" else [g for g in getattr(geom, "geoms", []) if
                                                         g.geom_type == "Polygon"]
    parts = []
    for poly in polys:
        inner = "".join(f"<innerBoundaryIs><LinearRing><coordinates>{_kml_coordinates(r)}</coordinates></LinearRing>"
                        "</innerBoundaryIs>" for r in poly.interiors)
        parts.append(f"<Polygon><outerBoundaryIs><LinearRing><coordinates>{_kml_coordinates(poly.exterior)}"
                     f"</coordinates></LinearRing></outerBoundaryIs>{inner}</Polygon>")
    return parts[0] if len(parts) == 1 else f"<MultiGeometry>{''.join(parts)}</MultiGeometry>"

"""minescan: surface mines and tailings dams in Sentinel-2 imagery, at country scale."""

__version__ = "0.1.0"

SENTINEL2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")

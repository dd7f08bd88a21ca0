"""Small I/O helpers shared by every stage: atomic writes, so a crash never leaves a half-written output
that a rerun would take as complete."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def tmp_path_for(path: str | Path) -> Path:
    """A sibling temporary path that keeps the suffix (GDAL picks drivers by extension)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")


@contextlib.contextmanager
def atomic_output(path: str | Path):
    """Yield a temp path to write to; on success it is renamed over ``path``, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)


COG_OPTIONS = {"compress": "DEFLATE", "blocksize": 256, "overviews": "NONE"}


def copy_to_cog(src, path, predictor: int | None = None) -> None:
    """Copy an open rasterio dataset to ``path`` as a cloud-optimised GeoTIFF (DEFLATE, 256 px blocks, no
    overviews; ``predictor`` 3 for floats, 2 for integers), atomically."""
    import rasterio.shutil

    options = dict(COG_OPTIONS, **({"predictor": predictor} if predictor else {}))
    with atomic_output(path) as out:
        rasterio.shutil.copy(src, out, driver="COG", **options)


def write_cog(path, data, *, crs, transform, nodata, description: str, tags: dict,
              predictor: int | None = None) -> None:
    """One band (2-D ``data``) as a cloud-optimised GeoTIFF with its description and tags, atomically."""
    from rasterio.io import MemoryFile

    profile = {"driver": "GTiff", "dtype": data.dtype.name, "count": 1, "height": data.shape[0],
               "width": data.shape[1], "crs": crs, "transform": transform, "nodata": nodata}
    with MemoryFile() as mem:
        with mem.open(**profile) as tmp:
            tmp.write(data, 1)
            tmp.descriptions = (description,)
            tmp.update_tags(**{k: str(v) for k, v in sorted(tags.items())})
        with mem.open() as src:
            copy_to_cog(src, path, predictor)


def write_csv(table, path) -> None:
    """A table as CSV (no index, '\n' line ends), atomically; a GeoDataFrame without its geometry column."""
    import geopandas as gpd
    import pandas as pd

    if isinstance(table, gpd.GeoDataFrame):
        table = pd.DataFrame(table.drop(columns=table.geometry.name))
    with atomic_output(path) as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n")

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


def write_csv(table, path) -> None:
    """A table as CSV (no index, '\n' line ends), atomically; a GeoDataFrame without its geometry column."""
    import geopandas as gpd
    import pandas as pd

    if isinstance(table, gpd.GeoDataFrame):
        table = pd.DataFrame(table.drop(columns=table.geometry.name))
    with atomic_output(path) as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n")

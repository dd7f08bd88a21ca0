"""A columns table for the detect job's candidates, written as pandas writes it, without importing pandas.

Importing pandas costs a detect process 0.3-0.4 s (measured on benchmarks/bench_floor.py's machine), about a
tenth of a one-quadrant job and more than its whole cloud check; the job only builds a small table, adds the
impact ratings and writes it as CSV. :class:`Table` does exactly that and writes the bytes
``DataFrame.to_csv(path, index=False)`` writes for the same columns (tests compare the two): integers and
floats as NumPy prints them (``ndarray.astype(str)``, the shortest repr for float64), NaN and None as empty
fields, text verbatim, quoted only where CSV needs it, lines ending in ``os.linesep``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence

import numpy as np


class Table:
    """Named columns of equal length: 1-D NumPy arrays, or lists of text (a scalar is repeated)."""

    def __init__(self, columns: dict, order: Sequence[str] | None = None):
        names = list(order) if order is not None else list(columns)
        sized = [len(v) for v in columns.values() if not _scalar(v)]
        self._n = sized[0] if sized else 0
        self._cols: dict[str, np.ndarray | list] = {}
        for name in names:
            self[name] = columns[name]

    @property
    def columns(self) -> list[str]:
        return list(self._cols)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, key):
        if isinstance(key, str):
            return self._cols[key]
        return Table({k: self._cols[k] for k in key}, key)  # a list of names: those columns, in that order

    def __setitem__(self, name: str, values) -> None:
        if _scalar(values):
            values = [values] * self._n
        elif len(values) != self._n:
            raise ValueError(f"column {name!r} has {len(values)} values, the table {self._n} rows")
        self._cols[name] = values if isinstance(values, list) else np.asarray(values)

    def copy(self) -> Table:
        return Table({k: v.copy() for k, v in self._cols.items()})

    def take(self, rows: Iterable[int]) -> Table:
        """The rows at these positions, in this order."""
        rows = np.asarray(list(rows), dtype=np.int64)
        t = Table({})
        t._n = len(rows)
        t._cols = {k: [v[i] for i in rows.tolist()] if isinstance(v, list) else v[rows] for k, v in self._cols.items()}
        return t

    def sorted_by(self, *names: str) -> Table:
        """Rows ordered by ``names`` (the first name the primary key), ties kept in order."""
        keys = [np.asarray(self._cols[n]) for n in reversed(names)]
        return self.take(np.lexsort(keys)) if self._n else self

    def to_csv(self, path, index: bool = False) -> None:
        """Write the table as ``DataFrame.to_csv(path, index=False)`` would (module docstring)."""
        if index:
            raise ValueError("Table.to_csv writes no index")
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator=os.linesep)  # DataFrame.to_csv's defaults
            writer.writerow(self.columns)
            writer.writerows(zip(*(_as_written(v) for v in self._cols.values()), strict=True))


def _scalar(v) -> bool:
    return isinstance(v, str | int | float | np.generic) or v is None


def _as_written(values) -> list[str]:
    """A column's fields as pandas' CSV writer prints them."""
    if isinstance(values, list) or values.dtype.kind in "OUS":  # text: verbatim, None and NaN as empty fields
        return ["" if v is None or (isinstance(v, float) and v != v) else str(v) for v in values]
    out = values.astype(str)
    if values.dtype.kind in "fc":
        out[np.isnan(values)] = ""
    return out.tolist()

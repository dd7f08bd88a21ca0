"""The classify job's copy path, without pandas, rasterio or TensorFlow (issue 19).

When the detect job has already rated every candidate with this very impact model (the ``impact_model``
column holds the model's content hash), ``minescan classify`` only rewrites candidates.csv as
classified.csv. Through :func:`minescan.scan.detect.run_classify` that costs the process ~0.6 s of imports
(pandas, rasterio, shapely, pyproj) per quadrant job; :func:`copy_rated` does it with the standard library
(plus :mod:`minescan.models.store` for the card and the hash, and :class:`minescan.scan.table.Table`, the
detect job's CSV writer) and writes the very bytes run_classify writes:
the candidates' columns minus the ratings and ``impact_model``, then p_high, p_low, p_no_ore, impact; each
value as pandas reads and writes it back (an integer column as int64 prints, a float column as numpy
prints the parsed float64, text verbatim); the same line ends, atomic write and log lines.

Only tables whose every value has a type pandas' reader is known to agree on are copied here: integers
within int64, decimal numbers of at most 15 digits and a power of ten within 1e+-22 (pandas' default parser is
exact there), and text no number or missing-value parser would take. Anything else (a missing column, an
empty file, a row rated by another model, quotes, blanks, NA words, ...) returns None, and the caller takes
the pandas path, which handles it as before.
"""

from __future__ import annotations

import csv
import logging
import re
from collections import Counter
from pathlib import Path

from minescan.io_utils import atomic_output
from minescan.models.store import model_fingerprint, read_card_of_kind
from minescan.scan.table import Table

# run_classify's lines, under its logger: a job's log reads the same whichever path copied the ratings
log = logging.getLogger("minescan.scan.detect")

IMPACT_COLUMNS = ["p_high", "p_low", "p_no_ore", "impact"]
RATED_BY = "impact_model"  # candidates.csv column: version of the impact model that rated them in detect
#: columns run_classify reads as text whatever they look like (zone '21S', a tile name)
TEXT_COLUMNS = ("zone", "tile", "quadrant", RATED_BY)

#: minescan.grid.TILE_ID_RE (grid imports shapely and pyproj); tests keep the two equal
TILE_ID_RE = re.compile(r"^(\d{2})([NS])-E(\d{3,})-N(\d{4,})$")
#: pandas' default missing-value words (pandas._libs.parsers.STR_NA_VALUES; a test keeps them equal)
NA_VALUES = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
                       "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})
_INT = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?([0-9]+)(?:\.([0-9]*))?(?:[eE]([-+]?[0-9]+))?")
_INT64 = 2**63
_MAX_DIGITS = 15  # digits pandas' parser accumulates into a double exactly (< 2**53) ...
_MAX_POW10 = 22  # ... and powers of ten it then multiplies or divides by exactly: one rounding, as float()


def tile_name(text: str) -> str | None:
    """``str(TileId.parse(text))`` (e.g. '21S-E005-N0100'), None for text that is not a tile id."""
    m = TILE_ID_RE.match(text)
    if not m:
        return None
    return f"{int(m.group(1)):02d}{m.group(2)}-E{int(m.group(3)):03d}-N{int(m.group(4)):04d}"


def copy_rated(candidates_csv, classified_out, model_dir, tile: str) -> dict | None:
    """Write classified.csv from candidates the detect job rated with the impact model in ``model_dir``,
    as :func:`minescan.scan.detect.run_classify` would, and return the count per impact class; None (and
    nothing written) when this path does not apply or is not sure to give the same bytes.

    A model directory that is not an impact model raises the same error as the pandas path."""
    name = tile_name(tile)
    if name is None:
        return None  # the pandas path says what is wrong with it
    read_card_of_kind(model_dir, "impact")
    table = _read_table(candidates_csv)
    if table is None:
        return None
    header, rows = table
    if RATED_BY not in header or not set(IMPACT_COLUMNS) <= set(header):
        return None
    try:
        version = model_fingerprint(Path(model_dir))
    except OSError:
        return None
    rated = header.index(RATED_BY)
    if any(row[rated] != version for row in rows):
        return None
    columns = {}
    for i, col in enumerate(header):
        typed = _as_pandas_writes([row[i] for row in rows], col in TEXT_COLUMNS)
        if typed is None:
            return None
        columns[col] = typed
    if rows and columns["impact"][0] != "text":  # the class labels (counted by name below)
        return None
    order = [c for c in header if c not in (*IMPACT_COLUMNS, RATED_BY)] + IMPACT_COLUMNS
    with atomic_output(classified_out) as tmp:  # text columns, written verbatim as DataFrame.to_csv would
        Table({c: columns[c][1] for c in order}, order).to_csv(tmp)
    labels = columns["impact"][1]
    if rows:
        log.info("%s: %d candidates already rated by %s in the detect job", name, len(rows), Path(model_dir))
    counts = dict(Counter(labels).most_common())  # as pandas' value_counts: by count, ties in first-seen order
    log.info("%s: classified %d candidates: %s", name, len(rows), counts)
    return counts


def _read_table(path) -> tuple[list[str], list[list[str]]] | None:
    """Header and rows of a plain CSV file (ASCII, no quotes, no CR, every row as long as the header)."""
    try:
        with open(path, encoding="ascii", newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError):
        return None
    if '"' in text or "\r" in text:
        return None
    rows = list(csv.reader(text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")))
    if not rows:
        return None
    header, rows = rows[0], rows[1:]
    if not header or len(set(header)) < len(header) or any(not c or c != c.strip() for c in header):
        return None
    if any(len(row) != len(header) for row in rows):  # blank lines included: pandas would skip them
        return None
    return header, rows


def _as_pandas_writes(values: list[str], text: bool) -> tuple[str, list[str]] | None:
    """(kind, the column's values as run_classify writes them), kind 'int', 'float' or 'text'; None when
    pandas might read the column otherwise than assumed here."""
    if text:  # read as str: written back verbatim
        return ("text", values) if all(_plain(v) and v not in NA_VALUES for v in values) else None
    if all(_INT.fullmatch(v) and -_INT64 <= int(v) < _INT64 for v in values):
        return "int", [str(int(v)) for v in values]  # int64 ('007' is 7)
    if all(_exact_decimal(v) for v in values):
        import numpy as np  # already loaded with minescan.models.store

        # float64; pandas' to_csv prints it with ndarray.astype(str) (the shortest repr)
        return "float", np.array([float(v) for v in values], dtype=np.float64).astype(str).tolist()
    if all(_plain(v) and _not_a_number(v) for v in values):
        return "text", values
    return None


def _plain(v: str) -> bool:
    return bool(v) and v == v.strip()


def _exact_decimal(v: str) -> bool:
    """A decimal number pandas' default float parser reads exactly as float() does (see _MAX_DIGITS)."""
    m = _DECIMAL.fullmatch(v)
    if not m:
        return False
    whole, frac, exp = m.group(1), m.group(2) or "", m.group(3)
    if len(exp or "") > 4:
        return False
    return len(whole) + len(frac) <= _MAX_DIGITS and abs(int(exp or 0) - len(frac)) <= _MAX_POW10


def _not_a_number(v: str) -> bool:
    """Text pandas keeps as text in any chunk of rows: no number, boolean or missing-value word."""
    if v in NA_VALUES or v.lower() in ("true", "false"):
        return False
    try:
        float(v)
    except ValueError:
        return True
    return False

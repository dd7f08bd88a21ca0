"""Chip archives: loading and validating ``.npz`` files of 48 x 48 RGB chips, and uint8 -> reflectance.

A chip archive is a NumPy ``.npz`` file with

- ``x``: (N, H, W, 3) uint8, channel order R, G, B = Sentinel-2 bands B4, B3, B2 (required)
- ``y``: (N,) labels 0 / 1 (1 = mine), any integer, boolean or float dtype holding only 0 and 1 (optional)
- ``source``: (N,) strings naming where each chip came from (optional)
- ``period``, ``clear``, ``cell``: (N,) provenance (optional; used for splits when present)

The uint8 values are the earthrise-media/mining-detector RGB previews, ``uint8 = clip(DN / 3000, 0, 1) * 255``
with ``DN = reflectance * 10000``, so reflectance = uint8 / 255 * 0.3 and 255 means "at least 0.3".
Pixels that are 0 in every band are no-data.

Every problem is raised as :class:`minescan.errors.InputDataError` whose message names the file and the array.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minescan.errors import InputDataError

UINT8_REFLECTANCE_MAX = 0.3  # uint8 255 == reflectance 0.3 (and saturates there)
CHIP_BANDS = ("B4", "B3", "B2")
OPTIONAL_STRING_ARRAYS = ("source", "period", "clear")


@dataclass
class ChipSet:
    """Validated chips. ``y`` is int8 or None; string arrays are None when absent."""

    path: Path
    x: np.ndarray
    y: np.ndarray | None = None
    source: np.ndarray | None = None
    period: np.ndarray | None = None
    clear: np.ndarray | None = None
    cell: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, index) -> ChipSet:
        def pick(a):
            return None if a is None else a[index]

        return ChipSet(self.path, self.x[index], pick(self.y), pick(self.source), pick(self.period),
                       pick(self.clear), pick(self.cell))


def uint8_to_reflectance(x: np.ndarray) -> np.ndarray:
    """uint8 RGB preview values -> top-of-atmosphere reflectance (float32, 0..0.3)."""
    return np.asarray(x, dtype=np.float32) * np.float32(UINT8_REFLECTANCE_MAX / 255.0)


def valid_mask(x: np.ndarray) -> np.ndarray:
    """True where a pixel has data, i.e. is not 0 in every band (shape of ``x`` without the last axis)."""
    x = np.asarray(x)
    if x.dtype == np.uint8 or np.issubdtype(x.dtype, np.unsignedinteger):
        return np.bitwise_or.reduce(x, axis=-1) != 0  # much faster than any() over the last axis
    return np.any(x != 0, axis=-1)


def reflect_pad(x: np.ndarray, pad: int) -> np.ndarray:
    """Chips (N, H, W, C) mirrored outwards by ``pad`` px on every side (half-sample symmetric: ... b a | a b ...).

    A 48 px chip padded by 3 px fills the 54 px window of an FCN whose single output cell then sees the
    chip symmetrically (two 27 px cells, no pixel dropped by the pooling)."""
    if pad <= 0:
        return x
    return np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="symmetric")


def gallery_of(source: str) -> str:
    """The gallery a chip came from, without the composite's ``_S2L1C_clear…`` tail or ``_rgb_preview``.

    The clearer and the cloudier twin of one negative gallery show the same sites, so they share a gallery.
    """
    return re.sub(r"(_S2L1C_clear.*|_rgb_preview)$", "", str(source))


def load_chips(path: str | Path, window: int | None = 48, require_labels: bool = False) -> ChipSet:
    """Load and validate a chip archive; raise :class:`InputDataError` naming the file and array at fault."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"{path}: chip file not found")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputDataError(f"{path}: not a readable .npz archive ({exc})") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise InputDataError(f"{path}: not an .npz archive (a single array was found)")
    with archive:
        names = set(archive.files)

        def get(name):
            try:
                return archive[name]
            except ValueError as exc:  # object arrays need pickle, which we refuse
                raise InputDataError(f"{path}: array '{name}' cannot be read without pickle ({exc})") from exc

        if "x" not in names:
            raise InputDataError(f"{path}: array 'x' is missing (found: {', '.join(sorted(names)) or 'none'})")
        x = get("x")
        if x.dtype != np.uint8:
            raise InputDataError(f"{path}: array 'x' must be uint8, got {x.dtype}")
        expected = f"(N, {window}, {window}, 3)" if window else "(N, H, W, 3)"
        if x.ndim != 4 or x.shape[-1] != 3 or (window and x.shape[1:3] != (window, window)):
            raise InputDataError(f"{path}: array 'x' must have shape {expected}, got {x.shape}")
        if len(x) == 0:
            raise InputDataError(f"{path}: array 'x' holds no chips")
        n = len(x)
        y = None
        if "y" in names:
            y = _labels(get("y"), n, path)
        elif require_labels:
            raise InputDataError(f"{path}: array 'y' (labels) is missing")
        extra = {}
        for name in OPTIONAL_STRING_ARRAYS:
            if name in names:
                a = get(name)
                if a.ndim != 1 or len(a) != n:
                    raise InputDataError(f"{path}: array '{name}' must have shape ({n},), got {a.shape}")
                extra[name] = a.astype(str)
        cell = None
        if "cell" in names:
            cell = get("cell")
            if cell.shape != (n,):
                raise InputDataError(f"{path}: array 'cell' must have shape ({n},), got {cell.shape}")
    return ChipSet(path, x, y, cell=cell, **extra)


def _labels(y: np.ndarray, n: int, path: Path) -> np.ndarray:
    if y.ndim != 1:
        raise InputDataError(f"{path}: array 'y' must be one-dimensional, got shape {y.shape}")
    if len(y) != n:
        raise InputDataError(f"{path}: array 'y' has {len(y)} labels but 'x' has {n} chips")
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == bool):
        raise InputDataError(f"{path}: array 'y' must be numeric 0/1, got dtype {y.dtype}")
    values = np.unique(y)
    if not np.all(np.isin(values, (0, 1))):
        shown = ", ".join(str(v) for v in values[:5])
        raise InputDataError(f"{path}: array 'y' must hold only 0 and 1 (found {shown})")
    return y.astype(np.int8)

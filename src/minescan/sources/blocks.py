"""Reading a tile's blocks without GDAL's per-band block cache: tifffile finds them, imagecodecs decodes them.

A tile is a tiled, pixel-interleaved GeoTIFF (12 uint16 bands in 512 x 512 blocks, ZSTD + predictor 2, as
:func:`minescan.sources.local.make_tile` writes it). GDAL reads a window of it by splitting every decoded
block into 12 per-band cache blocks and interleaving them again into the caller's buffer; for a detect
job's quadrant span that costs 1.7-2.0 CPU-s, more than the bfloat16 network (docs/performance.md).
:class:`BlockDecoder` instead decodes each block once, in parallel threads (imagecodecs releases the GIL),
straight to the pixel-interleaved layout the scan uses (1.16-1.25 CPU-s for the same blocks, measured),
and keeps the last rows of blocks for the next strips. An uncompressed file (``source.tile_compression:
none``) is not decoded or cached at all: a window is read by ``preadv`` straight into its rows (no block
buffers, whose new pages would fault in again for every block).

It reads only what it can read exactly: a window inside the file, from a file whose blocks tifffile
decodes with a lossless compression (:data:`LOSSLESS`, any predictor). Anything else (a strip-organised or
band-sequential file, a lossy compression, a block missing from a sparse file, an error) is read by GDAL,
as before: the constructor refuses the file, or :meth:`BlockDecoder.read` returns None. Tests compare it with GDAL pixel for pixel.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


# TIFF compressions decoded here: lossless ones, whose pixels are the file's whatever the decoder
LOSSLESS = ("NONE", "LZW", "ADOBE_DEFLATE", "DEFLATE", "ZSTD", "ZSTD_DEPRECATED", "LZMA", "PACKBITS")


def available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("tifffile", "imagecodecs"))


try:
    IOV_MAX = max(16, os.sysconf("SC_IOV_MAX"))  # buffers per preadv call (-1: no limit said)
except (AttributeError, ValueError, OSError):
    IOV_MAX = 16  # POSIX's minimum


class BlockDecoder:
    """Windows of a tiled, pixel-interleaved TIFF's first image, decoded block by block (module docstring).

    Raises ``ValueError`` (saying why) for a file it does not read; the caller then keeps GDAL."""

    def __init__(self, path: str | Path, threads: int = 1, keep_rows: int = 2):
        import tifffile

        self.path = Path(path)
        self._tif = tifffile.TiffFile(self.path)
        try:
            page = self._tif.pages[0]
            if not page.is_tiled or page.tiledepth != 1 or page.imagedepth != 1:
                raise ValueError("not tiled in 2-D blocks")
            if page.samplesperpixel > 1 and page.planarconfig != 1:  # 1: contiguous (INTERLEAVE=PIXEL)
                raise ValueError("bands stored separately (INTERLEAVE=BAND)")
            if page.compression.name not in LOSSLESS:  # a lossy decoder's pixels may differ from GDAL's
                raise ValueError(f"compression {page.compression.name} (decoded here: {', '.join(LOSSLESS)})")
            self.height, self.width = page.imagelength, page.imagewidth
            self.bands, self.dtype = page.samplesperpixel, np.dtype(page.dtype)
            self.th, self.tw = page.tilelength, page.tilewidth
            self.across = -(-self.width // self.tw)
            self._offsets, self._counts = page.dataoffsets, page.databytecounts
            self._decode = page.decode  # tifffile's decoder for this page (compression, predictor, byte order)
            # An uncompressed file in this machine's byte order: windows read straight into place (_read_plain)
            self._plain = (page.compression.name == "NONE" and hasattr(os, "preadv")
                           and self.dtype.newbyteorder(self._tif.byteorder).isnative)
            self._block_bytes = self.th * self.tw * self.bands * self.dtype.itemsize
        except Exception:
            self._tif.close()
            raise
        self._fd = os.open(self.path, os.O_RDONLY)  # os.pread: safe from several threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="minescan-decode") if threads > 1 else None
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()  # block index -> (h, w, bands)
        self._lock = threading.Lock()
        self._skip = memoryview(bytearray(0))  # where the columns a plain read leaves out go
        self.keep_rows = keep_rows  # rows of blocks (as wide as the last read) kept for the next reads

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        os.close(self._fd)
        self._tif.close()

    def _block(self, i: int) -> np.ndarray | None:
        if not self._counts[i]:
            return None  # a sparse file's missing block: GDAL decides what it holds
        data = os.pread(self._fd, int(self._counts[i]), int(self._offsets[i]))
        seg, _, shape = self._decode(data, i)
        return None if seg is None else seg.reshape(shape[1], shape[2], shape[3])

    def _read_plain(self, col0: int, row0: int, col1: int, row1: int, ys: range, xs: range, out: np.ndarray) -> bool:
        """An uncompressed file's window, all bands: each block's lines read by the kernel straight into the
        rows of ``out`` (one ``preadv`` per block, the bytes of the columns left out going to a scratch
        buffer), so no block is copied in memory or cached. False if a block is not a plain full one (a
        sparse file's missing block, a truncated file): the caller then reads as for other files."""
        px = self.bands * self.dtype.itemsize
        line = self.tw * px
        dst = memoryview(out).cast("B")
        out_line = (col1 - col0) * px
        for y in ys:
            by = y * self.th
            r0, r1 = max(row0, by), min(row1, by + self.th)
            for x in xs:
                i = y * self.across + x
                if self._counts[i] != self._block_bytes:
                    return False
                bx = x * self.tw
                c0, c1 = max(col0, bx), min(col1, bx + self.tw)
                need, skip = (c1 - c0) * px, line - (c1 - c0) * px
                at = (r0 - row0) * out_line + (c0 - col0) * px
                bufs = []
                for _ in range(r0, r1):
                    bufs.append(dst[at : at + need])
                    if skip:
                        bufs.append(self._scratch(skip))
                    at += out_line
                if skip:
                    bufs.pop()  # nothing to skip after the last line
                offset = int(self._offsets[i]) + (r0 - by) * line + (c0 - bx) * px
                for k in range(0, len(bufs), IOV_MAX):
                    part = bufs[k : k + IOV_MAX]
                    size = sum(len(b) for b in part)
                    if os.preadv(self._fd, part, offset) != size:
                        return False
                    offset += size
        return True

    def _scratch(self, n: int) -> memoryview:
        if len(self._skip) < n:
            self._skip = memoryview(bytearray(n))
        return self._skip[:n]

    def read(self, col0: int, row0: int, col1: int, row1: int, bands: list[int]) -> np.ndarray | None:
        """File pixels [col0, col1) x [row0, row1) of the 0-based ``bands`` as a C-contiguous (H, W, B) array,
        or None when this window is not for it (outside the file, a missing block, an error)."""
        if not (0 <= col0 < col1 <= self.width and 0 <= row0 < row1 <= self.height):
            return None
        ys = range(row0 // self.th, (row1 - 1) // self.th + 1)
        xs = range(col0 // self.tw, (col1 - 1) // self.tw + 1)
        every = list(bands) == list(range(self.bands))
        if self._plain:
            out = np.empty((row1 - row0, col1 - col0, self.bands), dtype=self.dtype)
            if self._read_plain(col0, row0, col1, row1, ys, xs, out):
                return out if every else np.ascontiguousarray(out[..., bands])
        wanted = [y * self.across + x for y in ys for x in xs]
        with self._lock:
            todo = [i for i in wanted if i not in self._cache]
            try:
                got = list(self._pool.map(self._block, todo) if self._pool else map(self._block, todo))
            except Exception as exc:  # noqa: BLE001 - any decoding trouble: GDAL reads it (and reports it)
                log.debug("%s: block decoding failed (%s); reading with GDAL", self.path, exc)
                return None
            if any(b is None for b in got):
                return None
            self._cache.update(zip(todo, got, strict=True))
            for i in wanted:
                self._cache.move_to_end(i)
            while len(self._cache) > max(len(wanted), self.keep_rows * len(xs)):
                self._cache.popitem(last=False)
            blocks = {i: self._cache[i] for i in wanted}
        out = np.empty((row1 - row0, col1 - col0, len(bands)), dtype=self.dtype)
        for y in ys:
            for x in xs:
                b = blocks[y * self.across + x]
                by, bx = y * self.th, x * self.tw  # the block's first file pixel
                r0, r1 = max(row0, by), min(row1, by + b.shape[0])
                c0, c1 = max(col0, bx), min(col1, bx + b.shape[1])
                src = b[r0 - by : r1 - by, c0 - bx : c1 - bx]
                out[r0 - row0 : r1 - row0, c0 - col0 : c1 - col0] = src if every else src[..., bands]
        return out

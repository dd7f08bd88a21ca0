"""A tile fetched with ``ee.data.computePixels`` in blocks under the per-request size limit.

Earth Engine refuses a computePixels request above 48 MiB, counted as width x height x (bytes of every
band + 1 mask byte). A 9536 x 9536 px tile of 12 uint16 bands is ~2.2 GB, so it is cut into blocks: rows of
512 px (the tile GeoTIFF's internal block) and as many multiples of 512 px across as fit (512 x 3584 px,
~44 MiB, for 12 bands), i.e. 57 requests per tile. Blocks are fetched by a small thread pool (the
concurrency limit), each with retries, and each finished block is saved at once as its own ``.npy`` file
(written to a temporary name, fsync'ed, renamed): after a crash only the missing blocks are fetched again.
When all are there they are written, in order, into the tile GeoTIFF.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minescan.errors import InputDataError

log = logging.getLogger(__name__)

ALIGN = 512  # the tile GeoTIFF's block size: blocks aligned to it are written without re-compression


@dataclass(frozen=True)
class Block:
    """A rectangle of the tile in pixels relative to its top-left corner (halo included)."""

    col0: int
    row0: int
    width: int
    height: int

    @property
    def name(self) -> str:
        return f"r{self.row0:05d}_c{self.col0:05d}_{self.height}x{self.width}"


def request_bytes(width: int, height: int, n_bands: int, bytes_per_band: int = 2) -> int:
    """Size Earth Engine counts for a computePixels request (one extra mask byte per pixel)."""
    return width * height * (n_bands * bytes_per_band + 1)


def plan_blocks(width: int, height: int, n_bands: int, limit_bytes: int, bytes_per_band: int = 2,
                align: int = ALIGN) -> list[Block]:
    """Cut a width x height image into blocks whose requests stay within ``limit_bytes``, row-major."""
    per_px = n_bands * bytes_per_band + 1
    max_px = limit_bytes // per_px
    if max_px < 1:
        raise InputDataError(f"{n_bands} bands do not fit one pixel into a {limit_bytes}-byte request")
    if align * align <= max_px:
        bw = (max_px // align) // align * align
        if bw >= width:
            bw = width
            bh = max(align, (max_px // width) // align * align)
        else:
            bh = align
    else:  # very many bands: square blocks, multiples of 16 px
        bw = bh = max(1, (math.isqrt(max_px) // 16) * 16 or math.isqrt(max_px))
    bh = min(bh, height)
    blocks = [Block(c, r, min(bw, width - c), min(bh, height - r))
              for r in range(0, height, bh) for c in range(0, width, bw)]
    assert all(request_bytes(b.width, b.height, n_bands, bytes_per_band) <= limit_bytes for b in blocks)
    return blocks


def block_grid(epsg: int, t, block: Block) -> dict:
    """The computePixels ``grid`` of a block of an image with CRS ``epsg`` and affine transform ``t``: the
    same CRS and pixels, the origin shifted to the block."""
    return {
        "dimensions": {"width": block.width, "height": block.height},
        "affineTransform": {"scaleX": t.a, "shearX": t.b, "translateX": t.c + block.col0 * t.a,
                            "shearY": t.d, "scaleY": t.e, "translateY": t.f + block.row0 * t.e},
        "crsCode": f"EPSG:{epsg}",
    }


def to_band_array(pixels, bands: list[str], block: Block, what: str) -> np.ndarray:
    """computePixels' NUMPY_NDARRAY answer (a structured (h, w) array, one field per band) -> (B, h, w) uint16."""
    arr = np.asarray(pixels)
    if arr.dtype.names:
        missing = [b for b in bands if b not in arr.dtype.names]
        if missing:
            raise InputDataError(f"{what}: Earth Engine returned no band(s) {', '.join(missing)} "
                                 f"(got {', '.join(arr.dtype.names)})")
        data = np.stack([arr[b] for b in bands])
    elif arr.ndim == 3 and arr.shape[-1] == len(bands):
        data = np.moveaxis(arr, -1, 0)
    else:
        raise InputDataError(f"{what}: unexpected answer from computePixels (shape {arr.shape}, dtype {arr.dtype})")
    if data.shape != (len(bands), block.height, block.width):
        raise InputDataError(f"{what}: computePixels returned {data.shape[2]}x{data.shape[1]} px, "
                             f"expected {block.width}x{block.height}")
    if data.dtype != np.uint16:
        if data.size and (np.nanmin(data) < 0 or np.nanmax(data) > 65535):
            raise InputDataError(f"{what}: values outside the uint16 range (dtype {data.dtype})")
        data = data.astype(np.uint16)
    return data


class BlockStore:
    """Finished blocks of one tile in a directory: one ``.npy`` per block, written atomically."""

    def __init__(self, directory: Path, manifest: dict):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "manifest.json"
        if path.exists():
            try:
                old = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                old = None
            if old != manifest:  # other blocks, bands or composite: nothing in here can be reused
                log.info("%s: block layout changed, discarding %d stored block(s)", self.dir,
                         len(list(self.dir.glob("*.npy"))))
                for f in self.dir.glob("*.npy"):
                    f.unlink()
        tmp = self.dir / f".manifest.partial-{os.getpid()}.json"
        tmp.write_text(json.dumps(manifest, sort_keys=True))
        os.replace(tmp, path)
        for stale in self.dir.glob(".*.partial-*"):  # left by a crash mid-write
            if stale.name != tmp.name:
                stale.unlink(missing_ok=True)

    def path(self, block: Block) -> Path:
        return self.dir / f"{block.name}.npy"

    def has(self, block: Block, n_bands: int) -> bool:
        p = self.path(block)
        if not p.exists():
            return False
        try:
            arr = np.load(p, mmap_mode="r")
            ok = arr.shape == (n_bands, block.height, block.width) and arr.dtype == np.uint16
            del arr
        except (OSError, ValueError, EOFError):
            ok = False
        if not ok:
            log.warning("%s: damaged block file, fetching it again", p)
            p.unlink(missing_ok=True)
        return ok

    def save(self, block: Block, data: np.ndarray) -> None:
        tmp = self.dir / f".{block.name}.partial-{os.getpid()}-{threading.get_ident()}.npy"
        with open(tmp, "wb") as f:
            np.save(f, data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path(block))

    def load(self, block: Block) -> np.ndarray:
        return np.load(self.path(block))

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def fetch_blocks(ee, image, tile, bands: list[str], blocks: list[Block], store: BlockStore, retrier,
                 concurrency: int, what: str) -> int:
    """Fetch every block not yet in ``store``; return how many were fetched. The first failure stops all."""
    todo = [b for b in blocks if not store.has(b, len(bands))]
    if len(todo) < len(blocks):
        log.info("%s: %d of %d blocks already stored, fetching %d", what, len(blocks) - len(todo), len(blocks),
                 len(todo))
    done = 0
    lock = threading.Lock()

    def one(block: Block) -> None:
        nonlocal done
        request = {"expression": image, "fileFormat": "NUMPY_NDARRAY", "bandIds": list(bands),
                   "grid": block_grid(tile.id.epsg, tile.transform, block)}
        label = f"{what} block {block.name}"
        pixels = retrier.call(ee.data.computePixels, request, what=label)
        store.save(block, to_band_array(pixels, list(bands), block, label))
        with lock:
            done += 1
            if done % 10 == 0 or done == len(todo):
                log.info("%s: %d/%d blocks fetched", what, done, len(todo))

    if not todo:
        return 0
    pool = ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(todo))), thread_name_prefix="ee")
    try:
        futures = [pool.submit(one, b) for b in todo]
        finished, pending = wait(futures, return_when=FIRST_EXCEPTION)
        errors = [f.exception() for f in futures if f in finished and f.exception() is not None]
        if errors:
            for f in pending:
                f.cancel()
            raise errors[0]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return len(todo)


def write_blocks(store: BlockStore, blocks: list[Block], dst) -> int:
    """Write the stored blocks into an open rasterio dataset; return the number of valid pixels."""
    from rasterio.windows import Window

    valid = 0
    for block in blocks:
        data = store.load(block)
        dst.write(data, window=Window(block.col0, block.row0, block.width, block.height))
        valid += int(np.all(data != 0, axis=0).sum())
    return valid

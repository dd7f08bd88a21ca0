"""Fakes of Earth Engine and Cloud Storage for the gee tests (no test in here; imported by test_gee*.py).

- ``FakeEE``: the expression recorder of :mod:`minescan.sources.gee.recorder` plus ``data.computePixels`` (answers
  a known pattern of the *global* grid pixel, so values and georeferencing can both be checked),
  ``data.getOperation`` / ``listOperations``, ``batch.Export.image.toCloudStorage`` / ``toDrive`` (the
  "export" writes GeoTIFF pieces into a bucket directory) and ``Initialize``.
- ``FakeSession``: the Cloud Storage JSON API over that bucket directory (listing, media download with
  Range requests, delete), able to cut a download short to test resuming.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote

import numpy as np
import rasterio
from affine import Affine

from minescan.sources.gee.recorder import RecordingEE

BANDS = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"]


def pattern(p, q, b):
    """The fake composite: a value for global pixel column p, row q, band index b; never 0."""
    return ((np.asarray(p, np.int64) * 7 + np.asarray(q, np.int64) * 13 + b * 1000) % 60000 + 1).astype(np.uint16)


def expected_tile(tile, n_bands=12) -> np.ndarray:
    p0, q0 = tile.origin_px
    q, p = np.mgrid[q0:q0 + tile.size_px, p0:p0 + tile.size_px]
    return np.stack([pattern(p, q, b) for b in range(n_bands)])


class EEException(Exception):
    """Stands for ee.ee_exception.EEException (a message only)."""


class HttpError(Exception):
    """Stands for googleapiclient.errors.HttpError (status in .resp.status)."""

    def __init__(self, status: int, message: str = ""):
        super().__init__(f"<HttpError {status} \"{message}\">")
        self.resp = SimpleNamespace(status=status)


def grid_pixels(grid: dict):
    w, h = grid["dimensions"]["width"], grid["dimensions"]["height"]
    a = grid["affineTransform"]
    res = a["scaleX"]
    p0 = round(a["translateX"] / res)
    q0 = round(-a["translateY"] / res)
    assert abs(p0 * res - a["translateX"]) < 1e-6 and abs(-q0 * res - a["translateY"]) < 1e-6, "off the 10 m grid"
    q, p = np.mgrid[q0:q0 + h, p0:p0 + w]
    return p, q, w, h


class FakeData:
    def __init__(self, fail=None, delay=0.0, nodata_fn=None):
        self.requests: list[dict] = []
        self.fail = fail  # fail(call_index, request) -> Exception | None
        self.delay = delay
        self.nodata_fn = nodata_fn  # (p, q) -> bool array: pixels with no data
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.operations: dict[str, list[dict]] = {}  # name -> remaining states (last one repeats)
        self.op_calls: list[str] = []
        self.listed = 0
        self.listing: list[dict] = []

    def computePixels(self, params):  # noqa: N802 (the ee API name)
        with self.lock:
            i = len(self.requests)
            self.requests.append(params)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                time.sleep(self.delay)
            if self.fail is not None:
                exc = self.fail(i, params)
                if exc is not None:
                    raise exc
            p, q, w, h = grid_pixels(params["grid"])
            out = np.zeros((h, w), dtype=[(b, "<u2") for b in params["bandIds"]])
            empty = self.nodata_fn(p, q) if self.nodata_fn else np.zeros((h, w), bool)
            for b, name in enumerate(params["bandIds"]):
                out[name] = np.where(empty, 0, pattern(p, q, BANDS.index(name) if name in BANDS else b))
            return out
        finally:
            with self.lock:
                self.in_flight -= 1

    def getOperation(self, name):  # noqa: N802
        self.op_calls.append(name)
        states = self.operations[name]
        op = states.pop(0) if len(states) > 1 else states[0]
        if callable(op):
            op = op()
        return op

    def listOperations(self, project=None):  # noqa: N802
        self.listed += 1
        return list(self.listing)


class FakeExporter:
    """ee.batch.Export.image: records parameters; on start 'runs' the export into a bucket directory."""

    def __init__(self, data: FakeData, bucket_dir: Path | None, shards: int = 2,
                 states=("PENDING", "RUNNING", "SUCCEEDED"), error: str | None = None):
        self.data = data
        self.bucket_dir = bucket_dir
        self.shards = shards
        self.states = states
        self.error = error
        self.calls: list[tuple[str, dict]] = []

    def _task(self, kind: str, params: dict):
        self.calls.append((kind, params))
        exporter = self
        n = len(self.calls)

        class Task:
            name = None

            def start(self):
                self.name = f"projects/test-proj/operations/OP{n}"
                ops = []
                for s in exporter.states:
                    op = {"name": self.name, "done": s in ("SUCCEEDED", "FAILED", "CANCELLED"),
                          "metadata": {"state": s, "description": params["description"],
                                       "createTime": f"2026-01-01T00:00:0{n}Z"}}
                    if s == "FAILED":
                        op["error"] = {"code": 3, "message": exporter.error or "failed"}
                    ops.append(op)
                if exporter.bucket_dir is not None and "SUCCEEDED" in exporter.states:
                    exporter.write_files(params)
                exporter.data.operations[self.name] = ops

        return Task()

    def toCloudStorage(self, **params):  # noqa: N802
        return self._task("gcs", params)

    def toDrive(self, **params):  # noqa: N802
        return self._task("drive", params)

    def write_files(self, params: dict) -> None:
        """GeoTIFF pieces as Earth Engine names them, on the requested grid (split in rows)."""
        w, h = (int(v) for v in params["dimensions"].split("x"))
        a, b, c, d, e, f = params["crsTransform"]
        epsg = int(params["crs"].split(":")[1])
        rows = np.linspace(0, h, self.shards + 1).astype(int)
        for k in range(self.shards):
            r0, r1 = rows[k], rows[k + 1]
            t = Affine(a, b, c, d, e, f + r0 * e)
            grid = {"dimensions": {"width": w, "height": r1 - r0},
                    "affineTransform": {"scaleX": a, "translateX": c, "scaleY": e, "translateY": f + r0 * e}}
            p, q, _, _ = grid_pixels(grid)
            data = np.stack([pattern(p, q, i) for i in range(len(BANDS))])
            name = params["fileNamePrefix"] + (f"-{r0:010d}-{0:010d}.tif" if self.shards > 1 else ".tif")
            path = self.bucket_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            with rasterio.open(path, "w", driver="GTiff", dtype="uint16", count=len(BANDS), width=w,
                               height=r1 - r0, crs=f"EPSG:{epsg}", transform=t, nodata=0, tiled=True,
                               compress="deflate") as dst:
                dst.write(data)


class FakeEE(RecordingEE):
    def __init__(self, data: FakeData | None = None, exporter: FakeExporter | None = None, init_error=None):
        data = data or FakeData()
        exporter = exporter or FakeExporter(data, None)
        self.initialized: list[dict] = []

        def initialize(credentials=None, url=None, project=None, **kw):
            self.initialized.append({"credentials": credentials, "url": url, "project": project})
            if init_error is not None:
                raise init_error

        super().__init__(data=data, batch=SimpleNamespace(Export=SimpleNamespace(image=exporter)),
                         Initialize=initialize)
        self.exporter = exporter


class FakeResponse:
    def __init__(self, status: int, body: bytes = b"", cut_at: int | None = None):
        self.status_code = status
        self._body = body
        self._cut = cut_at

    @property
    def text(self):
        return self._body.decode(errors="replace")

    def json(self):
        return json.loads(self._body)

    def iter_content(self, chunk=1024):
        end = len(self._body) if self._cut is None else self._cut
        for i in range(0, end, 4096):
            yield self._body[i:min(i + 4096, end)]
        if self._cut is not None:
            raise ConnectionError("connection reset by peer (simulated)")

    def close(self):
        pass


class FakeSession:
    """The Cloud Storage JSON API for one bucket directory."""

    def __init__(self, bucket: str, root: Path, cut_first_download_at: float | None = None, fail_list: int = 0):
        self.bucket = bucket
        self.root = Path(root)
        self.cut = cut_first_download_at
        self.fail_list = fail_list
        self.calls: list[tuple[str, str, dict]] = []
        self.deleted: list[str] = []

    def get(self, url, params=None, headers=None, stream=False, timeout=None):
        self.calls.append(("GET", url, dict(headers or {})))
        base = f"https://storage.googleapis.com/storage/v1/b/{self.bucket}/o"
        if url == base:
            if self.fail_list:
                self.fail_list -= 1
                return FakeResponse(503, b"backend error")
            prefix = params["prefix"]
            items = []
            for f in sorted(self.root.rglob("*")):
                name = f.relative_to(self.root).as_posix()
                if f.is_file() and name.startswith(prefix):
                    md5 = base64.b64encode(hashlib.md5(f.read_bytes()).digest()).decode()
                    items.append({"name": name, "size": str(f.stat().st_size), "md5Hash": md5})
            return FakeResponse(200, json.dumps({"items": items}).encode())
        assert url.startswith(base + "/") and url.endswith("?alt=media"), url
        name = unquote(url[len(base) + 1:-len("?alt=media")])
        body = (self.root / name).read_bytes()
        rng = (headers or {}).get("Range")
        start = int(rng.split("=")[1].rstrip("-")) if rng else 0
        if start >= len(body):
            return FakeResponse(416)
        cut = None
        if self.cut is not None:
            cut = int((len(body) - start) * self.cut)
            self.cut = None
        return FakeResponse(206 if rng else 200, body[start:], cut_at=cut)

    def delete(self, url, timeout=None):
        self.deleted.append(url)
        return FakeResponse(204)

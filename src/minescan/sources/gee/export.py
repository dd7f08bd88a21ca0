"""A tile exported by an Earth Engine batch task to Cloud Storage or Drive, then downloaded.

The export asks for exactly the tile's pixel grid: ``crs`` = the tile's UTM zone, ``crsTransform`` = its
10 m affine transform with the halo's top-left corner as origin, ``dimensions`` = core + 2 x halo. With
crs + crsTransform + dimensions and no ``region``/``scale``, the client turns this into an exact rectangle
of the grid (a ``region`` as well would mean "resample into these dimensions" instead).

The task is followed through ``ee.data.getOperation`` (``getTaskStatus`` is deprecated). Its operation name
is saved beside the download, so a rerun after a crash picks up the same task (and, if that was lost, an
active or finished task with the same description is found with ``ee.data.listOperations``) instead of
exporting again. Files are downloaded with HTTP range requests into ``.part`` files that resume where they
stopped, checked against the size (and MD5 when the store gives one), and only then renamed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np

from minescan.errors import InputDataError
from minescan.sources.gee.auth import redact
from minescan.sources.gee.retry import RETRYABLE_STATUS, TransientHTTPError

log = logging.getLogger(__name__)

ACTIVE = ("PENDING", "RUNNING", "CANCELLING")
CHUNK = 8 * 2**20


# ------------------------------------------------------------------------------------------ parameters
def export_names(tile, period: str, key: str, settings) -> tuple[str, str]:
    """(task description, file name prefix) of a tile export; the composite key makes them unique."""
    description = f"minescan_{tile.name}_{period}_{key}"
    if settings.export.destination == "gcs":
        prefix = f"{settings.export.prefix.strip('/')}/{key}/{period}/{tile.name}"
    else:  # Drive file names cannot hold folders
        prefix = f"{settings.export.prefix.strip('/').replace('/', '_')}_{tile.name}_{period}_{key}"
    return description, prefix


def export_params(image, tile, period: str, key: str, settings) -> dict:
    """Keyword arguments of ``ee.batch.Export.image.toCloudStorage`` / ``toDrive`` for one tile."""
    description, prefix = export_names(tile, period, key, settings)
    t = tile.transform
    size = tile.size_px
    params = {
        "image": image,
        "description": description,
        "fileNamePrefix": prefix,
        "dimensions": f"{size}x{size}",
        "crs": f"EPSG:{tile.id.epsg}",
        "crsTransform": [t.a, t.b, t.c, t.d, t.e, t.f],
        "maxPixels": 2 * size * size,
        "fileFormat": "GeoTIFF",
        "formatOptions": {"cloudOptimized": True, "noData": settings.nodata},
    }
    if settings.export.destination == "gcs":
        params["bucket"] = settings.export.bucket
    else:
        params["folder"] = settings.export.drive_folder
    if settings.export.priority is not None:
        params["priority"] = settings.export.priority
    return params


def start_export(ee, params: dict, destination: str) -> str:
    """Start the task; return its operation name (projects/P/operations/ID)."""
    exporter = ee.batch.Export.image.toCloudStorage if destination == "gcs" else ee.batch.Export.image.toDrive
    task = exporter(**params)
    task.start()
    name = getattr(task, "name", None) or getattr(task, "operation_name", None)
    if not name:
        raise InputDataError(f"export {params['description']}: Earth Engine returned no operation name")
    return name


# ------------------------------------------------------------------------------------------ operations
def _state(op: dict) -> str:
    return (op.get("metadata") or {}).get("state", "PENDING")


def find_operation(ee, description: str, retrier) -> dict | None:
    """The newest task with this description that is active or succeeded (after a crash lost its name)."""
    ops = retrier.call(ee.data.listOperations, what="list of Earth Engine tasks")
    matches = [op for op in ops or [] if (op.get("metadata") or {}).get("description") == description
               and _state(op) in ACTIVE + ("SUCCEEDED",) and _state(op) != "CANCELLING"]
    matches.sort(key=lambda op: (op.get("metadata") or {}).get("createTime", ""), reverse=True)
    return matches[0] if matches else None


def wait_for_operation(ee, name: str, what: str, retrier, poll_seconds: float, max_wait_hours: float,
                       sleep=time.sleep, clock=time.monotonic) -> dict:
    deadline = clock() + max_wait_hours * 3600
    last = None
    while True:
        op = retrier.call(ee.data.getOperation, name, what=f"status of {what}")
        state = _state(op)
        if state != last:
            meta = op.get("metadata") or {}
            extra = f", {100 * meta['progress']:.0f} %" if isinstance(meta.get("progress"), int | float) else ""
            log.info("%s: task %s %s%s", what, name.rsplit("/", 1)[-1], state, extra)
            last = state
        if op.get("done") or state in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return op
        if clock() >= deadline:
            raise InputDataError(
                f"{what}: task {name} is still {state} after {max_wait_hours:g} h (source.gee.export.max_wait_hours); "
                "it keeps running in Earth Engine and a rerun picks it up")
        sleep(poll_seconds)


# ------------------------------------------------------------------------------------------ storage
@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int
    id: str
    md5_hex: str | None = None


def shard_pattern(prefix: str) -> re.Pattern:
    """Earth Engine writes ``prefix.tif``, or ``prefix-RRRRRRRRRR-CCCCCCCCCC.tif`` pieces when it splits."""
    base = re.escape(prefix.rsplit("/", 1)[-1])
    return re.compile(rf"^(?:.*/)?{base}(?:-\d{{10}}-\d{{10}})?\.tif$")


class _HttpStore:
    def __init__(self, session, timeout=(30, 300)):
        self.session = session
        self.timeout = timeout

    def _check(self, resp, what: str, ok=(200,)):
        code = resp.status_code
        if code in ok:
            return resp
        if code in RETRYABLE_STATUS:
            raise TransientHTTPError(code, what)
        text = redact(getattr(resp, "text", "") or "")[:200]
        raise InputDataError(f"{what}: HTTP {code} {text}".strip())

    def _get_json(self, url: str, params: dict, what: str, retrier) -> dict:
        def once():
            return self._check(self.session.get(url, params=params, timeout=self.timeout), what).json()

        return retrier.call(once, what=what)

    def download(self, rf: RemoteFile, dest: Path, retrier) -> None:
        """Download ``rf`` to ``dest`` through ``dest.part``, resuming a previous partial download."""
        part = dest.with_name(dest.name + ".part")
        dest.parent.mkdir(parents=True, exist_ok=True)

        def attempt():
            offset = part.stat().st_size if part.exists() else 0
            if offset > rf.size:
                part.unlink()
                offset = 0
            if offset < rf.size:
                headers = {"Range": f"bytes={offset}-"} if offset else {}
                resp = self.session.get(self.media_url(rf), headers=headers, stream=True, timeout=self.timeout)
                self._check(resp, f"download of {rf.name}", ok=(200, 206, 416))
                if resp.status_code == 416:  # nothing after offset: the part may hold everything
                    resp.close()
                else:
                    mode = "ab" if resp.status_code == 206 else "wb"  # 200: the server ignored the range
                    with open(part, mode) as f:
                        for chunk in resp.iter_content(CHUNK):
                            if chunk:
                                f.write(chunk)
                        f.flush()
                        os.fsync(f.fileno())
            got = part.stat().st_size if part.exists() else 0
            if got != rf.size:
                raise ConnectionError(f"download of {rf.name} stopped at {got} of {rf.size} bytes")
            if rf.md5_hex and _md5(part) != rf.md5_hex:
                part.unlink()
                raise ConnectionError(f"download of {rf.name}: MD5 mismatch, downloading again")

        retrier.call(attempt, what=f"download of {rf.name}")
        os.replace(part, dest)


class GcsStore(_HttpStore):
    API = "https://storage.googleapis.com/storage/v1"

    def __init__(self, session, bucket: str, **kw):
        super().__init__(session, **kw)
        self.bucket = bucket

    def where(self, prefix: str) -> str:
        return f"gs://{self.bucket}/{prefix}"

    def list(self, prefix: str, retrier) -> list[RemoteFile]:
        out, token = [], None
        while True:
            params = {"prefix": prefix, "fields": "items(name,size,md5Hash),nextPageToken"}
            if token:
                params["pageToken"] = token
            body = self._get_json(f"{self.API}/b/{quote(self.bucket, safe='')}/o", params,
                                  f"listing {self.where(prefix)}", retrier)
            for item in body.get("items", []):
                md5 = base64.b64decode(item["md5Hash"]).hex() if item.get("md5Hash") else None
                out.append(RemoteFile(item["name"], int(item["size"]), item["name"], md5))
            token = body.get("nextPageToken")
            if not token:
                return out

    def media_url(self, rf: RemoteFile) -> str:
        return f"{self.API}/b/{quote(self.bucket, safe='')}/o/{quote(rf.id, safe='')}?alt=media"

    def delete(self, rf: RemoteFile, retrier) -> None:
        url = f"{self.API}/b/{quote(self.bucket, safe='')}/o/{quote(rf.id, safe='')}"
        retrier.call(lambda: self._check(self.session.delete(url, timeout=self.timeout),
                                         f"deleting {self.where(rf.name)}", ok=(200, 204, 404)),
                     what=f"deleting {rf.name}")


class DriveStore(_HttpStore):
    API = "https://www.googleapis.com/drive/v3/files"

    def __init__(self, session, folder: str, **kw):
        super().__init__(session, **kw)
        self.folder = folder

    def where(self, prefix: str) -> str:
        return f"Google Drive folder '{self.folder}', files {prefix}*"

    def list(self, prefix: str, retrier) -> list[RemoteFile]:
        out, token = [], None
        q = "name contains '{}' and trashed = false".format(prefix.replace("\\", "\\\\").replace("'", "\\'"))
        while True:
            params = {"q": q, "fields": "nextPageToken,files(id,name,size,md5Checksum)", "pageSize": 1000}
            if token:
                params["pageToken"] = token
            body = self._get_json(self.API, params, f"listing {self.where(prefix)}", retrier)
            for item in body.get("files", []):
                out.append(RemoteFile(item["name"], int(item.get("size", 0)), item["id"], item.get("md5Checksum")))
            token = body.get("nextPageToken")
            if not token:
                return out

    def media_url(self, rf: RemoteFile) -> str:
        return f"{self.API}/{quote(rf.id, safe='')}?alt=media"

    def delete(self, rf: RemoteFile, retrier) -> None:
        url = f"{self.API}/{quote(rf.id, safe='')}"
        retrier.call(lambda: self._check(self.session.delete(url, timeout=self.timeout),
                                         f"deleting {rf.name} from Drive", ok=(200, 204, 404)),
                     what=f"deleting {rf.name}")


def make_store(settings, credentials, ee=None):
    """A Cloud Storage or Drive client over an authorised HTTP session with the Earth Engine credentials."""
    from google.auth.transport.requests import AuthorizedSession

    if credentials == "persistent":
        from minescan.sources.gee import get_ee

        credentials = (ee or get_ee()).data.get_persistent_credentials()
    session = AuthorizedSession(credentials)
    if settings.export.destination == "gcs":
        return GcsStore(session, settings.export.bucket)
    return DriveStore(session, settings.export.drive_folder)


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ the route
def run_export(ee, image, tile, period: str, key: str, settings, work_dir: Path, store, retrier,
               sleep=time.sleep, clock=time.monotonic) -> list[Path]:
    """Export (or pick up the export of) one tile and download its file(s); return the local paths."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    params = export_params(image, tile, period, key, settings)
    description, prefix = params["description"], params["fileNamePrefix"]
    what = f"tile {tile.name} {period}"
    state_path = work_dir / "export.json"
    shard_dir = work_dir / "shards"
    try:
        saved = json.loads(state_path.read_text()) if state_path.exists() else {}
    except (OSError, json.JSONDecodeError):
        saved = {}
    if saved.get("description") != description:
        saved = {}
    if saved.get("downloaded"):  # a crash after the download, before the tile was written
        files = [shard_dir / n for n in saved.get("files", [])]
        if files and all(f.exists() for f in files):
            log.info("%s: export already downloaded (%d file(s))", what, len(files))
            return files

    def save_state(**extra):
        saved.update(description=description, prefix=prefix, **extra)
        tmp = state_path.with_name(f".export.partial-{os.getpid()}.json")
        tmp.write_text(json.dumps(saved, sort_keys=True))
        os.replace(tmp, state_path)

    op = None
    if saved.get("operation"):
        try:
            op = retrier.call(ee.data.getOperation, saved["operation"], what=f"status of {what}")
        except Exception as exc:
            log.warning("%s: saved task %s cannot be read (%s); looking for another", what, saved["operation"],
                        redact(str(exc))[:200])
        if op is not None and _state(op) in ("FAILED", "CANCELLED", "CANCELLING"):
            log.warning("%s: previous task %s %s; starting a new export", what, op.get("name"), _state(op))
            op = None
    if op is None:
        op = find_operation(ee, description, retrier)
        if op is not None:
            log.info("%s: found task %s (%s) with the same description; not exporting again", what,
                     op.get("name"), _state(op))
    fresh = op is None
    if fresh:
        name = retrier.call(start_export, ee, params, settings.export.destination, what=f"start of export {what}")
        op = {"name": name, "metadata": {"state": "PENDING"}}
        log.info("%s: export started to %s (task %s)", what, store.where(prefix), name)
    save_state(operation=op["name"], downloaded=False)
    op = wait_for_operation(ee, op["name"], what, retrier, settings.export.poll_seconds,
                            settings.export.max_wait_hours, sleep=sleep, clock=clock)
    if _state(op) != "SUCCEEDED":
        state_path.unlink(missing_ok=True)
        err = redact(((op.get("error") or {}).get("message")) or _state(op))
        raise InputDataError(f"{what}: export task {op['name']} {_state(op)}: {err}")

    pattern = shard_pattern(prefix)
    remote = [rf for rf in store.list(prefix, retrier) if pattern.match(rf.name)]
    if not remote:
        state_path.unlink(missing_ok=True)
        if fresh:
            raise InputDataError(f"{what}: export task {op['name']} succeeded but no file matches "
                                 f"{store.where(prefix)}")
        raise InputDataError(f"{what}: the earlier export left no file under {store.where(prefix)} "
                             "(deleted?); rerun to export it again")
    paths = []
    for rf in sorted(remote, key=lambda r: r.name):
        dest = shard_dir / rf.name.rsplit("/", 1)[-1]
        if dest.exists() and dest.stat().st_size == rf.size:
            log.info("%s: %s already downloaded", what, dest.name)
        else:
            log.info("%s: downloading %s (%.1f MB)", what, rf.name, rf.size / 1e6)
            store.download(rf, dest, retrier)
        paths.append(dest)
    save_state(operation=op["name"], downloaded=True, files=[p.name for p in paths])
    if settings.export.delete_after_download:
        for rf in remote:
            store.delete(rf, retrier)
    return paths


def write_shards(paths: list[Path], tile, n_bands: int, dst, rows: int = 512) -> int:
    """Copy exported GeoTIFF pieces into the tile dataset by their georeferencing; return valid pixels.

    Each piece must be on the tile's grid (same CRS, pixel size and a whole-pixel offset); together they
    must cover the tile.
    """
    import rasterio
    from rasterio.windows import Window

    t = tile.transform
    size = tile.size_px
    covered = 0
    valid = 0
    for path in paths:
        with rasterio.open(path) as src:
            s = src.transform
            if src.crs is None or src.crs.to_epsg() != tile.id.epsg:
                raise InputDataError(f"{path}: CRS {src.crs} is not EPSG:{tile.id.epsg} of tile {tile.name}")
            if src.count != n_bands:
                raise InputDataError(f"{path}: has {src.count} bands, expected {n_bands}")
            if abs(s.a - t.a) > 1e-9 or abs(s.e - t.e) > 1e-9 or s.b or s.d:
                raise InputDataError(f"{path}: pixel size {s.a} x {s.e} is not the grid's {t.a} x {t.e}")
            col_f, row_f = (s.c - t.c) / t.a, (s.f - t.f) / t.e
            col, row = round(col_f), round(row_f)
            if abs(col - col_f) > 1e-6 or abs(row - row_f) > 1e-6:
                raise InputDataError(f"{path}: not aligned to the tile grid (offset {col_f:.3f}, {row_f:.3f} px)")
            c0, r0 = max(0, col), max(0, row)
            c1, r1 = min(size, col + src.width), min(size, row + src.height)
            if c1 <= c0 or r1 <= r0:
                continue
            covered += (c1 - c0) * (r1 - r0)
            for y in range(r0, r1, rows):
                h = min(rows, r1 - y)
                data = src.read(window=Window(c0 - col, y - row, c1 - c0, h))
                if data.dtype != np.uint16:
                    data = np.clip(data, 0, 65535).astype(np.uint16)
                dst.write(data, window=Window(c0, y, c1 - c0, h))
                valid += int(np.all(data != 0, axis=0).sum())
    if covered < size * size:
        raise InputDataError(f"tile {tile.name}: the exported file(s) cover {covered} of {size * size} px "
                             f"({', '.join(p.name for p in paths)})")
    return valid

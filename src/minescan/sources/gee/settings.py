"""The ``source.gee`` block of a scan config, checked beyond what the JSON schema can say, as one object.

The Snakemake rule passes these settings to ``minescan gee tile`` as one JSON argument (``--spec``), so a
job never needs the config file or the environment the workflow was started from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from minescan.errors import ConfigError
from minescan.periods import period_dates

L1C = "COPERNICUS/S2_HARMONIZED"
L2A = "COPERNICUS/S2_SR_HARMONIZED"
DEPRECATED = {
    "COPERNICUS/S2": L1C,
    "COPERNICUS/S2_SR": L2A,
}
CLOUD_SCORE_PLUS = "GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED"
SPECTRAL_BANDS = {
    L1C: ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"),
    L2A: ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"),
}
# computePixels refuses requests above 48 MiB, counting one extra byte per pixel for the mask.
REQUEST_LIMIT_BYTES = 48 * 2**20
HIGH_VOLUME_URL = "https://earthengine-highvolume.googleapis.com"


@dataclass(frozen=True)
class ExportSettings:
    destination: str = "gcs"
    bucket: str | None = None
    drive_folder: str = "minescan"
    prefix: str = "minescan"
    poll_seconds: float = 30.0
    max_wait_hours: float = 24.0
    delete_after_download: bool = False
    priority: int | None = None


@dataclass(frozen=True)
class GeeSettings:
    # composite definition (what the pixels are)
    collection: str = L1C
    cloud_mask: str = "cloud_score_plus"
    cs_band: str = "cs_cdf"
    cs_threshold: float = 0.6
    max_cloudy_pixel_percentage: float | None = None
    resampling: str = "nearest"
    bands: tuple[str, ...] = SPECTRAL_BANDS[L2A]
    nodata: int = 0
    # fetching (how the pixels arrive)
    route: str = "compute_pixels"
    max_request_mb: float = 48.0
    concurrency: int = 4
    retries: int = 6
    backoff_seconds: float = 2.0
    max_backoff_seconds: float = 120.0
    cache_dir: str = "results/cache/gee"
    chip_sizes: tuple[int, ...] = (201, 21)
    tile_compression: str = "zstd"  # how tile COGs are stored (source.tile_compression), not what they hold
    export: ExportSettings = field(default_factory=ExportSettings)
    # authentication (paths and names only: never a secret)
    project: str | None = None
    credentials: str = "auto"
    service_account_key: str | None = None
    high_volume: bool = False

    @classmethod
    def from_config(cls, cfg: dict) -> GeeSettings:
        """From a validated scan config (``cfg['source']['gee']``, ``cfg['bands']``, ...)."""
        g = dict(cfg["source"]["gee"])
        export = ExportSettings(**g.pop("export", {}))
        g.pop("job_retries", None)  # a Snakemake setting, not needed by the jobs
        cache_dir = g.pop("cache_dir", None) or str(Path(cfg.get("results_dir", "results")) / "cache" / "gee")
        settings = cls(**{**g, "bands": tuple(cfg["bands"]), "chip_sizes": tuple(g.get("chip_sizes", (201, 21))),
                          "nodata": int(cfg["source"].get("nodata", 0)), "cache_dir": cache_dir,
                          "tile_compression": cfg["source"].get("tile_compression", "zstd"),
                          "export": export})
        settings.check()
        return settings

    def check(self) -> None:
        """Raise ConfigError for what the schema cannot express."""
        if self.collection in DEPRECATED:
            raise ConfigError(
                f"key 'source.gee.collection': '{self.collection}' is deprecated in Earth Engine (its scenes after "
                f"2022-01-25 carry the processing-baseline offset and it is no longer updated); use "
                f"'{DEPRECATED[self.collection]}', which holds the same scenes on one radiometric scale")
        if self.collection not in SPECTRAL_BANDS:
            raise ConfigError(
                f"key 'source.gee.collection': '{self.collection}' is not supported; use '{L1C}' (L1C, top of "
                f"atmosphere) or '{L2A}' (L2A, surface reflectance)")
        missing = [b for b in self.bands if b not in SPECTRAL_BANDS[self.collection]]
        if missing:
            raise ConfigError(
                f"key 'bands': {', '.join(missing)} not in {self.collection} (it has "
                f"{', '.join(SPECTRAL_BANDS[self.collection])})")
        if self.nodata != 0:
            raise ConfigError("key 'source.nodata' must be 0 with source.kind gee (Sentinel-2 DN 0 means no data)")
        if self.route == "export" and self.export.destination == "gcs" and not self.export.bucket:
            raise ConfigError("key 'source.gee.export.bucket' is needed for route 'export' to Cloud Storage "
                              "(or set source.gee.export.destination: drive, or route: compute_pixels)")
        if self.tile_compression not in ("zstd", "none"):  # minescan.sources.local.TILE_COMPRESSIONS
            raise ConfigError(f"key 'source.tile_compression': '{self.tile_compression}' is not one of zstd, none")
        if self.request_limit_bytes > REQUEST_LIMIT_BYTES:
            raise ConfigError("key 'source.gee.max_request_mb' is above Earth Engine's 48 MB computePixels limit")

    # ---------------------------------------------------------------- derived values
    @property
    def request_limit_bytes(self) -> int:
        return int(self.max_request_mb * 2**20)

    @property
    def endpoint(self) -> str | None:
        return HIGH_VOLUME_URL if self.high_volume else None

    def composite_definition(self, period: str) -> dict:
        """Everything that decides the pixel values of a composite for one period (and nothing else)."""
        start, end = period_dates(period)
        cloudy = self.max_cloudy_pixel_percentage
        d = {"collection": self.collection, "start": start, "end": end, "cloud_mask": self.cloud_mask,
             "max_cloudy_pixel_percentage": None if cloudy is None else float(cloudy), "resampling": self.resampling,
             "bands": list(self.bands), "reducer": "median", "nodata": self.nodata}
        if self.cloud_mask == "cloud_score_plus":
            d.update(cs_band=self.cs_band, cs_threshold=float(self.cs_threshold))
        return d

    def composite_key(self, period: str, grid=None) -> str:
        """A short hash of the composite definition (and the grid): cache entries of other definitions never match."""
        d = self.composite_definition(period)
        if grid is not None:
            d["grid"] = [grid.tile_px, grid.resolution_m, grid.halo_px]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    # ---------------------------------------------------------------- (de)serialisation for --spec
    def to_dict(self) -> dict:
        d = asdict(self)
        d["bands"] = list(self.bands)
        d["chip_sizes"] = list(self.chip_sizes)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict) -> GeeSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"--spec: unknown key(s) {', '.join(unknown)}")
        d = dict(d)
        export = ExportSettings(**d.pop("export", {}))
        settings = cls(**{**d, "bands": tuple(d.get("bands", cls.bands)),
                          "chip_sizes": tuple(d.get("chip_sizes", cls.chip_sizes)), "export": export})
        settings.check()
        return settings

    @classmethod
    def from_json(cls, text: str) -> GeeSettings:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--spec is not valid JSON ({exc.msg} at character {exc.pos})") from exc
        if not isinstance(d, dict):
            raise ConfigError("--spec must be a JSON object")
        return cls.from_dict(d)

"""Dual-threshold spatial prior: isolated candidates must clear a stricter probability cut-off.

Mines come in clusters (a pit, its dumps and ponds span several 270 m cells; mining districts hold many
pits), while many false positives of the discovery network are scattered single cells. So, as operational
systems do to remove scattered false positives, a candidate cell passes the main cut-off (the discovery
threshold, ``detect.threshold``) if it has company, and must pass a stricter one if it is alone:

- a candidate is *isolated* when the distance to its k-th nearest **other** candidate is more than D km
  (or when there are fewer than k other candidates); a candidate exactly D km away still has company;
- an isolated candidate whose probability is below ``isolated_threshold`` is removed (kept otherwise).

Neighbours are all the discovery candidates of the scan (every cell above the main cut-off, whatever the
impact CNN later says about them), across quadrant, tile and UTM-zone seams. Distances are straight-line
(chord) distances between the cell centres placed on the WGS84 ellipsoid: for the few kilometres that
matter here they equal the geodesic distance to well under a millimetre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from minescan.errors import ConfigError

WGS84_A = 6_378_137.0
WGS84_E2 = 6.694379990141317e-3  # first eccentricity squared


@dataclass(frozen=True)
class SpatialPrior:
    """``isolated_threshold`` None disables the prior (every candidate is kept)."""

    isolated_threshold: float | None = None
    k: int = 2
    km: float = 1.0

    def __post_init__(self):
        if self.isolated_threshold is not None and not 0 <= self.isolated_threshold <= 1:
            raise ConfigError(f"key 'merge.isolated_threshold' must be in [0, 1], got {self.isolated_threshold}")
        if self.k < 1:
            raise ConfigError(f"key 'merge.isolation_k' must be >= 1, got {self.k}")
        if not self.km > 0:
            raise ConfigError(f"key 'merge.isolation_km' must be > 0, got {self.km}")

    @property
    def enabled(self) -> bool:
        return self.isolated_threshold is not None

    def as_dict(self) -> dict:
        return {"enabled": self.enabled, "isolated_threshold": self.isolated_threshold,
                "isolation_k": self.k, "isolation_km": self.km}


def ecef(lon, lat) -> np.ndarray:
    """Earth-centred coordinates (m) of lon/lat points on the WGS84 ellipsoid (height 0)."""
    lon = np.radians(np.asarray(lon, dtype=np.float64))
    lat = np.radians(np.asarray(lat, dtype=np.float64))
    n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * np.sin(lat) ** 2)
    return np.column_stack([n * np.cos(lat) * np.cos(lon), n * np.cos(lat) * np.sin(lon),
                            n * (1.0 - WGS84_E2) * np.sin(lat)])


def kth_neighbour_distance_m(lon, lat, k: int) -> np.ndarray:
    """Distance (m) from every point to its k-th nearest other point; inf if there are fewer than k others."""
    xyz = ecef(lon, lat)
    n = len(xyz)
    if n == 0:
        return np.zeros(0)
    if n <= k:
        return np.full(n, np.inf)
    dist, _ = cKDTree(xyz).query(xyz, k=k + 1)  # column 0 is the point itself (distance 0)
    return dist[:, k]


def isolated_removals(candidates: pd.DataFrame, prior: SpatialPrior | None) -> pd.Series:
    """Boolean Series (same index): True for the candidates the prior removes (isolated and below the
    stricter threshold). Needs columns lon, lat, probability."""
    if prior is None or not prior.enabled or candidates.empty:
        return pd.Series(False, index=candidates.index, dtype=bool)
    dist = kth_neighbour_distance_m(candidates["lon"], candidates["lat"], prior.k)
    isolated = dist > prior.km * 1000.0 + 1e-3  # 1 mm: 'exactly D km' survives rounding
    weak = candidates["probability"].to_numpy(dtype=np.float64) < prior.isolated_threshold
    return pd.Series(isolated & weak, index=candidates.index, dtype=bool)

"""Draw docs/demo-detections.png from a finished demo scan (make demo first).

RGB (B4, B3, B2) of the simulated scene, true sites outlined in white (mines) and cyan (confusers),
detected sites filled red (high impact) / yellow (low impact).
"""

import sys
from pathlib import Path

import geopandas as gpd
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import rasterio  # noqa: E402

scan = Path(sys.argv[1] if len(sys.argv) > 1 else "results/demo/2026Q1")
out = Path(sys.argv[2] if len(sys.argv) > 2 else "docs/demo-detections.png")
with rasterio.open(scan / "source" / "demo_scene.tif") as src:
    step = 3
    rgb = src.read([4, 3, 2], out_shape=(3, src.height // step, src.width // step)).astype(float)
    b = src.bounds
    crs = src.crs
rgb = np.clip(np.moveaxis(rgb, 0, -1) / 2500, 0, 1)
sites = gpd.read_file(scan / "sites.gpkg").to_crs(crs)
truth = gpd.read_file(scan / "source" / "demo_truth.gpkg").to_crs(crs)
fig, ax = plt.subplots(figsize=(7, 7), dpi=80)
ax.imshow(rgb, extent=(b.left, b.right, b.bottom, b.top))
truth[truth["class"] == "mine"].boundary.plot(ax=ax, color="white", linewidth=0.8)
truth[truth["class"] != "mine"].boundary.plot(ax=ax, color="cyan", linewidth=0.8)
for impact, colour in (("high", "red"), ("low", "yellow")):
    part = sites[sites["impact"] == impact]
    if len(part):
        part.plot(ax=ax, color=colour, alpha=0.55)
ax.set_title("minescan demo (SIMULATED scene): detected sites red = high, yellow = low impact;\n"
             "true mines white, confusers (reservoirs, river banks) cyan", fontsize=9)
ax.set_axis_off()
fig.tight_layout()
fig.savefig(out)
print(out)

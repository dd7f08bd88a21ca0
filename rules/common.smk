# Shared values and input functions for the rules. Nothing here does work: it only names paths and the
# CLI arguments derived from the validated config.
#
# Shell safety: every path or free-text value reaches a rule's shell command either through Snakemake's
# quoting ({input:q}, {output:q}, {log:q}, {params.x:q}) or, inside a compound argument string built here,
# through shlex.quote; the unquoted rest are numbers, enums and names the schema constrains to a pattern
# (bands, region.name, periods). tests/test_faults.py runs a scan whose paths and results_dir hold spaces,
# quotes and a $(...).
import re
import shlex

import snakemake.rules

from minescan.grid import QUADRANTS
from minescan.scan.plan import tile_batches
from minescan.periods import following_periods
from minescan.sources.local import expand_sources, sources_for_tile


wildcard_constraints:
    region=REGION,
    period=r"\d\d\d\d(?:Q[1-4])?",
    tile=r"\d\d[NS]-E\d\d\d+-N\d\d\d\d+",
    quadrant="|".join(QUADRANTS),


SCAN = f"{R}/{{region}}/{{period}}"
LOGS = f"{R}/logs/{{region}}/{{period}}"
BENCH = f"{R}/benchmarks/{{region}}/{{period}}"
ENV = "../envs/minescan.yaml"
# the TensorFlow rules (detect, classify): TensorFlow with CUDA, so they see the GPU of a GPU node (and run
# on the CPU elsewhere); docs/gpu.md says which environment to use where
ENV_GPU = "../envs/minescan-gpu.yaml"
GRID_ARGS = (
    f"--tile-px {config['grid']['tile_px']} --halo-px {config['grid']['halo_px']} "
    f"--resolution-m {config['grid']['resolution_m']}"
)
SCALE = config["source"]["reflectance_scale"]
# the region file's layer, for every command that reads the region
REGION_LAYER_ARG = (
    f"--region-layer {shlex.quote(config['region']['layer'])}" if config["region"]["layer"] else ""
)
# pixel.water: the water polygons of a pixel model's distance-to-water feature, passed to detect when set
WATER = config["pixel"]["water"]
WATER_ARG = f"--water {shlex.quote(WATER)}" if WATER else ""
DISCOVERY = config["models"]["discovery"]
IMPACT = config["models"]["impact"]


# tiles whose four quadrants are all scanned (rules/detect_tile.smk can run them as one job)
FULL_TILES = [t for t in PLAN.tiles if sum(1 for tt, _ in PLAN.quadrants if tt == t) == len(QUADRANTS)]


def model_files(path):
    """A model directory's two files (inputs, so a replaced model re-runs what depends on it); a pixel
    model (minescan.pixel) keeps its estimator in model.skops."""
    if not path:
        return []
    weights = "model.skops" if os.path.exists(f"{path}/model.skops") else "model.keras"
    return [f"{path}/{weights}", f"{path}/card.json"]


def quadrant_dirs(wildcards):
    return [f"{R}/{wildcards.region}/{wildcards.period}/quadrants/{t}_{q}" for t, q in PLAN.quadrants]


def truth_file(wildcards):
    """Ground truth for recall/precision: merge.truth, or the demo scene's own truth."""
    if config["merge"]["truth"]:
        return config["merge"]["truth"].format(region=wildcards.region, period=wildcards.period)
    if config["source"]["kind"] == "demo":
        return f"{R}/{wildcards.region}/{wildcards.period}/source/demo_truth.gpkg"
    return []


def local_sources(wildcards):
    """The period's local GeoTIFFs (source.local.paths) whose footprint meets this tile (core + halo)."""
    every = [str(p) for p in expand_sources(config["source"]["local"]["paths"], wildcards.period)]
    return sources_for_tile(PLAN.tile(wildcards.tile), every)


def tile_sources(wildcards):
    """Imagery a tile is cut from: only what can reach it, so new imagery elsewhere re-runs nothing here."""
    if config["source"]["kind"] == "demo":
        return [f"{R}/{wildcards.region}/{wildcards.period}/source/demo_scene.tif"]
    return local_sources(wildcards)


def training_rule_args(kind):
    t = config["train"][kind]
    window = f"--window {t['window']}" if t["window"] else ""
    return (
        f"--folds {t['folds']} --epochs {t['epochs']} --batch-size {t['batch_size']} "
        f"--learning-rate {t['learning_rate']} --seed {t['seed']} --threshold {t['threshold']} {window}"
    )


# the temporal layer (rules/temporal.smk): the median of the last N periods' probability rasters
TEMPORAL = config["pixel"]["temporal"]
TEMPORAL_N = TEMPORAL["last"]
TEMPORAL_PERIODS = PERIODS[TEMPORAL_N - 1 :] if TEMPORAL_N >= 2 else []
# a pixel model directory keeps its estimator in model.skops (as in model_files)
PIXEL_DETECTOR = bool(DISCOVERY) and os.path.exists(f"{DISCOVERY}/model.skops")
TEMPORAL_RASTER = "probability_10m.tif" if PIXEL_DETECTOR else "probability.tif"
TEMPORAL_TARGETS = [f"{R}/{REGION}/{p}/temporal/sites.gpkg" for p in TEMPORAL_PERIODS]


def temporal_periods(wildcards):
    """The last N scanned periods up to this one, oldest first."""
    if wildcards.period not in TEMPORAL_PERIODS:
        raise ValueError(
            f"no temporal layer for {wildcards.period}: it needs pixel.temporal.last = {TEMPORAL_N} >= 2 "
            f"scanned periods up to it (scanned: {', '.join(PERIODS)})"
        )
    return PERIODS[: PERIODS.index(wildcards.period) + 1][-TEMPORAL_N:]


def temporal_inputs(wildcards):
    return [
        f"{R}/{wildcards.region}/{p}/quadrants/{wildcards.tile}_{wildcards.quadrant}/probability.tif"
        for p in temporal_periods(wildcards)
    ]


# the demo's pixel evaluation (rules/pixel_demo.smk)
PIXEL_DEMO = config["pixel"]["demo_evaluation"]
if PIXEL_DEMO and config["source"]["kind"] != "demo":
    raise ValueError("pixel.demo_evaluation needs source.kind: demo (it evaluates on the demo's truth)")
PIXEL_DEMO_TARGETS = [f"{R}/{REGION}/{PERIODS[-1]}/pixel/evaluation.json"] if PIXEL_DEMO else []


def pixel_demo_periods(wildcards):
    """The evaluated demo periods: this one and the ones after it."""
    return following_periods(wildcards.period, PIXEL_DEMO["periods"])


# detect.tiles_per_job (rules/detect_tile.smk): the batches of two tiles or more, and their rules' class
class _GroupedLikeTileJob(snakemake.rules.Rule):
    """The group of a batch is its tile job's (``like_rule``: detect_tile or classify_tile), as the
    profile's ``groups`` give it (e.g. "quadrant")."""

    like_rule = "detect_tile"

    @property
    def group(self):
        return getattr(rules, self.like_rule).rule.group

    @group.setter
    def group(self, group):
        self._group = group


def like_tile_job(name, tile_rule, quadrant_rule):
    """The batch ``name`` asks for what the tile job ``tile_rule`` asks for (its resources, the profile's
    set-resources included, as a profile names rules and batches are named per batch) and joins its group
    (looked up when Snakemake executes, as the profile's groups arrive only then); it is preferred over
    the tile and quadrant jobs that could make the same files."""
    batch = getattr(rules, name).rule
    batch.resources = getattr(rules, tile_rule).rule.resources.copy()
    batch.__class__ = _GroupedLikeTileJob
    batch.like_rule = tile_rule
    workflow.ruleorder(name, tile_rule)
    workflow.ruleorder(name, quadrant_rule)


TILE_BATCHES = (
    [b for b in tile_batches(FULL_TILES, config["detect"]["tiles_per_job"]) if len(b) > 1]
    if config["detect"]["quadrants_per_job"] == "tile" and config["detect"]["tiles_per_job"] > 1
    else []
)

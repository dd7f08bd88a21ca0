# minescan: region + period -> tiles -> quadrants -> discovery FCN -> impact CNN -> national layers.
# Run:  snakemake --profile profiles/default                      (the embedded demo)
#       snakemake --profile profiles/default --configfile my.yaml (your region)
# Every rule is a thin call of the `minescan` CLI; the work and its tests live in src/minescan.
import os
import sys

from minescan import config as cfgmod
from minescan.periods import scan_periods
from minescan.scan.plan import scan_plan

# Rules call the `minescan` CLI installed beside the Python running Snakemake (e.g. .venv/bin), even when
# that environment is not activated.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")


# The embedded demo, unless a config is given with --configfile (a user's config is never merged with it).
if not workflow.overwrite_configfiles:

    configfile: "config/demo.yaml"


envvars:
    "PATH",


config.update(cfgmod.validate(config, "config (--configfile/--config)"))
PLAN = scan_plan(config)
R = config["results_dir"]
REGION = config["region"]["name"]
PERIODS = scan_periods(config)  # periods + schedule, expanded by the config loader, oldest first


include: "rules/common.smk"
include: "rules/acquire.smk"
include: "rules/acquire_gee.smk"
include: "rules/train.smk"
include: "rules/detect.smk"
include: "rules/detect_tile.smk"
include: "rules/segment.smk"
include: "rules/classify.smk"
include: "rules/merge.smk"
include: "rules/change.smk"
include: "rules/layers.smk"
include: "rules/train_real.smk"
include: "rules/datasets.smk"
include: "rules/temporal.smk"
include: "rules/pixel_demo.smk"


rule all:
    default_target: True
    input:
        expand(f"{R}/{REGION}/{{period}}/summary.json", period=PERIODS),
        expand(f"{R}/{REGION}/{{period}}/change/change.json", period=PERIODS[1:]),
        LAYERS_TARGETS,
        DATASETS_TARGETS,
        SEGMENT_TARGETS,
        TEMPORAL_TARGETS,
        PIXEL_DEMO_TARGETS,

# Train the discovery FCN ensemble on real Sentinel-2 RGB chips (earthrise-media/mining-detector galleries,
# CC BY 4.0, Earth Genome): temporal cross-validation grouped by gallery (each fold
# holds out one composite year; threshold chosen on the pooled out-of-fold scores), then a refit on all
# chips. The shipped copy of the result lives in models/amazon-rgb48/. Rule train_amazon_rgb48_v2 trains v2
# (issue 18: forward-chaining folds, recipe config/train-amazon-rgb48-v2.json), shipped in models/amazon-rgb48-v2/.
# Included from the Snakefile; also runs on its own: snakemake -s rules/train_real.smk --cores 2 train_amazon_rgb48
#
#   snakemake --cores 2 train_amazon_rgb48
#
# Input: ../shared/data/real-chips/dev.npz beside the project root (see its README); not shipped.

import os

REAL_RESULTS = globals().get("R", "results")
REAL_CHIPS = "../shared/data/real-chips/dev.npz"
REAL_MODEL = f"{REAL_RESULTS}/models/amazon-rgb48"
REAL_ENV = globals().get("ENV", "../envs/minescan.yaml")  # ENV comes from rules/common.smk when included


rule train_amazon_rgb48:
    """Discovery FCN ensemble on 48 x 48 RGB chips (B4,B3,B2): temporal CV by gallery, then refit on all."""
    input:
        chips=REAL_CHIPS,
    output:
        model=f"{REAL_MODEL}/model.keras",
        card=f"{REAL_MODEL}/card.json",
    conda:
        REAL_ENV
    log:
        f"{REAL_RESULTS}/logs/train_amazon_rgb48.log",
    benchmark:
        f"{REAL_RESULTS}/benchmarks/train_amazon_rgb48.tsv"
    params:
        out=lambda w, output: os.path.dirname(output.model),
        seed=42,
    threads: 2
    resources:
        mem_mb=6000,
        runtime=60,
    shell:
        "minescan train-chips --chips {input.chips:q} --out {params.out:q} --seed {params.seed} "
        "--threads {threads} > {log:q} 2>&1"


rule evaluate_amazon_rgb48:
    """Score dev chips with the trained model: per-chip CSV and metrics JSON (in-sample: a sanity check)."""
    input:
        chips=REAL_CHIPS,
        model=rules.train_amazon_rgb48.output.model,
        card=rules.train_amazon_rgb48.output.card,
    output:
        scores=f"{REAL_MODEL}/dev_scores.csv",
        metrics=f"{REAL_MODEL}/dev_metrics.json",
    conda:
        REAL_ENV
    log:
        f"{REAL_RESULTS}/logs/evaluate_amazon_rgb48.log",
    benchmark:
        f"{REAL_RESULTS}/benchmarks/evaluate_amazon_rgb48.tsv"
    params:
        model=lambda w, input: os.path.dirname(input.model),
    threads: 2
    resources:
        mem_mb=4000,
        runtime=10,
    shell:
        "minescan evaluate-chips --model {params.model:q} --chips {input.chips:q} "
        "--out {output.scores:q} --json "
        "2> {log:q} | tail -n 1 > {output.metrics:q}"


REAL_MODEL_V2 = f"{REAL_RESULTS}/models/amazon-rgb48-v2"


rule train_amazon_rgb48_v2:
    """amazon-rgb48 v2 (issue 18): forward-chaining validation (train <= 2023 + undated -> 2024, <= 2019 +
    undated -> 2023; threshold on the pooled forward folds), the recipe in config/train-amazon-rgb48-v2.json,
    then a refit on all chips. The shipped copy lives in models/amazon-rgb48-v2/."""
    input:
        chips=REAL_CHIPS,
        recipe="config/train-amazon-rgb48-v2.json",
    output:
        model=f"{REAL_MODEL_V2}/model.keras",
        card=f"{REAL_MODEL_V2}/card.json",
    conda:
        REAL_ENV
    log:
        f"{REAL_RESULTS}/logs/train_amazon_rgb48_v2.log",
    benchmark:
        f"{REAL_RESULTS}/benchmarks/train_amazon_rgb48_v2.tsv"
    params:
        out=lambda w, output: os.path.dirname(output.model),
        seed=42,
    threads: 2
    resources:
        mem_mb=6000,
        runtime=120,
    shell:
        "minescan train-chips --chips {input.chips:q} --out {params.out:q} --seed {params.seed} "
        "--config {input.recipe:q} --name amazon-rgb48-v2 --threads {threads} > {log:q} 2>&1"

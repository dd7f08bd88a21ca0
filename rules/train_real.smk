# Train the discovery FCN ensemble on real Sentinel-2 RGB chips (earthrise-media/mining-detector galleries,
# CC BY 4.0, Earth Genome): validation run on a temporal hold-out grouped by gallery (threshold chosen there),
# then a refit on all chips. The shipped copy of the result lives in models/amazon-rgb48/.
#
#   snakemake --cores 2 train_amazon_rgb48
#
# config keys (optional): real_chips (default ../shared/data/real-chips/dev.npz), real_chips_seed (42).

REAL_RESULTS = globals().get("R", "results")
REAL_CHIPS = config.get("real_chips", "../shared/data/real-chips/dev.npz")
REAL_MODEL = f"{REAL_RESULTS}/models/amazon-rgb48"


rule train_amazon_rgb48:
    """Discovery FCN ensemble on 48 x 48 RGB chips (B4,B3,B2): validate on 2024 galleries, refit on all."""
    input:
        chips=REAL_CHIPS,
    output:
        model=f"{REAL_MODEL}/model.keras",
        card=f"{REAL_MODEL}/card.json",
    log:
        f"{REAL_RESULTS}/logs/train_amazon_rgb48.log",
    benchmark:
        f"{REAL_RESULTS}/benchmarks/train_amazon_rgb48.tsv"
    params:
        out=REAL_MODEL,
        seed=config.get("real_chips_seed", 42),
    threads: 2
    resources:
        mem_mb=6000,
        runtime=60,
    shell:
        "minescan train-chips --chips {input.chips} --out {params.out} --seed {params.seed} "
        "--threads {threads} > {log} 2>&1"


rule evaluate_amazon_rgb48:
    """Score the chips with the trained model (metrics JSON on the last line of the log's stdout copy)."""
    input:
        chips=REAL_CHIPS,
        model=rules.train_amazon_rgb48.output.model,
        card=rules.train_amazon_rgb48.output.card,
    output:
        scores=f"{REAL_MODEL}/dev_scores.csv",
        metrics=f"{REAL_MODEL}/dev_metrics.json",
    log:
        f"{REAL_RESULTS}/logs/evaluate_amazon_rgb48.log",
    benchmark:
        f"{REAL_RESULTS}/benchmarks/evaluate_amazon_rgb48.tsv"
    params:
        model=REAL_MODEL,
    threads: 2
    resources:
        mem_mb=4000,
        runtime=10,
    shell:
        "minescan evaluate-chips --model {params.model} --chips {input.chips} --out {output.scores} --json "
        "2> {log} | tail -n 1 > {output.metrics}"

# Detect: the discovery FCN on one quadrant core (read with its halo from the tile), giving a
# probability raster on the 27 px cell grid and the candidate cells above the threshold. The quadrant is
# streamed through the network in strips (detect.max_block_mb), so the job's memory is bounded: about
# 0.7 GB (Python, TensorFlow, models, read cache) plus max_block_mb (docs/performance.md). With an impact
# model, the candidates are rated here as well, from the strips in memory (see classify.smk).

import json

PYRAMID = config["detect"]["pyramid"]


rule detect:
    input:
        tile=f"{SCAN}/tiles/{{tile}}.tif",
        model=model_files(DISCOVERY),
        # ancient: a replaced impact model re-rates the candidates in classify, not by re-running detect
        impact=ancient(model_files(IMPACT)),
        region=config["region"]["file"],
        # pixel.water (pixel models' distance-to-water feature), when set
        water=WATER or [],
        # the pyramid's screen model, when it uses one
        screen=(
            model_files(PYRAMID["model"])
            if PYRAMID["enabled"] and PYRAMID["screen"] == "model"
            else []
        ),
    output:
        probability=f"{SCAN}/quadrants/{{tile}}_{{quadrant}}/probability.tif",
        candidates=f"{SCAN}/quadrants/{{tile}}_{{quadrant}}/candidates.csv",
    conda:
        ENV_GPU
    log:
        f"{LOGS}/detect/{{tile}}_{{quadrant}}.log",
    benchmark:
        f"{BENCH}/detect/{{tile}}_{{quadrant}}.tsv"
    params:
        grid=GRID_ARGS,
        scale=SCALE,
        model=lambda wc, input: os.path.dirname(input.model[0]),
        threshold=(
            f"--threshold {config['detect']['threshold']}"
            if config["detect"]["threshold"] is not None
            else ""
        ),
        strips=(
            (
                f"--max-block-mb {config['detect']['max_block_mb']} "
                if config["detect"]["max_block_mb"]
                else ""
            )
            + f"--inference {config['detect']['inference']} --precision {config['detect']['precision']}"
            + f" --runtime {config['detect']['runtime']}"
            + (" --require-gpu" if config["detect"]["require_gpu"] else "")
            + f" --patch-inference {config['detect']['patch_inference']}"
            + (
                f" --patch-stride {config['detect']['patch_stride']}"
                if config["detect"]["patch_stride"]
                else ""
            )
            + (
                f" --block-cells {config['detect']['block_cells']}"
                if config["detect"]["block_cells"]
                else ""
            )
        ),
        on_empty=config["detect"]["on_empty_quadrant"],
        checks=(
            f"--cloud-check {config['detect']['cloud_check']['action']} "
            f"--cloud-min-reflectance {config['detect']['cloud_check']['min_reflectance']} "
            f"--cloud-max-fraction {config['detect']['cloud_check']['max_fraction']} "
            + ("--band-order-check" if config["detect"]["band_order_check"] else "--no-band-order-check")
        ),
        # the impact CNN rates the candidates in this job (TensorFlow is loaded anyway); classify then
        # only checks and copies the ratings instead of starting TensorFlow again
        impact=lambda wc, input: (
            f"--impact-model {shlex.quote(os.path.dirname(input.impact[0]))} "
            f"--impact-batch-size {config['classify']['batch_size']}"
            if input.impact
            else ""
        ),
        layer=REGION_LAYER_ARG,
        water=WATER_ARG,
        # detect.pyramid as JSON when enabled (coarse screen first; docs/pyramid.md), else empty: full scan
        pyramid=(
            json.dumps(PYRAMID, sort_keys=True)
            if PYRAMID["enabled"]
            else ""
        ),
    threads: 2
    resources:
        mem_mb=int(1000 + 1.25 * (config["detect"]["max_block_mb"] or 384)),
        runtime=60,
        gpu=0,
    shell:
        "minescan detect --tile {wildcards.tile} --quadrant {wildcards.quadrant} --tile-path {input.tile:q} "
        "--model {params.model:q} --region {input.region:q} {params.layer} --scale {params.scale} "
        "{params.threshold} {params.strips} {params.impact} --on-empty {params.on_empty} {params.checks} "
        "--pyramid={params.pyramid:q} {params.grid} --period {wildcards.period} {params.water} "
        "--prob-out {output.probability:q} --candidates-out {output.candidates:q} 2> {log:q}"

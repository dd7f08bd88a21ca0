# Detect: the discovery FCN on one quadrant core (read with its halo from the tile), giving a
# probability raster on the 27 px cell grid and the candidate cells above the threshold.


rule detect:
    input:
        tile=f"{SCAN}/tiles/{{tile}}.tif",
        model=model_files(DISCOVERY),
        region=config["region"]["file"],
    output:
        probability=f"{SCAN}/quadrants/{{tile}}_{{quadrant}}/probability.tif",
        candidates=f"{SCAN}/quadrants/{{tile}}_{{quadrant}}/candidates.csv",
    conda:
        ENV
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
        block=config["detect"]["block_cells"],
        on_empty=config["detect"]["on_empty_quadrant"],
        layer=f"--region-layer {config['region']['layer']}" if config["region"]["layer"] else "",
    threads: 2
    resources:
        mem_mb=6000,
        runtime=60,
        gpu=0,
    shell:
        "minescan detect --tile {wildcards.tile} --quadrant {wildcards.quadrant} --tile-path {input.tile} "
        "--model {params.model} --region {input.region} {params.layer} --scale {params.scale} {params.threshold} "
        "--block-cells {params.block} --on-empty {params.on_empty} {params.grid} "
        "--prob-out {output.probability} --candidates-out {output.candidates} 2> {log}"

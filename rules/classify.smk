# Classify: the impact CNN rates the 21 x 21 px patch around every candidate of one quadrant.


rule classify:
    input:
        tile=f"{SCAN}/tiles/{{tile}}.tif",
        candidates=f"{SCAN}/quadrants/{{tile}}_{{quadrant}}/candidates.csv",
        model=model_files(IMPACT),
    output:
        f"{SCAN}/quadrants/{{tile}}_{{quadrant}}/classified.csv",
    log:
        f"{LOGS}/classify/{{tile}}_{{quadrant}}.log",
    benchmark:
        f"{BENCH}/classify/{{tile}}_{{quadrant}}.tsv"
    params:
        model=IMPACT or "none",
        batch=config["classify"]["batch_size"],
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=0,
    shell:
        "minescan classify --tile {wildcards.tile} --tile-path {input.tile} --model {params.model} "
        "--candidates {input.candidates} --scale {SCALE} --batch-size {params.batch} {GRID_ARGS} "
        "--out {output} 2> {log}"

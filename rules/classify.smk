# Classify: the impact CNN rates the 21 x 21 px patch around every candidate of one quadrant.


rule classify:
    input:
        tile=f"{SCAN}/tiles/{{tile}}.tif",
        candidates=f"{SCAN}/quadrants/{{tile}}_{{quadrant}}/candidates.csv",
        model=model_files(IMPACT),
    output:
        f"{SCAN}/quadrants/{{tile}}_{{quadrant}}/classified.csv",
    conda:
        ENV
    log:
        f"{LOGS}/classify/{{tile}}_{{quadrant}}.log",
    benchmark:
        f"{BENCH}/classify/{{tile}}_{{quadrant}}.tsv"
    params:
        grid=GRID_ARGS,
        scale=SCALE,
        model=lambda wc, input: os.path.dirname(input.model[0]) if input.model else "none",
        batch=config["classify"]["batch_size"],
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=0,
    shell:
        "minescan classify --tile {wildcards.tile} --tile-path {input.tile} --model {params.model} "
        "--candidates {input.candidates} --scale {params.scale} --batch-size {params.batch} {params.grid} "
        "--out {output} 2> {log}"

# Classify: the impact CNN's rating of the 21 x 21 px patch around every candidate of one quadrant. The
# detect job has already rated them (same process as the FCN: one TensorFlow start per quadrant); this job
# checks that they were rated by this very impact model (content hash) and writes classified.csv. Candidates
# rated by another model (e.g. the impact model was replaced) are rated here, in batches of
# classify.batch_size read and normalised one at a time; only then is TensorFlow started.


rule classify:
    input:
        tile=f"{SCAN}/tiles/{{tile}}.tif",
        candidates=f"{SCAN}/quadrants/{{tile}}_{{quadrant}}/candidates.csv",
        model=model_files(IMPACT),
    output:
        f"{SCAN}/quadrants/{{tile}}_{{quadrant}}/classified.csv",
    conda:
        ENV_GPU
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
        mem_mb=1500,
        runtime=30,
        gpu=0,
    shell:
        "minescan classify --tile {wildcards.tile} --tile-path {input.tile:q} --model {params.model:q} "
        "--candidates {input.candidates:q} --scale {params.scale} --batch-size {params.batch} {params.grid} "
        "--out {output:q} 2> {log:q}"

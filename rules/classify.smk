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


# A tile at a time (detect.quadrants_per_job: tile): the four quadrants' ratings in one job and process,
# beside rule detect_tile (one Python start instead of four: ~0.2 s each when the ratings are copied).
# Same per-quadrant classified.csv as rule classify; tiles on the region's edge keep one job per quadrant.
if config["detect"]["quadrants_per_job"] == "tile" and FULL_TILES:

    ruleorder: classify_tile > classify

    rule classify_tile:
        wildcard_constraints:
            tile="|".join(re.escape(t) for t in FULL_TILES),
        input:
            tile=f"{SCAN}/tiles/{{tile}}.tif",
            candidates=[f"{SCAN}/quadrants/{{tile}}_{q}/candidates.csv" for q in QUADRANTS],
            model=model_files(IMPACT),
        output:
            [f"{SCAN}/quadrants/{{tile}}_{q}/classified.csv" for q in QUADRANTS],
        conda:
            ENV_GPU
        log:
            f"{LOGS}/classify/{{tile}}.log",
        benchmark:
            f"{BENCH}/classify/{{tile}}.tsv"
        params:
            grid=rules.classify.params.grid,
            scale=rules.classify.params.scale,
            model=rules.classify.params.model,
            batch=rules.classify.params.batch,
        threads: 2
        resources:
            mem_mb=1500,
            runtime=60,
            gpu=0,
        shell:
            "minescan classify --tile {wildcards.tile} --tile-path {input.tile:q} --model {params.model:q} "
            "--candidates {input.candidates:q} --scale {params.scale} --batch-size {params.batch} {params.grid} "
            "--out {output:q} 2> {log:q}"


# A batch of tiles (detect.tiles_per_job > 1; rules/detect_tile.smk): the ratings of its tiles' quadrants in
# one job and process beside the batch's detect job, with classify_tile's resources and group; the same
# per-quadrant classified.csv. A rule per batch, named after its first tile.
for _batch in TILE_BATCHES:
    _name = f"classify_tiles_{_batch[0].replace('-', '_')}"

    rule:
        name:
            _name
        input:
            tiles=[f"{SCAN}/tiles/{t}.tif" for t in _batch],
            candidates=[f"{SCAN}/quadrants/{t}_{q}/candidates.csv" for t in _batch for q in QUADRANTS],
            model=model_files(IMPACT),
        output:
            [f"{SCAN}/quadrants/{t}_{q}/classified.csv" for t in _batch for q in QUADRANTS],
        conda:
            ENV_GPU
        log:
            f"{LOGS}/classify/batch_{_batch[0]}.log",
        benchmark:
            f"{BENCH}/classify/batch_{_batch[0]}.tsv"
        params:
            tiles=" ".join(_batch),
            grid=rules.classify.params.grid,
            scale=rules.classify.params.scale,
            model=rules.classify.params.model,
            batch=rules.classify.params.batch,
        threads: 2
        shell:
            "minescan classify --tile {params.tiles} --tile-path {input.tiles:q} --model {params.model:q} "
            "--candidates {input.candidates:q} --scale {params.scale} --batch-size {params.batch} {params.grid} "
            "--out {output:q} 2> {log:q}"

    like_tile_job(_name, "classify_tile", "classify")

# Detect, a tile at a time (detect.quadrants_per_job: tile): the four quadrants of a tile in ONE job and one
# process, one after the other, so TensorFlow starts and the models load once instead of four times (~3 s of
# every quadrant job). Each quadrant is computed exactly as by rule detect, into the same per-quadrant files
# (so classify, merge, seams and reruns are unchanged). Only tiles whose four quadrants are all scanned use it
# (tiles on the region's edge keep one job per quadrant); the ruleorder prefers it where both apply.


if config["detect"]["quadrants_per_job"] == "tile" and FULL_TILES:

    ruleorder: detect_tile > detect

    rule detect_tile:
        wildcard_constraints:
            tile="|".join(re.escape(t) for t in FULL_TILES),
        input:
            tile=f"{SCAN}/tiles/{{tile}}.tif",
            model=model_files(DISCOVERY),
            impact=ancient(model_files(IMPACT)),
            region=config["region"]["file"],
            water=rules.detect.input.water,
            screen=rules.detect.input.screen,
        output:
            probability=[f"{SCAN}/quadrants/{{tile}}_{q}/probability.tif" for q in QUADRANTS],
            candidates=[f"{SCAN}/quadrants/{{tile}}_{q}/candidates.csv" for q in QUADRANTS],
        conda:
            ENV_GPU
        log:
            f"{LOGS}/detect/{{tile}}.log",
        benchmark:
            f"{BENCH}/detect/{{tile}}.tsv"
        params:
            quadrants=" ".join(QUADRANTS),
            grid=rules.detect.params.grid,
            scale=rules.detect.params.scale,
            model=rules.detect.params.model,
            threshold=rules.detect.params.threshold,
            strips=rules.detect.params.strips,
            on_empty=rules.detect.params.on_empty,
            checks=rules.detect.params.checks,
            pyramid=rules.detect.params.pyramid,
            impact=rules.detect.params.impact,
            layer=rules.detect.params.layer,
            water=rules.detect.params.water,
        threads: 2
        resources:
            mem_mb=int(1000 + 1.25 * (config["detect"]["max_block_mb"] or 384)),
            runtime=120,
            gpu=0,
        shell:
            "minescan detect --tile {wildcards.tile} --quadrant {params.quadrants} --tile-path {input.tile:q} "
            "--model {params.model:q} --region {input.region:q} {params.layer} --scale {params.scale} "
            "{params.threshold} {params.strips} {params.impact} --on-empty {params.on_empty} {params.checks} "
            "--pyramid={params.pyramid:q} {params.grid} --period {wildcards.period} {params.water} "
            "--prob-out {output.probability:q} --candidates-out {output.candidates:q} 2> {log:q}"


# Several tiles per job (detect.tiles_per_job > 1, with quadrants_per_job: tile): up to that many neighbours
# of a row of the grid (minescan.scan.plan.tile_batches: fixed by position, so the batches do not move when
# the region grows) in one job and process, tile after tile, quadrant after quadrant, into the same
# per-quadrant files, byte for byte: the process's start-up, model load and OpenVINO compile are paid once
# per batch (docs/performance.md). Snakemake outputs are patterns, not lists that depend on a wildcard, so
# each batch of two tiles or more is a rule of its own, named after its first tile; a batch of one stays
# with rule detect_tile.
for _batch in TILE_BATCHES:
    _name = f"detect_tiles_{_batch[0].replace('-', '_')}"

    rule:
        name:
            _name
        input:
            tiles=[f"{SCAN}/tiles/{t}.tif" for t in _batch],
            model=model_files(DISCOVERY),
            impact=ancient(model_files(IMPACT)),
            region=config["region"]["file"],
            water=rules.detect.input.water,
            screen=rules.detect.input.screen,
        output:
            probability=[f"{SCAN}/quadrants/{t}_{q}/probability.tif" for t in _batch for q in QUADRANTS],
            candidates=[f"{SCAN}/quadrants/{t}_{q}/candidates.csv" for t in _batch for q in QUADRANTS],
        conda:
            ENV_GPU
        log:
            f"{LOGS}/detect/batch_{_batch[0]}.log",
        benchmark:
            f"{BENCH}/detect/batch_{_batch[0]}.tsv"
        params:
            tiles=" ".join(_batch),
            quadrants=" ".join(QUADRANTS),
            grid=rules.detect.params.grid,
            scale=rules.detect.params.scale,
            model=rules.detect.params.model,
            threshold=rules.detect.params.threshold,
            strips=rules.detect.params.strips,
            on_empty=rules.detect.params.on_empty,
            checks=rules.detect.params.checks,
            pyramid=rules.detect.params.pyramid,
            impact=rules.detect.params.impact,
            layer=rules.detect.params.layer,
            water=rules.detect.params.water,
        threads: 2
        shell:
            "minescan detect --tile {params.tiles} --quadrant {params.quadrants} --tile-path {input.tiles:q} "
            "--model {params.model:q} --region {input.region:q} {params.layer} --scale {params.scale} "
            "{params.threshold} {params.strips} {params.impact} --on-empty {params.on_empty} {params.checks} "
            "--pyramid={params.pyramid:q} {params.grid} --period {wildcards.period} {params.water} "
            "--prob-out {output.probability:q} --candidates-out {output.candidates:q} 2> {log:q}"

    # what a tile job asks for: the same partition, GPU and memory (the strips' memory does not grow with
    # the tiles), and time to spare (a tile takes seconds)
    like_tile_job(_name, "detect_tile", "detect")

# Segment: the disturbed-area probability per quadrant core from a SegFormer (docs/segmentation.md), only
# in windows around the quadrant's detected cells by default (segment.where), then the scan's extents.gpkg.
# Off unless segment.enabled. A model is trained first when segment.train is set.
import json

SEGMENT = config["segment"]
SEGMENT_MODEL = SEGMENT["model"] if SEGMENT["enabled"] else None
SEGMENT_TARGETS = (
    [f"{R}/{REGION}/{p}/extents.gpkg" for p in PERIODS] if SEGMENT["enabled"] else []
)


if SEGMENT["enabled"] and SEGMENT["train"]:

    rule train_segment:
        """SegFormer from images + polygons of disturbed ground: grouped 70/15/15 split, card with metrics."""
        input:
            images=SEGMENT["train"]["images"],
            polygons=SEGMENT["train"]["polygons"],
        output:
            model_files(SEGMENT_MODEL),
        conda:
            ENV
        log:
            f"{R}/logs/train_segment.log",
        benchmark:
            f"{R}/benchmarks/train_segment.tsv"
        params:
            out=lambda wc, output: os.path.dirname(output[0]),
            bands=config["bands"],
            scale=SCALE,
            # segment.train as the JSON of `minescan segment train --config` (images/polygons are inputs)
            settings=json.dumps(
                {
                    k: v
                    for k, v in (SEGMENT["train"] or {}).items()
                    if k not in ("images", "polygons", "polygons_layer", "polygons_where")
                },
                sort_keys=True,
            ),
            layer=(
                ["--polygons-layer", SEGMENT["train"]["polygons_layer"]]
                if SEGMENT["train"]["polygons_layer"]
                else []
            )
            + (
                ["--polygons-where", SEGMENT["train"]["polygons_where"]]
                if SEGMENT["train"]["polygons_where"]
                else []
            ),
        threads: 2
        resources:
            mem_mb=8000,
            runtime=240,
        shell:
            "minescan segment train --images {input.images:q} --polygons {input.polygons:q} {params.layer:q} "
            "--out {params.out:q} --bands {params.bands:q} --scale {params.scale} "
            "--config {params.settings:q} > {log:q} 2>&1"


if SEGMENT["enabled"]:

    rule segment:
        """One quadrant: probability mask COG (percent, 255 = not segmented) and extent polygons."""
        input:
            tile=f"{SCAN}/tiles/{{tile}}.tif",
            candidates=f"{SCAN}/quadrants/{{tile}}_{{quadrant}}/candidates.csv",
            model=model_files(SEGMENT_MODEL),
        output:
            mask=f"{SCAN}/quadrants/{{tile}}_{{quadrant}}/segment.tif",
            extents=f"{SCAN}/quadrants/{{tile}}_{{quadrant}}/segment_extents.gpkg",
        conda:
            ENV_GPU
        log:
            f"{LOGS}/segment/{{tile}}_{{quadrant}}.log",
        benchmark:
            f"{BENCH}/segment/{{tile}}_{{quadrant}}.tsv"
        params:
            grid=GRID_ARGS,
            scale=SCALE,
            model=lambda wc, input: os.path.dirname(input.model[0]),
            where=SEGMENT["where"],
            margin=SEGMENT["margin_px"],
            batch=SEGMENT["batch_size"],
            min_area=SEGMENT["min_area_m2"],
            options=(
                (["--window-px", str(SEGMENT["window_px"])] if SEGMENT["window_px"] else [])
                + (["--overlap-px", str(SEGMENT["overlap_px"])] if SEGMENT["overlap_px"] is not None else [])
                + (["--threshold", str(SEGMENT["threshold"])] if SEGMENT["threshold"] is not None else [])
            ),
        threads: 2
        resources:
            mem_mb=2500,
            runtime=60,
            gpu=0,
        shell:
            "minescan segment predict --tile {wildcards.tile} --quadrant {wildcards.quadrant} "
            "--tile-path {input.tile:q} --model {params.model:q} --candidates {input.candidates:q} "
            "--scale {params.scale} --where {params.where} --margin-px {params.margin} "
            "--batch-size {params.batch} --min-area-m2 {params.min_area} {params.options:q} {params.grid} "
            "--mask-out {output.mask:q} --extents-out {output.extents:q} 2> {log:q}"

    rule segment_extents:
        """The scan's extents.gpkg: every quadrant's extent polygons, joined across quadrant seams."""
        input:
            lambda wc: [f"{d}/segment_extents.gpkg" for d in quadrant_dirs(wc)],
        output:
            f"{SCAN}/extents.gpkg",
        conda:
            ENV
        log:
            f"{LOGS}/segment_extents.log",
        resources:
            mem_mb=2000,
            runtime=20,
        shell:
            "minescan segment extents --quadrant-extents {input:q} --out {output:q} 2> {log:q}"

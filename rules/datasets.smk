# Datasets: a training set from mine polygons beside the scan (datasets.polygons; docs/datasets.md): the
# cell grid (positives + nearest negatives), per-cell chips cut from the scan's own tiles, and a YOLO set.
# The demo builds one from its truth polygons (class = mine), so `make demo` shows the tooling working.

DS = config["datasets"]
DS_DIR = f"{SCAN}/datasets"


# the polygon file of a period (placeholders {results_dir}, {region}, {period} filled in)
DS_POLYGONS = lambda wc: DS["polygons"].format(results_dir=R, region=wc.region, period=wc.period)
# numeric options (schema-constrained) only when set
DS_GRID_OPTS = " ".join(
    f"--{k.replace('_', '-')} {DS[k]}" for k in ("cell_m", "min_overlap") if DS[k] is not None
)


if DS["polygons"]:

    rule datasets_grid:
        input:
            polygons=DS_POLYGONS,
        output:
            gpkg=f"{DS_DIR}/cells.gpkg",
            csv=f"{DS_DIR}/cells.csv",
        conda:
            ENV
        log:
            f"{LOGS}/datasets_grid.log",
        params:
            zoom=DS["zoom"],
            opts=DS_GRID_OPTS,
            layer=DS["layer"] or "",
            select=DS["select"] or "",
        resources:
            mem_mb=2000,
            runtime=30,
        shell:
            "minescan datasets grid --polygons {input.polygons:q} --layer={params.layer:q} --zoom {params.zoom} "
            "{params.opts} "
            "--select={params.select:q} "
            "--out {output.gpkg:q} 2> {log}"


    rule datasets_chips:
        input:
            grid=rules.datasets_grid.output.gpkg,
            polygons=DS_POLYGONS,
            tiles=lambda wc: [f"{R}/{wc.region}/{wc.period}/tiles/{t}.tif" for t in PLAN.tiles],
        output:
            index=f"{DS_DIR}/chips/chips.csv",
        conda:
            ENV
        log:
            f"{LOGS}/datasets_chips.log",
        params:
            out=lambda wc, output: os.path.dirname(output.index),
            table=DS["table"],
            scale=SCALE,
            res=config["grid"]["resolution_m"],
            layer=DS["layer"] or "",
            select=DS["select"] or "",
        resources:
            mem_mb=2000,
            runtime=60,
        shell:
            "minescan datasets chips --grid {input.grid:q} --polygons {input.polygons:q} --layer={params.layer:q} "
            "--select={params.select:q} "
            "--images {input.tiles:q} --table {params.table} --scale {params.scale} --resolution-m {params.res} "
            "--out {params.out:q} 2> {log}"


    rule datasets_yolo:
        input:
            grid=rules.datasets_grid.output.gpkg,
            polygons=DS_POLYGONS,
            chips=rules.datasets_chips.output.index,
        output:
            data=f"{DS_DIR}/yolo/data.yaml",
            splits=f"{DS_DIR}/yolo/splits.csv",
        conda:
            ENV
        log:
            f"{LOGS}/datasets_yolo.log",
        params:
            out=lambda wc, output: os.path.dirname(output.data),
            chips=lambda wc, input: os.path.dirname(input.chips),
            group_by=DS["group_by"] or "",
            block_m=DS["block_m"],
            fmt=DS["image_format"],
            scale=SCALE,
            layer=DS["layer"] or "",
            select=DS["select"] or "",
        resources:
            mem_mb=2000,
            runtime=30,
        shell:
            "minescan datasets yolo --grid {input.grid:q} --polygons {input.polygons:q} --layer={params.layer:q} "
            "--select={params.select:q} "
            "--chips {params.chips:q} --image-format {params.fmt} "
            "--group-by={params.group_by:q} --block-m {params.block_m} --draw-boxes "
            "--out {params.out:q} 2> {log}"


DATASETS_TARGETS = (
    expand(f"{R}/{REGION}/{{period}}/datasets/yolo/data.yaml", period=PERIODS) if DS["polygons"] else []
)

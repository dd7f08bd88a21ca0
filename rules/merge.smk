# Merge: every quadrant of one scan into its layers (CSV, KML, GeoPackage of sites, summary.json).


rule merge:
    input:
        classified=lambda wc: [f"{d}/classified.csv" for d in quadrant_dirs(wc)],
        region=config["region"]["file"],
        models=model_files(DISCOVERY) + model_files(IMPACT),
        truth=truth_file,
        extents=lambda wc: [f"{R}/{wc.region}/{wc.period}/extents.gpkg"] if SEGMENT["enabled"] else [],
        segment_model=model_files(SEGMENT_MODEL),
    output:
        detections=f"{SCAN}/detections.csv",
        kml=f"{SCAN}/detections.kml",
        rejected=f"{SCAN}/rejected.csv",
        sites=f"{SCAN}/sites.gpkg",
        summary=f"{SCAN}/summary.json",
    conda:
        ENV
    log:
        f"{LOGS}/merge.log",
    params:
        outdir=lambda wc, output: os.path.dirname(output.summary),
        discovery=lambda wc, input: os.path.dirname(input.models[0]),
        impact=lambda wc, input: os.path.dirname(input.models[2]) if len(input.models) > 2 else "none",
        resolution=config["grid"]["resolution_m"],
        threshold=(
            f"--threshold {config['detect']['threshold']}"
            if config["detect"]["threshold"] is not None
            else ""
        ),
        drop="--drop-no-ore" if config["classify"]["drop_no_ore"] else "--no-drop-no-ore",
        patch_stride=(
            f"--patch-stride {config['detect']['patch_stride']}"
            if config["detect"]["patch_stride"]
            else ""
        ),
        connectivity=config["merge"]["connectivity"],
        truth=lambda wc, input: f"--truth {shlex.quote(str(input.truth))}" if input.truth else "",
        layer=REGION_LAYER_ARG,
        extents=lambda wc, input: (
            ["--extents", input.extents[0], "--segment-model", os.path.dirname(input.segment_model[0])]
            if input.extents
            else []
        ),
        prior=(
            f"--isolated-threshold {config['merge']['isolated_threshold']} "
            f"--isolation-k {config['merge']['isolation_k']} --isolation-km {config['merge']['isolation_km']}"
            if config["merge"]["isolated_threshold"] is not None
            else ""
        ),
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "minescan merge --classified {input.classified:q} --outdir {params.outdir:q} "
        "--region {input.region:q} "
        "{params.layer} --region-name {wildcards.region} --period {wildcards.period} "
        "--discovery-model {params.discovery:q} --impact-model {params.impact:q} {params.threshold} "
        "{params.drop} --connectivity {params.connectivity} {params.truth} {params.prior} {params.patch_stride} "
        "{params.extents:q} --resolution-m {params.resolution} 2> {log:q}"

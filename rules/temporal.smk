# The temporal layer (pixel.temporal, docs/pixel-classifiers.md): per pixel (or cell) the median of the
# detector's probability rasters of the last N scanned periods up to this one, and sites from it, the
# aggregation DataKind found essential. Off unless pixel.temporal.last >= 2; then built for every period that
# has N - 1 scanned periods before it. Per quadrant (rule temporal) and merged per scan (temporal_sites):
#   results/{region}/{period}/temporal/quadrants/{tile}_{quadrant}/median.tif + sites.gpkg
#   results/{region}/{period}/temporal/sites.gpkg + temporal.json
# The raster is what the detector wrote: a pixel model's 10 m probability_10m.tif (written by the same detect
# job as probability.tif, which is the declared input) or the FCN's 27 px cell raster probability.tif.

# The constants and input functions are in rules/common.smk (TEMPORAL_*, temporal_periods).


rule temporal:
    input:
        probability=temporal_inputs,
        model=model_files(DISCOVERY),
    output:
        median=f"{SCAN}/temporal/quadrants/{{tile}}_{{quadrant}}/median.tif",
        sites=f"{SCAN}/temporal/quadrants/{{tile}}_{{quadrant}}/sites.gpkg",
    conda:
        ENV
    log:
        f"{LOGS}/temporal/{{tile}}_{{quadrant}}.log",
    params:
        rasters=lambda wc, input: " ".join(
            shlex.quote(os.path.join(os.path.dirname(p), TEMPORAL_RASTER)) for p in input.probability
        ),
        last=TEMPORAL_N,
        # pixel.temporal.threshold, else detect.threshold, else the detector card's (read by the command)
        threshold=lambda wc, input: (
            f"--threshold {TEMPORAL['threshold']}"
            if TEMPORAL["threshold"] is not None
            else (
                f"--threshold {config['detect']['threshold']}"
                if config["detect"]["threshold"] is not None
                else f"--model {shlex.quote(os.path.dirname(input.model[0]))}"
            )
        ),
        min_area=TEMPORAL["min_area_ha"],
    resources:
        mem_mb=1500,
        runtime=20,
    shell:
        "minescan pixel temporal --rasters {params.rasters} --last {params.last} {params.threshold} "
        "--min-area-ha {params.min_area} --out {output.median:q} --sites-out {output.sites:q} 2> {log:q}"


rule temporal_sites:
    input:
        sites=lambda wc: [
            f"{R}/{wc.region}/{wc.period}/temporal/quadrants/{t}_{q}/sites.gpkg" for t, q in PLAN.quadrants
        ],
    output:
        sites=f"{SCAN}/temporal/sites.gpkg",
        summary=f"{SCAN}/temporal/temporal.json",
    conda:
        ENV
    log:
        f"{LOGS}/temporal_sites.log",
    params:
        periods=lambda wc: " ".join(temporal_periods(wc)),
        raster=TEMPORAL_RASTER,
    resources:
        mem_mb=1500,
        runtime=20,
    shell:
        "minescan pixel temporal-merge --sites {input.sites:q} --periods {params.periods} "
        "--raster {params.raster} --out {output.sites:q} --summary-out {output.summary:q} 2> {log:q}"

# Layers an analyst acts on, from one scan's sites: registry cross-check (registered / unregistered sites),
# protected-land and admin overlays (mined area per area), the self-contained map.html, and the plots and
# tables of `snakemake --report`. Settings: config key `layers` (docs/layers.md).
from minescan.layers.overlays import reference_files, resolved_settings


report: "../report/workflow.rst"


LAYERS_OUTPUTS = ["layers.json", "report/summary_table.csv"] + (["map.html"] if config["layers"]["map"] else [])
LAYERS_TARGETS = [f"{R}/{REGION}/{p}/{name}" for p in PERIODS for name in LAYERS_OUTPUTS]



rule layers:
    """Registry cross-check and overlays: which sites are unregistered, which fall in protected land."""
    input:
        sites=f"{SCAN}/sites.gpkg",
        region=config["region"]["file"],
        references=lambda wc: reference_files(config, wc.region, wc.period),
    output:
        annotated=f"{SCAN}/sites_annotated.gpkg",
        annotated_csv=report(
            f"{SCAN}/sites_annotated.csv",
            caption="../report/sites_annotated.rst",
            category="Layers",
            subcategory="{region} {period}",
            labels={"scan": "{region} {period}", "layer": "all sites"},
        ),
        unregistered=report(
            f"{SCAN}/unregistered.csv",
            caption="../report/unregistered.rst",
            category="Layers",
            subcategory="{region} {period}",
            labels={"scan": "{region} {period}", "layer": "unregistered sites"},
        ),
        unregistered_kml=f"{SCAN}/unregistered.kml",
        unregistered_gpkg=f"{SCAN}/unregistered.gpkg",
        areas=report(
            f"{SCAN}/areas.csv",
            caption="../report/areas.rst",
            category="Layers",
            subcategory="{region} {period}",
            labels={"scan": "{region} {period}", "layer": "mined area per area"},
        ),
        summary=f"{SCAN}/layers.json",
    conda:
        ENV
    log:
        f"{LOGS}/layers.log",
    params:
        outdir=lambda wc, output: os.path.dirname(output.summary),
        settings=lambda wc: resolved_settings(config, wc.region, wc.period),
        layer=REGION_LAYER_ARG,
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "minescan layers --sites {input.sites:q} --outdir {params.outdir:q} --region {input.region:q} "
        "{params.layer} --settings {params.settings:q} --region-name {wildcards.region} "
        "--period {wildcards.period} 2> {log:q}"


if config["layers"]["map"]:

    rule webmap:
        """map.html: sites, registry, overlays, probability and RGB layers, evidence popups; no network needed."""
        input:
            sites=f"{SCAN}/sites_annotated.gpkg",
            detections=f"{SCAN}/detections.csv",
            region=config["region"]["file"],
            tiles=lambda wc: [f"{R}/{wc.region}/{wc.period}/tiles/{t}.tif" for t in PLAN.tiles],
            probabilities=lambda wc: [f"{d}/probability.tif" for d in quadrant_dirs(wc)],
            references=lambda wc: reference_files(config, wc.region, wc.period),
            extents=lambda wc: [f"{R}/{wc.region}/{wc.period}/extents.gpkg"] if SEGMENT_TARGETS else [],
        output:
            report(
                f"{SCAN}/map.html",
                caption="../report/map.rst",
                category="Map",
                subcategory="{region} {period}",
                labels={"scan": "{region} {period}", "layer": "interactive map"},
            ),
        conda:
            ENV
        log:
            f"{LOGS}/webmap.log",
        params:
            settings=lambda wc: resolved_settings(config, wc.region, wc.period),
            layer=REGION_LAYER_ARG,
            scale=SCALE,
            extents=lambda wc, input: ["--extents", input.extents[0]] if input.extents else [],
            title=lambda wc: f"minescan {wc.region} {wc.period}"
            + (" (SIMULATED scene)" if config["source"]["kind"] == "demo" else ""),
        resources:
            mem_mb=4000,
            runtime=30,
        shell:
            "minescan webmap --sites {input.sites:q} --out {output:q} --region {input.region:q} "
            "{params.layer} --tiles {input.tiles:q} --probabilities {input.probabilities:q} "
            "--detections {input.detections:q} "
            "--scale {params.scale} {params.extents:q} --title {params.title:q} --settings {params.settings:q} "
            "--region-name {wildcards.region} --period {wildcards.period} 2> {log:q}"


rule report_plots:
    """Plots and the summary table for `snakemake --report`."""
    input:
        summary=f"{SCAN}/summary.json",
        detections=f"{SCAN}/detections.csv",
        rejected=f"{SCAN}/rejected.csv",
        sites=f"{SCAN}/sites_annotated.gpkg",
        layers=f"{SCAN}/layers.json",
        areas=f"{SCAN}/areas.csv",
        cards=[f"{path}/card.json" for path in (DISCOVERY, IMPACT) if path],
    output:
        by_class=report(
            f"{SCAN}/report/detections_by_class.png",
            caption="../report/detections_by_class.rst",
            category="Plots",
            subcategory="{region} {period}",
            labels={"scan": "{region} {period}", "figure": "detections per class"},
        ),
        by_area=report(
            f"{SCAN}/report/area_by_area.png",
            caption="../report/area_by_area.rst",
            category="Plots",
            subcategory="{region} {period}",
            labels={"scan": "{region} {period}", "figure": "mined area per area"},
        ),
        histogram=report(
            f"{SCAN}/report/probability_histogram.png",
            caption="../report/probability_histogram.rst",
            category="Plots",
            subcategory="{region} {period}",
            labels={"scan": "{region} {period}", "figure": "probability histogram"},
        ),
        metrics=report(
            f"{SCAN}/report/model_metrics.png",
            caption="../report/model_metrics.rst",
            category="Plots",
            subcategory="{region} {period}",
            labels={"scan": "{region} {period}", "figure": "model-card metrics"},
        ),
        table=report(
            f"{SCAN}/report/summary_table.csv",
            caption="../report/summary_table.rst",
            category="Summary",
            subcategory="{region} {period}",
            labels={"scan": "{region} {period}", "table": "headline numbers"},
        ),
    conda:
        ENV
    log:
        f"{LOGS}/report_plots.log",
    params:
        outdir=lambda wc, output: os.path.dirname(output.table),
        discovery=lambda wc, input: f"--discovery-card {shlex.quote(input.cards[0])}" if input.cards else "",
        impact=lambda wc, input: (
            f"--impact-card {shlex.quote(input.cards[1])}" if len(input.cards) > 1 else ""
        ),
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "minescan report-plots --outdir {params.outdir:q} --summary {input.summary:q} "
        "--detections {input.detections:q} --rejected {input.rejected:q} --sites {input.sites:q} "
        "--layers {input.layers:q} --areas {input.areas:q} {params.discovery} {params.impact} 2> {log:q}"

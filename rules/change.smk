# Change: every scan of a region after its first period against the previous period (new, grown, shrunk,
# unchanged, vanished sites, with area differences), and the cumulative layer of every site since the
# first period. Sites are matched by polygon overlap, not by id (ids move when a site grows). The work is
# in src/minescan/layers/change.py; settings: config key `change`.
from minescan.periods import periods_up_to


rule change:
    """Change and cumulative layers of one scan (GPKG, CSV, KML) with counts and areas in change.json."""
    input:
        sites=lambda wc: [f"{R}/{wc.region}/{p}/sites.gpkg" for p in periods_up_to(PERIODS, wc.period)],
    output:
        change=f"{SCAN}/change/change.gpkg",
        change_csv=f"{SCAN}/change/change.csv",
        change_kml=f"{SCAN}/change/change.kml",
        cumulative=f"{SCAN}/change/cumulative.gpkg",
        cumulative_csv=f"{SCAN}/change/cumulative.csv",
        cumulative_kml=f"{SCAN}/change/cumulative.kml",
        summary=f"{SCAN}/change/change.json",
    conda:
        ENV
    log:
        f"{LOGS}/change.log",
    benchmark:
        f"{BENCH}/change.tsv"
    params:
        periods=lambda wc: " ".join(periods_up_to(PERIODS, wc.period)),
        outdir=lambda wc, output: os.path.dirname(output.summary),
        min_overlap=config["change"]["min_overlap"],
        min_growth=config["change"]["min_growth"],
    resources:
        mem_mb=2000,
        runtime=20,
    shell:
        "minescan change --sites {input.sites:q} --periods {params.periods} --region-name {wildcards.region} "
        "--outdir {params.outdir:q} --min-overlap {params.min_overlap} --min-growth {params.min_growth} "
        "> {log:q} 2>&1"

# Acquire from Google Earth Engine (source.kind: gee): one cloud-masked Sentinel-2 median composite per
# grid tile (core + halo) and period, fetched by `minescan gee tile` (docs/earth-engine.md).
#
# Credentials are checked when this file is parsed (minescan.sources.gee.workflow.rule_spec): a missing or
# unreadable key, or no project, stops the workflow before any job is scheduled, saying what to set.
#
# No needless re-downloads: the rule has no file inputs (nothing upstream can make a tile look outdated),
# and `minescan gee tile` keeps every fetched tile in source.gee.cache_dir under a key of the composite
# definition, making the output a hard link to it. A tile job rerun because this rule's code or params
# changed (or --forcerun) is served from that cache without network; only new tiles, new periods or a
# changed composite definition are fetched. Unfinished tiles resume from their stored blocks/download.
from minescan.sources.gee.workflow import rule_spec


if config["source"]["kind"] == "gee":

    rule tile_gee:
        """Fetch one grid tile's composite from Earth Engine as a cloud-optimised uint16 GeoTIFF."""
        output:
            f"{SCAN}/tiles/{{tile}}.tif",
        conda:
            ENV
        log:
            f"{LOGS}/tile_gee/{{tile}}.log",
        params:
            spec=rule_spec(config),
            grid=GRID_ARGS,
        retries: config["source"]["gee"]["job_retries"]
        resources:
            mem_mb=3000,
            runtime=180,
            ee_requests=config["source"]["gee"]["concurrency"],
        shell:
            "minescan gee tile --tile {wildcards.tile} --period {wildcards.period} --spec {params.spec:q} "
            "{params.grid} --out {output:q} 2> {log:q}"

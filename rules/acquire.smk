# Acquire: imagery for every grid tile of the region (core + halo), as uint16 GeoTIFFs with band names.
# source.kind decides where pixels come from; everything downstream only reads the tile files.


rule demo_scene:
    """A SIMULATED Sentinel-2 composite over the region's tiles, with its ground-truth sites."""
    input:
        region=config["region"]["file"],
    output:
        scene=f"{SCAN}/source/demo_scene.tif",
        truth=f"{SCAN}/source/demo_truth.gpkg",
    conda:
        ENV
    log:
        f"{LOGS}/demo_scene.log",
    params:
        grid=GRID_ARGS,
        seed=config["source"]["demo"]["seed"],
        sites=config["source"]["demo"]["sites_per_tile"],
    resources:
        mem_mb=4000,
        runtime=20,
    shell:
        "minescan demo-scene --region {input.region:q} --period {wildcards.period} --seed {params.seed} "
        "--sites-per-tile {params.sites} {params.grid} --scene {output.scene:q} --truth {output.truth:q} "
        "2> {log:q}"


rule demo_training_scene:
    """An independent SIMULATED scene (other seed) with labelled points, to train the demo models on."""
    input:
        region=config["region"]["file"],
    output:
        scene=f"{R}/demo-training/scene.tif",
        truth=f"{R}/demo-training/truth.gpkg",
        points=f"{R}/demo-training/points.csv",
    conda:
        ENV
    log:
        f"{R}/logs/demo_training_scene.log",
    params:
        grid=GRID_ARGS,
        seed=config["source"]["demo"]["seed"],
        sites=config["source"]["demo"]["sites_per_tile"],
    resources:
        mem_mb=4000,
        runtime=20,
    shell:
        "minescan demo-scene --training --region {input.region:q} --seed {params.seed} "
        "--sites-per-tile {params.sites} {params.grid} --scene {output.scene:q} --truth {output.truth:q} "
        "--points {output.points:q} 2> {log:q}"

rule demo_reference_layers:
    """SIMULATED concession and dam registries, protected areas and municipalities drawn from the demo truth."""
    input:
        truth=f"{SCAN}/source/demo_truth.gpkg",
        region=config["region"]["file"],
    output:
        concessions=f"{SCAN}/source/demo_concessions.gpkg",
        dams=f"{SCAN}/source/demo_dams.gpkg",
        indigenous=f"{SCAN}/source/demo_indigenous.gpkg",
        conservation=f"{SCAN}/source/demo_conservation.gpkg",
        admin=f"{SCAN}/source/demo_admin.gpkg",
    conda:
        ENV
    log:
        f"{LOGS}/demo_reference_layers.log",
    params:
        seed=config["source"]["demo"]["seed"],
        layer=REGION_LAYER_ARG,
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "minescan demo-layers --truth {input.truth:q} --region {input.region:q} {params.layer} "
        "--seed {params.seed} "
        "--concessions {output.concessions:q} --dams {output.dams:q} --indigenous {output.indigenous:q} "
        "--conservation {output.conservation:q} --admin {output.admin:q} 2> {log:q}"


if config["source"]["kind"] in ("demo", "local"):

    rule tile:
        """Warp/cut the source imagery into one grid tile (core + halo)."""
        input:
            tile_sources,
        output:
            f"{SCAN}/tiles/{{tile}}.tif",
        conda:
            ENV
        log:
            f"{LOGS}/tile/{{tile}}.log",
        params:
            grid=GRID_ARGS,
            bands=" ".join(config["bands"]),
            band_names=(
                "--band-names " + " ".join(config["source"]["local"]["band_names"])
                if config["source"]["local"]["band_names"]
                else ""
            ),
            resampling=config["source"]["local"]["resampling"],
            nodata=config["source"]["nodata"],
            compression=config["source"]["tile_compression"],
        resources:
            mem_mb=4000,
            runtime=30,
        shell:
            "minescan make-tile --tile {wildcards.tile} --sources {input:q} --period {wildcards.period} "
            "--bands {params.bands} {params.band_names} --resampling {params.resampling} "
            "--nodata {params.nodata} --compression {params.compression:q} {params.grid} --out {output:q} 2> {log:q}"

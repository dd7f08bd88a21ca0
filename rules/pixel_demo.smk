# Demo only (pixel.demo_evaluation, source.kind demo): a pixel model trained on the demo training scene and
# evaluated on the demo scene of the latest scanned period and the periods after it (the SIMULATED world
# evolves quarter by quarter; their scenes come from rule demo_scene) and on their temporal median, next to
# the FCN scan's sites: results/{region}/{period}/pixel/evaluation.json (minescan pixel demo-eval).

# PIXEL_DEMO, PIXEL_DEMO_TARGETS and pixel_demo_periods are in rules/common.smk.

if PIXEL_DEMO:

    rule pixel_demo_eval:
        input:
            training_scene=f"{R}/demo-training/scene.tif",
            training_truth=f"{R}/demo-training/truth.gpkg",
            scenes=lambda wc: [
                f"{R}/{wc.region}/{p}/source/demo_scene.tif" for p in pixel_demo_periods(wc)
            ],
            truths=lambda wc: [
                f"{R}/{wc.region}/{p}/source/demo_truth.gpkg" for p in pixel_demo_periods(wc)
            ],
            fcn_sites=f"{SCAN}/sites.gpkg",
            fcn_summary=f"{SCAN}/summary.json",
        output:
            evaluation=f"{SCAN}/pixel/evaluation.json",
        conda:
            ENV
        log:
            f"{LOGS}/pixel_demo_eval.log",
        benchmark:
            f"{BENCH}/pixel_demo_eval.tsv"
        params:
            periods=lambda wc: " ".join(pixel_demo_periods(wc)),
            models=" ".join(PIXEL_DEMO["models"]),
            crop=PIXEL_DEMO["crop_px"],
            pixels=PIXEL_DEMO["max_pixels"],
            floor=PIXEL_DEMO["precision_floor"],
            min_pixels=PIXEL_DEMO["min_site_pixels"],
        threads: 2
        resources:
            mem_mb=3000,
            runtime=30,
        shell:
            "minescan pixel demo-eval --training-scene {input.training_scene:q} "
            "--training-truth {input.training_truth:q} --scenes {input.scenes:q} --truths {input.truths:q} "
            "--periods {params.periods} --fcn-sites {input.fcn_sites:q} --fcn-summary {input.fcn_summary:q} "
            "--models {params.models} --crop-px {params.crop} --max-pixels {params.pixels} "
            "--precision-floor {params.floor} --min-site-pixels {params.min_pixels} "
            "--out {output.evaluation:q} 2> {log:q}"

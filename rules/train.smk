# Train: the discovery FCN and the impact CNN from labelled points + images, when config.train says so.
# Otherwise models.discovery / models.impact name existing model directories.


if config["train"]["discovery"]:

    rule train_discovery:
        """Discovery FCN: chips around the points, k-fold CV, final model on all chips."""
        input:
            points=config["train"]["discovery"]["points"],
            images=config["train"]["discovery"]["images"],
        output:
            model_files(DISCOVERY),
        conda:
            ENV
        log:
            f"{R}/logs/train_discovery.log",
        benchmark:
            f"{R}/benchmarks/train_discovery.tsv"
        params:
            scale=SCALE,
            out=lambda wc, output: os.path.dirname(output[0]),
            args=training_rule_args("discovery"),
            bands=" ".join(config["bands"]),
        threads: 2
        resources:
            mem_mb=8000,
            runtime=240,
        shell:
            "minescan train discovery --points {input.points:q} --images {input.images:q} "
            "--out {params.out:q} "
            "--bands {params.bands} --scale {params.scale} {params.args} > {log:q} 2>&1"


if config["train"]["impact"] and IMPACT:

    rule train_impact:
        """Impact CNN (high / low / no ore) on 21 x 21 chips."""
        input:
            points=config["train"]["impact"]["points"],
            images=config["train"]["impact"]["images"],
        output:
            model_files(IMPACT),
        conda:
            ENV
        log:
            f"{R}/logs/train_impact.log",
        benchmark:
            f"{R}/benchmarks/train_impact.tsv"
        params:
            scale=SCALE,
            out=lambda wc, output: os.path.dirname(output[0]),
            args=training_rule_args("impact"),
            bands=" ".join(config["bands"]),
        threads: 2
        resources:
            mem_mb=8000,
            runtime=120,
        shell:
            "minescan train impact --points {input.points:q} --images {input.images:q} --out {params.out:q} "
            "--bands {params.bands} --scale {params.scale} {params.args} > {log:q} 2>&1"

# One training run per experiment x seed. The output is the run's final model.pt; the run directory
# also holds checkpoints/last.pt, so a killed or requeued job resumes where it stopped (Snakemake
# only removes model.pt before rerunning). GPU/CPU/memory/time requests live in the profiles.


rule train:
    input:
        data=train_data,
        base=GRID.base_config,
    output:
        model=GRID.run_dir("{run}") / "model.pt",
    log:
        "logs/train/{run}.log",
    params:
        run_dir=run_dir,
        overrides=train_overrides,
    conda:
        "../envs/ccdn.yaml"
    shell:
        "ccdn train --config {input.base} --run-dir {params.run_dir} {params.overrides} > {log} 2>&1"

# One training run per experiment x seed. `ccdn grid run-config --all` writes each run's fully resolved
# training config (runs/<run>/run_config.yaml), the one hand-off from the grid to `ccdn train`: one job
# for the whole grid (a process per run cost 2 s each of start-up).
# The output is the run's final model.pt; the run directory
# also holds checkpoints/last.pt, so a killed or requeued job resumes where it stopped (Snakemake
# only removes model.pt before rerunning). GPU/CPU/memory/time requests live in the profiles.


rule run_config:
    input:
        grid=GRID_FILE,
        base=GRID.base_config,
    output:
        [GRID.run_config_path(run.name) for run in GRID.runs],
    log:
        "logs/train/run_config.log",
    params:
        resolved=all_run_configs_json,
    conda:
        "../envs/ccdn.yaml"
    shell:
        "ccdn grid run-config {input.grid} --all > {log} 2>&1"


rule train:
    input:
        data=train_data,
        # ancient: a rewrite of the same config (e.g. after an unrelated grid edit) never retrains;
        # a different config does, through params.resolved.
        config=ancient(GRID.run_config_path("{run}")),
    output:
        model=GRID.run_dir("{run}") / "model.pt",
    log:
        "logs/train/{run}.log",
    params:
        run_dir=run_dir,
        resolved=run_config_json,
    conda:
        "../envs/ccdn.yaml"
    shell:
        "ccdn train --config {input.config} --run-dir {params.run_dir} > {log} 2>&1"

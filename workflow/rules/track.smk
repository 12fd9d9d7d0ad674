# MLflow for the runs trained with `tracking.defer: true` (the embedded default): one `ccdn track` after
# every evaluation logs them as the live path would (params, tags, learning curves, evaluations), instead
# of one MLflow start-up in each training and evaluation job. Runs tracked live are left alone, so the
# rule is harmless on grids without deferral. Its target is the summary runs/mlflow_track.json.


rule track:
    input:
        models=model_targets(),
        evaluations=evaluation_targets(),
    output:
        GRID.track_summary_path,
    log:
        "logs/track.log",
    params:
        run_dirs=" ".join(str(GRID.run_dir(run.name)) for run in GRID.runs),
    conda:
        "../envs/ccdn.yaml"
    shell:
        "ccdn track {params.run_dirs} --summary {output} > {log} 2>&1"

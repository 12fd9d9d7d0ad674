# Each run on each of its test datasets: metrics.json (NME/FR/AUC per subset and normaliser) and
# predictions.npz (per-image errors, for the CED figures).


rule evaluate:
    input:
        model=GRID.run_dir("{run}") / "model.pt",
        data=test_data,
    output:
        metrics=GRID.metrics_path("{run}", "{dataset}"),
        predictions=GRID.predictions_path("{run}", "{dataset}"),
    log:
        "logs/evaluate/{run}/{dataset}.log",
    params:
        run_dir=run_dir,
        out=eval_dir,
        flags=evaluate_flags,
    conda:
        "../envs/ccdn.yaml"
    shell:
        "ccdn evaluate --run-dir {params.run_dir} --data {input.data} --out {params.out} {params.flags} > {log} 2>&1"

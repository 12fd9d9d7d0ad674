# The synthetic occlusion sweep (config key `occlusion_sweep`; none in a grid without it): one COFW-68-
# format test set whose faces hide a set share of their 68 points, prepared, evaluated by the sweep's
# runs (no MLflow: these evaluations are not the run's benchmark numbers), and drawn as NME against the
# hidden share. Rules only call the `ccdn` CLI; paths and options come from ccdn.grid.


rule synth_occlusion_sweep:
    output:
        GRID.raw_dir(OCCLUSION_SWEEP) / "SYNTHETIC.json",
    log:
        "logs/synth/occlusion_sweep.log",
    params:
        out=lambda wildcards, output: os.path.dirname(output[0]),
        options=sweep_synth_arguments,
    conda:
        "../envs/ccdn.yaml"
    shell:
        "ccdn synth cofw68 --out {params.out} {params.options} > {log} 2>&1"


rule prepare_occlusion_sweep:
    input:
        GRID.raw_dir(OCCLUSION_SWEEP) / "SYNTHETIC.json",
    output:
        directory(GRID.prepared_dir(OCCLUSION_SWEEP)),
    log:
        "logs/prepare/occlusion_sweep.log",
    params:
        raw=lambda wildcards, input: os.path.dirname(input[0]),
        settings=prepare_settings,
    conda:
        "../envs/ccdn.yaml"
    shell:
        "ccdn prepare cofw68 --raw {params.raw} --out {output} {params.settings} > {log} 2>&1"


rule evaluate_occlusion_sweep:
    input:
        model=GRID.run_dir("{run}") / "model.pt",
        data=GRID.prepared_dir(OCCLUSION_SWEEP),
    output:
        metrics=GRID.metrics_path("{run}", OCCLUSION_SWEEP),
        predictions=GRID.predictions_path("{run}", OCCLUSION_SWEEP),
    log:
        "logs/evaluate/{run}/occlusion_sweep.log",
    params:
        run_dir=run_dir,
        out=lambda wildcards: str(GRID.eval_dir(wildcards.run, OCCLUSION_SWEEP)),
        flags=evaluate_flags,
    conda:
        "../envs/ccdn.yaml"
    shell:
        "ccdn evaluate --run-dir {params.run_dir} --data {input.data} --out {params.out} {params.flags}"
        " --activation-maps 0 --no-tracking > {log} 2>&1"


rule occlusion_sweep:
    input:
        sweep_inputs,
        grid=GRID_FILE,
    output:
        GRID.sweep_outputs,
    log:
        "logs/report/occlusion_sweep.log",
    params:
        out=output_folder,
        metrics=lambda wildcards, output: os.path.dirname(output[2]),
    conda:
        "../envs/ccdn.yaml"
    shell:
        "ccdn report figure occlusion_sweep --config {input.grid} --out {params.out} --metrics-dir {params.metrics}"
        " > {log} 2>&1"

# Paper-vs-reproduced tables (with intervals, paired tests and claim verdicts), CED, activation-map
# and learning-curve figures, the metrics summary and headline files (for DVC), the measured compute
# (results/compute.md, results/metrics/compute.json: the only outputs that change between reruns, so
# git-ignored) and results/README.md. All are made by `ccdn report` from the run directories (never from MLflow).


rule grid_config:
    output:
        GRID_FILE,
    log:
        "logs/report/grid_config.log",
    params:
        grid=grid_json,
    conda:
        "../envs/ccdn.yaml"
    shell:
        "ccdn grid resolve --json {params.grid:q} --out {output} > {log} 2>&1"


rule table:
    input:
        metrics=table_inputs,
        grid=GRID_FILE,
        claims=CLAIMS_FILE,
    output:
        multiext(str(GRID.tables_dir / "{stem}"), ".md", ".csv", ".tex"),
    log:
        "logs/report/{stem}.log",
    params:
        number=table_number,
        out=output_folder,
    conda:
        "../envs/ccdn.yaml"
    shell:
        "ccdn report table {params.number} --config {input.grid} --claims {input.claims} --out {params.out} > {log} 2>&1"


# One rule per figure: their files are named after the figure, so they share no wildcard pattern.
rule figure_fig5:
    input:
        metrics=figure_metrics("fig5"),
        grid=GRID_FILE,
    output:
        figure_files("fig5"),
        data=ced_data("fig5"),
    log:
        "logs/report/fig5.log",
    params:
        out=output_folder,
    conda:
        "../envs/ccdn.yaml"
    shell:
        "ccdn report figure fig5 --config {input.grid} --out {params.out} > {log} 2>&1"


rule figure_fig7:
    input:
        metrics=figure_metrics("fig7"),
        grid=GRID_FILE,
    output:
        figure_files("fig7"),
        data=ced_data("fig7"),
    log:
        "logs/report/fig7.log",
    params:
        out=output_folder,
    conda:
        "../envs/ccdn.yaml"
    shell:
        "ccdn report figure fig7 --config {input.grid} --out {params.out} > {log} 2>&1"


rule figure_fig8:
    input:
        metrics=figure_metrics("fig8"),
        grid=GRID_FILE,
    output:
        figure_files("fig8"),
    log:
        "logs/report/fig8.log",
    params:
        out=output_folder,
    conda:
        "../envs/ccdn.yaml"
    shell:
        "ccdn report figure fig8 --config {input.grid} --out {params.out} > {log} 2>&1"


rule learning_curves:
    input:
        models=learning_inputs,
        grid=GRID_FILE,
    output:
        learning_files(),
    log:
        "logs/report/learning_curves.log",
    params:
        out=output_folder,
        metrics=lambda wildcards, output: os.path.dirname(output[2]),
    conda:
        "../envs/ccdn.yaml"
    shell:
        "ccdn report figure learning_curves --config {input.grid} --out {params.out} --metrics-dir {params.metrics}"
        " > {log} 2>&1"


rule occlusion:
    input:
        occlusion_inputs,
        grid=GRID_FILE,
    output:
        occlusion_files(),
    log:
        "logs/report/occlusion.log",
    params:
        tables=lambda wildcards, output: os.path.dirname(output[0]),
        figures=lambda wildcards, output: os.path.dirname(output[2]),
        metrics=lambda wildcards, output: os.path.dirname(output[4]),
    conda:
        "../envs/ccdn.yaml"
    shell:
        "ccdn report occlusion --config {input.grid} --out {params.tables} --figures {params.figures}"
        " --metrics-dir {params.metrics} > {log} 2>&1"


rule headline:
    input:
        metrics=all_metrics,
        grid=GRID_FILE,
    output:
        directory(HEADLINE_DIR),
    log:
        "logs/report/headline.log",
    conda:
        "../envs/ccdn.yaml"
    shell:
        "ccdn report headline --config {input.grid} --out {output} > {log} 2>&1"


rule summary:
    input:
        metrics=all_metrics,
        grid=GRID_FILE,
    output:
        GRID.summary_path,
    log:
        "logs/report/summary.log",
    conda:
        "../envs/ccdn.yaml"
    shell:
        "ccdn report summary --config {input.grid} --out {output} > {log} 2>&1"


rule compute:
    input:
        compute_inputs,
        grid=GRID_FILE,
    output:
        report=GRID.compute_report_path,
        data=GRID.compute_data_path,
    log:
        "logs/report/compute.log",
    conda:
        "../envs/ccdn.yaml"
    shell:
        "ccdn report compute --config {input.grid} --out {output.report} --data {output.data} > {log} 2>&1"


rule readme:
    input:
        readme_inputs,
        grid=GRID_FILE,
        claims=CLAIMS_FILE,
    output:
        GRID.readme_path,
    log:
        "logs/report/readme.log",
    conda:
        "../envs/ccdn.yaml"
    shell:
        "ccdn report readme --config {input.grid} --out {output} > {log} 2>&1"

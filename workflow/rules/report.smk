# Paper-vs-reproduced tables, CED and activation-map figures, the metrics summary (for DVC) and
# results/README.md. All are made by `ccdn report` from metrics.json files (never from MLflow).


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
        "ccdn report table {params.number} --config {input.grid} --out {params.out} > {log} 2>&1"


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


rule readme:
    input:
        readme_inputs,
        grid=GRID_FILE,
    output:
        GRID.readme_path,
    log:
        "logs/report/readme.log",
    conda:
        "../envs/ccdn.yaml"
    shell:
        "ccdn report readme --config {input.grid} --out {output} > {log} 2>&1"

# Raw data (synthetic in the real format, or fetched) and the prepared crop caches.


rule synth:
    output:
        GRID.raw_dir("{dataset}") / "SYNTHETIC.json",
    log:
        "logs/synth/{dataset}.log",
    params:
        out=raw_dir,
        options=synth_arguments,
    wildcard_constraints:
        dataset=_alternatives(synth_datasets()),
    conda:
        "../envs/ccdn.yaml"
    shell:
        "ccdn synth {wildcards.dataset} --out {params.out} {params.options} > {log} 2>&1"


# Downloads run on the submit host (compute nodes often have no internet); AFLW needs a manual
# placement that `ccdn fetch` checks and explains.
localrules:
    fetch,


rule fetch:
    output:
        touch(GRID.raw_dir("{dataset}") / ".fetched"),
    log:
        "logs/fetch/{dataset}.log",
    params:
        root=raw_root,
    wildcard_constraints:
        dataset=_alternatives(fetch_datasets()),
    conda:
        "../envs/ccdn.yaml"
    shell:
        "ccdn fetch {wildcards.dataset} --root {params.root} > {log} 2>&1"


rule prepare:
    input:
        raw_input,
    output:
        directory(GRID.prepared_dir("{dataset}")),
    log:
        "logs/prepare/{dataset}.log",
    params:
        raw=raw_dir,
        settings=prepare_settings,
    conda:
        "../envs/ccdn.yaml"
    shell:
        "ccdn prepare {wildcards.dataset} --raw {params.raw} --out {output} {params.settings} > {log} 2>&1"

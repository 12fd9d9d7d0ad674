# Entry point so that `snakemake` works from the repository root (Snakemake looks for ./Snakefile
# before workflow/Snakefile). The workflow itself lives in workflow/. This is Snakemake's own
# `include` with one difference: the included file's `rule all` stays the default target (a plain
# `include:` would forget it, and `snakemake` alone would then do nothing).
workflow.include("workflow/Snakefile", overwrite_default_target=True)

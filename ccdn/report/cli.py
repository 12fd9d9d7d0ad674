"""``ccdn report {table,figure,summary,headline,occlusion,compute,readme,metrics}``: thin wrappers over the report
modules."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = "config/config.yaml"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``report`` and its sub-commands on the ``ccdn`` parser."""
    parser = subparsers.add_parser("report", help="paper-vs-reproduced tables, figures, summary and results README",
                                   description=__doc__)
    sub = parser.add_subparsers(dest="report_command", required=True, metavar="WHAT")

    table = sub.add_parser("table", help="Table N (2-7) as .md, .csv and .tex")
    table.add_argument("number", type=int, choices=range(2, 8), metavar="N", help="paper table number, 2-7")
    _common(table, "results/tables", "output folder")
    table.add_argument("--reference", type=Path, default=None,
                       help="the paper's numbers (default: config/paper_reference.yaml)")
    table.add_argument("--claims", type=Path, default=None,
                       help="the paper's claims checked under the table (default: config/claims.yaml)")

    figure = sub.add_parser("figure", help="Fig. 5 / 7 (CED curves), Fig. 8 (activation maps), the learning curves "
                            "or the synthetic occlusion sweep")
    figure.add_argument("name", choices=("fig5", "fig7", "fig8", "learning_curves", "occlusion_sweep"))
    _common(figure, "results/figures", "output folder")
    figure.add_argument("--metrics-dir", type=Path, default=None,
                        help="where the plotted data (CSV) go (default: <results>/metrics)")
    figure.add_argument("--images", type=int, default=4, help="faces per row of Fig. 8 (default 4)")

    summary = sub.add_parser("summary", help="flat JSON of every run's numbers (the full detail)")
    _common(summary, "results/metrics/summary.json", "output file")

    headline = sub.add_parser("headline", help="one small JSON per table column of ours (`dvc metrics show`)")
    _common(headline, "results/metrics/headline", "output folder")

    occlusion = sub.add_parser("occlusion", help="NME on occluded vs visible points, and against the occluded fraction")
    _common(occlusion, "results/tables", "table folder")
    occlusion.add_argument("--figures", type=Path, default=None, help="figure folder (default: <results>/figures)")
    occlusion.add_argument("--metrics-dir", type=Path, default=None,
                           help="where the curve data (CSV) go (default: <results>/metrics)")

    compute = sub.add_parser("compute", help="measured training and evaluation seconds (the only output that changes "
                             "between reruns)")
    compute.add_argument("--config", default=DEFAULT_CONFIG, help=f"experiment grid (default {DEFAULT_CONFIG})")
    compute.add_argument("--out", type=Path, default=None, help="Markdown file (default <results>/compute.md)")
    compute.add_argument("--data", type=Path, default=None,
                         help="JSON file (default <results>/metrics/compute.json)")

    readme = sub.add_parser("readme", help="results/README.md mapping outputs to rules and commands")
    _common(readme, "results/README.md", "output file")
    readme.add_argument("--workflow", type=Path, default=Path("workflow"),
                        help="Snakemake workflow folder whose rules are named in the README")

    metrics = sub.add_parser("metrics", help="one row per subset of any metrics.json (custom/partial sets)")
    metrics.add_argument("paths", nargs="+", type=Path, metavar="METRICS_JSON")
    metrics.add_argument("--out", type=Path, required=True, help="Markdown file to write")

    parser.set_defaults(func=run)
    return parser


def _common(parser: argparse.ArgumentParser, default_out: str, what: str) -> None:
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"experiment grid (default {DEFAULT_CONFIG})")
    parser.add_argument("--out", type=Path, default=Path(default_out), help=f"{what} (default {default_out})")


def _load_grid(path: str) -> Any:
    """The experiment grid (imported here so ``ccdn --help`` works without the pipeline module)."""
    from ccdn.grid import load_grid

    return load_grid(path)


def run(args: argparse.Namespace) -> int:
    """Dispatch one ``ccdn report`` sub-command and print the files it wrote."""
    if args.report_command == "metrics":
        from ccdn.report.rows import write_metrics_rows

        print(write_metrics_rows(args.paths, args.out))
        return 0
    grid = _load_grid(args.config)
    if args.report_command == "table":
        from ccdn.report.render import write_table

        paths = write_table(grid, args.number, args.out, args.reference, args.claims)
    elif args.report_command == "figure" and args.name == "learning_curves":
        from ccdn.report.curves import write_learning_curves

        metrics_dir = args.metrics_dir if args.metrics_dir is not None else Path(grid.results_dir) / "metrics"
        paths = write_learning_curves(grid, args.out, metrics_dir)
    elif args.report_command == "figure" and args.name == "occlusion_sweep":
        from ccdn.report.occlusion_sweep import write_occlusion_sweep

        metrics_dir = args.metrics_dir if args.metrics_dir is not None else Path(grid.results_dir) / "metrics"
        paths = write_occlusion_sweep(grid, args.out, metrics_dir)
    elif args.report_command == "figure":
        from ccdn.report.figures import write_figure

        paths = write_figure(grid, args.name, args.out, args.metrics_dir, images=args.images)
    elif args.report_command == "occlusion":
        from ccdn.report.occlusion import write_occlusion

        results = Path(grid.results_dir)
        paths = write_occlusion(grid, args.out, args.figures or results / "figures",
                                args.metrics_dir or results / "metrics")
    elif args.report_command == "headline":
        from ccdn.report.summary import write_headline

        paths = write_headline(grid, args.out)
    elif args.report_command == "compute":
        from ccdn.report.timings import write_compute

        paths = write_compute(grid, args.out, args.data, args.config)
    elif args.report_command == "summary":
        from ccdn.report.summary import write_summary

        paths = [write_summary(grid, args.out)]
    else:
        from ccdn.report.readme import write_readme

        paths = [write_readme(grid, args.out, args.config, args.workflow)]
    for path in paths:
        print(path)
    return 0

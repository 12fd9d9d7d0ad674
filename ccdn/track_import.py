"""``ccdn track RUN_DIR...``: log finished run directories into MLflow after the fact.

Why: importing MLflow and opening its store costs about 3 s per process, and a grid runs one training
and one or two evaluation processes per run: on the embedded default's two cores that was 1.5 of its
12 minutes. With ``tracking.defer: true`` those processes never touch MLflow; the training writes
``tracking.json`` with what only it knows (host, SLURM job, git commit, world size), and one
``ccdn track`` at the end logs each run exactly as the live path does (``ccdn.tracking`` defines the
metric names for both): params, tags, the learning curve per epoch, every evaluation's metrics and files.

The run directory stays the source of truth. Running it again is idempotent: a run whose files are
unchanged since its import is skipped; a changed one (retrained, re-evaluated) replaces its MLflow run.
Runs tracked live, or with tracking off, are left alone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from ccdn import tracking
from ccdn.config import default_run_name, flatten_config, load_config
from ccdn.errors import CCDNError
from ccdn.io import write_text

DEFERRED_TAG = "ccdn track (deferred)"


def fingerprint(run_dir: Path) -> str:
    """A hash of everything a run logs: its config, history and evaluation results."""
    digest = hashlib.sha256()
    files = [run_dir / "config.yaml", run_dir / "history.json", *sorted(run_dir.glob("eval/*/metrics.json"))]
    for path in files:
        if path.is_file():
            digest.update(str(path.relative_to(run_dir)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def import_run(run_dir: Path, uri: str | None = None) -> str:
    """Log one deferred run; returns what happened (``imported``, ``unchanged``, ``live``, ...)."""
    record = tracking.read_record(run_dir)
    if not record or not record.get("deferred"):
        return "live or untracked (left alone)"
    if not (run_dir / "DONE").is_file():
        return "unfinished (skipped)"
    config = load_config(run_dir / "config.yaml")
    digest = fingerprint(run_dir)
    if record.get("run_id") and record.get("fingerprint") == digest:
        return f"unchanged ({record['run_id']})"
    tracker = tracking.Tracker(uri=uri or record.get("tracking_uri"),
                               experiment=config["tracking"]["experiment"] or
                               tracking.experiment_name(config["data"]["dataset"]),
                               run_name=default_run_name(config))
    if record.get("run_id"):  # files changed since the last import: the old MLflow run is replaced
        tracker.delete_run(record["run_id"])
    tags = {**record.get("tags", {}), "tracked": DEFERRED_TAG}
    if tracker.start(params=tracking.params_from_flat(flatten_config(config)), tags=tags) is None:
        return "failed (the tracking store could not be reached; see the warnings)"
    _log_run_files(tracker, run_dir)
    tracker.finish("FINISHED")
    write_text(run_dir / tracking.TRACKING_FILE, json.dumps({
        **record, "tracking_uri": tracker.uri, "experiment": tracker.experiment,
        "experiment_id": tracker.experiment_id, "run_id": tracker.run_id, "run_name": tracker.run_name,
        "fingerprint": digest}, indent=2) + "\n")
    return f"imported ({tracker.run_id})"


def _log_run_files(tracker: tracking.Tracker, run_dir: Path) -> None:
    """The learning curve, the evaluations and their files, as training and ``ccdn evaluate`` log them live."""
    history = json.loads((run_dir / "history.json").read_text()) if (run_dir / "history.json").is_file() else []
    for record in history:
        tracker.log_metrics(tracking.epoch_metrics(record), step=record["epoch"])
    for name in ("config.yaml", "history.json"):
        tracker.log_artifact(run_dir / name)
    for path in sorted(run_dir.glob("eval/*/metrics.json")):
        metrics = json.loads(path.read_text())
        prefix = tracking.eval_prefix(metrics, path.parent.name)
        tracker.log_metrics(tracking.eval_metrics(metrics, float(metrics["threshold"]), prefix), step=0)
        for name in tracking.EVAL_ARTIFACTS:
            tracker.log_artifact(path.parent / name, prefix)


# ---------------------------------------------------------------------------------------- CLI
def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("track", help="log finished run directories into MLflow (tracking.defer)",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories of `ccdn train`")
    parser.add_argument("--summary", type=Path, help="also write {run directory: outcome} to this JSON file")
    parser.add_argument("--uri", help="tracking URI (default: MLFLOW_TRACKING_URI, else ./mlflow.db)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    missing = [str(d) for d in args.run_dirs if not (d / "config.yaml").is_file()]
    if missing:
        raise CCDNError(f"not a run directory (no config.yaml): {', '.join(missing)}; pass directories that "
                        "`ccdn train` wrote")
    outcomes: dict[str, Any] = {}
    for run_dir in args.run_dirs:
        outcomes[str(run_dir)] = import_run(run_dir, args.uri)
        print(f"[ccdn track] {run_dir}: {outcomes[str(run_dir)]}", file=sys.stderr)
    if args.summary:
        write_text(args.summary, json.dumps(outcomes, indent=2, sort_keys=True) + "\n")
    return 1 if any(v.startswith("failed") for v in outcomes.values()) else 0

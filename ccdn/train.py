"""``ccdn train``: the paper's recipe, deterministic, resumable, on CPU, one GPU or many (``torchrun``).

Why it is built this way:
- **Resumable by construction.** Everything that influences the next step lives in the checkpoint
  (weights, optimiser, scheduler, RNG states, epoch and step within it). Each epoch's sample order
  comes from ``(seed, epoch)`` and each sample's augmentation from ``(seed, epoch, index)``, so a run
  restarted from any checkpoint — epoch end or mid-epoch — continues exactly as if never stopped,
  whatever the number of DataLoader workers. ``ccdn train`` on an existing run directory resumes
  by itself; SIGTERM/SIGUSR1 (SLURM preemption) writes a checkpoint before exiting.
- **One batch definition.** ``optim.batch_size`` is the global batch; with N processes each takes
  every N-th sample of the same global batch, so N processes follow the single-process run (up to
  floating-point summation order and per-process BatchNorm statistics).
- **Failures are loud and safe.** A NaN/Inf loss, non-finite weights after a step or a non-finite
  validation NME raise :class:`NonFiniteLossError` naming the step and the last finite checkpoint
  before anything is written; ``--restart-from CKPT optim.lr=...`` is the recorded recovery.
  Tracking failures only warn (``ccdn.tracking``).

Run directory (Contract 5): ``config.yaml``, ``checkpoints/{last.pt,epoch_XXX.pt}``, ``history.json``,
``tracking.json``, and on completion ``model.pt`` then ``DONE``.

This module holds the run directory, ``train()`` and the command line; the loop, the data order
and the seeds live in :mod:`ccdn.training` (``loop``, ``data``, ``determinism``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from ccdn import checkpoint as ckpt
from ccdn.config import (
    ConfigError,
    config_hash,
    default_run_name,
    flatten_config,
    load_config,
    read_yaml,
    save_config,
)
from ccdn.io import remove_stale_temporaries
from ccdn.distributed import (
    broadcast_object,
    cleanup_distributed,
    init_distributed,
)
from ccdn.data.crop import to_original  # noqa: F401  (re-exported)
from ccdn.training.data import (  # noqa: F401  (re-exported: the public training API)
    EpochShardSampler,
    build_data,
    loader_generator,
    validation_norm,
)
from ccdn.training.determinism import (  # noqa: F401  (re-exported)
    configure_determinism,
    determinism_flags,
    epoch_seed,
    restore_determinism_flags,
    seed_everything,
)
from ccdn.training.restart import load_restart_point
from ccdn.training.run_lock import hold_run_dir
from ccdn.training.loop import (  # noqa: F401  (re-exported)
    NonFiniteLossError,
    Trainer,
    TrainingInterrupted,
    TrainResult,
    as_float32,
)


# ------------------------------------------------------------------------------------ run dirs
def prepare_run_dir(config: dict[str, Any], run_dir: Path, *, restart: bool = False) -> bool:
    """Create ``run_dir`` and write ``config.yaml``; refuse a directory holding another recipe.

    Returns True when the directory already held this run (it will be resumed or is done). A
    directory with a config but no checkpoint yet (a start that failed early, e.g. on a wrong
    ``data.root``) is simply taken over. With ``restart`` the config may differ (the Trainer checks
    which keys changed against the checkpoint) but the run must exist and not be finished.
    """
    stored_path = run_dir / "config.yaml"
    existing = stored_path.is_file() and (ckpt.latest_checkpoint(run_dir) is not None or (run_dir / "DONE").is_file())
    if restart:
        if not stored_path.is_file():
            raise ConfigError(f"--restart-from needs an existing run: {stored_path} does not exist")
        if (run_dir / "DONE").is_file():
            raise ConfigError(f"{run_dir} is complete (DONE); restart into a copy: copy the run directory, delete "
                              "DONE and model.pt in the copy, and pass the copy as --run-dir")
    elif existing:
        stored = load_config(stored_path)
        if config_hash(stored) != config_hash(config):
            ours, theirs = flatten_config(config), flatten_config(stored)
            diff = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
            detail = "; ".join(f"{k}: stored {theirs.get(k)!r}, now {ours.get(k)!r}" for k in diff[:8])
            raise ConfigError(f"{run_dir} holds a run with a different config ({detail}); pass another --run-dir "
                              f"(or tracking.run_name=...) or delete {run_dir} to start over")
    removed = remove_stale_temporaries(run_dir) + remove_stale_temporaries(ckpt.checkpoint_dir(run_dir))
    if removed:  # a job killed mid-write (kill -9, node failure) leaves its temporary file
        print(f"[ccdn train] removed {len(removed)} stale temporary file(s): "
              f"{', '.join(str(p) for p in removed)}", file=sys.stderr)
    save_config(config, stored_path)
    return existing


def train(config: dict[str, Any], run_dir: Path | str | None = None, *, progress: bool | None = None,
          stop_after_epoch: int | None = None, stop_after_steps: int | None = None,
          restart_from: Path | str | None = None) -> TrainResult:
    """Train (or resume, or find finished) the run described by ``config`` in ``run_dir``.

    ``stop_after_epoch`` / ``stop_after_steps`` end this invocation early after writing a checkpoint,
    as a preemption would (tests and smoke runs use them); they raise :class:`TrainingInterrupted`.
    ``restart_from`` continues from that checkpoint of the run with changed optimiser settings
    (``ccdn.training.restart``: the recovery after a non-finite loss).
    """
    run_dir = Path(run_dir) if run_dir is not None else Path("runs") / default_run_name(config)
    previous = load_config(run_dir / "config.yaml") if restart_from and (run_dir / "config.yaml").is_file() else None
    if restart_from is not None and previous is not None:  # refuse a bad restart before config.yaml is replaced
        load_restart_point(Path(restart_from), config, previous)
    info = init_distributed(config["train"]["device"])
    trainer: Trainer | None = None
    status = "FAILED"
    previous_flags = determinism_flags()
    lock = contextlib.ExitStack()
    try:
        configure_determinism(bool(config["train"]["deterministic"]))
        outcome: tuple[bool, str] = (True, "")
        if info.is_main:
            try:
                lock.enter_context(hold_run_dir(run_dir))  # before the stale-file clean-up in prepare_run_dir
                outcome = (prepare_run_dir(config, run_dir, restart=restart_from is not None), "")
            except ConfigError as exc:  # every rank must fail, not wait for rank 0 forever
                outcome = (False, str(exc))
        existing, problem = broadcast_object(outcome, info)
        if problem:
            raise ConfigError(problem)
        if (run_dir / "DONE").is_file() and (run_dir / "model.pt").is_file():
            history = json.loads((run_dir / "history.json").read_text()) if (run_dir / "history.json").is_file() else []
            if info.is_main:
                print(f"[ccdn train] {run_dir} is already complete (DONE); nothing to do", file=sys.stderr)
            return TrainResult(run_dir, True, len(history), -1, history)
        trainer = Trainer(config, run_dir, info, progress=progress)
        if restart_from is not None:
            trainer.restart_from(Path(restart_from), previous or config)
            resumed = True
        else:
            resumed = trainer.resume_if_possible()
        trainer.start_tracking(resumed or existing)
        with trainer.stop_signals():
            result = trainer.fit(stop_after_epoch=stop_after_epoch, stop_after_steps=stop_after_steps)
        status = "FINISHED"
        return result
    except TrainingInterrupted:
        status = "KILLED"
        raise
    finally:
        if trainer is not None:
            trainer.end_tracking(status)
        cleanup_distributed()
        restore_determinism_flags(previous_flags)
        lock.close()


# ------------------------------------------------------------------------------------------ CLI
def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model (resumes the run directory's last checkpoint by itself)",
        description="Train with the paper's recipe (ccdn/configs/default.yaml) merged with --config and "
                    "key=value overrides. Multi-GPU: `torchrun --nproc-per-node N -m ccdn.cli train ...`.")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML merged over the packaged recipe (default: the run dir's config.yaml if any)")
    parser.add_argument("--run-dir", type=Path, default=None, help="run directory (default: runs/<run-name>)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--restart-from", type=Path, default=None, metavar="CKPT",
                        help="continue the run in --run-dir from this checkpoint with changed optimiser settings "
                             "(e.g. optim.lr=1e-4 after a non-finite loss); the change is recorded")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. optim.lr=1e-3")
    parser.set_defaults(func=run)


def resolve_config(config_path: Path | None, overrides: list[str], run_dir: Path | None,
                   *, restart: bool = False) -> dict[str, Any]:
    """``--config`` + overrides, or — with neither — the stored config of an existing ``--run-dir``.

    A restart without ``--config`` applies the overrides to the run's stored config.
    """
    stored = run_dir / "config.yaml" if run_dir is not None else None
    if restart:
        if stored is None or not stored.is_file():
            raise ConfigError(f"--restart-from needs --run-dir of an existing run ({stored or 'no --run-dir given'})")
        return load_config(config_path or stored, overrides)
    if config_path is None and not overrides and run_dir is not None and (run_dir / "config.yaml").is_file():
        read_yaml(run_dir / "config.yaml")  # clear error if unreadable
        return load_config(run_dir / "config.yaml")
    return load_config(config_path, overrides)


def run(args: argparse.Namespace) -> int:
    restart = args.restart_from is not None
    config = resolve_config(args.config, list(args.overrides), args.run_dir, restart=restart)
    try:
        result = train(config, args.run_dir, progress=False if args.no_progress else None,
                       restart_from=args.restart_from)
    except TrainingInterrupted as exc:
        print(f"[ccdn train] {exc}; rerun the same command to resume", file=sys.stderr)
        return 128 + exc.signum if exc.signum else 3
    print(result.run_dir)
    return 0

"""The training loop of one process (rank): steps, validation, checkpoints, tracking, signals.

Everything that influences the next step lives in the checkpoint (weights, optimiser, scheduler,
RNG states, epoch and step within it), so a run resumes exactly. The NaN guard
(:mod:`ccdn.training.guard`) checks the loss, the weights after each step and the validation NME, and
raises :class:`NonFiniteLossError` naming the step and the last finite checkpoint before anything
non-finite is written; :meth:`Trainer.restart_from` is the recovery (:mod:`ccdn.training.restart`).
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn
from torch.utils.data import DataLoader

from ccdn import checkpoint as ckpt
from ccdn.config import (
    ConfigError,
    config_hash,
    default_run_name,
    flatten_config,
)
from ccdn.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    dataloader_workers,
)
from ccdn.global_batch import sync_batchnorm
from ccdn.data.crop import to_original
from ccdn.errors import NonFiniteLossError
from ccdn.io import write_text
from ccdn.training import guard, restart
from ccdn.training.data import (
    EpochShardSampler,
    build_data,
    loader_generator,
    validation_norm,
)
from ccdn.training.determinism import seed_everything
from ccdn.training.warmup import apply_warmup
from ccdn.training.signals import STOP_SIGNALS, on_stop_signals  # noqa: F401  (STOP_SIGNALS re-exported)

CHECKPOINT_FORMAT = 1


class TrainingInterrupted(RuntimeError):
    """Training stopped early on request (signal or ``stop_after_*``) after writing a checkpoint."""

    def __init__(self, message: str, signum: int | None = None) -> None:
        super().__init__(message)
        self.signum = signum


@dataclass
class TrainResult:
    run_dir: Path
    completed: bool
    epochs_done: int
    global_step: int
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """One training run in one process (rank) of a possibly distributed job."""

    def __init__(self, config: dict[str, Any], run_dir: Path, info: DistInfo, *, progress: bool | None = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.info = info
        self.device = info.device
        self.progress = progress
        train_cfg = config["train"]
        optim_cfg = config["optim"]
        if optim_cfg["batch_size"] % info.world_size:
            raise ConfigError(f"optim.batch_size={optim_cfg['batch_size']} (the global batch) must be divisible by "
                              f"the number of processes ({info.world_size})")
        self.use_amp = self.device.type == "cuda" and train_cfg["amp"] == "bf16"
        self.channels_last = bool(train_cfg["channels_last"])  # CUDA, and oneDNN on CPU (docs/performance.md)
        self.input_size = int(config["model"]["options"].get("input_size", 128))

        self.train_set, self.val_set, self.train_split, self.val_split = build_data(config, self.input_size)
        self.num_landmarks = int(self.train_split.landmarks.shape[1])
        self.val_norm = validation_norm(self.val_split)
        self.sampler = EpochShardSampler(len(self.train_set), global_batch=optim_cfg["batch_size"], rank=info.rank,
                                         world_size=info.world_size, seed=int(config["seed"]),
                                         max_batches=train_cfg["max_steps_per_epoch"])
        self.steps_per_epoch = self.sampler.batches
        self.workers = dataloader_workers(train_cfg["num_workers"], info.local_world_size)

        seed_everything(int(config["seed"]))
        self.model = self._build_model()
        self.optimizer = self._build_optimizer()
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=optim_cfg["milestones"],
                                                              gamma=optim_cfg["lr_gamma"])
        self.ddp_model: nn.Module = self.model
        if info.distributed:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

        self.epoch = 0  # epochs completed
        self.step_in_epoch = 0  # optimiser steps done in the current epoch
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.restarts: list[dict[str, Any]] = []
        self.partial: dict[str, Any] = {}
        self.elapsed_s = 0.0
        self.tracker: Any = None
        self._stop_signal: int | None = None  # set by the signal handler of this process
        self._stop_agreed: int | None = None  # set when any process received one (all-reduced)
        self._last_checkpoint_time = time.monotonic()

    # ----------------------------------------------------------------------------- construction
    def _build_model(self) -> nn.Module:
        from ccdn.training.model import create_training_model

        model = create_training_model(self.config["model"], self.num_landmarks, self.train_split, self.train_set.indices)
        if self.info.distributed and self.config["train"]["sync_batchnorm"]:
            # BatchNorm statistics over the global batch, as in a single-process run (ccdn.global_batch).
            model = sync_batchnorm(model, self.device)
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def _build_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config["optim"]
        params = self.model.parameters()
        # fused: one kernel for all parameters, on CPU too (≈ 6 % of an embedded-default step, docs/performance.md)
        if cfg["name"] == "adam":
            return torch.optim.Adam(params, lr=cfg["lr"], betas=tuple(cfg["betas"]), weight_decay=cfg["weight_decay"],
                                    fused=True)
        if cfg["name"] == "adamw":
            return torch.optim.AdamW(params, lr=cfg["lr"], betas=tuple(cfg["betas"]), weight_decay=cfg["weight_decay"],
                                     fused=True)
        # Newell et al.'s hourglass recipe (RMSprop, alpha 0.99, eps 1e-8).
        return torch.optim.RMSprop(params, lr=cfg["lr"], alpha=0.99, eps=1e-8, weight_decay=cfg["weight_decay"])

    def _train_loader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.sampler.local_batch, sampler=self.sampler,
                          num_workers=self.workers, pin_memory=self.device.type == "cuda",
                          generator=loader_generator(int(self.config["seed"]), self.epoch),
                          persistent_workers=False, prefetch_factor=4 if self.workers else None)

    # ---------------------------------------------------------------------------- checkpointing
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config_hash": config_hash(self.config),
            "config": self.config,
            "restarts": self.restarts,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": ckpt.capture_rng_state(),
            "history": self.history,
            "partial": self.partial,
            "elapsed_s": self.elapsed_s,
        }

    def load_state_dict(self, state: Mapping[str, Any], path: Path, *, same_config: bool = True) -> None:
        if state.get("format") != CHECKPOINT_FORMAT or "model" not in state:
            raise ckpt.CheckpointError(f"{path} is not a ccdn training checkpoint (format {state.get('format')!r})")
        if same_config and state["config_hash"] != config_hash(self.config):
            raise ConfigError(f"checkpoint {path} was written with config hash {state['config_hash']}, but this run's "
                              f"config hashes to {config_hash(self.config)}; use a new --run-dir")
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as exc:  # e.g. a model of 68 points, a cache of 98 re-prepared under the same root
            raise ckpt.CheckpointError(f"{path} does not fit this run's {self.config['model']['name']} model for "
                                       f"{self.num_landmarks} landmarks ({str(exc).splitlines()[-1].strip()}); was "
                                       f"{self.config['data']['root']} prepared again? use a new --run-dir") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        ckpt.restore_rng_state(state["rng"])
        self.epoch, self.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
        self.global_step = int(state["global_step"])
        self.history = list(state["history"])
        self.restarts = list(state.get("restarts", []))
        self.partial = dict(state["partial"])
        self.elapsed_s = float(state["elapsed_s"])

    def resume_if_possible(self) -> bool:
        """Continue from ``checkpoints/last.pt`` when the run directory has one."""
        path = ckpt.latest_checkpoint(self.run_dir)
        if path is None:
            return False
        self.load_state_dict(ckpt.load_checkpoint(path, map_location="cpu"), path)  # load_state_dict moves tensors
        self._log(f"resuming {self.run_dir} from {path} (epoch {self.epoch}, step {self.step_in_epoch})")
        return True

    def restart_from(self, path: Path, previous_config: Mapping[str, Any]) -> None:
        """Continue from ``path`` (a finite checkpoint of this run) with this config's optimiser settings.

        ``previous_config`` is the run's stored config, used when the checkpoint predates storing its own.
        The restart is recorded, and ``last.pt`` rewritten at once so a later plain resume continues it.
        """
        state, changes = restart.load_restart_point(path, self.config, previous_config)
        self.load_state_dict(state, path, same_config=False)
        restart.apply_optim_settings(self.optimizer, self.scheduler, self.config)
        record = restart.restart_record(path, state, changes)
        self.restarts.append(record)
        self.history = restart.with_restart(self.history, record)
        if self.info.is_main:
            write_text(self.run_dir / "history.json", guard.history_json(self.history))
        self.save_checkpoint(epoch_end=False)
        self._log(f"restarted {self.run_dir} from {path} (epoch {self.epoch}, step {self.step_in_epoch}) with "
                  f"{restart.describe(changes)}")

    def save_checkpoint(self, *, epoch_end: bool) -> None:
        """Rank 0 writes ``epoch_XXX.pt`` (epoch ends) and ``last.pt``; other ranks wait when it is an epoch end."""
        state = self.state_dict()
        bad = guard.nonfinite_in_state(state)  # on every rank (they hold the same state): all stop, none waits
        if bad:  # the last line of defence against saving poison (e.g. an optimiser moment overflowed)
            raise NonFiniteLossError(f"refusing to write a checkpoint at epoch {self.epoch}, step "
                                     f"{self.step_in_epoch}: non-finite {', '.join(bad[:5])}. {self._recovery()}")
        if self.info.is_main:
            if epoch_end:
                path = ckpt.epoch_checkpoint_path(self.run_dir, self.epoch)
                ckpt.save_checkpoint(state, path)
                ckpt.publish_as_last(path, self.run_dir)
                ckpt.prune_epoch_checkpoints(self.run_dir, self.config["train"]["keep_epoch_checkpoints"])
            else:
                ckpt.save_checkpoint(state, ckpt.checkpoint_dir(self.run_dir) / ckpt.LAST_NAME)
        self._last_checkpoint_time = time.monotonic()
        if epoch_end:
            barrier(self.info)

    def _recovery(self) -> str:
        return guard.recovery_advice(self.run_dir, float(self.config["optim"]["lr"]))

    # ---------------------------------------------------------------------------------- training
    def fit(self, *, stop_after_epoch: int | None = None, stop_after_steps: int | None = None) -> TrainResult:
        epochs = int(self.config["optim"]["epochs"])
        total_steps = epochs * self.steps_per_epoch
        bar = self._progress_bar(total_steps)
        if not self.history and self.epoch == 0 and self.step_in_epoch == 0:
            self._record_initial_validation()
        try:
            while self.epoch < epochs:
                self._train_epoch(bar, stop_after_steps)
                lr = float(self.optimizer.param_groups[0]["lr"])
                self.scheduler.step()
                self.epoch += 1
                self.step_in_epoch = 0
                record = self._end_of_epoch(lr)
                self.save_checkpoint(epoch_end=True)
                self._track_epoch(record)
                if stop_after_epoch is not None and self.epoch >= stop_after_epoch and self.epoch < epochs:
                    raise TrainingInterrupted(f"stopped after epoch {self.epoch} as requested")
        finally:
            bar.close()
        self._finish()
        return TrainResult(self.run_dir, True, self.epoch, self.global_step, self.history)

    def _train_epoch(self, bar: Any, stop_after_steps: int | None) -> None:
        self.ddp_model.train()
        self.train_set.set_epoch(self.epoch)
        self.sampler.set_epoch(self.epoch, skip_batches=self.step_in_epoch)
        if self.step_in_epoch == 0:
            self.partial = {"sums": {}, "images": 0, "seconds": 0.0}
        loader = self._train_loader()
        started = time.perf_counter()
        for batch in loader:
            terms = self._train_step(batch)
            self.step_in_epoch += 1
            self.global_step += 1
            now = time.perf_counter()
            self.partial["seconds"] += now - started
            self.elapsed_s += now - started
            started = now
            self.partial["images"] += self.config["optim"]["batch_size"]
            for key, value in terms.items():
                self.partial["sums"][key] = self.partial["sums"].get(key, 0.0) + value
            bar.update(1)
            bar.set_postfix(epoch=f"{self.epoch + 1}", **{k: f"{v:.4g}" for k, v in terms.items()},
                            lr=f"{self.optimizer.param_groups[0]['lr']:.2e}", refresh=False)
            if self.step_in_epoch >= self.steps_per_epoch:
                break
            if self._stop_agreed is not None:
                self.save_checkpoint(epoch_end=False)
                raise TrainingInterrupted(f"stopped by signal {self._stop_agreed} at epoch {self.epoch + 1} step "
                                          f"{self.step_in_epoch}; checkpoint written", self._stop_agreed)
            if stop_after_steps is not None and self.global_step >= stop_after_steps:
                self.save_checkpoint(epoch_end=False)
                raise TrainingInterrupted(f"stopped after step {self.global_step} as requested")
            if time.monotonic() - self._last_checkpoint_time >= 60 * self.config["train"]["checkpoint_minutes"]:
                self.save_checkpoint(epoch_end=False)

    def _train_step(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        from ccdn.losses import compute_loss

        images = batch["image"].to(self.device, non_blocking=True)
        target = batch["landmarks"].to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.use_amp else contextlib.nullcontext()
        with autocast:
            output = self.ddp_model(images)
        output = as_float32(output)
        loss_cfg = self.config["loss"]
        losses = compute_loss(output, target.float(), coord_loss=loss_cfg["coord"], gammas=loss_cfg["gammas"],
                              **loss_cfg["options"])
        names = sorted(losses)
        stop_flag = torch.tensor([0.0 if self._stop_signal is None else 1.0], device=self.device)
        reduced = torch.cat([torch.stack([losses[n].detach().float() for n in names]), stop_flag])
        all_reduce_sum(reduced, self.info)
        reduced = reduced.cpu()
        if reduced[-1] > 0:  # every rank stops at the same step, whichever received the signal
            self._stop_agreed = self._stop_signal or int(signal.SIGTERM)
        values = {name: float(v) / self.info.world_size for name, v in zip(names, reduced[:-1])}
        where = (f"epoch {self.epoch + 1}, step {self.step_in_epoch + 1} of {self.steps_per_epoch} "
                 f"(global step {self.global_step + 1})")
        if not all(math.isfinite(v) for v in values.values()):
            detail = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
            raise NonFiniteLossError(f"non-finite loss at {where}: {detail}. Nothing was written for this step. "
                                     f"{self._recovery()}")
        self.optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        apply_warmup(self.optimizer, float(self.config["optim"]["lr"]), self.global_step,
                     int(self.config["optim"]["warmup_epochs"]) * self.steps_per_epoch)
        self.optimizer.step()
        if not guard.weights_are_finite(self.model):
            bad = guard.nonfinite_tensors(self.model.state_dict())
            raise NonFiniteLossError(f"the weights became non-finite in the step at {where} (finite loss "
                                     f"{values['total']:.4g}; {len(bad)} tensors, e.g. {', '.join(bad[:3])}). "
                                     f"Nothing was written for this step. {self._recovery()}")
        return values

    # -------------------------------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self) -> float:
        """Validation NME (percent, the dataset's main normaliser) on ``data.val_subset``, original pixels."""
        from ccdn.metrics import nme

        self.model.eval()
        mine = list(range(self.info.rank, len(self.val_set), self.info.world_size))
        loader = DataLoader(torch.utils.data.Subset(self.val_set, mine),
                            batch_size=self.config["train"]["val_batch_size"], shuffle=False,
                            num_workers=min(self.workers, 2), generator=loader_generator(0, 0))
        total = torch.zeros(2, dtype=torch.float64)
        for batch in loader:
            images = batch["image"].to(self.device)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.use_amp else contextlib.nullcontext()
            with autocast:
                pred = self.model(images)["landmarks"].float().cpu()
            pred = to_original(pred.double(), batch["crop_to_original"].double()).numpy()
            index = batch["index"].numpy()
            errors = nme(pred, self.val_split.original_landmarks[index], self.val_norm,
                         scheme=self.val_split.scheme, boxes=self.val_split.boxes[index])
            total += torch.tensor([errors.sum(), errors.size], dtype=torch.float64)
        self.model.train()
        total = all_reduce_sum(total.to(self.device), self.info).cpu()
        return float(100.0 * total[0] / max(1.0, float(total[1])))

    def _end_of_epoch(self, lr: float) -> dict[str, Any]:
        """Validate, append the epoch's record (mean loss terms, the lr it used, val NME) to history.json."""
        val_nme = self._checked_validation(f"after epoch {self.epoch}")
        seconds = max(self.partial.get("seconds", 0.0), 1e-9)
        steps = max(1, self.steps_per_epoch)
        record = {
            "epoch": self.epoch,
            "lr": lr,
            **{f"loss_{k}": v / steps for k, v in sorted(self.partial.get("sums", {}).items())},
            "val_nme": val_nme,
            "val_norm": self.val_norm,
            "val_subset": self.config["data"]["val_subset"],
            "images_per_s": self.partial.get("images", 0) / seconds,
            "epoch_seconds": seconds,
            "device": self.device.type,  # with epoch_seconds: the compute notes of the report
        }
        self.history.append(record)
        if self.info.is_main:
            write_text(self.run_dir / "history.json", guard.history_json(self.history))
        loss = record.get("loss_total", float("nan"))
        self._log(f"epoch {self.epoch}/{self.config['optim']['epochs']}: loss {loss:.4g}"
                  f"  val NME ({self.val_norm}, {record['val_subset']}) {val_nme:.3f}%  lr {record['lr']:.3g}"
                  f"  {record['images_per_s']:.1f} img/s")
        return record

    def _record_initial_validation(self) -> None:
        """Epoch 0: the untrained model's validation NME, the reference point of the learning curve."""
        record = {"epoch": 0, "lr": float(self.config["optim"]["lr"]),
                  "val_nme": self._checked_validation("of the untrained model"),
                  "val_norm": self.val_norm, "val_subset": self.config["data"]["val_subset"]}
        self.history.append(record)
        if self.info.is_main:
            write_text(self.run_dir / "history.json", guard.history_json(self.history))
        self._track_epoch(record)

    def _checked_validation(self, when: str) -> float:
        """``validate()``, refusing a non-finite NME before it is recorded or a checkpoint is written."""
        val_nme = self.validate()
        if not math.isfinite(val_nme):
            raise NonFiniteLossError(f"the validation NME {when} is {val_nme} (the model predicts non-finite "
                                     f"landmarks); nothing was written for this epoch. {self._recovery()}")
        return val_nme

    # ---------------------------------------------------------------------------------- tracking
    def start_tracking(self, resumed: bool) -> None:
        """The MLflow run (continued after a requeue), or with ``tracking.defer`` only the record for ``ccdn track``."""
        from ccdn import tracking

        if not self.info.is_main or not self.config["tracking"]["enabled"]:
            return
        cfg = self.config
        tags = {**tracking.environment_tags(), "config_hash": config_hash(cfg), "model": cfg["model"]["name"],
                "dataset": cfg["data"]["dataset"], "seed": str(cfg["seed"]), "run_dir": str(self.run_dir.resolve()),
                "synthetic": str(bool(self.train_split.synthetic)).lower(), "world_size": str(self.info.world_size),
                **{str(k): str(v) for k, v in cfg["tracking"]["tags"].items()}}
        if self.restarts:
            tags.update({"restarts": json.dumps(self.restarts), "restart_count": str(len(self.restarts))})
        if cfg["tracking"]["defer"]:  # no MLflow import in this process (3 s per job of a grid)
            tracking.save_deferred_record(self.run_dir, tags)
            return
        self.tracker = tracking.Tracker(
            experiment=cfg["tracking"]["experiment"] or tracking.experiment_name(cfg["data"]["dataset"]),
            run_name=default_run_name(cfg))
        record = tracking.read_record(self.run_dir)  # also after a death before the first checkpoint
        self.tracker.start(params=tracking.params_from_flat(flatten_config(cfg)), tags=tags,
                           run_id=(record or {}).get("run_id"),
                           continue_if=None if resumed else {"config_hash": tags["config_hash"]})
        self.tracker.save_record(self.run_dir)
        if self.tracker.active:
            self.tracker.log_artifact(self.run_dir / "config.yaml")

    def _track_epoch(self, record: Mapping[str, Any]) -> None:
        from ccdn.tracking import epoch_metrics

        if self.tracker is not None:
            self.tracker.log_metrics(epoch_metrics(record), step=record["epoch"])

    def end_tracking(self, status: str) -> None:
        if self.tracker is not None:
            if status == "FINISHED":
                self.tracker.log_artifact(self.run_dir / "history.json")
            self.tracker.finish(status)

    # ------------------------------------------------------------------------------------ finish
    def _finish(self) -> None:
        """``model.pt`` (final weights, weights-only loadable) then ``DONE`` — the order Snakemake relies on."""
        if self.info.is_main:
            ckpt.save_checkpoint(self.model.state_dict(), self.run_dir / "model.pt")
            done = {"epochs": self.epoch, "global_step": self.global_step, "config_hash": config_hash(self.config),
                    "world_size": self.info.world_size,
                    "final_val_nme": self.history[-1]["val_nme"] if self.history else None}
            write_text(self.run_dir / "DONE", json.dumps(done) + "\n")
        barrier(self.info)

    # ------------------------------------------------------------------------------------- misc
    def stop_signals(self) -> contextlib.AbstractContextManager[None]:
        """SIGTERM / SIGUSR1 (SLURM preemption, ``scancel``) → checkpoint at the next step, then exit."""
        return on_stop_signals(lambda signum: setattr(self, "_stop_signal", signum))

    def _progress_bar(self, total: int) -> Any:
        from tqdm import tqdm

        interactive = sys.stderr.isatty()
        enabled = self.info.is_main and (self.progress if self.progress is not None else True)
        return tqdm(total=total, initial=self.epoch * self.steps_per_epoch + self.step_in_epoch, unit="step",
                    desc=self.run_dir.name, disable=not enabled, dynamic_ncols=True,
                    mininterval=1 if interactive else 60, leave=interactive)

    def _log(self, message: str) -> None:
        if self.info.is_main:
            from tqdm import tqdm

            tqdm.write(f"[ccdn train] {message}", file=sys.stderr)


def as_float32(output: Mapping[str, Any]) -> dict[str, Any]:
    """Losses are computed in float32 even when the forward pass ran under bf16 autocast."""
    result = dict(output)
    result["landmarks"] = output["landmarks"].float()
    if output.get("cocs"):
        result["cocs"] = {k: v.float() for k, v in output["cocs"].items()}
    if "heatmaps" in output:
        result["heatmaps"] = output["heatmaps"].float()
    return result

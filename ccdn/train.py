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
- **Failures are loud and safe.** A NaN/Inf loss raises :class:`NonFiniteLossError` naming the step
  before anything is written; tracking failures only warn (``ccdn.tracking``).

Run directory (Contract 5): ``config.yaml``, ``checkpoints/{last.pt,epoch_XXX.pt}``, ``history.json``,
``tracking.json``, and on completion ``model.pt`` then ``DONE``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from ccdn import checkpoint as ckpt
from ccdn.config import (
    ConfigError,
    atomic_write_text,
    config_hash,
    default_run_name,
    flatten_config,
    load_config,
    read_yaml,
    save_config,
)
from ccdn.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_object,
    cleanup_distributed,
    dataloader_workers,
    init_distributed,
)

CHECKPOINT_FORMAT = 1
STOP_SIGNALS = ("SIGTERM", "SIGUSR1")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


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


# ------------------------------------------------------------------------------------ determinism
def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_determinism(deterministic: bool) -> None:
    """Set the deterministic-algorithm flags and assert they took effect.

    Asserting matters: a misspelt flag (``cudnn.determinstic``) silently does nothing.
    ``CUBLAS_WORKSPACE_CONFIG`` must be set before cuBLAS starts, so set it before any CUDA work.
    """
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    assert torch.are_deterministic_algorithms_enabled() == deterministic, "torch deterministic flag did not apply"
    assert torch.backends.cudnn.deterministic == deterministic, "cudnn.deterministic did not apply"
    assert torch.backends.cudnn.benchmark == (not deterministic), "cudnn.benchmark did not apply"


def _determinism_flags() -> tuple[bool, bool, bool, bool]:
    return (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)


def _restore_determinism_flags(flags: tuple[bool, bool, bool, bool]) -> None:
    """Give a library caller (tests, notebooks) back the global flags it had before ``train``."""
    torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[2], flags[3]


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 32-bit seed for the sample order of one epoch."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


# ------------------------------------------------------------------------------------------- data
class EpochShardSampler(Sampler[int]):
    """This process's share of each epoch's global batches, from a permutation seeded by ``(seed, epoch)``.

    The permutation is cut to whole global batches; process ``r`` of ``W`` takes positions
    ``r, r + W, …`` so global batch ``k`` is the same set of samples whatever ``W`` is.
    ``skip_batches`` resumes mid-epoch. (Augmentation is seeded per sample by ``LandmarkDataset``
    from ``(seed, epoch, index)``, so neither workers nor resumption change it.)
    """

    def __init__(self, num_samples: int, *, global_batch: int, rank: int, world_size: int, seed: int,
                 max_batches: int | None = None) -> None:
        if num_samples < global_batch:
            raise ConfigError(f"the training set has {num_samples} images, fewer than optim.batch_size={global_batch}; "
                              "lower optim.batch_size or add data")
        self.num_samples = num_samples
        self.global_batch = global_batch
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        full = num_samples // global_batch
        self.batches = full if max_batches is None else min(max_batches, full)
        self.epoch = 0
        self.skip_batches = 0

    @property
    def local_batch(self) -> int:
        return self.global_batch // self.world_size

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip_batches = epoch, skip_batches

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.num_samples, generator=generator)[: self.batches * self.global_batch]
        mine = order[self.rank :: self.world_size]
        return iter(mine[self.skip_batches * self.local_batch :].tolist())

    def __len__(self) -> int:
        return (self.batches - self.skip_batches) * self.local_batch


def loader_generator(seed: int, epoch: int) -> torch.Generator:
    """A DataLoader's own generator, so creating a loader never draws from the global torch RNG."""
    return torch.Generator().manual_seed(epoch_seed(seed, epoch) ^ 0x5EED)


def build_data(config: Mapping[str, Any], input_size: int) -> tuple[Any, Any, Any, Any]:
    """The training dataset (augmented, seeded per sample), the validation dataset and both splits."""
    from ccdn.data import AugmentConfig, LandmarkDataset, load_split

    data = config["data"]
    root = Path(data["root"])
    train_split = load_split(root, data["train_split"])
    val_split = load_split(root, data["val_split"])
    if train_split.scheme != val_split.scheme:
        raise ConfigError(f"data.train_split {data['train_split']!r} has the {train_split.scheme}-point scheme but "
                          f"data.val_split {data['val_split']!r} has {val_split.scheme}; validate on the same scheme")
    limit = config["train"]["limit_train_images"]
    indices = None if limit is None else np.arange(min(int(limit), len(train_split)))
    train_set = LandmarkDataset(train_split, input_size, AugmentConfig(**config["augment"]), seed=int(config["seed"]),
                                indices=indices)
    val_set = LandmarkDataset(val_split, input_size, None, indices=val_split.subset(data["val_subset"]))
    return train_set, val_set, train_split, val_split


def validation_norm(split: Any) -> str:
    """The dataset's main NME normaliser (first of the paper's, from the dataset table)."""
    from ccdn.data.schemes import DATASETS

    name = str(split.meta.get("dataset", ""))
    return DATASETS[name].norms[0] if name in DATASETS else "inter_ocular"


def to_original(points: torch.Tensor, crop_to_original: torch.Tensor) -> torch.Tensor:
    """Crop-normalised ``(B, L, 2)`` → original pixels with the ``(B, 2, 3)`` affine maps."""
    return points @ crop_to_original[:, :, :2].transpose(1, 2) + crop_to_original[:, None, :, 2]


# ---------------------------------------------------------------------------------------- trainer
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
        self.channels_last = self.device.type == "cuda" and bool(train_cfg["channels_last"])
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
        self.partial: dict[str, Any] = {}
        self.elapsed_s = 0.0
        self.tracker: Any = None
        self._stop_signal: int | None = None  # set by the signal handler of this process
        self._stop_agreed: int | None = None  # set when any process received one (all-reduced)
        self._last_checkpoint_time = time.monotonic()

    # ----------------------------------------------------------------------------- construction
    def _build_model(self) -> nn.Module:
        from ccdn.models import create_model

        model_cfg = self.config["model"]
        model = create_model(model_cfg["name"], self.num_landmarks, **model_cfg["options"])
        if self.info.distributed and self.device.type == "cuda":
            # BatchNorm statistics over the global batch, as in a single-GPU run (gloo/CPU cannot sync BN).
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def _build_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config["optim"]
        params = self.model.parameters()
        if cfg["name"] == "adam":
            return torch.optim.Adam(params, lr=cfg["lr"], betas=tuple(cfg["betas"]), weight_decay=cfg["weight_decay"])
        if cfg["name"] == "adamw":
            return torch.optim.AdamW(params, lr=cfg["lr"], betas=tuple(cfg["betas"]), weight_decay=cfg["weight_decay"])
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

    def load_state_dict(self, state: Mapping[str, Any], path: Path) -> None:
        if state.get("format") != CHECKPOINT_FORMAT or "model" not in state:
            raise ckpt.CheckpointError(f"{path} is not a ccdn training checkpoint (format {state.get('format')!r})")
        if state["config_hash"] != config_hash(self.config):
            raise ConfigError(f"checkpoint {path} was written with config hash {state['config_hash']}, but this run's "
                              f"config hashes to {config_hash(self.config)}; use a new --run-dir")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        ckpt.restore_rng_state(state["rng"])
        self.epoch, self.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
        self.global_step = int(state["global_step"])
        self.history = list(state["history"])
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

    def save_checkpoint(self, *, epoch_end: bool) -> None:
        """Rank 0 writes ``epoch_XXX.pt`` (epoch ends) and ``last.pt``; other ranks wait when it is an epoch end."""
        if self.info.is_main:
            state = self.state_dict()
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

    def _last_good(self) -> str:
        path = ckpt.latest_checkpoint(self.run_dir)
        if path is None:
            return "no checkpoint was written yet"
        state = ckpt.load_checkpoint(path)
        return f"the last good checkpoint is {path} (epoch {state['epoch']}, step {state['step_in_epoch']})"

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
        if not all(math.isfinite(v) for v in values.values()):
            detail = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
            raise NonFiniteLossError(
                f"non-finite loss at epoch {self.epoch + 1}, step {self.step_in_epoch + 1} of {self.steps_per_epoch} "
                f"(global step {self.global_step + 1}): {detail}. Nothing was written for this step; "
                f"{self._last_good()}. Lower optim.lr or check the data, then rerun `ccdn train` on "
                f"{self.run_dir} to resume from that checkpoint.")
        self.optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        self.optimizer.step()
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
        val_nme = self.validate()
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
        }
        self.history.append(record)
        if self.info.is_main:
            atomic_write_text(self.run_dir / "history.json", json.dumps(self.history, indent=2) + "\n")
        loss = record.get("loss_total", float("nan"))
        self._log(f"epoch {self.epoch}/{self.config['optim']['epochs']}: loss {loss:.4g}"
                  f"  val NME ({self.val_norm}, {record['val_subset']}) {val_nme:.3f}%  lr {record['lr']:.3g}"
                  f"  {record['images_per_s']:.1f} img/s")
        return record

    def _record_initial_validation(self) -> None:
        """Epoch 0: the untrained model's validation NME, the reference point of the learning curve."""
        record = {"epoch": 0, "lr": float(self.config["optim"]["lr"]), "val_nme": self.validate(),
                  "val_norm": self.val_norm, "val_subset": self.config["data"]["val_subset"]}
        self.history.append(record)
        if self.info.is_main:
            atomic_write_text(self.run_dir / "history.json", json.dumps(self.history, indent=2) + "\n")
        if self.tracker is not None:
            self.tracker.log_metrics({f"val/nme_{self.val_norm}": record["val_nme"]}, step=0)

    # ---------------------------------------------------------------------------------- tracking
    def start_tracking(self, resumed: bool) -> None:
        from ccdn import tracking

        if not self.info.is_main:
            return
        cfg = self.config
        self.tracker = tracking.Tracker(
            experiment=cfg["tracking"]["experiment"] or tracking.experiment_name(cfg["data"]["dataset"]),
            run_name=default_run_name(cfg), enabled=bool(cfg["tracking"]["enabled"]))
        record = tracking.read_record(self.run_dir) if resumed else None
        tags = {**tracking.environment_tags(), "config_hash": config_hash(cfg), "model": cfg["model"]["name"],
                "dataset": cfg["data"]["dataset"], "seed": str(cfg["seed"]), "run_dir": str(self.run_dir.resolve()),
                "synthetic": str(bool(self.train_split.synthetic)).lower(), "world_size": str(self.info.world_size),
                **{str(k): str(v) for k, v in cfg["tracking"]["tags"].items()}}
        self.tracker.start(params=tracking.params_from_flat(flatten_config(cfg)), tags=tags,
                           run_id=(record or {}).get("run_id"))
        self.tracker.save_record(self.run_dir)
        if self.tracker.active:
            self.tracker.log_artifact(self.run_dir / "config.yaml")

    def _track_epoch(self, record: Mapping[str, Any]) -> None:
        if self.tracker is None:
            return
        metrics = {f"train/{k[5:]}": v for k, v in record.items() if k.startswith("loss_")}
        metrics.update({"lr": record["lr"], f"val/nme_{record['val_norm']}": record["val_nme"],
                        "images_per_s": record["images_per_s"], "epoch_seconds": record["epoch_seconds"]})
        self.tracker.log_metrics(metrics, step=record["epoch"])

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
            atomic_write_text(self.run_dir / "DONE", json.dumps(done) + "\n")
        barrier(self.info)

    # ------------------------------------------------------------------------------------- misc
    @contextlib.contextmanager
    def stop_signals(self) -> Iterator[None]:
        """SIGTERM / SIGUSR1 (SLURM preemption, ``scancel``) → checkpoint at the next step, then exit."""
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {}

        def handler(signum: int, frame: Any) -> None:  # noqa: ARG001
            self._stop_signal = signum

        for name in STOP_SIGNALS:
            if hasattr(signal, name):
                sig = getattr(signal, name)
                previous[sig] = signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

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


# ------------------------------------------------------------------------------------ run dirs
def prepare_run_dir(config: dict[str, Any], run_dir: Path) -> bool:
    """Create ``run_dir`` and write ``config.yaml``; refuse a directory holding another recipe.

    Returns True when the directory already held this run (it will be resumed or is done). A
    directory with a config but no checkpoint yet (a start that failed early, e.g. on a wrong
    ``data.root``) is simply taken over.
    """
    stored_path = run_dir / "config.yaml"
    existing = stored_path.is_file() and (ckpt.latest_checkpoint(run_dir) is not None or (run_dir / "DONE").is_file())
    if existing:
        stored = load_config(stored_path)
        if config_hash(stored) != config_hash(config):
            ours, theirs = flatten_config(config), flatten_config(stored)
            diff = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
            detail = "; ".join(f"{k}: stored {theirs.get(k)!r}, now {ours.get(k)!r}" for k in diff[:8])
            raise ConfigError(f"{run_dir} holds a run with a different config ({detail}); pass another --run-dir "
                              f"(or tracking.run_name=...) or delete {run_dir} to start over")
    save_config(config, stored_path)
    return existing


def train(config: dict[str, Any], run_dir: Path | str | None = None, *, progress: bool | None = None,
          stop_after_epoch: int | None = None, stop_after_steps: int | None = None) -> TrainResult:
    """Train (or resume, or find finished) the run described by ``config`` in ``run_dir``.

    ``stop_after_epoch`` / ``stop_after_steps`` end this invocation early after writing a checkpoint,
    as a preemption would (tests and smoke runs use them); they raise :class:`TrainingInterrupted`.
    """
    run_dir = Path(run_dir) if run_dir is not None else Path("runs") / default_run_name(config)
    info = init_distributed(config["train"]["device"])
    trainer: Trainer | None = None
    status = "FAILED"
    previous_flags = _determinism_flags()
    try:
        configure_determinism(bool(config["train"]["deterministic"]))
        outcome: tuple[bool, str] = (True, "")
        if info.is_main:
            try:
                outcome = (prepare_run_dir(config, run_dir), "")
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
        _restore_determinism_flags(previous_flags)


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
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. optim.lr=1e-3")
    parser.set_defaults(func=run)


def resolve_config(config_path: Path | None, overrides: list[str], run_dir: Path | None) -> dict[str, Any]:
    """``--config`` + overrides, or — with neither — the stored config of an existing ``--run-dir``."""
    if config_path is None and not overrides and run_dir is not None and (run_dir / "config.yaml").is_file():
        read_yaml(run_dir / "config.yaml")  # clear error if unreadable
        return load_config(run_dir / "config.yaml")
    return load_config(config_path, overrides)


def run(args: argparse.Namespace) -> int:
    config = resolve_config(args.config, list(args.overrides), args.run_dir)
    try:
        result = train(config, args.run_dir, progress=False if args.no_progress else None)
    except TrainingInterrupted as exc:
        print(f"[ccdn train] {exc}; rerun the same command to resume", file=sys.stderr)
        return 128 + exc.signum if exc.signum else 3
    print(result.run_dir)
    return 0

"""Where a training process runs: its device, its place in a ``torchrun`` job, and its CPU budget.

Why a module of its own: the same ``ccdn train`` command must work as one CPU process, one GPU, or
N processes started by ``torchrun`` (alone or under ``srun``), and DataLoader workers must be sized
from the CPUs the scheduler actually gave the job — a 128-core node running 8 jobs with 8 CPUs each
must not start 127 workers per job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

# Upper bound on automatically chosen workers per process: beyond this the augmentation pipeline
# outruns the model (see docs/performance.md, Training) and each worker only costs memory.
MAX_AUTO_WORKERS = 8


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job. ``world_size == 1`` means plain single-process training."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def select_device(setting: str, local_rank: int = 0) -> torch.device:
    """``auto`` → this process's GPU when CUDA is available, else CPU; ``cuda`` → ``cuda:<local_rank>``."""
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but no CUDA device is visible; use train.device=cpu or auto")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    device = torch.device(setting)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={setting} but no CUDA device is visible; use train.device=cpu or auto")
    return device


def init_distributed(device_setting: str = "auto", timeout_minutes: float = 30.0) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (no-op when run alone).

    NCCL on GPUs, gloo on CPUs. ``torchrun`` sets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE and the
    rendezvous; under SLURM it is started once per node by ``srun`` (docs/training.md).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    device = select_device(device_setting, local_rank)
    if world_size <= 1:
        return DistInfo(0, 1, 0, 1, device, None)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=timeout_minutes),
                                **({"device_id": device} if device.type == "cuda" else {}))
    return DistInfo(rank, world_size, local_rank, local_world_size, device, backend)


def cleanup_distributed() -> None:
    """Leave the process group (safe to call when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def available_cpus() -> int:
    """CPUs this job may use: SLURM's ``--cpus-per-task``, else the affinity mask, else the core count.

    ``os.cpu_count()`` is the node's count, which on a shared node is far more than a job owns.
    """
    counts: list[int] = []
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm and slurm.strip().isdigit() and int(slurm) > 0:
        counts.append(int(slurm))
    try:
        counts.append(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        counts.append(os.cpu_count() or 1)
    return max(1, min(counts))


def dataloader_workers(setting: int | str, local_world_size: int = 1, cpus: int | None = None) -> int:
    """Workers per process: ``auto`` shares the job's CPUs among the local processes, keeping one each
    for the training loop itself; an integer is taken as given."""
    if setting != "auto":
        return int(setting)
    cpus = available_cpus() if cpus is None else cpus
    per_process = cpus // max(1, local_world_size)
    return max(0, min(MAX_AUTO_WORKERS, per_process - 1))


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum over processes in place (identity in a single process)."""
    if info.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every rank (identity in a single process)."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]

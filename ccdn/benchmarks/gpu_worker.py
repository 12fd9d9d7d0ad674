"""The processes ``ccdn benchmark gpu`` starts: timed training steps, and a DDP run under ``torchrun``.

Why a module of its own: packing several independent runs on one GPU and checking NCCL both need
separate processes (``python -m ccdn.benchmarks.gpu_worker {throughput,ddp} ...``); the in-process
step timing of the check uses the same :func:`measure_training_steps`. Each writes one JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from ccdn.losses import compute_loss
from ccdn.models import create_model

SIZES: dict[str, dict[str, int]] = {
    "paper": {"stacks": 4, "channels": 256, "input_size": 128, "num_excitations": 4},
    "small": {"stacks": 1, "channels": 32, "input_size": 64, "num_excitations": 4},
}
LANDMARKS = 68


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TrainingStep:
    """One Adam step of Eq. 9 on a fixed random batch, as ``ccdn train`` does it (bf16 + channels_last on CUDA)."""

    def __init__(self, model: torch.nn.Module, batch_size: int, input_size: int, device: torch.device,
                 *, convert_model: bool = True) -> None:
        from ccdn.train import as_float32

        self.as_float32 = as_float32
        self.cuda = device.type == "cuda"
        self.model = model.to(device).train()
        self.images = torch.rand(batch_size, 3, input_size, input_size, device=device)
        self.target = torch.rand(batch_size, LANDMARKS, 2, device=device)
        if self.cuda:
            if convert_model:  # a DDP-wrapped model must be converted before wrapping
                self.model = self.model.to(memory_format=torch.channels_last)
            self.images = self.images.contiguous(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=2.5e-4, betas=(0.5, 0.999))

    def __call__(self) -> float:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda):
            output = self.model(self.images)
        loss = compute_loss(self.as_float32(output), self.target)["total"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def measure_training_steps(name: str, size: str, batch_size: int, steps: int, warmup: int, device: torch.device,
                           *, start_signal: Any = None) -> dict[str, Any]:
    """images/s, peak memory (CUDA) and FLOPs per image (forward + backward) of ``steps`` timed steps.

    ``start_signal``: called after the warm-up and before timing (packed runs wait there for each other).
    """
    torch.manual_seed(0)
    options = SIZES[size]
    step = TrainingStep(create_model(name, LANDMARKS, **options), batch_size, options["input_size"], device)
    with FlopCounterMode(display=False) as counter:
        step()
    for _ in range(warmup):
        step()
    if start_signal is not None:
        start_signal()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    seconds = time.perf_counter() - started
    return {
        "model": name, "size": size, "batch_size": batch_size, "steps": steps,
        "params": sum(p.numel() for p in step.model.parameters()),
        "flops_per_image": counter.get_total_flops() / batch_size,
        "seconds": seconds, "images_per_s": steps * batch_size / seconds,
        "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        "precision": "bf16 autocast + channels_last" if device.type == "cuda" else "float32",
    }


def wait_for_go(ready: Path, go: Path, timeout_s: float = 600.0) -> None:
    """Say this worker is warmed up (``ready``), then wait for the parent's ``go`` file."""
    ready.write_text("ready\n")
    deadline = time.monotonic() + timeout_s
    while not go.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no start signal {go} after {timeout_s:.0f} s")
        time.sleep(0.01)


def throughput_main(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    signal = (lambda: wait_for_go(args.ready, args.go)) if args.ready else None
    result = measure_training_steps(args.model, args.size, args.batch_size, args.steps, args.warmup, device,
                                    start_signal=signal)
    args.out.write_text(json.dumps(result) + "\n")


def ddp_main(args: argparse.Namespace) -> None:
    """Training steps under DistributedDataParallel with the job's backend (NCCL on CUDA), even for 1 process."""
    import torch.distributed as dist

    from ccdn.global_batch import sync_batchnorm

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if args.device == "cuda" else torch.device("cpu")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, **({"device_id": device} if device.type == "cuda" else {}))
    try:
        torch.manual_seed(0)
        options = SIZES[args.size]
        model = sync_batchnorm(create_model(args.model, LANDMARKS, **options), device).to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        step = TrainingStep(ddp, args.batch_size, options["input_size"], device, convert_model=False)
        losses = [step() for _ in range(args.warmup)]
        synchronize(device)
        started = time.perf_counter()
        losses += [step() for _ in range(args.steps)]
        synchronize(device)
        seconds = time.perf_counter() - started
        probe = torch.ones(1, device=device) * (dist.get_rank() + 1)
        dist.all_reduce(probe)
        world = dist.get_world_size()
        result = {"backend": dist.get_backend(), "world_size": world, "model": args.model, "size": args.size,
                  "batch_size_per_process": args.batch_size, "steps": args.steps,
                  "images_per_s": world * args.steps * args.batch_size / seconds,
                  "all_reduce_ok": float(probe) == world * (world + 1) / 2,
                  "loss_first": losses[0], "loss_last": losses[-1]}
        if dist.get_rank() == 0:
            args.out.write_text(json.dumps(result) + "\n")
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ccdn.benchmarks.gpu_worker")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("throughput", "ddp"):
        p = sub.add_parser(command)
        p.add_argument("--model", default="ccdn")
        p.add_argument("--size", choices=sorted(SIZES), default="paper")
        p.add_argument("--device", default="cuda")
        p.add_argument("--batch-size", type=int, default=6)
        p.add_argument("--steps", type=int, default=20)
        p.add_argument("--warmup", type=int, default=3)
        p.add_argument("--out", type=Path, required=True)
        if command == "throughput":
            p.add_argument("--ready", type=Path, default=None, help="file to write once warmed up")
            p.add_argument("--go", type=Path, default=None, help="file whose appearance starts the timing")
    args = parser.parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(1)  # packed CPU workers must not oversubscribe the cores
    (throughput_main if args.command == "throughput" else ddp_main)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

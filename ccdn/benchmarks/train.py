"""``ccdn benchmark train``: training throughput, data-loader headroom and the paper grid's cost.

Why: before booking a cluster one wants to know (1) how many training images per second each
network takes at the paper size with the real training step (Adam, Eq. 9 loss; bf16 autocast and
channels_last on CUDA, as ``ccdn train`` does), (2) whether the augmenting DataLoader keeps up with
that, and (3) what the whole reproduction grid (``config/paper.yaml``: every experiment × seed,
120 epochs over each training set) costs in GPU-hours. Prints Markdown tables for
docs/performance.md ("Training"); medians, nothing asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

SIZES = {
    "paper": {"stacks": 4, "channels": 256, "input_size": 128, "num_excitations": 4},
    "small": {"stacks": 1, "channels": 32, "input_size": 64, "num_excitations": 4},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=["baseline", "fcdn", "ccdn"], help="registered model names")
    parser.add_argument("--size", choices=sorted(SIZES), default="paper", help="model size (default: paper)")
    parser.add_argument("--batch-size", type=int, default=6, help="batch per step (paper recipe: 6)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per model")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 1, 2], help="DataLoader worker counts")
    parser.add_argument("--faces", type=int, default=48, help="synthetic 300W training faces for the loader test")
    parser.add_argument("--grid", type=Path, default=Path("config/paper.yaml"), help="experiment grid to cost")
    parser.add_argument("--assumed-gpu-tflops", type=float, default=25.0,
                        help="sustained training TFLOP/s assumed for a GPU when none is measured")


def run(args: argparse.Namespace) -> int:
    from ccdn.distributed import select_device

    device = select_device(args.device)
    print(_machine(device) + "\n")
    options = SIZES[args.size]
    rows = {name: measure_model(name, options, args, device) for name in args.models}
    print(f"### Training step, {args.size} size {options}, batch {args.batch_size}, "
          f"{'bf16 autocast + channels_last' if device.type == 'cuda' else 'float32'}\n")
    _table(["model", "params (M)", "GFLOP / image (fwd+bwd)", "s / step (median)", "images/s"],
           [[n, f"{r['params'] / 1e6:.2f}", f"{r['flops'] / 1e9:.1f}", f"{r['seconds']:.3g}",
             f"{r['images_per_s']:.3g}"] for n, r in rows.items()])
    consumer = max(rows.values(), key=lambda r: r["images_per_s"])
    loader = measure_loader(args, int(options["input_size"]))
    print(f"### DataLoader (augmented 300W crops, input {options['input_size']}) vs the fastest model "
          f"({consumer['images_per_s']:.3g} images/s)\n")
    _table(["workers", "samples/s", "÷ model images/s"],
           [[str(w), f"{rate:.0f}", f"{rate / consumer['images_per_s']:,.0f}×"] for w, rate in loader.items()])
    if args.size == "paper" and args.grid.is_file():
        grid_cost(args, rows, device)
    return 0


def measure_model(name: str, options: dict[str, Any], args: argparse.Namespace, device: torch.device) -> dict:
    """Median seconds per full training step (forward, Eq. 9 loss, backward, Adam step)."""
    from ccdn.losses import compute_loss
    from ccdn.models import create_model
    from ccdn.train import as_float32

    torch.manual_seed(0)
    model = create_model(name, 68, **options).to(device).train()
    size = int(options["input_size"])
    images = torch.rand(args.batch_size, 3, size, size, device=device)
    target = torch.rand(args.batch_size, 68, 2, device=device)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=2.5e-4, betas=(0.5, 0.999))

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            output = model(images)
        loss = compute_loss(as_float32(output), target)["total"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with FlopCounterMode(display=False) as counter:
        step()
    seconds = _median(step, device, args.steps, args.warmup)
    return {"params": sum(p.numel() for p in model.parameters()), "flops": counter.get_total_flops() / args.batch_size,
            "seconds": seconds, "images_per_s": args.batch_size / seconds}


def measure_loader(args: argparse.Namespace, input_size: int) -> dict[int, float]:
    """Augmented samples/s of ``LandmarkDataset`` through a DataLoader, per worker count (one pass each)."""
    from ccdn.data import AugmentConfig, LandmarkDataset, load_split
    from ccdn.data.prepare import prepare_dataset
    from ccdn.data.synth import synthesize

    rates: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        raw, prepared = Path(tmp) / "raw", Path(tmp) / "prepared"
        synthesize("300w", raw, seed=0, n_train=args.faces, n_test=6)
        prepare_dataset("300w", raw, prepared)
        dataset = LandmarkDataset(load_split(prepared, "train"), input_size, AugmentConfig(), seed=0)
        for workers in args.workers:
            loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=workers)
            start, count = time.perf_counter(), 0
            for _ in range(3):
                for batch in loader:  # includes worker start-up, as every (non-persistent) epoch does
                    count += batch["image"].shape[0]
            rates[workers] = count / (time.perf_counter() - start)
    return rates


def grid_cost(args: argparse.Namespace, rows: dict[str, dict], device: torch.device) -> None:
    """GPU-hours of every training run in the grid at the measured (or FLOP-estimated) throughput."""
    from ccdn.config import load_config
    from ccdn.data.schemes import DATASETS
    from ccdn.grid import load_grid

    grid = load_grid(args.grid)
    epochs = int(load_config()["optim"]["epochs"])
    runs = Counter((run.experiment.model, run.experiment.train) for run in grid.runs)
    reference = rows.get("ccdn") or next(iter(rows.values()))
    measured_gpu = device.type == "cuda"
    print(f"### Cost of {args.grid} ({len(grid.runs)} training runs, {epochs} epochs each)\n")
    print("Assumptions: training images per epoch = the standard train split; validation and evaluation "
          "time ignored (< 5 %); models not measured above are costed at ccdn's rate; "
          + ("GPU rates measured on this GPU." if measured_gpu else
             f"no GPU here, so GPU rates are FLOP-based: {args.assumed_gpu_tflops:g} sustained TFLOP/s "
             "(bf16, batch 6; a small-batch hourglass is partly launch-bound, so treat it as optimistic)."))
    print()
    table, total_gpu, total_here = [], 0.0, 0.0
    per_run: dict[str, float] = {}
    for run in grid.runs:  # GPU-hours of each run, for the per-table view below
        row = rows.get(run.experiment.model, reference)
        rate = row["images_per_s"] if measured_gpu else args.assumed_gpu_tflops * 1e12 / row["flops"]
        per_run[run.name] = DATASETS[run.experiment.train].expected_counts[("train", "full")] * epochs / rate / 3600
    for (model, dataset), count in sorted(runs.items()):
        info = DATASETS[dataset]
        images = info.expected_counts[("train", "full")] * epochs
        row = rows.get(model, reference)
        hours_here = count * images / row["images_per_s"] / 3600
        gpu_rate = row["images_per_s"] if measured_gpu else args.assumed_gpu_tflops * 1e12 / row["flops"]
        gpu_hours = count * images / gpu_rate / 3600
        total_gpu += gpu_hours
        total_here += hours_here
        table.append([model + ("" if model in rows else " (at ccdn's rate)"), dataset, str(count), f"{images:,}",
                      f"{hours_here:,.1f}", f"{gpu_rate:,.0f}", f"{gpu_hours:,.1f}"])
    table.append(["**total**", "", str(sum(runs.values())), "", f"**{total_here:,.0f}**", "", f"**{total_gpu:,.0f}**"])
    _table(["model", "train set", "runs", "images / run", f"hours on this machine ({device.type})", "GPU images/s",
            "GPU-hours"], table)
    print("\nPer paper table (a run feeding several tables counts in each):\n")
    _table(["table", "runs", "GPU-hours"],
           [[t, str(len(names)), f"{sum(per_run[n] for n in names):,.1f}"]
            for t in grid.tables for names in [sorted({r.name for r, _ in grid.table_evaluations(t)})]])


def _median(fn: Callable[[], None], device: torch.device, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _table(header: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


def _machine(device: torch.device) -> str:
    what = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads")
    return (f"device: {device} ({what}); {len(os.sched_getaffinity(0))} CPUs available; "
            f"torch {torch.__version__}; Python {platform.python_version()}")

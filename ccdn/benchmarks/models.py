"""``ccdn benchmark models``: size, FLOPs and step time of the models; iSQRT vs eigendecomposition.

Prints Markdown tables for docs/performance.md ("Models"):
1. baseline / fcdn / ccdn at the paper size and a small CPU size — parameters, forward FLOPs per
   image (``torch.utils.flop_counter.FlopCounterMode``), forward+backward time per image, and the
   CTM/COCS overhead ratio ccdn ÷ baseline (target ≤ 1.15 at the paper size);
2. the second-order squeeze's square root: iSQRT-COV (5 iterations) vs ``torch.linalg.eigh`` at D=256
   (target on a GPU: iSQRT ≥ 5× faster);
3. every model in ``list_models()`` at the small size (baselines register there too).
Models are timed round-robin (``--repeats`` rounds after ``--warmup`` runs) so that load from other
users of a shared machine hits all of them alike; medians and minima are printed, nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from ccdn.config import parse_key_values
from ccdn.losses import COORD_LOSSES, compute_loss
from ccdn.models import create_model, list_models
from ccdn.models.ctm import covariance, isqrt_cov

SIZES: dict[str, dict[str, int]] = {
    "paper": {"stacks": 4, "channels": 256, "input_size": 128, "num_excitations": 4},
    "small": {"stacks": 1, "channels": 32, "input_size": 64, "num_excitations": 4},
}
ABLATION_MODELS = ("baseline", "fcdn", "ccdn")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["small", "paper"])
    parser.add_argument("--batch-size", type=int, default=2, help="images per timed step (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before timing")
    parser.add_argument("--num-landmarks", type=int, default=68)
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, …")
    parser.add_argument("--isqrt-dim", type=int, default=256, help="D for iSQRT vs eigh")
    parser.add_argument("--isqrt-spatial", type=int, default=32, help="H = W of the map for iSQRT vs eigh")
    parser.add_argument("--isqrt-batch", type=int, default=6)
    parser.add_argument("--skip-registry", action="store_true", help="skip the every-registered-model table")
    parser.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE",
        help="extra model option for the baseline/fcdn/ccdn table, YAML value (e.g. tail_stages=3); repeatable",
    )




@dataclass
class ModelFigures:
    name: str
    size: str
    params: int
    gflops_forward: float  # per image
    gflops_step: float  # forward + backward, per image
    ms_per_image: float  # forward + backward, median
    ms_per_image_min: float  # forward + backward, fastest run (least disturbed by other load)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> float:
    """Median wall time of ``fn`` (device-synchronised)."""
    for _ in range(warmup):
        fn()
    return statistics.median(timed(fn, device) for _ in range(repeats))


def training_step(model: nn.Module, images: Tensor, target: Tensor) -> Callable[[], None]:
    """One forward + loss (Eq. 9 with the model's default coordinate loss) + backward.

    Heatmap models name ``"awing"``, which is not a coordinate loss: ``compute_loss`` applies AWing to
    their ``"heatmaps"`` whatever ``coord_loss`` is, so they get the L2 default for the (logged) coordinate term.
    """
    coord_loss = getattr(model, "default_loss", "l2")
    coord_loss = coord_loss if coord_loss in COORD_LOSSES else "l2"

    def step() -> None:
        model.zero_grad(set_to_none=True)
        compute_loss(model(images), target, coord_loss=coord_loss)["total"].backward()

    return step


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@dataclass
class Subject:
    """A model ready to time: its step function and static figures."""

    name: str
    params: int
    forward_flops: int
    step_flops: int
    step: Callable[[], None]


def prepare_subject(name: str, options: dict, args: argparse.Namespace, device: torch.device) -> Subject:
    torch.manual_seed(0)
    model = create_model(name, args.num_landmarks, **options).to(device).train()
    input_size = options.get("input_size", SIZES["small"]["input_size"])
    images = torch.rand(args.batch_size, 3, input_size, input_size, device=device)
    target = torch.rand(args.batch_size, args.num_landmarks, 2, device=device)
    return Subject(
        name=name,
        params=sum(p.numel() for p in model.parameters()),
        forward_flops=count_flops(lambda: model(images[:1])),
        step_flops=count_flops(training_step(model, images[:1], target[:1])),
        step=training_step(model, images, target),
    )


def measure_interleaved(
    subjects: list[Subject], size: str, args: argparse.Namespace, device: torch.device
) -> list[ModelFigures]:
    """Time the subjects round-robin, so load from other users of a shared machine hits all alike."""
    for subject in subjects:
        for _ in range(args.warmup):
            subject.step()
    times: dict[str, list[float]] = {s.name: [] for s in subjects}
    for _ in tqdm(range(args.repeats), desc=f"timing {size}", leave=False):
        for subject in subjects:
            times[subject.name].append(timed(subject.step, device))
    return [
        ModelFigures(
            name=s.name,
            size=size,
            params=s.params,
            gflops_forward=s.forward_flops / 1e9,
            gflops_step=s.step_flops / 1e9,
            ms_per_image=1e3 * statistics.median(times[s.name]) / args.batch_size,
            ms_per_image_min=1e3 * min(times[s.name]) / args.batch_size,
        )
        for s in subjects
    ]


def eigh_sqrt_cov(x: Tensor) -> Tensor:
    """Exact covariance square root by eigendecomposition (eigenvalues clipped at 0), float32."""
    sigma = covariance(x.float())
    values, vectors = torch.linalg.eigh(sigma)
    return (vectors * values.clamp_min(0).sqrt()[:, None, :]) @ vectors.transpose(1, 2)


def print_table(header: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


def machine_line(device: torch.device) -> str:
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    return f"device: {device} ({what}); torch {torch.__version__}; {load_line()}"


def load_line() -> str:
    """The 1/5/15-minute load average: on a shared machine it says how far to trust the timings."""
    try:
        return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg()) + f" on {os.cpu_count()} CPUs"
    except OSError:  # pragma: no cover - platforms without getloadavg
        return "load average unavailable"


def ablation_tables(args: argparse.Namespace, device: torch.device) -> None:
    figures: list[ModelFigures] = []
    extra = parse_key_values(args.option)
    for size in args.sizes:
        subjects = [prepare_subject(name, {**SIZES[size], **extra}, args, device) for name in ABLATION_MODELS]
        figures += measure_interleaved(subjects, size, args, device)
    print(
        f"### Models: size, FLOPs and forward+backward step time "
        f"(batch {args.batch_size}, {args.repeats} interleaved runs{', options ' + str(extra) if extra else ''})\n"
    )
    print_table(
        ["size", "model", "params (M)", "GFLOPs fwd / image", "GFLOPs fwd+bwd / image",
         "ms fwd+bwd / image (median)", "(min)"],
        [
            [f.size, f.name, f"{f.params / 1e6:.2f}", f"{f.gflops_forward:.2f}", f"{f.gflops_step:.2f}",
             f"{f.ms_per_image:.1f}", f"{f.ms_per_image_min:.1f}"]
            for f in figures
        ],
    )
    rows = []
    for size in args.sizes:
        by_name = {f.name: f for f in figures if f.size == size}
        base = by_name["baseline"]
        for name in ("fcdn", "ccdn"):
            f = by_name[name]
            rows.append([
                size, f"{name} ÷ baseline", f"{f.ms_per_image / base.ms_per_image:.3f}",
                f"{f.ms_per_image_min / base.ms_per_image_min:.3f}", f"{f.gflops_step / base.gflops_step:.3f}",
                f"{f.params / base.params:.3f}",
            ])
    print("### CTM/COCS overhead (target: ccdn ÷ baseline step time ≤ 1.15 at the paper size)\n")
    print_table(["size", "ratio", "step time (medians)", "step time (mins)", "step FLOPs", "params"], rows)


def isqrt_table(args: argparse.Namespace, device: torch.device) -> None:
    dim, spatial, batch = args.isqrt_dim, args.isqrt_spatial, args.isqrt_batch
    x = torch.rand(batch, dim, spatial, spatial, device=device)
    iterations = 5
    isqrt_s = median_seconds(lambda: isqrt_cov(x, iterations), device, args.repeats * 3, args.warmup + 1)
    eigh_s = median_seconds(lambda: eigh_sqrt_cov(x), device, args.repeats * 3, args.warmup + 1)
    exact = eigh_sqrt_cov(x.double()).double()
    error = (isqrt_cov(x.double(), iterations) - exact).norm() / exact.norm()
    print(f"### Covariance square root, B={batch}, D={dim}, M={spatial}×{spatial} (target on GPU: iSQRT ≥ 5× faster)\n")
    print_table(
        ["method", "ms / batch", "speed-up vs eigh", "rel. Frobenius error vs exact"],
        [
            [f"iSQRT-COV ({iterations} it.)", f"{1e3 * isqrt_s:.2f}", f"{eigh_s / isqrt_s:.2f}×", f"{float(error):.2e}"],
            ["eigh (torch.linalg.eigh)", f"{1e3 * eigh_s:.2f}", "1.00×", "0 (reference)"],
        ],
    )


def registry_table(args: argparse.Namespace, device: torch.device) -> None:
    rows = []
    names = [n for n in list_models() if not any(ch in n for ch in "*?[")]
    for name in tqdm(names, desc="registered models", leave=False):
        try:
            (f,) = measure_interleaved([prepare_subject(name, SIZES["small"], args, device)], "small", args, device)
            rows.append([name, f"{f.params / 1e6:.2f}", f"{f.gflops_forward:.3f}", f"{f.ms_per_image:.1f}"])
        except Exception as exc:  # noqa: BLE001 - a broken plugin model must not hide the others' figures
            rows.append([name, "n/a", "n/a", f"failed: {type(exc).__name__}: {str(exc)[:80]}"])
    print(f"### Every registered model at the small size (options {SIZES['small']})\n")
    print_table(["model", "params (M)", "GFLOPs fwd / image", "ms fwd+bwd / image (median)"], rows)


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    print(machine_line(device) + "\n")
    ablation_tables(args, device)
    isqrt_table(args, device)
    if not args.skip_registry:
        registry_table(args, device)
    print(f"finished; {load_line()}")
    return 0

"""``ccdn benchmark gpu``: everything the CUDA path needs checked, in one command (≈ 5 min on one GPU).

Why: the development machines have no GPU, so bf16 autocast, channels_last, NCCL and the GPU-hours
of the paper grid (docs/performance.md) were never measured. Sections, each recorded even when
another fails (a failed section is reported with its error and makes the exit status 1):
1. ``steps``: paper-size baseline / fcdn / ccdn training steps (Adam, Eq. 9; bf16 + channels_last on
   CUDA) at each ``--batch-sizes``: images/s, peak memory, FLOPs per image (FlopCounterMode) and MFU =
   achieved FLOP/s ÷ the GPU's dense bf16 peak (``--peak-tflops``, else looked up by device name);
2. ``isqrt``: the covariance square root, iSQRT-COV (5 iterations) vs ``torch.linalg.eigh``;
3. ``train``: a real ``ccdn train`` of a few hundred steps on synthetic 300W faces — does the loss go down;
4. ``ddp``: ``torchrun`` with one process and the device's backend (NCCL on CUDA), DDP + SyncBatchNorm;
5. ``packed``: 1, 2, 4 independent training processes on the same GPU — images/s per GPU.
Writes ``gpu_check.json`` and ``gpu_check.md`` under ``--out``. ``--device cpu --size small`` runs
the same code in seconds (the test suite does). Synthetic inputs: speed only, never accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

import ccdn
from ccdn.benchmarks.gpu_worker import SIZES, measure_training_steps

# Dense bf16 tensor-core peaks (TFLOP/s, vendor datasheets, no sparsity), matched in this order.
PEAK_BF16_TFLOPS = (
    ("GB200", 2500.0), ("B200", 2250.0), ("H200", 989.0), ("GH200", 989.0), ("H100 PCIe", 756.0),
    ("H100", 989.0), ("H800", 989.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0), ("L40", 181.0),
    ("A40", 150.0), ("L4", 121.0), ("A10", 125.0), ("RTX 4090", 165.0), ("RTX 3090", 71.0), ("V100", 125.0),
)
SECTIONS = ("steps", "isqrt", "train", "ddp", "packed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (cuda if available) | cuda | cpu")
    parser.add_argument("--size", choices=sorted(SIZES), default="paper", help="model size (default paper)")
    parser.add_argument("--models", nargs="+", default=["baseline", "fcdn", "ccdn"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[6, 48], help="6 = the recipe's batch")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model and batch size")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the GPU (for MFU)")
    parser.add_argument("--isqrt-dim", type=int, default=256)
    parser.add_argument("--isqrt-spatial", type=int, default=32)
    parser.add_argument("--isqrt-batch", type=int, default=6)
    parser.add_argument("--train-faces", type=int, default=600, help="synthetic 300W training faces")
    parser.add_argument("--train-epochs", type=int, default=3)
    parser.add_argument("--train-steps-per-epoch", type=int, default=100)
    parser.add_argument("--train-batch", type=int, default=6)
    parser.add_argument("--packed", type=int, nargs="+", default=[1, 2, 4], help="concurrent runs per GPU")
    parser.add_argument("--packed-batch", type=int, default=6)
    parser.add_argument("--packed-steps", type=int, default=30)
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/gpu"), help="where the JSON and table go")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device("cuda", 0) if name == "cuda" else torch.device(name)


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    return peak_for_gpu_name(torch.cuda.get_device_name(device))


def peak_for_gpu_name(name: str) -> float | None:
    """Dense bf16 peak (TFLOP/s) of a GPU from its CUDA device name; None when it is not in the table."""
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
                            "cpus": len(os.sched_getaffinity(0)), "load_average": list(os.getloadavg())}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    else:
        info["cpu"] = platform.processor() or platform.machine()
    return info


# ------------------------------------------------------------------------------------- sections
def section_steps(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    peak = peak_tflops(device, args.peak_tflops)
    rows = []
    for batch in args.batch_sizes:
        for name in args.models:
            try:
                row = measure_training_steps(name, args.size, batch, args.steps, args.warmup, device)
            except torch.cuda.OutOfMemoryError:  # a large batch on a small GPU: keep the other rows
                torch.cuda.empty_cache()
                rows.append({"model": name, "batch_size": batch, "error": "CUDA out of memory"})
                continue
            achieved = row["flops_per_image"] * row["images_per_s"]
            row["achieved_tflops"] = achieved / 1e12
            row["mfu"] = achieved / (peak * 1e12) if peak else None
            rows.append(row)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return {"peak_tflops": peak, "rows": rows}


def section_isqrt(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from ccdn.benchmarks.models import eigh_sqrt_cov, median_seconds
    from ccdn.models.ctm import isqrt_cov

    x = torch.rand(args.isqrt_batch, args.isqrt_dim, args.isqrt_spatial, args.isqrt_spatial, device=device)
    isqrt_s = median_seconds(lambda: isqrt_cov(x, 5), device, 9, 2)
    eigh_s = median_seconds(lambda: eigh_sqrt_cov(x), device, 9, 2)
    exact = eigh_sqrt_cov(x.double())
    error = float((isqrt_cov(x.double(), 5) - exact).norm() / exact.norm())
    return {"batch": args.isqrt_batch, "dim": args.isqrt_dim, "spatial": args.isqrt_spatial,
            "isqrt_ms": 1e3 * isqrt_s, "eigh_ms": 1e3 * eigh_s, "speedup": eigh_s / isqrt_s, "rel_error": error}


def cli(*arguments: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``python -m ccdn.cli ...`` (the command a user runs) and fail loudly with its output."""
    return run_process([sys.executable, "-m", "ccdn.cli", *arguments], timeout)


def run_process(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    package_root = str(Path(ccdn.__file__).resolve().parent.parent)  # the children run this very code
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:6])} … exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


def section_train(args: argparse.Namespace, device: torch.device, work: Path) -> dict[str, Any]:
    from ccdn.data.prepare import prepare_dataset
    from ccdn.data.synth import synthesize

    raw, prepared, run_dir = work / "raw", work / "prepared", work / "run"
    synthesize("300w", raw, seed=0, n_train=args.train_faces, n_test=24)
    prepare_dataset("300w", raw, prepared)
    options = json.dumps(SIZES[args.size])
    started = time.perf_counter()
    cli("train", "--run-dir", str(run_dir), "--no-progress", f"data.root={prepared}", "model.name=ccdn",
        f"model.options={options}", f"optim.epochs={args.train_epochs}", "optim.milestones=[]",
        f"optim.batch_size={args.train_batch}", f"train.max_steps_per_epoch={args.train_steps_per_epoch}",
        f"train.device={device.type}", "tracking.enabled=false",
        f"train.num_workers={'auto' if device.type == 'cuda' else 0}")
    seconds = time.perf_counter() - started
    history = json.loads((run_dir / "history.json").read_text())
    epochs = [r for r in history if "loss_total" in r]
    first, last = epochs[0], epochs[-1]
    steps = min(args.train_steps_per_epoch, args.train_faces // args.train_batch) * len(epochs)
    return {"model": "ccdn", "size": args.size, "steps": steps, "batch_size": args.train_batch, "seconds": seconds,
            "loss_total_first_epoch": first["loss_total"], "loss_total_last_epoch": last["loss_total"],
            "loss_went_down": last["loss_total"] < first["loss_total"],
            "val_nme_untrained": history[0]["val_nme"], "val_nme_last": last["val_nme"],
            "images_per_s_last_epoch": last["images_per_s"], "data": "synthetic 300W faces"}


def section_ddp(args: argparse.Namespace, device: torch.device, work: Path) -> dict[str, Any]:
    out = work / "ddp.json"
    run_process([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
                 "-m", "ccdn.benchmarks.gpu_worker", "ddp", "--device", device.type, "--size", args.size,
                 "--batch-size", str(args.packed_batch), "--steps", str(args.steps), "--warmup",
                 str(args.warmup), "--out", str(out)], timeout=900)
    return json.loads(out.read_text())


def section_packed(args: argparse.Namespace, device: torch.device, work: Path) -> dict[str, Any]:
    rows = []
    for count in args.packed:
        folder = work / f"packed{count}"
        folder.mkdir()
        go = folder / "go"
        procs = [subprocess.Popen(
            [sys.executable, "-m", "ccdn.benchmarks.gpu_worker", "throughput", "--device", str(device),
             "--size", args.size, "--batch-size", str(args.packed_batch), "--steps", str(args.packed_steps),
             "--warmup", str(args.warmup), "--out", str(folder / f"run{i}.json"), "--ready", str(folder / f"ready{i}"),
             "--go", str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(count)]
        try:
            _start_together(procs, [folder / f"ready{i}" for i in range(count)], go)
            for proc in procs:
                _, stderr = proc.communicate(timeout=900)
                if proc.returncode != 0:
                    raise RuntimeError(f"packed worker exited {proc.returncode}: {stderr[-3000:]}")
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
        runs = [json.loads((folder / f"run{i}.json").read_text()) for i in range(count)]
        rows.append({"concurrent_runs": count, "images_per_s_per_run": [r["images_per_s"] for r in runs],
                     "images_per_s_per_gpu": sum(r["images_per_s"] for r in runs),
                     "peak_memory_bytes_per_run": [r["peak_memory_bytes"] for r in runs]})
    return {"model": "ccdn", "size": args.size, "batch_size": args.packed_batch, "rows": rows}


def _start_together(procs: list[subprocess.Popen], ready: list[Path], go: Path, timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(path.exists() for path in ready):
        failed = [p for p in procs if p.poll() not in (None, 0)]
        if failed:
            raise RuntimeError(f"packed worker exited {failed[0].returncode}: {failed[0].stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError("packed workers did not warm up in time")
        time.sleep(0.05)
    go.write_text("go\n")


# ------------------------------------------------------------------------------------ reporting
def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"## GPU check ({m.get('gpu', m.get('cpu'))}, {m['device']}, torch {m['torch']}, "
             f"{m['cpus']} CPUs, load {m['load_average'][0]:.1f})", "",
             "Synthetic inputs: speed and loss behaviour only, not a reproduction.", ""]
    sections = report["sections"]
    if "steps" in sections and "rows" in sections["steps"]:
        peak = sections["steps"]["peak_tflops"]
        lines += [f"### Training steps ({report['size']} size; MFU against {peak or 'an unknown'} TFLOP/s dense bf16)",
                  "", "| model | batch | precision | images/s | peak memory (GiB) | GFLOP / image (fwd+bwd) | TFLOP/s | MFU |",
                  "|---|---:|---|---:|---:|---:|---:|---:|"]
        for r in sections["steps"]["rows"]:
            if "error" in r:
                lines.append(f"| {r['model']} | {r['batch_size']} | {r['error']} | | | | | |")
                continue
            memory = f"{r['peak_memory_bytes'] / 2**30:.2f}" if r["peak_memory_bytes"] else "n/a"
            mfu = f"{100 * r['mfu']:.1f} %" if r["mfu"] is not None else "n/a"
            lines.append(f"| {r['model']} | {r['batch_size']} | {r['precision']} | {r['images_per_s']:.1f} | {memory} "
                         f"| {r['flops_per_image'] / 1e9:.1f} | {r['achieved_tflops']:.2f} | {mfu} |")
        lines.append("")
    if "isqrt" in sections and "isqrt_ms" in sections["isqrt"]:
        s = sections["isqrt"]
        lines += [f"### Covariance square root (B={s['batch']}, D={s['dim']}, M={s['spatial']}²)", "",
                  "| method | ms / batch | speed-up | rel. error vs exact |", "|---|---:|---:|---:|",
                  f"| iSQRT-COV (5 it.) | {s['isqrt_ms']:.2f} | {s['speedup']:.1f}× | {s['rel_error']:.1e} |",
                  f"| eigh | {s['eigh_ms']:.2f} | 1.0× | 0 |", ""]
    if "train" in sections and "steps" in sections["train"]:
        t = sections["train"]
        lines += [f"### `ccdn train`: {t['steps']} steps, batch {t['batch_size']}, {t['data']}", "",
                  "| loss (first epoch) | loss (last epoch) | went down | val NME untrained → last (%) | images/s | seconds |",
                  "|---:|---:|---|---|---:|---:|",
                  f"| {t['loss_total_first_epoch']:.4f} | {t['loss_total_last_epoch']:.4f} | {t['loss_went_down']} | "
                  f"{t['val_nme_untrained']:.2f} → {t['val_nme_last']:.2f} | {t['images_per_s_last_epoch']:.1f} | "
                  f"{t['seconds']:.0f} |", ""]
    if "ddp" in sections and "backend" in sections["ddp"]:
        d = sections["ddp"]
        lines += ["### torchrun, one process, DDP + SyncBatchNorm", "",
                  f"backend {d['backend']}, world size {d['world_size']}, all-reduce ok: {d['all_reduce_ok']}, "
                  f"{d['images_per_s']:.1f} images/s, loss {d['loss_first']:.4f} → {d['loss_last']:.4f}", ""]
    if "packed" in sections and "rows" in sections["packed"]:
        p = sections["packed"]
        lines += [f"### Independent runs packed on one device (ccdn, {p['size']}, batch {p['batch_size']})", "",
                  "| concurrent runs | images/s per GPU | images/s per run |", "|---:|---:|---|"]
        for r in p["rows"]:
            per_run = ", ".join(f"{v:.1f}" for v in r["images_per_s_per_run"])
            lines.append(f"| {r['concurrent_runs']} | {r['images_per_s_per_gpu']:.1f} | {per_run} |")
        lines.append("")
    failed = {k: v["error"] for k, v in sections.items() if "error" in v}
    if failed:
        lines += ["### Failed sections", ""] + [f"- `{k}`: {v.splitlines()[-1]}" for k, v in failed.items()] + [""]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    report: dict[str, Any] = {"machine": machine(device), "size": args.size, "synthetic": True, "sections": {}}
    steps: dict[str, Callable[..., dict[str, Any]]] = {
        "steps": lambda work: section_steps(args, device), "isqrt": lambda work: section_isqrt(args, device),
        "train": lambda work: section_train(args, device, work), "ddp": lambda work: section_ddp(args, device, work),
        "packed": lambda work: section_packed(args, device, work),
    }
    with tempfile.TemporaryDirectory(prefix="ccdn-gpu-check-") as tmp:
        for name in args.sections:
            work = Path(tmp) / name
            work.mkdir()
            started = time.perf_counter()
            print(f"[gpu check] {name} …", file=sys.stderr, flush=True)
            try:
                report["sections"][name] = steps[name](work)
            except Exception:  # noqa: BLE001 - record it, run the other sections, exit 1 at the end
                report["sections"][name] = {"error": traceback.format_exc()}
                print(report["sections"][name]["error"], file=sys.stderr)
            report["sections"][name]["section_seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    _atomic_write(args.out / "gpu_check.json", json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    _atomic_write(args.out / "gpu_check.md", table + "\n")
    print(table)
    return 1 if any("error" in s for s in report["sections"].values()) else 0


def _atomic_write(path: Path, text: str) -> None:
    from ccdn.io import write_text

    write_text(path, text)

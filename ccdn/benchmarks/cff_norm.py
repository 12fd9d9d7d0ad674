"""``ccdn benchmark cff``: does L(Q^G) still constrain anything under each reading of Eq. 7's BatchNorm?

Why: Eq. 5's batch-mode Q is built from batch means of the pooled excitation features, and a
BatchNorm centres every channel over the batch, so a BN placed before the pooling can make L(Q^G)
small without the P fused maps carrying distinct semantics. For every ``cff_norm`` this prints
L(Qᵀ), L(Qᵀ⁻¹), L(Q^G) of a small CCDN in training mode (1) at initialisation, (2) with the P
excitation gates made almost identical (excitation 0's gate weights copied to every p, plus noise of
``--gate-noise`` × each tensor's std), where a real constraint must stay high, and (3) after
``--steps`` Adam steps of Eq. 9 on synthetic 300W faces. Synthetic data: the figures show the
behaviour of the regulariser, not landmark accuracy. Numbers go to docs/method.md (item 14).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from ccdn.losses import compute_loss
from ccdn.models import create_model
from ccdn.models.cff import CFF_NORMS

SIZES = {
    "small": {"stacks": 1, "channels": 32, "input_size": 64, "num_excitations": 4},
    "paper": {"stacks": 4, "channels": 256, "input_size": 128, "num_excitations": 4},
}
TERMS = ("T", "T-1", "G")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", choices=sorted(SIZES), default="small", help="model size (paper: slow on CPU)")
    parser.add_argument("--norms", nargs="+", choices=CFF_NORMS, default=list(CFF_NORMS))
    parser.add_argument("--steps", type=int, default=150, help="training steps per reading (0: init only)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--faces", type=int, default=64, help="synthetic 300W training faces")
    parser.add_argument("--gate-noise", type=float, default=0.1, help="relative noise on the copied gates")
    parser.add_argument("--cocs-mode", choices=("batch", "per_sample"), default="batch")
    parser.add_argument("--seed", type=int, default=0)


def make_gates_near_identical(model: nn.Module, noise: float, seed: int = 0) -> None:
    """Copy excitation 0's gate weights to every excitation p, plus ``noise`` × each tensor's std."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for ctm in model.ctms.values():
            for gates in (ctm.first_order_gates, ctm.second_order_gates):
                if gates is None:
                    continue
                reference = dict(gates[0].named_parameters())
                for gate in list(gates)[1:]:
                    for name, parameter in gate.named_parameters():
                        source = reference[name]
                        jitter = torch.randn(source.shape, generator=generator) * noise * source.std()
                        parameter.copy_(source + jitter)


def cocs_terms(model: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """L(Q) of every COCS term for one batch, training-mode BatchNorm (as the loss sees it), no update."""
    model.train()
    momenta = {m: m.momentum for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    for module in momenta:
        module.momentum = 0.0  # leave running statistics untouched
    with torch.no_grad():
        cocs = model(images)["cocs"]
    for module, momentum in momenta.items():
        module.momentum = momentum
    return {term: float(cocs[term]) for term in TERMS}


def synthetic_loader(args: argparse.Namespace, tmp: Path, input_size: int) -> DataLoader:
    from ccdn.data import AugmentConfig, LandmarkDataset, load_split
    from ccdn.data.prepare import prepare_dataset
    from ccdn.data.synth import synthesize

    synthesize("300w", tmp / "raw", seed=args.seed, n_train=args.faces, n_test=4)
    prepare_dataset("300w", tmp / "raw", tmp / "prepared")
    dataset = LandmarkDataset(load_split(tmp / "prepared", "train"), input_size, AugmentConfig(), seed=args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    return DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True, generator=generator)


def train_briefly(model: nn.Module, loader: DataLoader, steps: int) -> list[float]:
    """``steps`` Adam steps of Eq. 9 (the paper's γ and learning rate); returns the total loss per step."""
    optimizer = torch.optim.Adam(model.parameters(), lr=2.5e-4, betas=(0.5, 0.999))
    model.train()
    totals: list[float] = []
    while len(totals) < steps:
        for batch in loader:
            loss = compute_loss(model(batch["image"]), batch["landmarks"])["total"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            totals.append(float(loss.detach()))
            if len(totals) == steps:
                break
    return totals


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        size = SIZES[args.size]
        loader = synthetic_loader(args, Path(tmp), size["input_size"])
        probe = next(iter(loader))["image"]
        for norm in args.norms:
            options = {**size, "cff_norm": norm, "cocs_mode": args.cocs_mode}
            torch.manual_seed(args.seed)
            model = create_model("ccdn", 68, **options)
            initial = cocs_terms(model, probe)
            twin = create_model("ccdn", 68, **options)
            twin.load_state_dict(model.state_dict())
            make_gates_near_identical(twin, args.gate_noise, args.seed)
            similar = cocs_terms(twin, probe)
            totals = train_briefly(model, loader, args.steps) if args.steps else [float("nan")] * 10
            trained = cocs_terms(model, probe) if args.steps else {t: float("nan") for t in TERMS}
            rows.append((norm, initial, similar, trained, totals))
    print(f"### L(Q) per reading of Eq. 7's BatchNorm ({args.size} CCDN {SIZES[args.size]}, cocs_mode={args.cocs_mode}, "
          f"batch {args.batch_size}; synthetic 300W faces, seed {args.seed})\n")
    header = ["cff_norm", "init T / T−1 / G", f"near-identical gates (noise {args.gate_noise:g}) T / T−1 / G",
              f"after {args.steps} steps T / T−1 / G", "Eq. 9 total: first 10 → last 10 steps (mean)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for norm, initial, similar, trained, totals in rows:
        cells = [" / ".join(f"{values[t]:.3f}" for t in TERMS) for values in (initial, similar, trained)]
        first, last = sum(totals[:10]) / 10, sum(totals[-10:]) / 10
        print(f"| {norm} | " + " | ".join(cells) + f" | {first:.3f} → {last:.3f} |")
    print()
    return 0

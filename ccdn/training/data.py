"""What a training run reads and in which order: the datasets, the epoch-sharded sampler, and
loader generators that never draw from the global torch RNG.

One batch definition: ``optim.batch_size`` is the global batch; with N processes each takes every
N-th sample of the same global batch, so N processes follow the single-process run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import Sampler

from ccdn.config import (
    ConfigError,
)
from ccdn.training.determinism import epoch_seed


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
    check_dataset_identity(str(data["dataset"]), root, {data["train_split"]: train_split, data["val_split"]: val_split})
    limit = config["train"]["limit_train_images"]
    indices = None if limit is None else np.arange(min(int(limit), len(train_split)))
    train_set = LandmarkDataset(train_split, input_size, AugmentConfig(**config["augment"]), seed=int(config["seed"]),
                                indices=indices)
    val_set = LandmarkDataset(val_split, input_size, None, indices=val_split.subset(data["val_subset"]))
    return train_set, val_set, train_split, val_split


def _describe(meta: Mapping[str, Any]) -> str:
    flags = [f for f in ("synthetic", "custom") if meta.get(f)] + (["partial"] if meta.get("partial") else [])
    return f"{meta.get('dataset')!r} ({meta.get('scheme')}-point{', ' + ', '.join(flags) if flags else ''})"


def check_dataset_identity(dataset: str, root: Path, splits: Mapping[str, Any]) -> None:
    """The cache must hold what ``data.dataset`` names, before any training starts.

    Why: the dataset name labels the run (its name, MLflow experiment, metrics.json); a 300W cache
    trained as ``data.dataset=wflw`` would be filed as a WFLW result. Each split's meta must name
    ``dataset``; a benchmark's cache must have its scheme, and every split the same scheme, point
    count and synthetic/custom flags as the training split.
    """
    from ccdn.data.schemes import DATASETS

    (first_name, first), *others = splits.items()
    for split_name, split in splits.items():
        meta, where = split.meta, root / f"{split_name}.npz"
        if str(meta.get("dataset")) != dataset:
            raise ConfigError(f"data.dataset is {dataset!r} but {where} holds {_describe(meta)}; set "
                              f"data.dataset={meta.get('dataset')} or point data.root at a {dataset} cache")
        expected = DATASETS[dataset].scheme if dataset in DATASETS else str(meta.get("scheme"))
        points = int(split.landmarks.shape[1])
        if str(meta.get("scheme")) != expected or points != int(expected):
            raise ConfigError(f"{where} says it is {dataset} but holds {meta.get('scheme')}-point meta and {points}-"
                              f"point landmarks ({dataset} has {expected}); prepare it again with `ccdn prepare`")
    for split_name, split in others:
        mine = (split.meta.get("scheme"), bool(split.meta.get("synthetic")), bool(split.meta.get("custom")))
        theirs = (first.meta.get("scheme"), bool(first.meta.get("synthetic")), bool(first.meta.get("custom")))
        if mine != theirs:
            raise ConfigError(f"{root / f'{split_name}.npz'} holds {_describe(split.meta)} but "
                              f"{root / f'{first_name}.npz'} holds {_describe(first.meta)}; train and validate on "
                              "splits of one prepared set")


def validation_norm(split: Any) -> str:
    """The dataset's main NME normaliser (first of the paper's, from the dataset table; for a custom
    set, its scheme's first, as ``ccdn evaluate`` scores it)."""
    from ccdn.data.schemes import DATASETS, SCHEME_NORMS

    name = str(split.meta.get("dataset", ""))
    if name in DATASETS:
        return DATASETS[name].norms[0]
    return SCHEME_NORMS.get(str(split.meta.get("scheme", "")), ("inter_ocular",))[0]

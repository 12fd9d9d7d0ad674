"""Reading the prepared cache (Contract 2) and the torch dataset that feeds training and evaluation.

``load_split`` memory-maps the (large) image array straight out of the uncompressed ``.npz``, so
DataLoader workers share one copy through the page cache instead of each loading gigabytes.
``LandmarkDataset`` draws each item's augmentation from a generator seeded by
``(seed, epoch, index)``: an item is the same whichever worker makes it and whenever, which is what
lets an interrupted training run resume bit-exactly.
"""

from __future__ import annotations

import json
import struct
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ccdn.data.augment import IDENTITY, AugmentConfig, augment_sample, sample_params
from ccdn.data.crop import crop_to_original_map
from ccdn.data.errors import DataFormatError
from ccdn.data.schemes import get_scheme

__all__ = ["PreparedSplit", "load_split", "LandmarkDataset", "CACHE_KEYS"]

CACHE_KEYS = (
    "images", "landmarks", "to_original", "original_landmarks", "boxes", "face_size", "occluded",
    "attributes", "attribute_names", "subset_names", "subset_masks", "face_ids", "meta",
)  # fmt: skip


@dataclass
class PreparedSplit:
    """One split of a prepared dataset; one attribute per cache key (``meta`` parsed to a dict)."""

    images: np.ndarray
    landmarks: np.ndarray
    to_original: np.ndarray
    original_landmarks: np.ndarray
    boxes: np.ndarray
    face_size: np.ndarray
    occluded: np.ndarray
    attributes: np.ndarray
    attribute_names: np.ndarray
    subset_names: np.ndarray
    subset_masks: np.ndarray
    face_ids: np.ndarray
    meta: dict
    path: Path | None = field(default=None, compare=False)

    @property
    def scheme(self) -> str:
        return str(self.meta["scheme"])

    @property
    def synthetic(self) -> bool:
        return bool(self.meta.get("synthetic", False))

    @property
    def cache_margin(self) -> float:
        return float(self.meta["settings"]["cache_margin"])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, name: str) -> np.ndarray:
        """Indices of the faces in subset ``name`` (e.g. ``"common"``)."""
        names = [str(s) for s in self.subset_names]
        if name not in names:
            raise KeyError(f"subset {name!r} is not in {self.path or 'this split'}; available: {', '.join(names)}")
        return np.flatnonzero(self.subset_masks[names.index(name)])

    def __getstate__(self) -> dict:
        """Pickle a memory-mapped split by reference (spawned DataLoader workers re-map the file)."""
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        if isinstance(self.images, np.memmap) and self.path is not None:
            state["images"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
        if self.images is None:
            self.images = _memmap_member(self.path, "images")


def load_split(root: Path | str, split: str, *, mmap: bool = True) -> PreparedSplit:
    """Read ``root/<split>.npz``; ``images`` is memory-mapped unless ``mmap=False``."""
    path = Path(root) / f"{split}.npz"
    if not path.is_file():
        available = sorted(p.stem for p in Path(root).glob("*.npz")) if Path(root).is_dir() else []
        raise DataFormatError(
            f"{path} not found (available splits: {', '.join(available) or 'none'}); "
            f"run `ccdn prepare DATASET --out {root}` first"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in CACHE_KEYS if key not in archive.files]
            if missing:
                raise DataFormatError(
                    f"{path} lacks key(s) {', '.join(missing)}: it is not a cache of this version; "
                    "rebuild it with `ccdn prepare DATASET --force`"
                )
            arrays = {key: archive[key] for key in CACHE_KEYS if key != "images" or not mmap}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        if isinstance(exc, DataFormatError):
            raise
        raise DataFormatError(
            f"{path} is not a readable cache ({exc}); rebuild it with `ccdn prepare --force`"
        ) from exc
    if mmap:
        arrays["images"] = _memmap_member(path, "images")
    arrays["meta"] = json.loads(str(arrays["meta"]))
    return PreparedSplit(**arrays, path=path)


def _memmap_member(path: Path, key: str) -> np.ndarray:
    """Memory-map ``key.npy`` inside an uncompressed ``.npz`` (falls back to reading it)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{key}.npy")
    if info.compress_type != zipfile.ZIP_STORED:  # a compressed cache cannot be mapped: read it
        with np.load(path, allow_pickle=False) as npz:
            return npz[key]
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        local_header = handle.read(30)
        if local_header[:4] != b"PK\x03\x04":
            raise DataFormatError(f"{path}: corrupt zip entry {key}.npy; rebuild it with `ccdn prepare --force`")
        name_length, extra_length = struct.unpack("<HH", local_header[26:30])
        handle.seek(info.header_offset + 30 + name_length + extra_length)
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(handle)
        offset = handle.tell()
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran_order else "C")


class LandmarkDataset(Dataset):
    """Model-ready crops of a :class:`PreparedSplit`.

    Items are dicts: ``image`` float32 ``(3, S, S)`` in [0, 1]; ``landmarks`` float32 ``(L, 2)`` in
    normalised crop coordinates ([0, 1] spans the crop); ``crop_to_original`` float32 ``(2, 3)``
    mapping normalised crop coordinates to original pixels (a flipped item's map includes the flip;
    its landmarks are mirror-permuted); ``index`` the face's index in the split.

    Augmentation is drawn from ``np.random.default_rng([seed, epoch, index])``; call
    :meth:`set_epoch` before each epoch (with non-persistent DataLoader workers, which receive a
    fresh copy of the dataset every epoch).
    """

    def __init__(
        self,
        split: PreparedSplit,
        input_size: int,
        augment: AugmentConfig | None = None,
        *,
        seed: int = 0,
        indices=None,
    ) -> None:
        self.split = split
        self.input_size = int(input_size)
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self.indices = np.arange(len(split)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.mirror = np.asarray(get_scheme(split.scheme).mirror)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def generator(self, index: int) -> np.random.Generator:
        """The random stream of face ``index`` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def __getitem__(self, item: int) -> dict:
        index = int(self.indices[item])
        params = IDENTITY if self.augment is None else sample_params(self.augment, self.generator(index))
        crop, points, crop_to_cache = augment_sample(
            self.split.images[index],
            self.split.landmarks[index],
            params,
            input_size=self.input_size,
            cache_margin=self.split.cache_margin,
            mirror=self.mirror,
        )
        crop_to_original = crop_to_original_map(self.split.to_original[index], crop_to_cache)
        return {
            "image": torch.from_numpy(crop).permute(2, 0, 1).contiguous().float().div_(255.0),
            "landmarks": torch.from_numpy(points.astype(np.float32)),
            "crop_to_original": torch.from_numpy(crop_to_original.astype(np.float32)),
            "index": index,
        }


def crop_landmarks(split: PreparedSplit, indices: np.ndarray | None = None) -> np.ndarray:
    """The landmarks of ``split`` in *normalised crop coordinates* of the unaugmented model crop, ``(N, L, 2)``.

    The frame every model predicts in (``LandmarkDataset`` yields the same values without augmentation).
    """
    from ccdn.data.augment import IDENTITY, crop_matrix

    points = np.asarray(split.landmarks if indices is None else split.landmarks[indices], dtype=np.float64)
    cache_to_crop = np.linalg.inv(crop_matrix(IDENTITY, int(split.images.shape[1]), split.cache_margin))
    return points @ cache_to_crop[:2, :2].T + cache_to_crop[:2, 2]


def mean_shape(split: PreparedSplit, indices: np.ndarray | None = None) -> np.ndarray:
    """Mean training shape ``(L, 2)`` in normalised crop coordinates: the best constant predictor under L2.

    The reference every learned model must beat (the ``mean_shape`` model, the head's initial bias).
    """
    return crop_landmarks(split, indices).mean(axis=0)

"""Landmark schemes (68, 98, 29, 19 points) and dataset metadata, kept as data.

Flip permutations, normaliser indices and subsets are the facts most often gotten wrong when
reproducing landmark papers (docs: ``docs/research/datasets.md`` §3–4), so they live in one table that
metrics, augmentation and preparation all read, instead of being re-derived from point counts.

Conventions:
- indices are 0-based;
- ``mirror`` is the horizontal-flip permutation: after ``x -> W - x``, ``new[i] = old[mirror[i]]``;
- in point names, the tokens ``l`` / ``r`` mean the *image* left / right of an upright frontal face
  (the subject's right / left), so swapping these tokens in every name reproduces ``mirror``;
  ``left_eye`` / ``right_eye`` follow the same image-side convention.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "LandmarkScheme", "DatasetInfo", "SCHEMES", "DATASETS", "SCHEME_NORMS", "get_scheme", "get_dataset", "swap_side",
]


@dataclass(frozen=True)
class LandmarkScheme:
    """One landmark annotation scheme.

    Attributes:
        name: the scheme's name (its point count as a string).
        names: one name per point (see the module docstring for the ``l``/``r`` convention).
        mirror: horizontal-flip permutation, ``new[i] = old[mirror[i]]`` after ``x -> W - x``.
        inter_ocular: the two outer-eye-corner indices.
        inter_pupil: two index groups whose means are the pupil centres.
        left_eye / right_eye: all points of each eye (image left / right), pupils included.
        notes: where a definition is inferred rather than read from a source.
    """

    name: str
    names: tuple[str, ...]
    mirror: tuple[int, ...]
    inter_ocular: tuple[int, int]
    inter_pupil: tuple[tuple[int, ...], tuple[int, ...]]
    left_eye: tuple[int, ...]
    right_eye: tuple[int, ...]
    notes: str = ""

    @property
    def num_points(self) -> int:
        return len(self.names)

    def __post_init__(self) -> None:
        n = len(self.names)
        if sorted(self.mirror) != list(range(n)):
            raise ValueError(f"scheme {self.name}: mirror is not a permutation of 0..{n - 1}")
        used = [*self.inter_ocular, *self.inter_pupil[0], *self.inter_pupil[1], *self.left_eye, *self.right_eye]
        if any(not 0 <= i < n for i in used):
            raise ValueError(f"scheme {self.name}: an eye/normaliser index is outside 0..{n - 1}")


def swap_side(name: str) -> str:
    """The name of the mirrored point: swap the ``l`` and ``r`` tokens."""
    swap = {"l": "r", "r": "l"}
    return "_".join(swap.get(token, token) for token in name.split("_"))


def _chain(prefix: str, per_side: int, middle: bool) -> list[str]:
    """Names of a symmetric chain running from the image-left end to the image-right end."""
    left = [f"{prefix}_l_{k}" for k in range(per_side, 0, -1)]
    right = [f"{prefix}_r_{k}" for k in range(1, per_side + 1)]
    return left + ([f"{prefix}_mid"] if middle else []) + right


_MOUTH_20 = (
    "mouth_l_corner", "lip_outer_upper_l_2", "lip_outer_upper_l_1", "lip_outer_upper_mid",
    "lip_outer_upper_r_1", "lip_outer_upper_r_2", "mouth_r_corner", "lip_outer_lower_r_2",
    "lip_outer_lower_r_1", "lip_outer_lower_mid", "lip_outer_lower_l_1", "lip_outer_lower_l_2",
    "mouth_inner_l_corner", "lip_inner_upper_l_1", "lip_inner_upper_mid", "lip_inner_upper_r_1",
    "mouth_inner_r_corner", "lip_inner_lower_r_1", "lip_inner_lower_mid", "lip_inner_lower_l_1",
)  # fmt: skip  (outer contour clockwise from the image-left corner, then the inner contour)


def _names_68() -> tuple[str, ...]:
    eye_l = ["outer", "upper_outer", "upper_inner", "inner", "lower_inner", "lower_outer"]
    eye_r = ["inner", "upper_inner", "upper_outer", "outer", "lower_outer", "lower_inner"]
    names = (
        _chain("jaw", 8, True)  # 0-16
        + _chain("brow", 5, False)  # 17-26
        + [f"nose_bridge_{k}" for k in range(4)]  # 27-30
        + _chain("nostril", 2, True)  # 31-35
        + [f"eye_l_{part}" for part in eye_l]  # 36-41
        + [f"eye_r_{part}" for part in eye_r]  # 42-47
        + list(_MOUTH_20)  # 48-67
    )
    return tuple(names)


def _names_98() -> tuple[str, ...]:
    brow_l = ["outer", "upper_3", "upper_2", "upper_1", "inner", "lower_1", "lower_2", "lower_3", "lower_4"]
    brow_r = ["inner", "upper_1", "upper_2", "upper_3", "outer", "lower_4", "lower_3", "lower_2", "lower_1"]
    eye_l = ["outer", "upper_outer", "upper_mid", "upper_inner", "inner", "lower_inner", "lower_mid", "lower_outer"]
    eye_r = ["inner", "upper_inner", "upper_mid", "upper_outer", "outer", "lower_outer", "lower_mid", "lower_inner"]
    names = (
        _chain("jaw", 16, True)  # 0-32
        + [f"brow_l_{p}" for p in brow_l]  # 33-41
        + [f"brow_r_{p}" for p in brow_r]  # 42-50
        + [f"nose_bridge_{k}" for k in range(4)]  # 51-54
        + _chain("nostril", 2, True)  # 55-59
        + [f"eye_l_{p}" for p in eye_l]  # 60-67
        + [f"eye_r_{p}" for p in eye_r]  # 68-75
        + list(_MOUTH_20)  # 76-95
        + ["pupil_l", "pupil_r"]  # 96-97
    )
    return tuple(names)


_NAMES_29 = (
    "brow_l_outer", "brow_r_outer", "brow_l_inner", "brow_r_inner",
    "brow_l_upper", "brow_l_lower", "brow_r_upper", "brow_r_lower",
    "eye_l_outer", "eye_r_outer", "eye_l_inner", "eye_r_inner",
    "eye_l_upper", "eye_l_lower", "eye_r_upper", "eye_r_lower",
    "pupil_l", "pupil_r", "nose_l", "nose_r", "nose_tip", "nose_bottom",
    "mouth_l_corner", "mouth_r_corner",
    "lip_upper_top", "lip_upper_bottom", "lip_lower_top", "lip_lower_bottom", "chin",
)  # fmt: skip

_NAMES_19 = (
    "brow_l_outer", "brow_l_mid", "brow_l_inner", "brow_r_inner", "brow_r_mid", "brow_r_outer",
    "eye_l_outer", "eye_l_centre", "eye_l_inner", "eye_r_inner", "eye_r_centre", "eye_r_outer",
    "nose_l", "nose_tip", "nose_r", "mouth_l_corner", "mouth_mid", "mouth_r_corner", "chin",
)  # fmt: skip

# Flip permutations: docs/research/datasets.md §4 (HRNet MATCHED_PARTS, PIPNet points_flip, mmpose swaps agree).
_MIRROR_68 = (
    16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0,
    26, 25, 24, 23, 22, 21, 20, 19, 18, 17,
    27, 28, 29, 30,
    35, 34, 33, 32, 31,
    45, 44, 43, 42, 47, 46,
    39, 38, 37, 36, 41, 40,
    54, 53, 52, 51, 50, 49, 48,
    59, 58, 57, 56, 55,
    64, 63, 62, 61, 60,
    67, 66, 65,
)  # fmt: skip
_MIRROR_98 = (
    *range(32, -1, -1),
    46, 45, 44, 43, 42, 50, 49, 48, 47,
    37, 36, 35, 34, 33, 41, 40, 39, 38,
    51, 52, 53, 54,
    59, 58, 57, 56, 55,
    72, 71, 70, 69, 68, 75, 74, 73,
    64, 63, 62, 61, 60, 67, 66, 65,
    82, 81, 80, 79, 78, 77, 76,
    87, 86, 85, 84, 83,
    92, 91, 90, 89, 88,
    95, 94, 93,
    97, 96,
)  # fmt: skip
_MIRROR_29 = (1, 0, 3, 2, 6, 7, 4, 5, 9, 8, 11, 10, 14, 15, 12, 13, 17, 16, 19, 18, 20, 21, 23, 22, 24, 25, 26, 27, 28)
_MIRROR_19 = (5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 14, 13, 12, 17, 16, 15, 18)

SCHEMES: dict[str, LandmarkScheme] = {
    "68": LandmarkScheme(
        name="68",
        names=_names_68(),
        mirror=_MIRROR_68,
        inter_ocular=(36, 45),
        inter_pupil=(tuple(range(36, 42)), tuple(range(42, 48))),
        left_eye=tuple(range(36, 42)),
        right_eye=tuple(range(42, 48)),
        notes="iBUG 300-W order; inter-pupil = distance between the means of the six eye points (Ghiasi, LAB#6).",
    ),
    "98": LandmarkScheme(
        name="98",
        names=_names_98(),
        mirror=_MIRROR_98,
        inter_ocular=(60, 72),
        inter_pupil=((96,), (97,)),
        left_eye=(*range(60, 68), 96),
        right_eye=(*range(68, 76), 97),
        notes="WFLW order; inter-pupil uses the annotated pupils 96 and 97.",
    ),
    "29": LandmarkScheme(
        name="29",
        names=_NAMES_29,
        mirror=_MIRROR_29,
        inter_ocular=(8, 9),
        inter_pupil=((16,), (17,)),
        left_eye=(8, 10, 12, 13, 16),
        right_eye=(9, 11, 14, 15, 17),
        notes="COFW (RCPR) order; point names and image sides are inferred from the flip pairs.",
    ),
    "19": LandmarkScheme(
        name="19",
        names=_NAMES_19,
        mirror=_MIRROR_19,
        inter_ocular=(6, 11),
        inter_pupil=((7,), (10,)),
        left_eye=(6, 7, 8),
        right_eye=(9, 10, 11),
        notes="AFLW-19 (CCL) order; inter-ocular 6/11 and eye centres 7/10 are inferred from the flip pairs.",
    ),
}


def get_scheme(name: str | int | LandmarkScheme) -> LandmarkScheme:
    """The scheme called ``name`` ("68", "98", "29" or "19"; an int point count works too)."""
    if isinstance(name, LandmarkScheme):
        return name
    key = str(name)
    if key not in SCHEMES:
        raise ValueError(f"unknown landmark scheme {name!r}; known schemes: {', '.join(SCHEMES)}")
    return SCHEMES[key]


@dataclass(frozen=True)
class DatasetInfo:
    """What the paper and the standard protocol say about one benchmark.

    Attributes:
        scheme: the landmark scheme of its annotations.
        norms: the NME normalisers the paper reports for it (first = the main one).
        failure_thresholds: thresholds at which the paper reports a failure rate.
        subsets: evaluation subsets per split (``full`` first).
        expected_counts: ``(split, subset) -> faces`` of the real data; a mismatch is an error.
        reported_counts: counts that are quoted but not enforced (warned about instead), with why.
    """

    name: str
    scheme: str
    norms: tuple[str, ...]
    failure_thresholds: tuple[float, ...]
    subsets: dict[str, tuple[str, ...]]
    expected_counts: dict[tuple[str, str], int]
    reported_counts: dict[tuple[str, str], int] = field(default_factory=dict)
    notes: str = ""

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.subsets)


_WFLW_SUBSET_COUNTS = {
    "pose": 326, "expression": 314, "illumination": 698, "makeup": 206, "occlusion": 736, "blur": 773,
}  # fmt: skip

DATASETS: dict[str, DatasetInfo] = {
    "300w": DatasetInfo(
        name="300w",
        scheme="68",
        norms=("inter_pupil", "inter_ocular"),
        failure_thresholds=(),
        subsets={"train": ("full",), "test": ("full", "common", "challenging")},
        expected_counts={
            ("train", "full"): 3148,
            ("test", "full"): 689,
            ("test", "common"): 554,
            ("test", "challenging"): 135,
        },
        notes="Table 2 reports both inter-pupil and inter-ocular NME.",
    ),
    "cofw68": DatasetInfo(
        name="cofw68",
        scheme="68",
        norms=("inter_pupil",),
        failure_thresholds=(0.1,),
        subsets={"test": ("full",)},
        expected_counts={("test", "full"): 507},
        notes="Test only: the standard protocol trains on 300W (68-point labels exist only for the 507 test faces).",
    ),
    "aflw": DatasetInfo(
        name="aflw",
        scheme="19",
        norms=("face_size",),
        failure_thresholds=(),
        subsets={"train": ("full",), "test": ("full", "frontal")},
        expected_counts={("train", "full"): 20000, ("test", "full"): 4386},
        reported_counts={("test", "frontal"): 1165},
        notes="AFLW-frontal: the paper says 1165 faces; other sources count 1314 (CFSS#11), so it is not enforced.",
    ),
    "wflw": DatasetInfo(
        name="wflw",
        scheme="98",
        norms=("inter_ocular",),
        failure_thresholds=(),
        subsets={"train": ("full",), "test": ("full", *_WFLW_SUBSET_COUNTS)},
        expected_counts={
            ("train", "full"): 7500,
            ("test", "full"): 2500,
            **{("test", name): n for name, n in _WFLW_SUBSET_COUNTS.items()},
        },
    ),
}


def get_dataset(name: str) -> DatasetInfo:
    """Metadata of benchmark ``name`` ("300w", "cofw68", "aflw", "wflw")."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return DATASETS[name]


# The normalisers of the benchmark each scheme comes from (300W, WFLW, COFW-29, AFLW): what a set of
# one's own faces (``ccdn prepare custom``) is scored with.
SCHEME_NORMS: dict[str, tuple[str, ...]] = {
    "68": ("inter_pupil", "inter_ocular"),
    "98": ("inter_ocular",),
    "29": ("inter_pupil",),
    "19": ("face_size",),
}

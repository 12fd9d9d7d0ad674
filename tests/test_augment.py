"""Augmentation moves landmarks with the image content (checked with coloured dots), flips permute
points with the mirror, flipping twice is the identity, and dataset items are deterministic given
(seed, epoch, index)."""

import itertools

import numpy as np
import pytest
import torch

from ccdn.data import AugmentConfig, LandmarkDataset, PreparedSplit
from ccdn.data.augment import (
    IDENTITY,
    CropParams,
    apply_affine,
    augment_sample,
    crop_matrix,
    flip_sample,
    sample_params,
)
from ccdn.data.schemes import get_scheme

CACHE, MARGIN, SIZE = 192, 1.5, 128
MIRROR = np.asarray(get_scheme("68").mirror)
PALETTE = np.array([c for c in itertools.product((0, 64, 128, 192, 255), repeat=3) if c != (128, 128, 128)][:68])
STRONG = AugmentConfig(rotation_sigma=15.0, scale_sigma=0.1, translation=0.1, flip=True, flip_probability=0.5)


def dotted_split(num_faces: int = 2) -> PreparedSplit:
    """Cache images with 68 landmarks on a grid, each drawn as a disc of its own colour."""
    grid = np.array([(x, y) for y in range(8) for x in range(9)][:68], dtype=np.float64)
    rng = np.random.default_rng(0)
    images, landmarks = [], []
    ys, xs = np.mgrid[0:CACHE, 0:CACHE]
    for _ in range(num_faces):
        points = 40.0 + grid * 14.0 + rng.uniform(-1, 1, size=grid.shape)
        image = np.full((CACHE, CACHE, 3), 128, np.uint8)
        for colour, (x, y) in zip(PALETTE, points):
            image[(xs - x) ** 2 + (ys - y) ** 2 <= 4.5**2] = colour
        images.append(image)
        landmarks.append(points)
    landmarks = np.array(landmarks, dtype=np.float32)
    to_original = np.tile(np.array([[2.0, 0.0, 10.0], [0.0, 2.0, 20.0]], np.float32), (num_faces, 1, 1))
    return PreparedSplit(
        images=np.array(images),
        landmarks=landmarks,
        to_original=to_original,
        original_landmarks=landmarks * 2 + np.array([10.0, 20.0], np.float32),
        boxes=np.zeros((num_faces, 4), np.float32),
        face_size=np.ones(num_faces, np.float32),
        occluded=np.zeros((num_faces, 68), bool),
        attributes=np.zeros((num_faces, 0), np.uint8),
        attribute_names=np.array([], dtype=str),
        subset_names=np.array(["full"]),
        subset_masks=np.ones((1, num_faces), bool),
        face_ids=np.array([f"f{i}" for i in range(num_faces)]),
        meta={"scheme": "68", "synthetic": True, "settings": {"cache_size": CACHE, "cache_margin": MARGIN}},
    )


def colours_under(image: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Colours (uint8 HWC image) under normalised points well inside the crop, and their indices."""
    size = image.shape[0]
    inside = np.flatnonzero(((points > 0.03) & (points < 0.97)).all(axis=1))
    pixels = np.floor(points[inside] * size).astype(int)
    return image[pixels[:, 1], pixels[:, 0]].astype(int), inside


def assert_on_dots(image: np.ndarray, points: np.ndarray, flipped: bool) -> int:
    colours, inside = colours_under(image, points)
    expected = PALETTE[MIRROR[inside] if flipped else inside]
    np.testing.assert_array_less(np.abs(colours - expected).max(axis=1), 20)
    return len(inside)


def test_augmented_landmarks_stay_on_their_dots():
    split = dotted_split(1)
    flips = checked = 0
    for seed in range(30):
        params = sample_params(STRONG, np.random.default_rng(seed))
        crop, points, _ = augment_sample(
            split.images[0], split.landmarks[0], params, input_size=SIZE, cache_margin=MARGIN, mirror=MIRROR
        )
        assert crop.shape == (SIZE, SIZE, 3) and points.shape == (68, 2)
        checked += assert_on_dots(crop, points, params.flip)
        flips += params.flip
    assert 5 <= flips <= 25 and checked > 30 * 50


def test_dataset_items_follow_the_content_and_map_back_to_original_pixels():
    split = dotted_split(2)
    dataset = LandmarkDataset(split, SIZE, STRONG, seed=3)
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            item = dataset[index]
            assert item["image"].dtype == torch.float32 and item["image"].shape == (3, SIZE, SIZE)
            assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
            assert item["index"] == index and item["crop_to_original"].shape == (2, 3)
            flipped = sample_params(STRONG, dataset.generator(index)).flip
            image = np.round(item["image"].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
            assert_on_dots(image, item["landmarks"].numpy(), flipped)
            matrix = item["crop_to_original"].double().numpy()
            mapped = item["landmarks"].double().numpy() @ matrix[:, :2].T + matrix[:, 2]
            original = split.original_landmarks[index][MIRROR] if flipped else split.original_landmarks[index]
            np.testing.assert_allclose(mapped, original, atol=1e-3)


def test_items_are_deterministic_given_seed_epoch_and_index():
    split = dotted_split(3)
    first, second = LandmarkDataset(split, 64, STRONG, seed=7), LandmarkDataset(split, 64, STRONG, seed=7)
    late = second[2]  # computing other items first must not change an item
    for key in ("image", "landmarks", "crop_to_original"):
        assert torch.equal(first[2][key], late[key])
    first.set_epoch(1)
    assert not torch.equal(first[2]["image"], late["image"])
    first.set_epoch(0)
    assert torch.equal(first[2]["image"], late["image"])
    assert not torch.equal(LandmarkDataset(split, 64, STRONG, seed=8)[2]["image"], late["image"])


def test_evaluation_crop_is_the_central_square_of_the_cache():
    split = dotted_split(1)
    item = LandmarkDataset(split, SIZE, augment=None)[0]
    image = np.round(item["image"].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    lo = (CACHE - SIZE) // 2  # 128-pixel model crop, same scale: an exact copy of cache[32:160, 32:160]
    np.testing.assert_array_equal(image, split.images[0][lo : lo + SIZE, lo : lo + SIZE])
    expected = (split.landmarks[0] - lo + 0.5) / SIZE  # pixel centres -> normalised crop coordinates
    np.testing.assert_allclose(item["landmarks"].numpy(), expected, atol=1e-6)


def test_flip_twice_is_identity_and_matches_the_warped_flip():
    split = dotted_split(1)
    kwargs = dict(input_size=SIZE, cache_margin=MARGIN, mirror=MIRROR)
    plain, points, _ = augment_sample(split.images[0], split.landmarks[0], IDENTITY, **kwargs)
    warped, warped_points, _ = augment_sample(split.images[0], split.landmarks[0], CropParams(flip=True), **kwargs)
    flipped, flipped_points = flip_sample(plain, points, MIRROR)
    np.testing.assert_array_equal(warped, flipped)
    np.testing.assert_allclose(warped_points, flipped_points, atol=1e-9)
    back, back_points = flip_sample(flipped, flipped_points, MIRROR)
    np.testing.assert_array_equal(back, plain)
    np.testing.assert_array_equal(back_points, points)
    assert_on_dots(warped, warped_points, flipped=True)


def test_sampling_is_reproducible_and_truncated():
    config = AugmentConfig(rotation_sigma=10.0, scale_sigma=0.05, translation=0.05, truncate=2.0)
    draws = [sample_params(config, np.random.default_rng(seed)) for seed in range(300)]
    assert draws[5] == sample_params(config, np.random.default_rng(5))
    angles = np.array([d.angle for d in draws])
    scales = np.array([d.scale for d in draws])
    shifts = np.array([d.shift for d in draws])
    assert np.abs(angles).max() <= 20.0 + 1e-9 and np.abs(scales - 1).max() <= 0.1 + 1e-9
    assert 6.0 < angles.std() < 12.0 and np.abs(shifts).max() <= 0.05
    no_flip = AugmentConfig(flip=False)
    assert not any(sample_params(no_flip, np.random.default_rng(s)).flip for s in range(50))


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="rotation_sigma must be >= 0"):
        AugmentConfig(rotation_sigma=-1.0)
    with pytest.raises(ValueError, match="flip_probability"):
        AugmentConfig(flip_probability=1.5)
    with pytest.raises(ValueError, match="box side stays positive"):
        AugmentConfig(scale_sigma=0.6, truncate=2.0)
    with pytest.raises(ValueError, match="mirror permutation"):
        image, points = np.zeros((8, 8, 3), np.uint8), np.zeros((68, 2))
        augment_sample(image, points, CropParams(flip=True), input_size=8, cache_margin=1.0)


def test_crop_matrix_is_the_drawn_similarity():
    params = CropParams(angle=30.0, scale=1.2, shift=(0.1, -0.05))
    matrix = crop_matrix(params, CACHE, MARGIN)
    side = CACHE / MARGIN * 1.2
    theta = np.radians(30.0)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    np.testing.assert_allclose(matrix[:2, :2], side * rotation)
    centre = apply_affine(matrix, np.array([0.5, 0.5]))  # crop centre, in cache pixel coordinates
    np.testing.assert_allclose(centre, [CACHE / 2 + 0.1 * 128 - 0.5, CACHE / 2 - 0.05 * 128 - 0.5])

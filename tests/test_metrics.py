"""Metrics equal hand-computed values on tiny arrays, and bad input fails with a clear message."""

import numpy as np
import pytest

from ccdn.metrics import auc, ced, failure_rate, nme, normalizing_distance


def face68() -> np.ndarray:
    """One 68-point face: outer eye corners 10 px apart, eye means 6 px apart."""
    gt = np.zeros((1, 68, 2))
    gt[0, :, 0] = np.arange(68)  # distinct points
    gt[0, 36] = [0.0, 0.0]
    gt[0, 45] = [10.0, 0.0]
    gt[0, 37:42] = [3.0, 0.0]  # left eye mean: (15 / 6, 0) = (2.5, 0)
    gt[0, 42:45] = [8.5, 0.0]
    gt[0, 46:48] = [8.5, 0.0]  # right eye mean: (8.5 * 5 + 10) / 6 = 8.75
    return gt


def test_nme_inter_ocular_and_inter_pupil_by_hand():
    gt = face68()
    pred = gt.copy()
    pred[0, 0] += [3.0, 4.0]  # one point off by 5 px, another by 2 px
    pred[0, 1] += [0.0, -2.0]
    mean_error = 7.0 / 68
    np.testing.assert_allclose(nme(pred, gt, "inter_ocular", scheme="68"), [mean_error / 10.0])
    np.testing.assert_allclose(nme(pred, gt, "inter_pupil", scheme="68"), [mean_error / 6.25])
    np.testing.assert_allclose(nme(pred, gt, "inter_pupil"), [mean_error / 6.25])  # scheme from L


def test_nme_is_per_image():
    gt = np.concatenate([face68(), face68() * 2.0])  # the second face is twice as large
    pred = gt + [3.0, 4.0]  # every point 5 px off
    np.testing.assert_allclose(nme(pred, gt, "inter_ocular"), [0.5, 0.25])


def test_nme_98_uses_the_annotated_pupils():
    gt = np.zeros((1, 98, 2))
    gt[0, 60], gt[0, 72] = [0, 0], [0, 12]
    gt[0, 96], gt[0, 97] = [0, 0], [8, 0]
    pred = gt + [0.0, 2.0]
    np.testing.assert_allclose(nme(pred, gt, "inter_ocular", scheme="98"), [2 / 12])
    np.testing.assert_allclose(nme(pred, gt, "inter_pupil", scheme="98"), [2 / 8])


def test_nme_box_normalisers_by_hand():
    gt = np.zeros((2, 19, 2))
    pred = gt.copy()
    pred[:, 0] = [19.0, 0.0]  # mean error 1 px per image
    boxes = np.array([[0, 0, 40, 10], [5, 5, 35, 45]], dtype=float)  # 40x10 and 30x40
    np.testing.assert_allclose(nme(pred, gt, "face_size", boxes=boxes), [1 / 20, 1 / np.sqrt(1200)])
    np.testing.assert_allclose(nme(pred, gt, "diagonal", boxes=boxes), [1 / np.sqrt(1700), 1 / 50])
    np.testing.assert_allclose(normalizing_distance(gt, "diagonal", boxes=boxes), [np.sqrt(1700), 50])


def test_nme_rejects_bad_input():
    gt = face68()
    with pytest.raises(ValueError, match="unknown NME normaliser 'ocular'"):
        nme(gt, gt, "ocular")
    with pytest.raises(ValueError, match=r"shape \(N, L, 2\)"):
        nme(gt[0], gt[0], "inter_ocular")
    with pytest.raises(ValueError, match="must match"):
        nme(gt[:, :67], gt, "inter_ocular")
    with pytest.raises(ValueError, match="needs boxes"):
        nme(gt, gt, "face_size")
    with pytest.raises(ValueError, match=r"boxes must have shape \(1, 4\)"):
        nme(gt, gt, "diagonal", boxes=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="has 98 points"):
        nme(gt, gt, "inter_ocular", scheme="98")
    with pytest.raises(ValueError, match="zero or not finite for image"):
        nme(np.zeros((1, 68, 2)), np.zeros((1, 68, 2)), "inter_ocular")


def test_failure_rate_is_strictly_above_the_threshold():
    errors = [0.05, 0.1, 0.15, 0.2]
    assert failure_rate(errors) == 0.5
    assert failure_rate(errors, threshold=0.08) == 0.75
    assert failure_rate(errors, threshold=0.2) == 0.0


def test_auc_by_hand():
    # CED: 0 below 0.02, 1/2 up to 0.08, 1 after -> area 0.5 * 0.06 + 1 * 0.02 = 0.05 -> / 0.1
    assert auc([0.02, 0.08]) == pytest.approx(0.5)
    assert auc([0.0, 0.05, 0.2]) == pytest.approx(0.5)
    assert auc([0.3, 0.5]) == 0.0
    assert auc([0.0, 0.0]) == 1.0
    assert auc([0.02, 0.08], threshold=0.05) == pytest.approx(0.5 * 0.03 / 0.05)
    assert auc([0.02, 0.08], method="simpson") == pytest.approx(0.5, abs=1e-3)
    errors = np.random.default_rng(0).gamma(2.0, 0.02, size=500)
    assert auc(errors, method="simpson") == pytest.approx(auc(errors), abs=1e-3)


def test_ced_by_hand():
    thresholds, fractions = ced([0.01, 0.03, 0.03, 0.2], threshold=0.04, steps=4)
    np.testing.assert_allclose(thresholds, [0.0, 0.01, 0.02, 0.03, 0.04])
    np.testing.assert_allclose(fractions, [0.0, 0.25, 0.25, 0.75, 0.75])
    thresholds, fractions = ced([0.05])
    assert len(thresholds) == 1001 and thresholds[-1] == pytest.approx(0.1)
    assert fractions[499] == 0.0 and fractions[500] == 1.0


def test_error_summaries_reject_bad_input():
    with pytest.raises(ValueError, match="non-empty 1-D"):
        failure_rate([])
    with pytest.raises(ValueError, match="NaN"):
        auc([0.1, np.nan])
    with pytest.raises(ValueError, match="threshold must be positive"):
        ced([0.1], threshold=0.0)
    with pytest.raises(ValueError, match="unknown AUC method"):
        auc([0.1], method="trapz")

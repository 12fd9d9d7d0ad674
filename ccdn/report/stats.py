"""Uncertainty of a table cell and paired tests between two methods on the same test faces.

Two 95 % intervals per cell, because they answer different questions:

- ``t_interval``: Student-t interval of the mean over seeds (training randomness). With one seed it
  does not exist and is returned as ``None`` (shown as unavailable, never as a zero-width interval).
- ``bootstrap_interval``: bootstrap (BCa) over test faces of the per-face value averaged over seeds
  (test-set sampling). It exists with one seed but ignores seed-to-seed variation.

Paired comparisons use the per-face differences of two methods evaluated on the same faces: mean
difference, a paired bootstrap interval, and the Wilcoxon signed-rank p-value; ``holm`` adjusts a
family of p-values (Holm 1979, step-down, controls the family-wise error rate). Everything is
deterministic: the bootstrap draws from a fixed seed, so reports are byte-identical on reruns.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Interval:
    """A two-sided confidence interval ``[low, high]``."""

    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0.0 or self.high < 0.0


@dataclass(frozen=True)
class Paired:
    """Method A minus method B on the same faces: mean difference, its interval, the test, n faces."""

    delta: float
    interval: Interval
    p_value: float
    n: int


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval | None:
    """Student-t interval of the mean of ``values`` (one per seed); ``None`` for fewer than two values."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return None
    mean = float(values.mean())
    scale = float(stats.sem(values))
    if scale == 0.0:  # identical seeds: the interval really is a point
        return Interval(mean, mean)
    low, high = stats.t.interval(confidence, df=values.size - 1, loc=mean, scale=scale)
    return Interval(float(low), float(high))


def bootstrap_interval(samples: np.ndarray, confidence: float = CONFIDENCE,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Interval | None:
    """BCa bootstrap interval of the mean of ``samples`` (one value per test face); ``None`` if empty.

    Constant samples give a zero-width interval (every resample has the same mean); where BCa is
    undefined (e.g. a single differing face) the percentile interval is used.
    """
    samples = np.asarray(samples, dtype=np.float64).ravel()
    if samples.size == 0:
        return None
    if np.ptp(samples) == 0.0:
        value = float(samples[0])
        return Interval(value, value)
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa's degenerate-distribution warning: handled below
            result = stats.bootstrap((samples,), np.mean, n_resamples=resamples, confidence_level=confidence,
                                     method=method, rng=np.random.default_rng(seed), vectorized=True)
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if np.isfinite(low) and np.isfinite(high):
            return Interval(low, high)
    mean = float(samples.mean())
    return Interval(mean, mean)


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences; 1.0 when every difference is zero."""
    differences = np.asarray(differences, dtype=np.float64).ravel()
    if not np.any(differences != 0.0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # normal-approximation notes for small n with ties
        return float(stats.wilcoxon(differences, zero_method="wilcox").pvalue)


def paired_comparison(a: np.ndarray, b: np.ndarray) -> Paired:
    """A − B on the same faces (same order): mean, paired bootstrap interval, Wilcoxon p-value."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired comparison needs two equally long non-empty samples, got {a.size} and {b.size}")
    differences = a - b
    return Paired(float(differences.mean()), bootstrap_interval(differences), wilcoxon_p(differences), a.size)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, monotone, capped at 1), in the input order.

    scipy.stats.false_discovery_control offers only the Benjamini-Hochberg/Yekutieli FDR procedures;
    Holm controls the family-wise error rate, which a yes/no claim verdict needs.
    """
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    m = p.size
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()

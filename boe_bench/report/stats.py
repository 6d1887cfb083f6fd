"""95% intervals and paired tests for the report, from per-example records.

- Pass rates (one 0/1 outcome per example) get the **Wilson score interval**
  ``(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``, which stays inside [0, 1] and is
  not degenerate at 0/n or n/n (the normal interval is [0, 0] there).
- Statistics that are not a mean of 0/1 outcomes (pooled Sudoku cell accuracy = Σcorrect /
  Σempty, MAUVE, generative perplexity = exp(ΣNLL / Σtokens), mean entropy, mean NFE) get a
  **percentile bootstrap over examples**: resample the examples with replacement, recompute
  the statistic, take the 2.5% and 97.5% quantiles. Seeded, so a report is reproducible.
- BoE against a baseline on the same examples: **McNemar's exact test** for 0/1 outcomes (only
  the discordant pairs carry information: under H0 the b "only A right" among the b + c
  discordant pairs are Binomial(b + c, 1/2); two-sided p = min(1, 2·P(X <= min(b, c)))), and
  a **paired bootstrap** (the same resampled examples for both) for other statistics, with
  the two-sided p = min(1, 2·min(P*(Δ <= 0), P*(Δ >= 0))).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from statistics import NormalDist

import numpy as np

LEVEL = 0.95
N_BOOT = 1000
SEED = 0


def z_value(level: float = LEVEL) -> float:
    return NormalDist().inv_cdf(0.5 + level / 2)


def wilson(successes: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a proportion (fractions); (nan, nan) without examples."""
    if n <= 0:
        return float("nan"), float("nan")
    z = z_value(level)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # At 0/n and n/n the bounds are exactly 0 and 1 (not 1e-17 from rounding).
    return (0.0 if successes <= 0 else max(0.0, centre - half)), (1.0 if successes >= n else min(1.0, centre + half))


def bootstrap_indices(n: int, n_boot: int = N_BOOT, seed: int = SEED) -> np.ndarray:
    """[n_boot, n] resampled example indices, the same for the same (n, n_boot, seed)."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def percentile_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    values = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if values.size == 0:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def bootstrap(statistic: Callable[[np.ndarray], float], n: int, n_boot: int = N_BOOT, seed: int = SEED,
              level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of ``statistic(indices)`` over ``n_boot`` resamples of n examples;
    none (nan) below two examples, where every resample is the one example again."""
    if n < 2:
        return float("nan"), float("nan")
    return percentile_interval([statistic(idx) for idx in bootstrap_indices(n, n_boot, seed)], level)


def ratio_bootstrap(numerators: Sequence[float], denominators: Sequence[float], **options) -> tuple[float, float]:
    """Interval of Σnum / Σden (e.g. correct cells over empty cells, pooled over puzzles)."""
    num, den = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    return bootstrap(lambda idx: num[idx].sum() / den[idx].sum() if den[idx].sum() else float("nan"),
                     len(num), **options)


def mean_bootstrap(values: Sequence[float], **options) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    return bootstrap(lambda idx: values[idx].mean(), len(values), **options)


def mcnemar_exact(a: Sequence[float], b: Sequence[float]) -> tuple[int, int, float]:
    """(only a right, only b right, two-sided exact p) for paired 0/1 outcomes."""
    a, b = np.asarray(a, dtype=float) > 0.5, np.asarray(b, dtype=float) > 0.5
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    discordant = only_a + only_b
    if discordant == 0:
        return only_a, only_b, 1.0
    tail = sum(math.comb(discordant, k) for k in range(min(only_a, only_b) + 1)) / 2 ** discordant
    return only_a, only_b, min(1.0, 2 * tail)


def paired_bootstrap(statistic_a: Callable[[np.ndarray], float], statistic_b: Callable[[np.ndarray], float], n: int,
                     n_boot: int = N_BOOT, seed: int = SEED, level: float = LEVEL) -> tuple[float, float, float]:
    """Interval of statistic_a - statistic_b, both on the same resampled examples, and the
    two-sided bootstrap p-value of "no difference"; none (nan) below two examples."""
    if n < 2:
        return float("nan"), float("nan"), float("nan")
    deltas = np.array([statistic_a(idx) - statistic_b(idx) for idx in bootstrap_indices(n, n_boot, seed)])
    deltas = deltas[np.isfinite(deltas)]
    if deltas.size == 0:
        return float("nan"), float("nan"), float("nan")
    lo, hi = percentile_interval(deltas, level)
    p = min(1.0, 2 * min(float((deltas <= 0).mean()), float((deltas >= 0).mean())))
    return lo, hi, p


def outside(value: float, interval: tuple[float, float]) -> bool:
    """Whether ``value`` lies outside a (finite) interval; False when the interval is unknown."""
    lo, hi = interval
    return bool(np.isfinite(lo) and np.isfinite(hi) and not lo - 1e-9 <= value <= hi + 1e-9)

"""Small pure statistics over episodes and policies: correlations, ranks, bootstrap intervals, rank violation.

    bootstrap_ci(successes)            # (low, high): a 95% percentile-bootstrap interval of the mean
    spearman(predicted, real)          # rank correlation, ties given their average rank
    mmrv(predicted, real)              # SIMPLER's mean maximum rank violation (0: the order is right)

numpy only (scipy is not a dependency); each function is checked against hand-computed values in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from worldsim.errors import InputError

CI = tuple[float, float]
"""A confidence interval: (low, high)."""


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two 1-D samples; NaN where either is constant: the correlation is undefined (e.g. no
    dream succeeds), which is not the same as no correlation (``format_correlation`` prints it as undefined)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.std() == 0 or y.std() == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def format_correlation(value: float | None, digits: int = 3) -> str:
    """A correlation for a report: its value, or "undefined" where one side was constant (NaN or None)."""
    return "undefined" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def json_ready(value: Any) -> Any:
    """``value`` with every NaN float (an undefined correlation) as None, so the JSON written is standard JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D sample; tied values share the mean of the ranks they span."""
    x = np.asarray(x)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    _, group, counts = np.unique(x, return_inverse=True, return_counts=True)
    return np.bincount(group, weights=ranks)[group] / counts[group]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation: Pearson's of the average ranks (so ties are handled as in scipy's spearmanr)."""
    return pearson(average_ranks(x), average_ranks(y))


def bootstrap_ci(
    values: np.ndarray, stat: Callable[[np.ndarray], float] = np.mean, n: int = 2000, seed: int = 0, level: float = 0.95
) -> CI:
    """A percentile-bootstrap interval of ``stat`` over ``values`` (one per episode): ``stat`` of ``n`` resamples
    with replacement, cut at the (1 - level) / 2 quantiles. Seeded, so a report is reproducible. One value: (v, v)."""
    values = np.asarray(values, np.float64).reshape(-1)
    if len(values) == 0:
        raise InputError("a bootstrap interval needs at least one value")
    rng = np.random.default_rng(seed)
    resamples = values[rng.integers(0, len(values), (n, len(values)))]  # (n, E)
    stats = np.array([stat(r) for r in resamples])
    tail = (1 - level) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return float(low), float(high)


def mmrv(predicted: np.ndarray, real: np.ndarray) -> float:
    """Mean maximum rank violation (SIMPLER, Li et al. 2024): how much real performance the predicted order gets
    wrong, 0 when it orders every pair as reality does.

    MMRV = (1/N) sum_i max_j |r_i - r_j| * 1[(p_i > p_j) != (r_i > r_j)], over N policies with predicted scores p
    and real scores r: each policy's worst misordered partner, weighted by the real gap between them. As in
    SIMPLER's ``mean_maximum_rank_violation`` (simpler_env/utils/metrics.py), so ties count as "not greater": a
    tie predicted between two policies whose real scores differ is one violation (charged to the better one).
    """
    p, r = np.asarray(predicted, np.float64), np.asarray(real, np.float64)
    if p.shape != r.shape or p.ndim != 1 or len(p) == 0:
        raise InputError(f"mmrv needs two 1-D samples of the same length, got shapes {p.shape} and {r.shape}")
    violated = (p[:, None] > p[None, :]) != (r[:, None] > r[None, :])  # (N, N): pair (i, j) misordered
    gap = np.abs(r[:, None] - r[None, :])
    return float(np.where(violated, gap, 0.0).max(axis=1).mean())

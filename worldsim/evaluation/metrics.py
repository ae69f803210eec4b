"""The metrics every evaluation command uses, once: frame metrics (PSNR, SSIM, Fréchet distance, pixel distance, mask
IoU) and small pure statistics over episodes and policies (correlations, ranks, bootstrap intervals, rank violation).

    psnr(dream, real)                  # per frame, dB
    bootstrap_ci(successes)            # (low, high): a 95% percentile-bootstrap interval of the mean
    spearman(predicted, real)          # rank correlation, ties given their average rank
    mmrv(predicted, real)              # SIMPLER's mean maximum rank violation (0: the order is right)

The statistics are numpy only (scipy is not a dependency); each is checked against hand-computed values in the tests.
A new metric goes here when two commands need it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

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


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame PSNR in dB of uint8 frames (..., H, W, 3)."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean(axis=(-3, -2, -1))
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame SSIM of uint8 frames (..., H, W, 3) (Wang et al. 2004).

    Gaussian window 11 / sigma 1.5, constants K1 0.01 and K2 0.03 of the 255 range, over the valid
    region of each colour channel, averaged over channels.
    """
    lead = a.shape[:-3]
    x, y = (
        rearrange(
            torch.from_numpy(np.ascontiguousarray(t).reshape(-1, *t.shape[-3:])).double(), "n h w c -> (n c) 1 h w"
        )
        for t in (a, b)
    )
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    g = g / g.sum()
    win = (g[:, None] * g[None, :])[None, None]

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, win)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    per_channel = s.mean(dim=(1, 2, 3)).reshape(-1, 3)
    return per_channel.mean(1).numpy().reshape(lead)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a (N, D) and b (M, D)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr sqrt(A B) = tr sqrt(sqrt(A) B sqrt(A)), which is symmetric PSD: eigenvalues are enough.
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


def pixel_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame mean absolute difference of uint8 frames (..., H, W, 3), in 0-255 units."""
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(axis=(-3, -2, -1))


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per frame: intersection over union of two (N, H, W) bool masks; NaN where both are empty."""
    inter = (a & b).reshape(len(a), -1).sum(1)
    union = (a | b).reshape(len(a), -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), np.nan)

""" C2FMAE masking curriculum: semantic-guided -> instance-guided -> random

Training progress t in [0, 1] (step / total steps) sets the probabilities
`(alpha_S(t), alpha_I(t), 1 - alpha_S(t) - alpha_I(t))` of the three masking strategies; each sample
draws its own. The probabilities are a pure function of t, so a resumed run continues exactly.

Schedules (t1 < t2):
- linear (default): alpha_S falls 1 -> 0 over [0, t1]; alpha_I rises 0 -> 1 over [0, t1] and falls
  to 0 over [t1, t2]; only random masking after t2;
- cosine: the same with cosine easing of each ramp;
- step: the strategy that dominates `linear` — semantic before t1/2, instance before (t1+t2)/2,
  random after;
- fixed: constant probabilities (ablation; default all random = MultiMAE masking).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["SCHEDULES", "strategy_probs", "draw_strategy"]

SCHEDULES = ("linear", "cosine", "step", "fixed")


def _clamp01(x: float) -> float:
    return min(max(x, 0.0), 1.0)


def strategy_probs(
        t: float,
        schedule: str = "linear",
        t1: float = 0.4,
        t2: float = 0.8,
        fixed_probs: Sequence[float] = (0.0, 0.0, 1.0),
) -> tuple[float, float, float]:
    """ Probabilities (semantic, instance, random) of the masking strategies at progress t. """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r} is not one of {SCHEDULES}")
    if not 0.0 < t1 < t2 <= 1.0:
        raise ValueError(f"curriculum needs 0 < t1 < t2 <= 1, got t1={t1}, t2={t2}")
    t = _clamp01(float(t))
    if schedule == "fixed":
        p = [float(v) for v in fixed_probs]
        if len(p) != 3 or min(p) < 0 or sum(p) <= 0:
            raise ValueError(f"fixed_probs must be 3 non-negative numbers (sem, ins, random), got {fixed_probs}")
        s = sum(p)
        return p[0] / s, p[1] / s, p[2] / s
    if schedule == "step":
        if t < t1 / 2:
            return 1.0, 0.0, 0.0
        return (0.0, 1.0, 0.0) if t < (t1 + t2) / 2 else (0.0, 0.0, 1.0)
    up, down = _clamp01(t / t1), _clamp01((t - t1) / (t2 - t1))
    if schedule == "cosine":
        up, down = (1 - math.cos(math.pi * up)) / 2, (1 - math.cos(math.pi * down)) / 2
    a_s = 1.0 - up
    a_i = up * (1.0 - down)  # = up on [0, t1], 1 - down on [t1, t2]
    return a_s, a_i, max(0.0, 1.0 - a_s - a_i)


def draw_strategy(
        probs: Sequence[float], batch_size: int, device=None, u: torch.Tensor | None = None,
) -> torch.Tensor:
    """ Per-sample strategy codes [B] (0 semantic, 1 instance, 2 random) with the given probabilities.

    u: optional [B] uniform draws in [0, 1) to make the draw reproducible.
    """
    if u is None:
        u = torch.rand(batch_size, device=device)
    p_s, p_r = float(probs[0]), float(probs[2])
    return (u >= p_s).long() + (u >= 1.0 - p_r).long()

"""Per-step learning-rate schedule: linear warmup, then half-cycle cosine to `min_lr` (MAE's `lr_sched`)."""
from __future__ import annotations

import math

import torch

__all__ = ["CosineSchedule"]


class CosineSchedule:
    """Sets `lr` of every param group at each optimizer step; honours a group's `lr_scale`.

    The state is the step count only, so it is exact on resume; `state_dict()` also records the
    schedule's shape so that a resumed run with a different schedule is reported, not silently mixed.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, lr: float, total_steps: int, warmup_steps: int = 0,
                 min_lr: float = 0.0):
        self.optimizer, self.base_lr, self.min_lr = optimizer, float(lr), float(min_lr)
        self.total_steps, self.warmup_steps = int(total_steps), min(int(warmup_steps), int(total_steps))
        self.step_count = 0
        self._apply()

    def lr_at(self, step: int) -> float:
        """Learning rate used by optimizer step `step` (0-based)."""
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))

    def _apply(self) -> None:
        lr = self.lr_at(self.step_count)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)

    def step(self) -> None:
        """Advance one optimizer step and set the next step's lr."""
        self.step_count += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return dict(step_count=self.step_count, base_lr=self.base_lr, min_lr=self.min_lr,
                    total_steps=self.total_steps, warmup_steps=self.warmup_steps)

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self._apply()

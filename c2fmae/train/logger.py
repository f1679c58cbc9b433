"""Run logging on rank 0: `metrics.jsonl`, optional TensorBoard / W&B, and the tqdm progress bar."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from c2fmae.atomic import atomic_open

__all__ = ["MetricsLogger", "truncate_metrics"]


def truncate_metrics(path: Path, max_step: int) -> None:
    """Drop records after `max_step` (a resumed run rewrites what the killed run logged past its checkpoint)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= max_step:
                keep.append(line)
        except json.JSONDecodeError:  # a line cut by the kill
            continue
    with atomic_open(path, "w") as f:
        f.write("".join(k + "\n" for k in keep))


class MetricsLogger:
    """Appends one JSON record per log step; mirrors scalars to TensorBoard / W&B when enabled.

    Args:
        run_dir: run directory (`metrics.jsonl`, `tb/`).
        enabled: False on ranks other than 0 (every call is then a no-op).
        tensorboard: write TensorBoard event files.
        wandb_project: W&B project name ("" = off).
        config: the run config (dict) for W&B.
    """

    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = False, wandb_project: str = "",
                 config: dict[str, Any] | None = None):
        self.enabled, self.path = enabled, Path(run_dir) / "metrics.jsonl"
        self.tb = self.wandb = None
        if not enabled:
            return
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ImportError(f"tensorboard=true needs TensorBoard: pip install tensorboard ({e})") from e
            self.tb = SummaryWriter(str(Path(run_dir) / "tb"))
        if wandb_project:
            try:
                import wandb
            except ImportError as e:
                raise ImportError(f"wandb={wandb_project!r} needs W&B: pip install wandb ({e})") from e
            self.wandb = wandb.init(project=wandb_project, name=Path(run_dir).name, config=config,
                                    dir=str(run_dir), resume="allow", id=Path(run_dir).name)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, "time": round(time.time(), 3), **metrics}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()

"""Run directories: naming, and which checkpoint `resume` means.

- `resume=""`: a new run in `<output_dir>/<name>`; `name=""` gives `<recipe>-<YYYYmmdd-HHMMSS>`.
  A named run directory that already holds checkpoints is refused (pass `resume=auto`).
- `resume=auto`: continue `<output_dir>/<name>` if it has checkpoints; with `name=""`, the newest
  `<output_dir>/<recipe>-*` run that has one (the same command line restarts a preempted job).
  Nothing to resume = a new run.
- `resume=PATH`: a checkpoint file, or a run directory (its newest checkpoint); the run continues
  in that directory.
"""
from __future__ import annotations

import time
from pathlib import Path

from .checkpoint import latest_checkpoint
from .config import TrainConfig

__all__ = ["resolve_run", "checkpoint_to_resume"]


def checkpoint_to_resume(path: str | Path) -> tuple[Path, Path]:
    """`(run_dir, checkpoint)` for `resume=PATH` (a checkpoint file or a run directory)."""
    p = Path(path)
    if p.is_dir():
        ckpt = latest_checkpoint(p)
        if ckpt is None:
            raise FileNotFoundError(f"resume: {p} has no checkpoints (expected {p}/checkpoints/step_*.pt)")
        return p, ckpt
    if not p.is_file():
        raise FileNotFoundError(f"resume: no such checkpoint or run directory: {p}")
    return (p.parent.parent if p.parent.name == "checkpoints" else p.parent), p


def resolve_run(cfg: TrainConfig) -> tuple[str, str | None]:
    """Create/find the run directory; returns `(run_dir, checkpoint to resume or None)`."""
    out = Path(cfg.output_dir)
    if cfg.resume not in ("", "auto"):
        run_dir, ckpt = checkpoint_to_resume(cfg.resume)
        return str(run_dir), str(ckpt)
    prefix = cfg.recipe or "run"
    if cfg.name:
        run_dir = out / cfg.name
        ckpt = latest_checkpoint(run_dir)
        if ckpt is not None and cfg.resume != "auto":
            raise FileExistsError(f"name: run directory {run_dir} already has checkpoints; pass resume=auto "
                                  f"to continue it, or choose another name=")
        run_dir.mkdir(parents=True, exist_ok=True)
        return str(run_dir), (str(ckpt) if ckpt else None)
    if cfg.resume == "auto":
        runs = [d for d in out.glob(f"{prefix}-*") if d.is_dir() and latest_checkpoint(d) is not None]
        if runs:
            run_dir = max(runs, key=lambda d: latest_checkpoint(d).stat().st_mtime)
            return str(run_dir), str(latest_checkpoint(run_dir))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir, i = out / f"{prefix}-{stamp}", 1
    while run_dir.exists():
        i += 1
        run_dir = out / f"{prefix}-{stamp}-{i}"
    run_dir.mkdir(parents=True)
    return str(run_dir), None

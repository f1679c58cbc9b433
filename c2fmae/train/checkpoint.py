"""Atomic, keep-last-k training checkpoints and RNG state capture.

Layout: `<run>/checkpoints/step_00001000.pt`. A checkpoint is `torch.save` of plain types and tensors
only, so it loads with `torch.load(path, weights_only=True)`:
`{"model", "optimizer", "scheduler", "scaler", "step", "epoch", "rng": [per-rank], "config", ...}`.
"""
from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from c2fmae.atomic import atomic_open

__all__ = ["save_checkpoint", "load_checkpoint", "list_checkpoints", "latest_checkpoint", "prune_checkpoints",
           "checkpoint_path", "get_rng_state", "set_rng_state"]

_PATTERN = re.compile(r"step_(\d+)\.pt$")


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}.pt"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write `state` atomically: a temp file in the same directory, fsync, then `os.replace`."""
    with atomic_open(path, fsync=True) as f:
        torch.save(state, f)
    return Path(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """`torch.load(weights_only=True)` on CPU, with an error that names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated / foreign pickles
        raise RuntimeError(f"cannot load checkpoint {path}: {e}") from e


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Step checkpoints of a run, oldest first."""
    d = Path(run_dir) / "checkpoints"
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _PATTERN.search(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` step checkpoints; returns the deleted paths."""
    old = list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []
    for p in old:
        p.unlink(missing_ok=True)
    return old


def get_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states as tensors / plain types."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `get_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

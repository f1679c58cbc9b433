""" mmengine checkpoint loading: c2fmae encoder exports, and a `weights_only` policy for torch >= 2.6

mmengine 0.10's local loader is a bare `torch.load`, which torch >= 2.6 runs with `weights_only=True`:
mmengine's own run checkpoints (message hub, meta objects) then fail to resume. c2fmae.mm replaces the
local loader (mmengine's `''` scheme) with one that
- reads `.safetensors` files and export directories (`c2fmae export`) as encoder weights under
  `backbone.encoder.` (so `init_detector(cfg, "<export>/model.safetensors")`, `init_model(...)` and
  `load_from=` put them into a `C2FMAEViT` backbone), and `hf-hub:<repo>[@rev]` likewise;
- loads other files with `weights_only=True`, and falls back to `weights_only=False` ONLY for a file
  your own mmengine run wrote: one whose directory holds the `last_checkpoint` marker that mmengine's
  `CheckpointHook` writes into the work dir. Downloaded weights (http, Hub) are never unpickled.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader

from .backbone import read_encoder_weights

__all__ = ["RUN_MARKER", "is_run_output", "load_from_local", "load_from_hf_hub"]

RUN_MARKER = "last_checkpoint"  # written by mmengine's CheckpointHook next to the checkpoints


def is_run_output(path: str | Path) -> bool:
    """True for a checkpoint in an mmengine work dir (the directory has `last_checkpoint`)."""
    return (Path(path).expanduser().resolve().parent / RUN_MARKER).is_file()


def _as_model_checkpoint(sd: dict[str, torch.Tensor], src: str) -> dict:
    if "pos_embed" in sd or any(k.startswith("blocks.") for k in sd):  # timm encoder keys
        sd = {f"backbone.encoder.{k}": v for k, v in sd.items()}
    return {"state_dict": sd, "meta": {"c2fmae_source": src}}


@CheckpointLoader.register_scheme(prefixes="hf-hub:")
def load_from_hf_hub(filename: str, map_location=None) -> dict:
    """`hf-hub:<repo>[@revision]` -> the repo's model.safetensors as `backbone.encoder.*` weights."""
    return _as_model_checkpoint(read_encoder_weights(filename), filename)


@CheckpointLoader.register_scheme(prefixes="", force=True)
def load_from_local(filename: str, map_location=None) -> dict:
    """Local file: safetensors / export dir as encoder weights, else `torch.load` (see module doc)."""
    path = Path(filename).expanduser()
    if path.is_dir() and (path / "model.safetensors").is_file() or path.suffix == ".safetensors":
        return _as_model_checkpoint(read_encoder_weights(str(path)), filename)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{filename}' not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if not is_run_output(path):
            raise pickle.UnpicklingError(
                f"{path}: needs torch.load(weights_only=False), which c2fmae.mm allows only for checkpoints of your "
                f"own mmengine runs (a '{RUN_MARKER}' file next to them); convert other weights to safetensors"
            ) from e
        print_log(f"{path}: mmengine run checkpoint, loading with weights_only=False", logger="current")
        return torch.load(path, map_location=map_location, weights_only=False)

""" State-dict conversion for the C2FMAE pretraining model

- `from_mae`: a facebookresearch/mae `MaskedAutoencoderViT` pretraining checkpoint (`models_mae.py`,
  e.g. `mae_pretrain_vit_base_full.pth`) -> the RGB-only `pixel` mode of `C2FMAE`, which then computes
  MAE's loss and predictions for the same input and noise;
- `mae_config`: the matching `C2FMAEConfig`, read off the checkpoint's shapes;
- the other direction (pretraining checkpoint -> deployed timm encoder) is
  `c2fmae.models.vit.encoder_state_dict`.
"""
from __future__ import annotations

import math
import re
from typing import Any

import torch

from .c2fmae import C2FMAEConfig

__all__ = ["from_mae", "mae_config"]

_ENCODER_KEYS = re.compile(r"^(cls_token|pos_embed|patch_embed\..*|blocks\.\d+\..*|norm\.(weight|bias))$")
_DECODER_RENAMES = (  # MAE name prefix -> C2FMAE name prefix (pixel mode has one stage: 'rgb')
    ("mask_token", "decoder.stages.rgb.mask_token"),
    ("decoder_pos_embed", "decoder.pos_embed"),
    ("decoder_embed.", "decoder.stages.rgb.embed."),
    ("decoder_blocks.", "decoder.stages.rgb.blocks."),
    ("decoder_norm.", "decoder.stages.rgb.norm."),
    ("decoder_pred.", "decoder.stages.rgb.head."),
)


def _unwrap(state_dict: dict[str, Any]) -> dict[str, torch.Tensor]:
    if isinstance(state_dict.get("model"), dict):
        state_dict = state_dict["model"]
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}


def from_mae(state_dict: dict[str, Any]) -> dict[str, torch.Tensor]:
    """ Rename a MAE pretraining state dict (or `{'model': ...}` checkpoint) to `C2FMAE` pixel-mode keys.

    Encoder keys (`cls_token`, `pos_embed`, `patch_embed.*`, `blocks.N.*`, `norm.*`) go under
    `encoder.`; decoder keys under `decoder.` (see `_DECODER_RENAMES`). Load the result with
    `C2FMAE(mae_config(sd)).load_state_dict(from_mae(sd))`. An encoder-only MAE checkpoint gives a
    state dict without decoder keys (load with `strict=False`, the decoder stays freshly initialised).
    Unknown keys raise a KeyError that lists them.
    """
    sd = _unwrap(state_dict)
    out, unknown = {}, []
    for k, v in sd.items():
        if _ENCODER_KEYS.match(k):
            out["encoder." + k] = v
            continue
        for old, new in _DECODER_RENAMES:
            if k == old or (old.endswith(".") and k.startswith(old)):
                out[new + k[len(old):]] = v
                break
        else:
            unknown.append(k)
    if unknown:
        raise KeyError(f"not a facebookresearch/mae MaskedAutoencoderViT state dict: unknown keys {unknown[:10]}")
    if "encoder.pos_embed" not in out or "encoder.patch_embed.proj.weight" not in out:
        raise KeyError("MAE state dict lacks 'pos_embed' / 'patch_embed.proj.weight'")
    return out


def mae_config(
        state_dict: dict[str, Any],
        num_heads: int | None = None,
        decoder_num_heads: int = 16,
        norm_pix_loss: bool = True,
        encoder: str = "c2fmae_vit_base_patch16_224",
) -> C2FMAEConfig:
    """ `C2FMAEConfig` of the RGB-only MAE mode matching a MAE state dict's shapes.

    Head counts are not stored in weights: `num_heads` defaults to MAE's (dim 768 -> 12, 1024 / 1280 -> 16),
    `decoder_num_heads` to MAE's 16. Masking is MAE's: random only, 25% visible.
    """
    sd = _unwrap(state_dict)
    w = sd["patch_embed.proj.weight"]  # [D, 3, p, p]
    dim, in_chans, patch = w.shape[0], w.shape[1], w.shape[-1]
    grid = math.isqrt(sd["pos_embed"].shape[1] - 1)
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    if num_heads is None:
        num_heads = {768: 12, 1024: 16, 1280: 16}.get(dim, max(1, dim // 64))
    kwargs = dict(img_size=grid * patch, patch_size=patch, in_chans=in_chans, embed_dim=dim, depth=depth,
                  num_heads=num_heads)
    dec = sd.get("decoder_embed.weight")
    dec_dim = dec.shape[0] if dec is not None else 512
    dec_depth = 1 + max((int(k.split(".")[1]) for k in sd if k.startswith("decoder_blocks.")), default=7)
    return C2FMAEConfig(
        encoder=encoder, encoder_kwargs=kwargs, inputs=["rgb"], targets=["rgb"], decoder="pixel",
        pixel_decoder_dim=dec_dim, pixel_decoder_depth=dec_depth, pixel_decoder_heads=decoder_num_heads,
        norm_pix_loss=norm_pix_loss, schedule="fixed", fixed_probs=[0.0, 0.0, 1.0],
    )

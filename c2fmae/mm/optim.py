""" Layer-wise learning-rate decay for timm ViT backbones (`backbone.[encoder.]blocks.N` names)

BEiT / MAE fine-tuning recipe: with depth L and decay d, the patch / position embedding (layer 0) gets
`lr * d^(L+1)`, block `blocks.N` (layer N+1) gets `lr * d^(L-N)`, and everything after the backbone
(final norm, neck, heads: layer L+1) the full `lr`. mmseg's `LayerDecayOptimizerConstructor` dispatches
on the backbone class name and expects `layers.N`; on timm names it silently puts every block in one
group. This one reads timm names and fails loudly when it finds no blocks.

    optim_wrapper = dict(constructor='C2FMAELayerDecayOptimizerConstructor',
                         paramwise_cfg=dict(decay_rate=0.65, num_layers=12), ...)
"""
from __future__ import annotations

import re

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS

__all__ = ["C2FMAELayerDecayOptimizerConstructor", "get_layer_id"]

_BLOCK = re.compile(r"^backbone\.(?:.*\.)?blocks\.(\d+)\.")
_EMBED = re.compile(r"^backbone\.(?:.*\.)?(patch_embed|pos_embed|cls_token|reg_token|norm_pre|mask_token)\b")
_NO_WD = ("pos_embed", "cls_token", "reg_token", "mask_token")
_KEYS = {"decay_rate", "layer_decay_rate", "num_layers", "decay_type"}


def get_layer_id(name: str, num_layers: int) -> int:
    """Layer id of a parameter name of the detector / segmentor: 0 embeddings, N+1 for `blocks.N`,
    `num_layers + 1` for the rest (final norm, neck, heads)."""
    if m := _BLOCK.match(name):
        return int(m.group(1)) + 1
    if _EMBED.match(name):
        return 0
    return num_layers + 1


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class C2FMAELayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """Optimizer wrapper constructor with layer-wise lr decay over timm `blocks.N`.

    paramwise_cfg:
        decay_rate (alias layer_decay_rate): the per-layer decay d.
        num_layers: backbone depth L; optional, checked against the model's blocks when given.
        decay_type: only 'layer_wise'.
    No weight decay for 1-d parameters (norms, biases) and the position embedding / tokens.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None) -> None:
        # mmengine never calls `add_params` without a paramwise_cfg: no decay would pass silently
        if not paramwise_cfg:
            raise KeyError("C2FMAELayerDecayOptimizerConstructor: paramwise_cfg=dict(decay_rate=..., num_layers=...) "
                           "is required")
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    def add_params(self, params: list[dict], module: nn.Module, **kwargs) -> None:
        cfg = dict(self.paramwise_cfg)
        unknown = set(cfg) - _KEYS
        if unknown:
            raise KeyError(f"C2FMAELayerDecayOptimizerConstructor: unknown paramwise_cfg keys {sorted(unknown)} "
                           f"(allowed: {sorted(_KEYS)})")
        if cfg.get("decay_type", "layer_wise") != "layer_wise":
            raise ValueError(f"C2FMAELayerDecayOptimizerConstructor: decay_type={cfg['decay_type']!r}, "
                             "only 'layer_wise' is supported")
        decay = cfg.get("decay_rate", cfg.get("layer_decay_rate"))
        if decay is None:
            raise KeyError("C2FMAELayerDecayOptimizerConstructor: paramwise_cfg needs 'decay_rate'")
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        blocks = {int(m.group(1)) for n, _ in module.named_parameters() if (m := _BLOCK.match(n))}
        if not blocks:
            raise ValueError("C2FMAELayerDecayOptimizerConstructor: no 'backbone.[...]blocks.N.' parameters in "
                             f"{type(module).__name__}; it needs a timm-style ViT backbone such as C2FMAEViT")
        depth = max(blocks) + 1
        num_layers = cfg.get("num_layers", depth)
        if num_layers != depth:
            raise ValueError(f"C2FMAELayerDecayOptimizerConstructor: paramwise_cfg num_layers={num_layers} but the "
                             f"backbone has {depth} blocks")
        groups: dict[tuple[int, bool], list] = {}
        for name, p in named:
            no_wd = p.ndim == 1 or name.endswith(_NO_WD)
            groups.setdefault((get_layer_id(name, num_layers), no_wd), []).append(p)
        for (layer_id, no_wd), ps in sorted(groups.items()):
            scale = decay ** (num_layers + 1 - layer_id)
            group = dict(params=ps, lr=self.base_lr * scale, lr_scale=scale, layer_id=layer_id)
            if no_wd or self.base_wd is not None:
                group["weight_decay"] = 0.0 if no_wd else self.base_wd
            params.append(group)
        print_log(f"layer-wise lr decay {decay} over {num_layers} blocks: {len(params)} param groups, "
                  f"lr scale {decay ** (num_layers + 1):.3g} (embeddings) ... 1 (heads)", logger="current")

""" C2FMAE Vision Transformer encoders for timm

The deployed C2FMAE encoder is a plain timm `VisionTransformer` (RGB patches, cls token, final
norm). Everything timm users rely on (`features_only`, `forward_intermediates`, `reset_classifier`,
`set_grad_checkpointing`, `img_size=` with pos-embed resampling) is timm's own code.

Paper: `From Semantics to Pixels: Coarse-to-Fine Masked Autoencoders for Hierarchical Visual
Understanding` - https://arxiv.org/abs/2603.09955

`import c2fmae` registers the models; timm has no plugin discovery, so the import is required.
"""
from __future__ import annotations

from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer import checkpoint_filter_fn as _timm_vit_filter_fn

__all__ = [
    "HF_HUB_ORG", "ARCH_TO_TIMM", "SHORT_NAMES", "PRETRAINED_TAGS", "checkpoint_filter_fn", "encoder_state_dict",
]

# The one place that names the Hub repos: `<HF_HUB_ORG>/<arch>.<tag>`.
HF_HUB_ORG = "c2fmae"

# c2fmae architecture -> (plain timm architecture, constructor args). The Hub `config.json` names the
# plain timm architecture, so `timm.create_model("hf-hub:...")` works without installing c2fmae.
ARCH_TO_TIMM: dict[str, tuple[str, dict[str, Any]]] = {
    "c2fmae_vit_test": ("vit_small_patch16_224", dict(patch_size=8, embed_dim=64, depth=2, num_heads=2)),
    "c2fmae_vit_small_patch16_224": (
        "vit_small_patch16_224", dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)),
    "c2fmae_vit_base_patch16_224": (
        "vit_base_patch16_224", dict(patch_size=16, embed_dim=768, depth=12, num_heads=12)),
    "c2fmae_vit_large_patch16_224": (
        "vit_large_patch16_224", dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16)),
    "c2fmae_vit_huge_patch16_224": (
        "vit_huge_patch14_224", dict(patch_size=16, embed_dim=1280, depth=32, num_heads=16)),
}

PAPER_NAME = "From Semantics to Pixels: Coarse-to-Fine Masked Autoencoders for Hierarchical Visual Understanding"

# prefixes of a pretraining checkpoint (DESIGN §4) that are not part of the deployed encoder
_PRETRAIN_ONLY_PREFIXES = ("decoder", "adapters.", "mask_token", "heads.", "loss", "curriculum")


def encoder_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Extract the RGB encoder path (timm key names) from any supported checkpoint layout.

    Accepts a timm/MAE-encoder state dict, a c2fmae pretraining checkpoint (`{'model': ...}` with
    `encoder.*` keys next to `adapters.*` and `decoder.*`), and MAE's full pretraining checkpoint
    (encoder keys at top level next to `mask_token` and `decoder_*`).
    """
    for wrapper in ("model_ema", "state_dict_ema", "model", "state_dict"):
        if isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
            break
    out = {}
    encoder_prefixes = ("encoder.", "module.encoder.", "_orig_mod.encoder.")
    has_encoder_prefix = any(k.startswith(encoder_prefixes) for k in state_dict)
    for k, v in state_dict.items():
        for p in ("module.", "_orig_mod."):
            k = k[len(p):] if k.startswith(p) else k
        if has_encoder_prefix:
            if not k.startswith("encoder."):
                continue  # adapters / decoder of the pretraining model
            k = k[len("encoder."):]
        elif k.startswith(_PRETRAIN_ONLY_PREFIXES):
            continue
        out[k] = v
    return out


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: VisionTransformer, **kwargs) -> dict:
    """Convert a checkpoint to `model`'s keys: drop pretraining-only weights, resample pos embed.

    timm's own ViT filter mistakes a pretraining checkpoint's `mask_token` for DINOv2, so the
    pretraining-only keys are removed here first and timm's filter then resamples `pos_embed` and
    `patch_embed` to the model's image / patch size.
    """
    state_dict = encoder_state_dict(state_dict)
    if "pos_embed" not in state_dict or "patch_embed.proj.weight" not in state_dict:
        raise KeyError(
            "checkpoint has no RGB encoder ('pos_embed' / 'patch_embed.proj.weight' missing); "
            f"first keys: {sorted(state_dict)[:8]}"
        )
    # global_pool='avg' models norm the pooled feature (`fc_norm`) instead of the tokens (`norm`)
    if isinstance(model.norm, torch.nn.Identity) and not isinstance(model.fc_norm, torch.nn.Identity):
        state_dict = {("fc_norm." + k[5:] if k.startswith("norm.") else k): v for k, v in state_dict.items()}
    embed_dim = model.embed_dim
    if state_dict["pos_embed"].shape[-1] != embed_dim:
        raise ValueError(
            f"checkpoint is for another architecture: embed dim {state_dict['pos_embed'].shape[-1]}, "
            f"model {type(model).__name__} expects {embed_dim}"
        )
    return _timm_vit_filter_fn(state_dict, model, **kwargs)


def _cfg(hf_hub_id: str = "", **kwargs) -> dict[str, Any]:
    return {
        "hf_hub_id": hf_hub_id,
        "hf_hub_filename": "model.safetensors",
        "num_classes": 0,
        "input_size": (3, 224, 224),
        "pool_size": None,
        "crop_pct": 0.9,
        "interpolation": "bicubic",
        "fixed_input_size": True,
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "license": "apache-2.0",
        "paper_ids": "arXiv:2603.09955",
        "paper_name": PAPER_NAME,
        **kwargs,
    }


def _hub(arch: str, tag: str) -> str:
    return f"{HF_HUB_ORG}/{arch}.{tag}"


# short names users type -> full architecture names; both share the same Hub repos
SHORT_NAMES = {
    "c2fmae_vit_small": "c2fmae_vit_small_patch16_224",
    "c2fmae_vit_base": "c2fmae_vit_base_patch16_224",
    "c2fmae_vit_large": "c2fmae_vit_large_patch16_224",
    "c2fmae_vit_huge": "c2fmae_vit_huge_patch16_224",
}
PRETRAINED_TAGS = ("in1k_1600e", "in1k_400e")  # the first is the default tag

default_cfgs = generate_default_cfgs({
    "c2fmae_vit_test.untrained": _cfg(input_size=(3, 64, 64)),
    **{
        f"{name}.{tag}": _cfg(hf_hub_id=_hub(SHORT_NAMES.get(name, name), tag))
        for name in (*ARCH_TO_TIMM, *SHORT_NAMES) if name != "c2fmae_vit_test"
        for tag in PRETRAINED_TAGS
    },
})


def _create_c2fmae_vit(variant: str, pretrained: bool = False, **kwargs) -> VisionTransformer:
    arch = SHORT_NAMES.get(variant, variant)
    kwargs = dict(ARCH_TO_TIMM[arch][1], **kwargs)
    out_indices = kwargs.pop("out_indices", min(3, kwargs["depth"]))  # last 3 blocks, as timm
    return build_model_with_cfg(
        VisionTransformer,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **kwargs,
    )


@register_model
def c2fmae_vit_test(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ Tiny C2FMAE ViT (dim 64, depth 2, patch 8, 64 px) for tests and CPU smoke runs. """
    return _create_c2fmae_vit("c2fmae_vit_test", pretrained=pretrained, **dict(dict(img_size=64), **kwargs))


@register_model
def c2fmae_vit_small_patch16_224(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ C2FMAE ViT-S/16 encoder (dim 384, depth 12, 6 heads). """
    return _create_c2fmae_vit("c2fmae_vit_small_patch16_224", pretrained=pretrained, **kwargs)


@register_model
def c2fmae_vit_base_patch16_224(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ C2FMAE ViT-B/16 encoder (dim 768, depth 12, 12 heads). """
    return _create_c2fmae_vit("c2fmae_vit_base_patch16_224", pretrained=pretrained, **kwargs)


@register_model
def c2fmae_vit_large_patch16_224(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ C2FMAE ViT-L/16 encoder (dim 1024, depth 24, 16 heads). """
    return _create_c2fmae_vit("c2fmae_vit_large_patch16_224", pretrained=pretrained, **kwargs)


@register_model
def c2fmae_vit_huge_patch16_224(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ C2FMAE ViT-H/16 encoder (dim 1280, depth 32, 16 heads). """
    return _create_c2fmae_vit("c2fmae_vit_huge_patch16_224", pretrained=pretrained, **kwargs)


@register_model
def c2fmae_vit_small(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ Alias of `c2fmae_vit_small_patch16_224`. """
    return _create_c2fmae_vit("c2fmae_vit_small", pretrained=pretrained, **kwargs)


@register_model
def c2fmae_vit_base(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ Alias of `c2fmae_vit_base_patch16_224`. """
    return _create_c2fmae_vit("c2fmae_vit_base", pretrained=pretrained, **kwargs)


@register_model
def c2fmae_vit_large(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ Alias of `c2fmae_vit_large_patch16_224`. """
    return _create_c2fmae_vit("c2fmae_vit_large", pretrained=pretrained, **kwargs)


@register_model
def c2fmae_vit_huge(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ Alias of `c2fmae_vit_huge_patch16_224`. """
    return _create_c2fmae_vit("c2fmae_vit_huge", pretrained=pretrained, **kwargs)

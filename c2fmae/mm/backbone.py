""" C2FMAEViT: the C2FMAE timm encoder as an MMDetection / MMSegmentation backbone

ViTDet-style use of a plain ViT (Li et al., "Exploring Plain Vision Transformer Backbones for Object
Detection", 2022): windowed attention in most blocks, global attention in a few (2, 5, 8, 11 for
ViT-B), the cls token dropped, the absolute position embedding interpolated to the input grid, and
`out_indices` block outputs returned as NCHW maps (one stride-16 map for SimpleFPN, four for
Feature2Pyramid). The parameters are the timm encoder's own (`encoder.blocks.N...`), so a c2fmae
export / Hub checkpoint loads key for key.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from timm.layers import resample_abs_pos_embed

from ..hub import load_checkpoint
from ..models.vit import checkpoint_filter_fn, encoder_state_dict

__all__ = ["C2FMAEViT", "window_partition", "window_unpartition", "read_encoder_weights"]

# encoder weights a checkpoint may carry that this backbone deliberately does not use
_UNUSED_ENCODER_KEYS = ("cls_token", "reg_token", "norm.weight", "norm.bias", "fc_norm.", "head.", "attn_pool.")


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * nW, window * window, C), zero-padding H, W up to multiples of `window`."""
    B, H, W, C = x.shape
    ph, pw = (window - H % window) % window, (window - W % window) % window
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    Hp, Wp = H + ph, W + pw
    x = x.view(B, Hp // window, window, Wp // window, window, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, C), (Hp, Wp)


def window_unpartition(x: torch.Tensor, window: int, pad_hw: tuple[int, int], hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of `window_partition`: (B * nW, window * window, C) -> (B, H, W, C), padding removed."""
    (Hp, Wp), (H, W) = pad_hw, hw
    B = x.shape[0] // (Hp * Wp // window // window)
    x = x.view(B, Hp // window, Wp // window, window, window, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, Hp, Wp, -1)[:, :H, :W].contiguous()


def block_forward(blk: nn.Module, x: torch.Tensor, window: int) -> torch.Tensor:
    """A timm ViT `Block` on a (B, H, W, C) token grid; attention within windows when `window` > 0."""
    B, H, W, C = x.shape
    y = blk.norm1(x)
    if window > 0:
        y, pad_hw = window_partition(y, window)
        y = window_unpartition(blk.attn(y), window, pad_hw, (H, W))
    else:
        y = blk.attn(y.reshape(B, H * W, C)).view(B, H, W, C)
    x = x + blk.drop_path1(blk.ls1(y))
    return x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))


def read_encoder_weights(src: str) -> dict[str, torch.Tensor]:
    """Encoder state dict (timm keys) from `hf-hub:<repo>[@rev]`, an export dir, a .safetensors or a
    pretraining checkpoint (.pth/.pt, loaded with `weights_only=True`)."""
    if src.startswith("hf-hub:"):
        from huggingface_hub import hf_hub_download

        repo, _, rev = src[len("hf-hub:"):].partition("@")
        path = Path(hf_hub_download(repo, "model.safetensors", revision=rev or None))
    else:
        path = Path(src).expanduser()
        if path.is_dir():
            path = path / "model.safetensors"
        if not path.is_file():
            raise FileNotFoundError(
                f"pretrained weights '{src}' not found (expected hf-hub:<repo>, an export directory with "
                "model.safetensors, a .safetensors file or a pretraining checkpoint)")
    sd = load_checkpoint(path)  # safetensors or torch.load(weights_only=True): never weights_only=False here
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: expected a state dict or a checkpoint dict, got {type(sd).__name__}")
    return encoder_state_dict(sd)


@MODELS.register_module()
class C2FMAEViT(BaseModule):
    """Plain-ViT backbone around a timm C2FMAE encoder.

    Args:
        model_name: timm architecture (`c2fmae_vit_base`, ..., or any timm ViT with `Block`s).
        img_size: size the position embedding is stored at; None keeps the architecture's pretraining
            size (ViTDet: interpolated to every input grid at forward), e.g. 512 resamples it once at load
            (mmseg's MAE recipe). Any input size works either way.
        patch_size: override the architecture's patch size (the patch embedding is resampled at load).
        drop_path_rate: stochastic depth, linear over the blocks.
        window_size: attention window in tokens (ViTDet: 14); 0 = global attention everywhere.
        global_indices: blocks with global attention; default evenly spaced: (2, 5, 8, 11) for depth 12.
        out_indices: blocks whose outputs are returned as NCHW maps (default: the last block).
        final_norm: apply the encoder's final norm to the last block's output (ViTDet / BEiT: no).
        with_cp: gradient (activation) checkpointing per block while training.
        frozen_stages: -1 none; 0 freezes the patch / position embedding; k > 0 also blocks 0..k-1.
        pretrained: `hf-hub:<repo>`, an export dir, a .safetensors or a pretraining checkpoint; the
            same as `init_cfg=dict(type='Pretrained', checkpoint=...)`. Loaded strictly in `init_weights`.
        encoder_kwargs: further `timm.create_model` overrides (e.g. `depth`, `embed_dim`).
    """

    def __init__(
            self,
            model_name: str = "c2fmae_vit_base",
            img_size: int | Sequence[int] | None = None,
            patch_size: int | None = None,
            drop_path_rate: float = 0.0,
            window_size: int = 14,
            global_indices: Sequence[int] | None = None,
            out_indices: int | Sequence[int] | None = None,
            final_norm: bool = False,
            with_cp: bool = False,
            frozen_stages: int = -1,
            pretrained: str | None = None,
            encoder_kwargs: dict | None = None,
            init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        if pretrained is not None and init_cfg is not None:
            raise ValueError("C2FMAEViT: give `pretrained` or `init_cfg`, not both")
        if init_cfg is not None and init_cfg.get("type") == "Pretrained":
            pretrained = init_cfg.get("checkpoint")
            if pretrained is None:
                raise KeyError("C2FMAEViT: init_cfg type 'Pretrained' needs a 'checkpoint'")
        self.pretrained = pretrained
        kwargs = dict(encoder_kwargs or {})
        if img_size is not None:
            kwargs["img_size"] = tuple(img_size) if isinstance(img_size, Sequence) else img_size
        if patch_size is not None:
            kwargs["patch_size"] = patch_size
        # no classifier, no final norm unless asked; any input size (NHWC patch grid, padded to patches)
        self.encoder = timm.create_model(
            model_name, pretrained=False, num_classes=0, final_norm=final_norm, drop_path_rate=drop_path_rate,
            dynamic_img_size=True, dynamic_img_pad=True, **kwargs)
        enc = self.encoder
        if type(enc.blocks[0]).__name__ != "Block":
            raise TypeError(f"C2FMAEViT: {model_name} has {type(enc.blocks[0]).__name__} blocks; timm `Block` needed")
        # the cls / register tokens are dropped (ViTDet): no unused parameters under DDP
        enc.cls_token = None
        if getattr(enc, "reg_token", None) is not None:
            enc.reg_token = None
        self.num_prefix = 0 if enc.no_embed_class else enc.num_prefix_tokens
        self.pos_grid = tuple(enc.patch_embed.grid_size)

        depth = self.depth = len(enc.blocks)
        self.embed_dim = enc.embed_dim
        self.window_size = window_size
        if global_indices is None:
            global_indices = tuple(range(depth // 4 - 1, depth, max(depth // 4, 1))) if depth >= 4 else (depth - 1,)
        if out_indices is None:
            out_indices = (depth - 1,)
        elif isinstance(out_indices, int):
            out_indices = (out_indices,)
        for name, idx in (("global_indices", global_indices), ("out_indices", out_indices)):
            bad = [i for i in idx if not -depth <= i < depth]
            if bad:
                raise ValueError(f"C2FMAEViT: {name} {bad} out of range for {model_name} with {depth} blocks")
        self.global_indices = tuple(int(i) % depth for i in global_indices)  # -1 = the last block
        self.out_indices = tuple(int(i) % depth for i in out_indices)
        self.final_norm = final_norm
        self.with_cp = with_cp
        if not -1 <= frozen_stages <= depth:
            raise ValueError(f"C2FMAEViT: frozen_stages={frozen_stages} not in [-1, {depth}]")
        self.frozen_stages = frozen_stages
        self._freeze_stages()

    # ---- weights ------------------------------------------------------------------------------------------
    def init_weights(self) -> None:
        """Load `pretrained` (strict about encoder keys); random init is timm's, done at construction."""
        if self.pretrained is not None:
            self.load_pretrained(self.pretrained)
        self._is_init = True

    def load_pretrained(self, src: str | dict) -> None:
        """Load encoder weights; every missing, unexpected or mis-shaped key is an error naming it."""
        name = src if isinstance(src, str) else "<state dict>"
        sd = read_encoder_weights(src) if isinstance(src, str) else encoder_state_dict(src)
        sd, ignored = self.match_encoder_weights(sd, name)
        self.encoder.load_state_dict(sd, strict=True)
        print_log(f"C2FMAEViT: loaded {len(sd)} encoder tensors from {name}"
                  + (f"; not used by the backbone: {ignored}" if ignored else ""), logger="current")

    def match_encoder_weights(self, sd: dict[str, torch.Tensor], name: str) -> tuple[dict, list[str]]:
        """Checkpoint encoder weights (timm keys) -> exactly this encoder's state dict, pos / patch embed
        resampled to its grid, plus the names of the dropped unused weights (cls token, final norm, head).
        Any other difference raises a KeyError naming the missing / unexpected / mis-shaped keys."""
        own = self.encoder.state_dict()
        ignored = sorted(k for k in sd if k not in own and k.startswith(_UNUSED_ENCODER_KEYS))
        missing = sorted(k for k in own if k not in sd)
        unexpected = sorted(k for k in sd if k not in own and k not in ignored)
        mismatched = []
        if not missing and not unexpected:
            try:
                sd = checkpoint_filter_fn(sd, self.encoder)  # resamples pos embed / patch embed to this model
            except (KeyError, ValueError) as e:
                raise type(e)(f"C2FMAEViT: {name}: {e}") from e
            mismatched = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
                          for k, v in own.items() if sd[k].shape != v.shape]
        if missing or unexpected or mismatched:
            raise KeyError(
                f"C2FMAEViT: {name} does not match {type(self.encoder).__name__} "
                f"(depth {self.depth}, dim {self.embed_dim}): missing keys {missing}, unexpected keys {unexpected}, "
                f"shape mismatches {mismatched}")
        return {k: sd[k] for k in own}, ignored

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        # Every load into the model (mmengine's non-strict `load_checkpoint` behind init_detector / init_model /
        # `load_from` / resume, or torch's `load_state_dict`) goes through here: a state dict that carries
        # encoder weights must match the encoder exactly (pos embed resampled), else a KeyError names the keys.
        enc = prefix + "encoder."
        given = {k[len(enc):]: v for k, v in state_dict.items() if k.startswith(enc)}
        if given:
            sd, _ = self.match_encoder_weights(given, f"state dict '{enc}*'")
            for k in given:
                del state_dict[enc + k]
            state_dict.update({enc + k: v for k, v in sd.items()})
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    # ---- training state -----------------------------------------------------------------------------------
    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        enc = self.encoder
        frozen = [enc.patch_embed, *enc.blocks[: self.frozen_stages]]
        enc.pos_embed.requires_grad_(False)
        for m in frozen:
            m.eval()
            m.requires_grad_(False)

    def train(self, mode: bool = True) -> C2FMAEViT:
        super().train(mode)
        self._freeze_stages()
        return self

    # ---- forward ------------------------------------------------------------------------------------------
    def _pos_embed(self, H: int, W: int) -> torch.Tensor:
        pos = self.encoder.pos_embed
        if (H, W) != self.pos_grid:
            pos = resample_abs_pos_embed(pos, new_size=(H, W), old_size=self.pos_grid,
                                         num_prefix_tokens=self.num_prefix, antialias=False)
        return pos[:, self.num_prefix:].reshape(1, H, W, -1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, 3, H, W) -> tuple of (B, C, H/p, W/p) maps, one per `out_indices` entry."""
        enc = self.encoder
        x = enc.patch_embed(x)  # B, h, w, C
        x = enc.pos_drop(x + self._pos_embed(x.shape[1], x.shape[2]))
        x = enc.norm_pre(x)
        outs = []
        for i, blk in enumerate(enc.blocks):
            window = 0 if i in self.global_indices else self.window_size
            if self.with_cp and self.training and x.requires_grad:
                x = torch.utils.checkpoint.checkpoint(block_forward, blk, x, window, use_reentrant=False)
            else:
                x = block_forward(blk, x, window)
            if i in self.out_indices:
                y = enc.norm(x) if self.final_norm and i == self.depth - 1 else x
                outs.append(y.permute(0, 3, 1, 2).contiguous())
        return tuple(outs)

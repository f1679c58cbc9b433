""" SimpleFPN (ViTDet): a feature pyramid from one plain-ViT map

Li et al., "Exploring Plain Vision Transformer Backbones for Object Detection" (2022); the arguments
follow MMDetection's `projects/ViTDet` port so its configs carry over: one stride-16 map is turned into
strides 4 / 8 / 16 / 32 by deconvolutions / identity / max-pool, then 1x1 lateral and 3x3 output convs,
plus `num_outs - 4` extra levels by stride-2 subsampling.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_norm_layer
from mmengine.model import BaseModule
from mmengine.registry import MODELS

__all__ = ["LN2d", "SimpleFPN"]


class LN2d(nn.Module):
    """LayerNorm over the channels of an NCHW map (ViTDet's `LN2d`)."""

    def __init__(self, normalized_shape: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))
        self.eps = eps
        self.normalized_shape = (normalized_shape,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


if "LN2d" not in MODELS.module_dict:  # mmdet's ViTDet project registers the same layer in mmdet's registry
    MODELS.register_module(name="LN2d", module=LN2d)


@MODELS.register_module()
class SimpleFPN(BaseModule):
    """ViTDet simple feature pyramid.

    Args:
        backbone_channel: channels of the backbone map (the ViT width, e.g. 768).
        in_channels: channels of the 4 pyramid inputs, must be
            `[backbone_channel // 4, backbone_channel // 2, backbone_channel, backbone_channel]`.
        out_channels: channels of every output level.
        num_outs: number of outputs (>= 4; levels beyond 4 are stride-2 subsamples of the last).
        conv_cfg, norm_cfg, act_cfg: for the lateral / output `ConvModule`s; `norm_cfg` also normalises
            the first deconvolution (ViTDet: `dict(type='LN2d', requires_grad=True)`).
    """

    def __init__(
            self,
            backbone_channel: int,
            in_channels: Sequence[int],
            out_channels: int,
            num_outs: int,
            conv_cfg: dict | None = None,
            norm_cfg: dict | None = None,
            act_cfg: dict | None = None,
            init_cfg: dict | list | None = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        c = backbone_channel
        expected = [c // 4, c // 2, c, c]
        if list(in_channels) != expected:
            raise ValueError(f"SimpleFPN: in_channels {list(in_channels)} must be {expected} for backbone_channel={c}")
        if num_outs < len(expected):
            raise ValueError(f"SimpleFPN: num_outs={num_outs} < {len(expected)} pyramid levels")
        self.backbone_channel, self.in_channels = c, list(in_channels)
        self.out_channels, self.num_ins, self.num_outs = out_channels, len(expected), num_outs
        norm = build_norm_layer(norm_cfg, c // 2)[1] if norm_cfg is not None else nn.Identity()
        self.fpn1 = nn.Sequential(
            nn.ConvTranspose2d(c, c // 2, 2, 2), norm, nn.GELU(), nn.ConvTranspose2d(c // 2, c // 4, 2, 2))  # x4
        self.fpn2 = nn.Sequential(nn.ConvTranspose2d(c, c // 2, 2, 2))  # x2
        self.fpn3 = nn.Sequential(nn.Identity())  # x1
        self.fpn4 = nn.Sequential(nn.MaxPool2d(kernel_size=2, stride=2))  # x1/2
        self.lateral_convs = nn.ModuleList(
            ConvModule(ci, out_channels, 1, conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg, inplace=False)
            for ci in self.in_channels)
        self.fpn_convs = nn.ModuleList(
            ConvModule(out_channels, out_channels, 3, padding=1, conv_cfg=conv_cfg, norm_cfg=norm_cfg,
                       act_cfg=act_cfg, inplace=False)
            for _ in self.in_channels)

    def forward(self, inputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """One (B, C, H, W) map (or a backbone tuple: its last map) -> `num_outs` maps, strides x4 ... """
        x = inputs if isinstance(inputs, torch.Tensor) else inputs[-1]
        if x.shape[1] != self.backbone_channel:
            raise ValueError(f"SimpleFPN: input has {x.shape[1]} channels, backbone_channel={self.backbone_channel}")
        feats = [self.fpn1(x), self.fpn2(x), self.fpn3(x), self.fpn4(x)]
        outs = [conv(lat(f)) for f, lat, conv in zip(feats, self.lateral_convs, self.fpn_convs, strict=True)]
        for _ in range(self.num_outs - self.num_ins):
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return tuple(outs)

"""Frozen-feature segmentation probe: a linear 1x1 head on patch features, scored by mIoU.

The head sees standardised patch features `(N, D, h, w)` (last block, final norm, prefix tokens
dropped); its logits are bilinearly upsampled to the mask resolution and trained with cross-entropy
(`ignore_index=255`), the linear-probe protocol of DINOv2 / iBOT without multi-layer concatenation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SegProbe", "confusion_matrix", "miou", "train_seg_probe", "evaluate_seg_probe", "seg_probe"]

IGNORE_INDEX = 255


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """`cm[t, p]` = number of pixels of true class t predicted as p (ignored pixels left out)."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and mask {tuple(target.shape)} differ in shape")
    valid = target != ignore_index
    t, p = target[valid].long(), pred[valid].long()
    if len(t) and (t.min() < 0 or t.max() >= num_classes):
        raise ValueError(f"mask ids must be in [0, {num_classes}) or {ignore_index}, got [{t.min()}, {t.max()}]")
    return torch.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def miou(cm: torch.Tensor) -> tuple[float, list[float]]:
    """Mean IoU over classes that occur (in masks or predictions), and per-class IoU (nan = absent)."""
    cm = cm.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    iou = tp / union  # nan where union == 0
    present = union > 0
    mean = iou[present].mean().item() if present.any() else float("nan")
    return mean, iou.tolist()


class SegProbe(nn.Module):
    """Standardise the frozen patch features (train statistics) and apply a 1x1 conv."""

    def __init__(self, dim: int, num_classes: int, mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim) if mean is None else mean.clone())
        self.register_buffer("std", torch.ones(dim) if std is None else std.clone())
        self.head = nn.Conv2d(dim, num_classes, 1)
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = (x - self.mean[:, None, None]) / self.std[:, None, None]  # [B, D, h, w]
        return F.interpolate(self.head(x), size=size, mode="bilinear", align_corners=False)  # [B, C, Hm, Wm]


def _check(feats: torch.Tensor, masks: torch.Tensor) -> None:
    if feats.ndim != 4 or masks.ndim != 3 or len(feats) != len(masks):
        raise ValueError(
            f"expected features (N, D, h, w) and masks (N, H, W), got {tuple(feats.shape)} and {tuple(masks.shape)}"
        )


def train_seg_probe(
    feats: torch.Tensor,
    masks: torch.Tensor,
    num_classes: int,
    epochs: int = 30,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 64,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> SegProbe:
    """Train a `SegProbe` on frozen features `(N, D, h, w)` against semantic masks `(N, H, W)`."""
    _check(feats, masks)
    if epochs < 1:
        raise ValueError(f"segmentation probe epochs must be >= 1, got {epochs}")
    valid = masks[masks != IGNORE_INDEX]
    if valid.numel() == 0:
        raise ValueError("every mask pixel is 255 (ignore): nothing to train the segmentation probe on")
    if valid.min() < 0 or valid.max() >= num_classes:
        raise ValueError(f"mask ids must be in [0, {num_classes}) or 255, got [{valid.min()}, {valid.max()}]")
    device = torch.device(device)
    torch.manual_seed(seed)
    mean = feats.mean((0, 2, 3))
    std = feats.transpose(0, 1).reshape(feats.shape[1], -1).std(1).clamp_min(1e-6)
    probe = SegProbe(feats.shape[1], num_classes, mean, std).to(device)
    opt = torch.optim.AdamW(probe.head.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * math.ceil(len(feats) / batch_size))
    g = torch.Generator().manual_seed(seed)
    size = tuple(masks.shape[-2:])
    for _ in range(epochs):
        perm = torch.randperm(len(feats), generator=g)
        for i in range(0, len(feats), batch_size):
            j = perm[i : i + batch_size]
            logits = probe(feats[j].to(device), size)
            loss = F.cross_entropy(logits, masks[j].to(device), ignore_index=IGNORE_INDEX)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return probe.eval()


@torch.no_grad()
def evaluate_seg_probe(
    probe: SegProbe,
    feats: torch.Tensor,
    masks: torch.Tensor,
    batch_size: int = 64,
    class_names: list[str] | None = None,
) -> dict:
    """`{"miou", "pixel_acc", "iou": per-class}` of a trained probe on held-out features / masks."""
    _check(feats, masks)
    device = probe.head.weight.device
    num_classes = probe.head.out_channels
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for i in range(0, len(feats), batch_size):
        pred = probe(feats[i : i + batch_size].to(device), tuple(masks.shape[-2:])).argmax(1).cpu()
        cm += confusion_matrix(pred, masks[i : i + batch_size], num_classes)
    mean, iou = miou(cm)
    names = class_names or [str(c) for c in range(num_classes)]
    return {
        "miou": mean,
        "pixel_acc": (cm.diag().sum() / cm.sum().clamp_min(1)).item(),
        "iou": {names[c]: v for c, v in enumerate(iou) if v == v},  # present classes only
    }


def seg_probe(
    train_feats: torch.Tensor,
    train_masks: torch.Tensor,
    test_feats: torch.Tensor,
    test_masks: torch.Tensor,
    num_classes: int,
    class_names: list[str] | None = None,
    **kwargs,
) -> dict:
    """Train on (train_feats, train_masks), report mIoU on (test_feats, test_masks)."""
    probe = train_seg_probe(train_feats, train_masks, num_classes, **kwargs)
    return evaluate_seg_probe(probe, test_feats, test_masks, class_names=class_names)

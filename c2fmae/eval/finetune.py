"""Short classification fine-tuning with layer-wise lr decay (MAE `main_finetune.py`, timm param groups).

`layer_decay_param_groups` is timm's `param_groups_layer_decay`: group `i` of `L` (stem = 0, block n =
n + 1, head = L - 1) trains at `lr * layer_decay ** (L - 1 - i)`; 1-D params and `no_weight_decay()`
names get no weight decay. The loop sets every group's lr per step: linear warmup, then half-cycle
cosine to `min_lr`, times the group's `lr_scale` (MAE `lr_sched.adjust_learning_rate`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .features import _autocast, unpack_batch

__all__ = ["layer_decay_param_groups", "lr_at", "finetune", "evaluate_classifier"]


def layer_decay_param_groups(model: nn.Module, weight_decay: float = 0.05, layer_decay: float = 0.75) -> list[dict]:
    """timm's `param_groups_layer_decay` (uses the model's `group_matcher`); each group has `lr_scale`."""
    from timm.optim import param_groups_layer_decay

    if not 0 < layer_decay <= 1:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    no_wd = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    return param_groups_layer_decay(
        model, weight_decay=weight_decay, no_weight_decay_list=no_wd, layer_decay=layer_decay
    )


def lr_at(step: int, total: int, lr: float, warmup: int = 0, min_lr: float = 0.0) -> float:
    """Linear warmup to `lr` over `warmup` steps, then half-cycle cosine to `min_lr` at `total`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


@torch.no_grad()
def evaluate_classifier(
    model: nn.Module, loader: Iterable, device: str | torch.device = "cpu", amp: bool = True
) -> dict[str, float]:
    """Top-1 accuracy and mean cross-entropy of `model` on `loader`."""
    device = torch.device(device)
    model.eval()
    correct = total = 0
    loss_sum = 0.0
    for batch in loader:
        x, y = unpack_batch(batch, "label")
        x, y = x.to(device), torch.as_tensor(y).long().to(device)
        with _autocast(device, amp):
            logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        total += len(y)
    if total == 0:
        raise ValueError("validation set is empty")
    return {"top1": correct / total, "loss": loss_sum / total}


def finetune(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable | None = None,
    epochs: int = 10,
    lr: float = 1e-3,
    min_lr: float = 1e-6,
    weight_decay: float = 0.05,
    layer_decay: float = 0.75,
    warmup_epochs: float = 1.0,
    label_smoothing: float = 0.1,
    clip_grad: float | None = None,
    device: str | torch.device = "cpu",
    amp: bool = True,
) -> dict:
    """Fine-tune a timm classifier (`num_classes` > 0) with AdamW + layer decay.

    Returns `{"losses": per-step train loss, "lr_scales": per-group scales, "val": per-epoch metrics}`.
    """
    from tqdm.auto import tqdm

    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if getattr(model, "num_classes", 1) == 0:
        raise ValueError("model has no classifier (num_classes=0); build it with num_classes=<classes>")
    device = torch.device(device)
    model.to(device)
    groups = layer_decay_param_groups(model, weight_decay, layer_decay)
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
    steps_per_epoch = len(train_loader)
    total, warmup = epochs * steps_per_epoch, int(warmup_epochs * steps_per_epoch)
    history: dict = {"losses": [], "lr_scales": [g["lr_scale"] for g in groups], "val": []}
    step = 0
    bar = tqdm(total=total, desc="finetune")
    for epoch in range(epochs):
        model.train()
        for batch in train_loader:
            x, y = unpack_batch(batch, "label")
            if y is None:
                raise KeyError("the training set yields no image-level 'label'")
            x, y = x.to(device), torch.as_tensor(y).long().to(device)
            lr_t = lr_at(step, total, lr, warmup, min_lr)
            for g in opt.param_groups:
                g["lr"] = lr_t * g["lr_scale"]
            with _autocast(device, amp):
                loss = F.cross_entropy(model(x).float(), y, label_smoothing=label_smoothing)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()} at step {step} (epoch {epoch})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip_grad:
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            opt.step()
            history["losses"].append(loss.item())
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr_t:.2e}")
        if val_loader is not None:
            history["val"].append(dict(epoch=epoch, **evaluate_classifier(model, val_loader, device, amp)))
    bar.close()
    return history

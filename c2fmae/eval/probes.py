"""Classification probes on frozen features: weighted k-NN (DINO) and a linear probe (MAE linprobe).

Both take precomputed features `(N, D)` and labels `(N,)` (see `c2fmae.eval.features.extract_features`),
so the encoder runs once and the probes are cheap.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["knn_classify", "linear_probe", "accuracy"]


def accuracy(logits: torch.Tensor, target: torch.Tensor, topk: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Top-k accuracies in [0, 1] for the k that do not exceed the number of classes."""
    out = {}
    for k in topk:
        if k > logits.shape[1]:
            continue
        hit = (logits.topk(k, dim=1).indices == target[:, None]).any(dim=1)
        out[f"top{k}"] = hit.float().mean().item()
    return out


def _check(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor) -> None:
    if train_f.ndim != 2 or test_f.ndim != 2 or train_f.shape[1] != test_f.shape[1]:
        raise ValueError(
            f"features must be (N, D) with equal D: train {tuple(train_f.shape)}, test {tuple(test_f.shape)}"
        )
    if len(train_f) != len(train_y) or len(test_f) != len(test_y):
        raise ValueError(
            f"features and labels differ in length: train {len(train_f)}/{len(train_y)}, "
            f"test {len(test_f)}/{len(test_y)}"
        )
    if len(train_f) == 0 or len(test_f) == 0:
        raise ValueError("empty train or test set")


@torch.no_grad()
def knn_classify(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    test_f: torch.Tensor,
    test_y: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk: int = 1024,
) -> dict[str, float]:
    """Cosine k-NN with votes weighted by `exp(sim / T)`, as DINO's `knn_classifier` (k=20, T=0.07).

    Returns `{"top1", "top5"?}` in [0, 1] (top5 when there are at least 5 classes).
    """
    _check(train_f, train_y, test_f, test_y)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    num_classes = num_classes or int(max(train_y.max(), test_y.max())) + 1
    k = min(k, len(train_f))
    train_f = F.normalize(train_f.float(), dim=1)
    test_f = F.normalize(test_f.float(), dim=1)
    votes = []
    for i in range(0, len(test_f), chunk):
        sim = test_f[i : i + chunk] @ train_f.T  # [b, N_train]
        dist, idx = sim.topk(k, dim=1)  # [b, k]
        weight = (dist / temperature).exp()
        onehot = F.one_hot(train_y[idx], num_classes).float()  # [b, k, C]
        votes.append((onehot * weight[..., None]).sum(1))  # [b, C]
    return accuracy(torch.cat(votes), test_y)


def linear_probe(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    test_f: torch.Tensor,
    test_y: torch.Tensor,
    epochs: int = 100,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 256,
    num_classes: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Linear classifier on standardised frozen features (MAE linprobe: BatchNorm without affine + Linear).

    AdamW with a cosine schedule; features are standardised with the train set's mean / std.
    Returns `{"top1", "top5"?, "train_top1"}` in [0, 1].
    """
    _check(train_f, train_y, test_f, test_y)
    if epochs < 1:
        raise ValueError(f"linear probe epochs must be >= 1, got {epochs}")
    num_classes = num_classes or int(max(train_y.max(), test_y.max())) + 1
    device = torch.device(device)
    mean, std = train_f.mean(0), train_f.std(0).clamp_min(1e-6)
    xtr, xte = ((train_f - mean) / std).to(device), ((test_f - mean) / std).to(device)
    ytr = train_y.to(device)
    g = torch.Generator().manual_seed(seed)
    head = nn.Linear(xtr.shape[1], num_classes).to(device)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) * 0.01)
        head.bias.zero_()
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(xtr) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    for _ in range(epochs):
        perm = torch.randperm(len(xtr), generator=g).to(device)
        for i in range(0, len(xtr), batch_size):
            j = perm[i : i + batch_size]
            loss = F.cross_entropy(head(xtr[j]), ytr[j])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        out = accuracy(head(xte).cpu(), test_y)
        out["train_top1"] = accuracy(head(xtr).cpu(), train_y, (1,))["top1"]
    return out

""" C2FMAE losses, computed on the positions a target's modality hid from the encoder

- rgb: MAE's per-patch normalised pixel MSE (`norm_pix_loss`);
- sem: cross-entropy against the stride-4 class map, `ignore_index` pixels excluded;
- ins: discriminative embedding loss (De Brabandere et al. 2017, arXiv 1708.02551): pull each pixel
  embedding to its instance mean (margin delta_v), push instance means apart (margin 2 * delta_d),
  plus a small norm term. It depends on the grouping only, so it is invariant to permuted ids;
  background (id 0) is excluded.

Shapes: B batch, N patches, Q = (p/4)^2 label pixels per patch, C classes, E embedding dim.
`mask`: [B, N], 1 = hidden from the encoder (loss computed), 0 = visible.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["patchify", "unpatchify", "norm_pix_target", "norm_pix_mse", "semantic_ce", "discriminative_loss"]


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """ x: [B, C, H, W] -> [B, N, p*p*C] (MAE order 'nchpwq->nhwpqc'); [B, H, W] -> [B, N, p*p]. """
    squeeze = x.ndim == 3
    if squeeze:
        x = x[:, None]
    B, C, H, W = x.shape
    h, w = H // p, W // p
    x = x.reshape(B, C, h, p, w, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    x = x.reshape(B, h * w, p * p * C)
    return x


def unpatchify(x: torch.Tensor, p: int, grid: tuple[int, int], channels: int) -> torch.Tensor:
    """ x: [B, N, p*p*C] -> [B, C, h*p, w*p] (inverse of `patchify`). """
    B = x.shape[0]
    h, w = grid
    x = x.reshape(B, h, w, p, p, channels)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(B, channels, h * p, w * p)


def norm_pix_target(target: torch.Tensor, norm_pix: bool = True) -> torch.Tensor:
    """ MAE target: per-patch (mean, var) normalised pixels. target: [B, N, p*p*3]. """
    if not norm_pix:
        return target
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    return (target - mean) / (var + 1.0e-6) ** 0.5


def norm_pix_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """ pred, target: [B, N, p*p*3] (target already normalised); mask: [B, N] -> mean MSE on hidden patches. """
    loss = (pred.float() - target.float()) ** 2
    loss = loss.mean(dim=-1)  # [B, N], mean loss per patch
    return (loss * mask).sum() / mask.sum().clamp(min=1)


def semantic_ce(
        logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, ignore_index: int = 255,
) -> torch.Tensor:
    """ logits: [B, N, Q, C]; target: [B, N, Q] class ids; mask: [B, N] -> mean CE over hidden labelled pixels. """
    C = logits.shape[-1]
    target = torch.where(mask[..., None] > 0, target.long(), torch.full_like(target.long(), ignore_index))
    loss = F.cross_entropy(
        logits.float().reshape(-1, C), target.reshape(-1), ignore_index=ignore_index, reduction="sum")
    return loss / (target != ignore_index).sum().clamp(min=1)


def _safe_norm(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).sum(-1).clamp(min=1e-12).sqrt()  # finite gradient at 0


def discriminative_loss(
        emb: torch.Tensor,
        ids: torch.Tensor,
        mask: torch.Tensor,
        num_ids: int,
        delta_var: float = 0.5,
        delta_dist: float = 1.5,
        reg_weight: float = 0.001,
) -> torch.Tensor:
    """ Permutation-invariant instance embedding loss on hidden, non-background pixels.

    emb: [B, N, Q, E]; ids: [B, N, Q] instance ids in [0, num_ids), 0 = background; mask: [B, N].
    Terms are averaged over all (image, instance) pairs of the batch (pull, norm) and over all
    ordered pairs of distinct instances of the same image (push).
    """
    B, N, Q, E = emb.shape
    valid = (mask[..., None] > 0) & (ids > 0)  # [B, N, Q]
    seg = ids.long() + num_ids * torch.arange(B, device=ids.device)[:, None, None]  # one segment per (b, id)
    seg, x = seg[valid], emb[valid].float()  # [P], [P, E]
    S = B * num_ids
    cnt = torch.zeros(S, device=emb.device).index_add_(0, seg, torch.ones_like(seg, dtype=torch.float))
    mu = torch.zeros(S, E, device=emb.device).index_add_(0, seg, x) / cnt.clamp(min=1)[:, None]  # [S, E]
    present = (cnt > 0).float()
    n_inst = present.sum().clamp(min=1)
    # pull: hinge on the distance of each pixel to its instance mean
    pull = (_safe_norm(x - mu[seg]) - delta_var).clamp(min=0) ** 2  # [P]
    l_var = (torch.zeros(S, device=emb.device).index_add_(0, seg, pull) / cnt.clamp(min=1)).sum() / n_inst
    # push: hinge on the distance between the means of two instances of the same image
    mu_b, pres_b = mu.view(B, num_ids, E), present.view(B, num_ids)
    dist = _safe_norm(mu_b[:, :, None] - mu_b[:, None, :])  # [B, K, K]
    pair = pres_b[:, :, None] * pres_b[:, None, :] * (1 - torch.eye(num_ids, device=emb.device))
    l_dist = ((2 * delta_dist - dist).clamp(min=0) ** 2 * pair).sum() / pair.sum().clamp(min=1)
    l_reg = (_safe_norm(mu) * present).sum() / n_inst
    return l_var + l_dist + reg_weight * l_reg

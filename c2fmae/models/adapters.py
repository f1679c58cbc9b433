""" C2FMAE input adapters and position embeddings

- rgb: the timm encoder's own `patch_embed` (so the exported encoder is exactly the pretrained one);
- sem: class map at stride 4 -> `Embedding(C + 1, 64)` (index C = ignore) -> conv (p/4, stride p/4) -> D;
- ins: instance map at stride 4, ids randomly relabelled per image into 1..K (0 = no instance)
  -> `Embedding(K + 1, 64)` -> conv -> D. The model learns grouping, not identities.
All adapters share the 2D sin-cos position embedding (MAE `util/pos_embed.py`), added by the model.
"""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["sincos_pos_embed_2d", "IdAdapter", "relabel_instances"]


def _sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """ pos: [L] -> [L, dim] (half sin, half cos). """
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000 ** omega  # [dim/2]
    out = pos.double().reshape(-1)[:, None] * omega[None]  # [L, dim/2]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_pos_embed_2d(dim: int, grid_size: tuple[int, int], cls_token: bool = False) -> torch.Tensor:
    """ MAE's `get_2d_sincos_pos_embed`: [h*w, dim] (or [1 + h*w, dim] with a zero cls row), float32.

    Half of the channels encode the column (MAE's meshgrid puts w first), half the row.
    """
    if dim % 4:
        raise ValueError(f"2D sin-cos position embedding needs a dim divisible by 4, got {dim}")
    h, w = grid_size
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    emb = torch.cat([_sincos_1d(dim // 2, cols), _sincos_1d(dim // 2, rows)], dim=1)  # [h*w, dim]
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=emb.dtype), emb], dim=0)
    return emb.float()


class IdAdapter(nn.Module):
    """ Id map (class or instance ids at stride 4) -> patch tokens.

    ids: [B, h*s, w*s] in [0, num_ids) with s = patch_size / 4 -> [B, h*w, embed_dim]
    """

    def __init__(self, num_ids: int, stride: int, embed_dim: int, id_dim: int = 64):
        super().__init__()
        self.num_ids = num_ids
        self.embed = nn.Embedding(num_ids, id_dim)
        self.proj = nn.Conv2d(id_dim, embed_dim, kernel_size=stride, stride=stride)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids.long())  # [B, H', W', id_dim]
        x = self.proj(x.permute(0, 3, 1, 2))  # [B, D, h, w]
        return x.flatten(2).transpose(1, 2)  # [B, N, D]


def relabel_instances(ids: torch.Tensor, max_instances: int, name: str = "batch['instance']") -> torch.Tensor:
    """ Map each image's instance ids (arbitrary, >= 1; 0 = none) to a random subset of 1..K.

    ids: [B, ...] integer -> same shape, values in [0, K]. Vectorised over the batch: one
    `torch.unique` over (image, id) keys, then a random permutation of 1..K per image.
    Raises ValueError when an id is negative or an image has more than K instances.
    """
    B = ids.shape[0]
    flat = ids.reshape(B, -1).long()
    lo, hi = int(flat.min()), int(flat.max())
    if lo < 0:
        raise ValueError(f"{name} has negative instance id {lo}; ids must be >= 0 (0 = no instance)")
    span = hi + 1
    key = flat + span * torch.arange(B, device=flat.device)[:, None]  # unique per (image, id)
    uniq, inv = torch.unique(key, return_inverse=True)  # sorted by image, then id
    img, local = uniq // span, uniq % span
    is_fg = (local > 0).long()
    count = torch.zeros(B, dtype=torch.long, device=flat.device).index_add_(0, img, is_fg)  # [B] instances
    if B and int(count.max()) > max_instances:
        b = int(count.argmax())
        raise ValueError(
            f"{name}: image {b} of the batch has {int(count[b])} instances, more than "
            f"max_instances={max_instances} (C2FMAEConfig.max_instances)")
    first = count.cumsum(0) - count  # [B] index of each image's first instance among all foreground ids
    j = (is_fg.cumsum(0) - 1 - first[img]).clamp(min=0)  # rank of the id inside its image
    perm = torch.rand(B, max_instances, device=flat.device).argsort(-1) + 1  # [B, K] random 1..K
    new = torch.where(is_fg.bool(), perm[img, j], torch.zeros_like(uniq))
    return new[inv].reshape(ids.shape)

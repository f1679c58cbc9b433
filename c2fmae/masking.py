""" C2FMAE masking: random (MAE), semantic-guided and instance-guided, Dirichlet visible budgets

Every strategy is one score per position and one argsort, as in MAE's `random_masking`:
- random:          score = noise                          (noise ~ U[0, 1) per position)
- semantic-guided: score = rank[region_sem(p)] + noise    (rank: random permutation of the classes)
- instance-guided: score = rank[region_ins(p)] + noise    (patches outside instances: own region)
The lowest scores of a modality are visible, so guided masks show or hide whole regions, except for
at most one partially visible region. A sample's total visible budget is split over the input
modalities with a Dirichlet draw (MultiMAE). Nothing loops over samples.

Shapes: B batch, M input modalities, N = h * w patch positions, R region vocabulary.
Masks follow MAE: 0 = keep (visible), 1 = remove (hidden).
"""
from __future__ import annotations

import torch

__all__ = [
    "SEMANTIC", "INSTANCE", "RANDOM", "STRATEGIES", "patch_majority", "guided_regions", "guided_scores",
    "dirichlet_budgets", "split_budget", "make_masks",
]

# per-sample strategy codes (also the column order of curriculum probabilities)
SEMANTIC, INSTANCE, RANDOM = 0, 1, 2
STRATEGIES = ("sem", "ins", "random")


def patch_majority(ids: torch.Tensor, patch: int, num_ids: int) -> torch.Tensor:
    """ Majority id of each patch (ties -> smallest id).

    ids: [B, h*patch, w*patch] integer map in [0, num_ids)  ->  [B, h*w]
    """
    B, H, W = ids.shape
    h, w = H // patch, W // patch
    x = ids.reshape(B, h, patch, w, patch).permute(0, 1, 3, 2, 4).reshape(B, h * w, patch * patch)
    counts = torch.zeros(B, h * w, num_ids, device=ids.device)  # [B, N, num_ids]
    counts.scatter_add_(2, x.long(), torch.ones_like(x, dtype=counts.dtype))
    return counts.argmax(-1)  # first maximum = smallest id


def guided_regions(
        strategy: torch.Tensor,
        sem_region: torch.Tensor | None,
        ins_region: torch.Tensor | None,
        num_sem_ids: int,
        num_ins_ids: int,
) -> tuple[torch.Tensor, int]:
    """ Region id of every patch under each sample's strategy.

    strategy: [B] codes; sem_region: [B, N] in [0, num_sem_ids); ins_region: [B, N] in [0, num_ins_ids)
    with 0 = no instance. Patches outside any instance become singleton regions (num_ins_ids + p).
    Returns (region [B, N], vocabulary size R). Random-strategy samples get region 0 (unused).
    """
    ref = sem_region if sem_region is not None else ins_region
    if ref is None:
        raise ValueError("guided masking needs a semantic or an instance region map")
    B, N = ref.shape
    region = torch.zeros(B, N, dtype=torch.long, device=ref.device)
    vocab = 1
    if sem_region is not None:
        region = torch.where((strategy == SEMANTIC)[:, None], sem_region.long(), region)
        vocab = max(vocab, num_sem_ids)
    if ins_region is not None:
        own = num_ins_ids + torch.arange(N, device=ref.device)  # [N] one region per background patch
        ins = torch.where(ins_region > 0, ins_region.long(), own[None])
        region = torch.where((strategy == INSTANCE)[:, None], ins, region)
        vocab = max(vocab, num_ins_ids + N)
    return region, vocab


def guided_scores(
        noise: torch.Tensor,
        strategy: torch.Tensor,
        region: torch.Tensor | None = None,
        rank_noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """ Masking scores: noise (random) or rank[region] + noise (guided). Lowest scores are visible.

    noise: [B, M, N] in [0, 1); strategy: [B]; region: [B, N] ids in [0, R); rank_noise: [B, R]
    (the region order; drawn when None). The region order is shared by all modalities of a sample.
    Returns score [B, M, N].
    """
    if region is None:
        if bool((strategy != RANDOM).any()):
            raise ValueError("guided strategies drawn but no region map given")
        return noise
    B, N = region.shape
    R = int(region.max()) + 1 if rank_noise is None else rank_noise.shape[1]
    if rank_noise is None:
        rank_noise = torch.rand(B, R, device=noise.device)
    rank = rank_noise.argsort(-1).argsort(-1).to(noise.dtype)  # [B, R] a random permutation of 0..R-1
    rank = rank.gather(1, region) * (strategy != RANDOM).to(noise.dtype)[:, None]  # [B, N]
    return rank[:, None, :] + noise


def split_budget(shares: torch.Tensor, total: int) -> torch.Tensor:
    """ Integer split of `total` by shares (largest remainder): [B, M] floats summing to 1 -> [B, M] long. """
    x = shares * total
    k = x.floor().long()
    rem = total - k.sum(-1, keepdim=True)  # [B, 1] in [0, M)
    order = (x - k).argsort(-1, descending=True).argsort(-1)  # rank of each fractional part
    return k + (order < rem).long()


def dirichlet_budgets(
        batch_size: int, num_inputs: int, num_visible: int, alpha: float = 1.0, device=None,
) -> torch.Tensor:
    """ Per-sample visible tokens of each input, Dirichlet(alpha) shares of `num_visible`: [B, M] long. """
    if num_inputs == 1:
        return torch.full((batch_size, 1), num_visible, dtype=torch.long, device=device)
    conc = torch.full((num_inputs,), float(alpha), device=device)
    shares = torch.distributions.Dirichlet(conc).sample((batch_size,))  # [B, M]
    return split_budget(shares, num_visible)


def make_masks(
        score: torch.Tensor, budgets: torch.Tensor, num_visible: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ Keep the `budgets[b, m]` lowest scores of every modality. `num_visible` (optional) is
    `budgets.sum(-1)`, the same for every sample; the caller passes it to spare a host sync.

    score: [B, M, N]; budgets: [B, M] with equal row sums V.
    Returns mask [B, M, N] (0 keep, 1 remove), ids_keep [B, V] and ids_restore [B, M*N] into the
    modality-major token list [B, M*N]. Visible tokens come modality by modality in score order, so
    with M = 1 `ids_keep` / `ids_restore` are exactly MAE's.
    """
    B, M, N = score.shape
    ids_shuffle = torch.argsort(score, dim=-1)  # ascend: small is keep
    rank = torch.argsort(ids_shuffle, dim=-1)  # [B, M, N] position of each patch in its modality's order
    mask = rank >= budgets[..., None]  # [B, M, N]
    # one global order: visible tokens (modality-major, score order) first, then the hidden ones
    key = mask.long() * (M * N) + torch.arange(M, device=score.device)[:, None] * N + rank
    ids_shuffle = torch.argsort(key.flatten(1), dim=1)  # [B, M*N]
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    V = int(budgets[0].sum()) if num_visible is None else num_visible  # the caller knows it: no host sync
    return mask.to(score.dtype), ids_shuffle[:, :V], ids_restore

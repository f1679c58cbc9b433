"""Masking: exact budgets, whole-region guided masks, MAE's random masking, determinism, relabelling."""
import numpy as np
import pytest
import torch

from c2fmae import masking
from c2fmae.models.adapters import relabel_instances


def _blob_regions(B, h, w, num, gen):
    """Random regions made of horizontal runs, ids in [0, num)."""
    region = torch.randint(0, num, (B, h, 1), generator=gen).expand(B, h, w).clone()
    region[:, :, w // 2:] = torch.randint(0, num, (B, h, 1), generator=gen)
    return region.reshape(B, h * w)


def test_split_budget_hand_value():
    shares = torch.tensor([[0.5, 0.3, 0.2], [0.0, 0.0, 1.0]])
    # 7 * shares = 3.5, 2.1, 1.4 -> floors 3, 2, 1; the leftover token goes to the largest fraction (0.5)
    assert masking.split_budget(shares, 7).tolist() == [[4, 2, 1], [0, 0, 7]]


@pytest.mark.parametrize("strategy", [masking.SEMANTIC, masking.INSTANCE, masking.RANDOM])
def test_masks_keep_exact_budget(strategy):
    gen = torch.Generator().manual_seed(0)
    B, M, N, V = 32, 3, 64, 32
    torch.manual_seed(0)
    budgets = masking.dirichlet_budgets(B, M, V, alpha=1.0)
    assert (budgets.sum(-1) == V).all() and (budgets >= 0).all()
    sem = _blob_regions(B, 8, 8, 5, gen)
    ins = _blob_regions(B, 8, 8, 4, gen)  # 0 = outside instances
    strat = torch.full((B,), strategy)
    region, R = masking.guided_regions(strat, sem, ins, 5, 4)
    score = masking.guided_scores(torch.rand(B, M, N, generator=gen), strat, region)
    mask, ids_keep, ids_restore = masking.make_masks(score, budgets)
    assert ((1 - mask).sum(-1) == budgets).all()  # exactly the budget of every modality and sample
    assert ids_keep.shape == (B, V)
    flat = mask.flatten(1)
    assert (flat.gather(1, ids_keep) == 0).all()  # ids_keep are exactly the visible tokens
    ids_shuffle = torch.argsort(ids_restore, 1)
    assert torch.equal(ids_shuffle[:, :V], ids_keep)


def test_random_masking_is_maes():
    """M = 1 random masking equals MAE's `random_masking` (noise -> argsort, keep the first L/4)."""
    B, N, keep = 4, 64, 16
    noise = torch.rand(B, 1, N)
    mask, ids_keep, ids_restore = masking.make_masks(noise, torch.full((B, 1), keep))
    ids_shuffle = torch.argsort(noise[:, 0], dim=1)
    ref_restore = torch.argsort(ids_shuffle, dim=1)
    ref_mask = torch.ones(B, N)
    ref_mask[:, :keep] = 0
    ref_mask = torch.gather(ref_mask, 1, ref_restore)
    assert torch.equal(ids_keep, ids_shuffle[:, :keep])
    assert torch.equal(ids_restore, ref_restore)
    assert torch.equal(mask[:, 0], ref_mask)


@pytest.mark.parametrize("strategy", [masking.SEMANTIC, masking.INSTANCE])
def test_guided_masks_hide_whole_regions(strategy):
    gen = torch.Generator().manual_seed(1)
    B, M, N = 64, 2, 64
    sem = _blob_regions(B, 8, 8, 6, gen)
    ins = _blob_regions(B, 8, 8, 5, gen)
    strat = torch.full((B,), strategy)
    region, _ = masking.guided_regions(strat, sem, ins, 6, 5)
    budgets = torch.randint(1, 40, (B, 1), generator=gen).expand(B, M).contiguous()
    mask, _, _ = masking.make_masks(masking.guided_scores(torch.rand(B, M, N, generator=gen), strat, region), budgets)
    src = sem if strategy == masking.SEMANTIC else ins
    partial_max = 0
    for b in range(B):
        for m in range(M):
            vis = mask[b, m] == 0
            partial = 0
            for r in src[b].unique().tolist():
                if strategy == masking.INSTANCE and r == 0:
                    continue  # background patches are singleton regions: always whole
                inside = src[b] == r
                n_vis = int(vis[inside].sum())
                partial += 0 < n_vis < int(inside.sum())
            assert partial <= 1, (b, m)
            partial_max = max(partial_max, partial)
    assert partial_max == 1  # the budget does cut one region somewhere (the property is not vacuous)


def test_instance_background_patches_get_own_rank():
    region, R = masking.guided_regions(torch.tensor([masking.INSTANCE]), None, torch.zeros(1, 16, dtype=torch.long),
                                       1, 3)
    assert region.tolist() == [list(range(3, 19))] and R == 3 + 16


def test_masks_deterministic_with_fixed_noise():
    gen = torch.Generator().manual_seed(2)
    B, M, N = 8, 3, 64
    sem = _blob_regions(B, 8, 8, 6, gen)
    strat = torch.tensor([0, 2] * 4)
    region, R = masking.guided_regions(strat, sem, None, 6, 0)
    noise, rank_noise = torch.rand(B, M, N, generator=gen), torch.rand(B, R, generator=gen)
    budgets = torch.full((B, M), 10)
    a = masking.make_masks(masking.guided_scores(noise, strat, region, rank_noise), budgets)
    torch.manual_seed(123)  # global RNG state must not matter
    b = masking.make_masks(masking.guided_scores(noise, strat, region, rank_noise), budgets)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    c = masking.make_masks(masking.guided_scores(torch.rand(B, M, N, generator=gen), strat, region, rank_noise),
                           budgets)
    assert not torch.equal(a[0], c[0])


def test_patch_majority_matches_bincount():
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 4, (3, 8, 12), generator=gen)
    got = masking.patch_majority(ids, 2, 4)
    ref = [[int(np.bincount(ids[b, i:i + 2, j:j + 2].reshape(-1).numpy(), minlength=4).argmax())
            for i in range(0, 8, 2) for j in range(0, 12, 2)] for b in range(3)]
    assert got.tolist() == ref


def test_relabel_instances_is_a_random_bijection():
    torch.manual_seed(0)
    ids = torch.tensor([[[0, 7, 7], [1000, 3, 0]], [[5, 5, 0], [0, 0, 9]]])
    new = relabel_instances(ids, max_instances=4)
    assert new.shape == ids.shape and int(new.max()) <= 4
    for b in range(2):
        pairs = set(zip(ids[b].reshape(-1).tolist(), new[b].reshape(-1).tolist(), strict=True))
        assert (0, 0) in pairs and all((o == 0) == (n == 0) for o, n in pairs)
        assert len({o for o, _ in pairs}) == len(pairs) == len({n for _, n in pairs})  # one-to-one
    draws = {tuple(relabel_instances(ids, 4)[0].reshape(-1).tolist()) for _ in range(20)}
    assert len(draws) > 1  # random per call


def test_relabel_instances_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"image 1 .* 3 instances.*max_instances=2"):
        relabel_instances(torch.tensor([[1, 1, 0], [1, 2, 3]]), max_instances=2)
    with pytest.raises(ValueError, match="negative instance id -1"):
        relabel_instances(torch.tensor([[1, -1]]), max_instances=2)

"""Losses: hand values, permutation invariance, ignore_index, MAE's patchify and norm-pix target."""
import pytest
import torch
import torch.nn.functional as F

from c2fmae import losses


def test_patchify_is_maes_and_inverts():
    x = torch.randn(2, 3, 16, 24)
    p = 8
    # MAE models_mae.patchify, written out
    ref = x.reshape(2, 3, 2, p, 3, p)
    ref = torch.einsum("nchpwq->nhwpqc", ref).reshape(2, 6, p * p * 3)
    assert torch.equal(losses.patchify(x, p), ref)
    assert torch.equal(losses.unpatchify(ref, p, (2, 3), 3), x)
    ids = torch.arange(4 * 6).reshape(1, 4, 6)
    assert losses.patchify(ids, 2)[0, 0].tolist() == [0, 1, 6, 7]  # row-major inside a patch


def test_norm_pix_mse_hand_formula():
    pred, target = torch.randn(2, 4, 12), torch.randn(2, 4, 12)
    mask = torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 1]])
    t = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    per_patch = ((pred - t) ** 2).mean(-1)
    expected = (per_patch[0, 0] + per_patch[0, 2] + per_patch[1, 3]) / 3
    got = losses.norm_pix_mse(pred, losses.norm_pix_target(target), mask)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_semantic_ce_ignores_255_and_visible_patches():
    torch.manual_seed(0)
    B, N, Q, C = 2, 5, 4, 7
    logits = torch.randn(B, N, Q, C)
    target = torch.randint(0, C, (B, N, Q))
    target[0, 0, :2] = 255
    mask = torch.tensor([[1.0, 1, 0, 1, 0], [0, 1, 1, 0, 0]])
    keep = (mask[..., None] > 0) & (target != 255)
    ref = F.cross_entropy(logits[keep], target[keep])
    got = losses.semantic_ce(logits, target, mask)
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)
    # changing logits at ignored pixels or visible patches changes nothing
    logits2 = logits.clone()
    logits2[0, 0, :2] += 100.0
    logits2[0, 2] -= 50.0
    assert losses.semantic_ce(logits2, target, mask).item() == pytest.approx(got.item(), rel=1e-6)
    # everything ignored: 0, not nan
    assert losses.semantic_ce(logits, torch.full_like(target, 255), mask).item() == 0.0


def test_discriminative_loss_hand_value():
    # one image, 1-D embeddings; instance 1 at 0 and 2 (mean 1), instance 2 at 1.5
    emb = torch.tensor([0.0, 2.0, 1.5, 9.0]).reshape(1, 1, 4, 1)
    ids = torch.tensor([1, 1, 2, 0]).reshape(1, 1, 4)  # last pixel background: excluded
    mask = torch.ones(1, 1)
    l_var = ((1 - 0.5) ** 2 + 0) / 2  # mean over instances of the mean hinge^2 of pixels
    l_dist = (2 * 1.5 - 0.5) ** 2  # both ordered pairs
    l_reg = (1.0 + 1.5) / 2
    expected = l_var + l_dist + 0.001 * l_reg
    got = losses.discriminative_loss(emb, ids, mask, num_ids=3)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_discriminative_loss_permutation_invariant():
    torch.manual_seed(0)
    B, N, Q, E, K = 3, 16, 4, 8, 10
    emb = torch.randn(B, N, Q, E)
    ids = torch.randint(0, 6, (B, N, Q))
    mask = (torch.rand(B, N) > 0.3).float()
    base = losses.discriminative_loss(emb, ids, mask, K + 1)
    for _ in range(3):
        perm = torch.cat([torch.zeros(1, dtype=torch.long), torch.randperm(K) + 1])  # 0 stays background
        assert losses.discriminative_loss(emb, perm[ids], mask, K + 1).item() == pytest.approx(base.item(), abs=1e-5)
    # background embeddings do not matter
    emb2 = torch.where((ids == 0)[..., None], emb + 5.0, emb)
    assert losses.discriminative_loss(emb2, ids, mask, K + 1).item() == pytest.approx(base.item(), abs=1e-5)


def test_discriminative_loss_near_zero_when_separated():
    torch.manual_seed(0)
    B, N, Q, E, K = 2, 16, 4, 16, 8
    ids = torch.randint(0, K + 1, (B, N, Q))
    centers = 4.0 * torch.eye(E)[: K + 1]  # pairwise distance 5.7 > 2 * delta_dist
    emb = centers[ids] + 0.05 * torch.randn(B, N, Q, E)  # within delta_var of the mean
    loss = losses.discriminative_loss(emb, ids, torch.ones(B, N), K + 1)
    assert 0 <= loss.item() < 0.005  # only the 0.001 * ||mean|| term (~0.004) remains
    bad = losses.discriminative_loss(torch.randn(B, N, Q, E) * 0.1, ids, torch.ones(B, N), K + 1)
    assert bad.item() > 1.0


def test_discriminative_loss_gradients_finite():
    emb = torch.zeros(1, 2, 1, 4, requires_grad=True)  # coincident means: sqrt at 0
    losses.discriminative_loss(emb, torch.tensor([[[1], [2]]]), torch.ones(1, 2), 3).backward()
    assert torch.isfinite(emb.grad).all()

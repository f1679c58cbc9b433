"""MAE equivalence: a MAE state dict through `from_mae` gives MAE's loss, predictions and mask.

The reference below is MAE (He et al. 2021, `models_mae.py`) written from its equations with plain
tensor ops: sin-cos position embeddings, random masking by argsort of noise, pre-norm ViT blocks,
the lightweight decoder over [cls] + full grid, and the per-patch normalised pixel MSE on masked
patches.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from c2fmae.models.adapters import sincos_pos_embed_2d
from c2fmae.models.c2fmae import C2FMAE
from c2fmae.models.convert import from_mae, mae_config

P, IMG, D, DEPTH, HEADS, DD, DDEPTH, DHEADS = 8, 64, 64, 2, 2, 32, 2, 4
L = (IMG // P) ** 2


def _np_sincos(dim, g):
    """MAE util/pos_embed.get_2d_sincos_pos_embed(dim, g, cls_token=True)."""
    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)
    grid = np.stack(np.meshgrid(np.arange(g, dtype=np.float32), np.arange(g, dtype=np.float32)), 0)  # w first
    emb = np.concatenate([one_d(dim // 2, grid[0]), one_d(dim // 2, grid[1])], axis=1)
    return torch.from_numpy(np.concatenate([np.zeros([1, dim]), emb], 0)).float()


def _mae_state_dict(seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: 0.1 * torch.randn(*s, generator=g)  # noqa: E731
    sd = {"cls_token": r(1, 1, D), "pos_embed": _np_sincos(D, IMG // P)[None],
          "patch_embed.proj.weight": r(D, 3, P, P), "patch_embed.proj.bias": r(D),
          "norm.weight": 1 + r(D), "norm.bias": r(D), "mask_token": r(1, 1, DD),
          "decoder_embed.weight": r(DD, D), "decoder_embed.bias": r(DD),
          "decoder_pos_embed": _np_sincos(DD, IMG // P)[None],
          "decoder_norm.weight": 1 + r(DD), "decoder_norm.bias": r(DD),
          "decoder_pred.weight": r(P * P * 3, DD), "decoder_pred.bias": r(P * P * 3)}
    for prefix, dim, depth in (("blocks", D, DEPTH), ("decoder_blocks", DD, DDEPTH)):
        for i in range(depth):
            b = f"{prefix}.{i}."
            sd.update({b + "norm1.weight": 1 + r(dim), b + "norm1.bias": r(dim),
                       b + "attn.qkv.weight": r(3 * dim, dim), b + "attn.qkv.bias": r(3 * dim),
                       b + "attn.proj.weight": r(dim, dim), b + "attn.proj.bias": r(dim),
                       b + "norm2.weight": 1 + r(dim), b + "norm2.bias": r(dim),
                       b + "mlp.fc1.weight": r(4 * dim, dim), b + "mlp.fc1.bias": r(4 * dim),
                       b + "mlp.fc2.weight": r(dim, 4 * dim), b + "mlp.fc2.bias": r(dim)})
    return sd


def _ln(x, sd, k):
    return F.layer_norm(x, x.shape[-1:], sd[k + "weight"], sd[k + "bias"], eps=1e-6)


def _lin(x, sd, k):
    return x @ sd[k + "weight"].T + sd[k + "bias"]


def _block(x, sd, k, heads):
    B, n, dim = x.shape
    qkv = _lin(_ln(x, sd, k + "norm1."), sd, k + "attn.qkv.").reshape(B, n, 3, heads, dim // heads)
    q, kk, v = qkv.permute(2, 0, 3, 1, 4)
    attn = torch.softmax(q @ kk.transpose(-2, -1) * (dim // heads) ** -0.5, dim=-1)
    x = x + _lin((attn @ v).transpose(1, 2).reshape(B, n, dim), sd, k + "attn.proj.")
    h = F.gelu(_lin(_ln(x, sd, k + "norm2."), sd, k + "mlp.fc1."))
    return x + _lin(h, sd, k + "mlp.fc2.")


def _reference_mae(sd, imgs, noise, mask_ratio=0.75):
    """MAE forward (encoder, decoder, norm_pix_loss=True) -> (loss, pred, mask)."""
    B = imgs.shape[0]
    x = F.conv2d(imgs, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=P)
    x = x.flatten(2).transpose(1, 2) + sd["pos_embed"][:, 1:]
    keep = int(L * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    x = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, D))
    mask = torch.ones(B, L)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    x = torch.cat([(sd["cls_token"] + sd["pos_embed"][:, :1]).expand(B, -1, -1), x], 1)
    for i in range(DEPTH):
        x = _block(x, sd, f"blocks.{i}.", HEADS)
    x = _lin(_ln(x, sd, "norm."), sd, "decoder_embed.")
    y = torch.cat([x[:, 1:], sd["mask_token"].expand(B, L - keep, -1)], 1)
    y = torch.gather(y, 1, ids_restore[..., None].expand(-1, -1, DD))
    x = torch.cat([x[:, :1], y], 1) + sd["decoder_pos_embed"]
    for i in range(DDEPTH):
        x = _block(x, sd, f"decoder_blocks.{i}.", DHEADS)
    pred = _lin(_ln(x, sd, "decoder_norm."), sd, "decoder_pred.")[:, 1:]
    h = IMG // P
    target = torch.einsum("nchpwq->nhwpqc", imgs.reshape(B, 3, h, P, h, P)).reshape(B, L, P * P * 3)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    loss = (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()
    return loss, pred, mask


def test_sincos_pos_embed_is_maes():
    torch.testing.assert_close(sincos_pos_embed_2d(D, (8, 8), cls_token=True), _np_sincos(D, 8))


def test_pixel_mode_equals_mae():
    sd = _mae_state_dict()
    cfg = mae_config(sd, num_heads=HEADS, decoder_num_heads=DHEADS, encoder="c2fmae_vit_test")
    assert cfg.decoder == "pixel" and cfg.pixel_decoder_dim == DD and cfg.pixel_decoder_depth == DDEPTH
    model = C2FMAE(cfg)
    model.load_state_dict(from_mae({"model": sd}))  # strict: every key maps, nothing left over
    imgs = torch.randn(3, 3, IMG, IMG)
    noise = torch.rand(3, L)
    ref_loss, ref_pred, ref_mask = _reference_mae(sd, imgs, noise)
    torch.manual_seed(7)
    out = model({"image": imgs}, progress=0.3, noise=noise)
    assert torch.equal(out["mask"][:, 0], ref_mask)
    torch.testing.assert_close(out["pred_rgb"], ref_pred, rtol=1e-5, atol=1e-5)
    assert abs(out["loss"].item() - ref_loss.item()) < 1e-5
    # a different noise gives a different mask and loss (the noise is what is shared)
    out2 = model({"image": imgs}, noise=torch.rand(3, L))
    assert not torch.equal(out2["mask"], out["mask"])


def test_from_mae_rejects_other_checkpoints():
    with pytest.raises(KeyError, match=r"unknown keys \['input_adapters.rgb.proj.weight'\]"):
        from_mae({"input_adapters.rgb.proj.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="pos_embed"):
        from_mae({"blocks.0.norm1.weight": torch.zeros(1)})

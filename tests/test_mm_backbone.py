"""c2fmae.mm parts on their own: backbone (windowed attention, loading), SimpleFPN, layer decay, loaders.

Needs the mm extra (`bash tools/install_mm.sh`). Tiny ViT: dim 64, depth 4, patch 8.
"""
import argparse
import math
import pickle

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import c2fmae.mm as cmm
from c2fmae.mm import C2FMAELayerDecayOptimizerConstructor, C2FMAEViT, SimpleFPN
from c2fmae.mm.checkpoint import RUN_MARKER, load_from_local

pytestmark = pytest.mark.mm

TINY = dict(model_name="c2fmae_vit_test", encoder_kwargs=dict(depth=4))


def tiny_encoder_sd(depth=4, seed=0):
    torch.manual_seed(seed)
    return timm.create_model("c2fmae_vit_test", depth=depth).state_dict()


def manual_backbone(m: C2FMAEViT, x: torch.Tensor) -> torch.Tensor:
    """Reference forward written out by hand: conv patches, bicubic pos embed, windows padded by hand."""
    enc, ws = m.encoder, m.window_size
    proj = enc.patch_embed.proj
    t = F.conv2d(x, proj.weight, proj.bias, stride=proj.stride)  # B, C, h, w
    B, C, h, w = t.shape
    gh, gw = m.pos_grid
    pos = enc.pos_embed[:, 1:].reshape(1, gh, gw, C).permute(0, 3, 1, 2)
    t = (t + F.interpolate(pos, size=(h, w), mode="bicubic", align_corners=False)).permute(0, 2, 3, 1)
    for i, blk in enumerate(enc.blocks):
        y = blk.norm1(t)
        if i in m.global_indices:
            y = blk.attn(y.reshape(B, h * w, C)).reshape(B, h, w, C)
        else:
            Hp, Wp = math.ceil(h / ws) * ws, math.ceil(w / ws) * ws
            padded = y.new_zeros(B, Hp, Wp, C)
            padded[:, :h, :w] = y
            out = torch.zeros_like(padded)
            for r in range(0, Hp, ws):
                for c in range(0, Wp, ws):
                    win = padded[:, r:r + ws, c:c + ws].reshape(B, ws * ws, C)
                    out[:, r:r + ws, c:c + ws] = blk.attn(win).reshape(B, ws, ws, C)
            y = out[:, :h, :w]
        t = t + y
        t = t + blk.mlp(blk.norm2(t))
    return t.permute(0, 3, 1, 2)


def test_windowed_attention_equals_padding_by_hand():
    torch.manual_seed(0)
    m = C2FMAEViT(**TINY, window_size=4, global_indices=(1,), out_indices=(0, 3)).eval()
    x = torch.randn(2, 3, 56, 72)  # 7 x 9 tokens: not divisible by the window (4)
    with torch.no_grad():
        out = m(x)
        ref = manual_backbone(m, x)
    assert [o.shape for o in out] == [(2, 64, 7, 9)] * 2
    torch.testing.assert_close(out[-1], ref, atol=1e-5, rtol=1e-5)
    # the padding matters: windows on the unpadded grid would differ (sanity of the reference)
    m.window_size = 7
    with torch.no_grad():
        assert not torch.allclose(m(x)[-1], ref, atol=1e-3)


def test_default_global_blocks_vit_b():
    m = C2FMAEViT("c2fmae_vit_base", drop_path_rate=0.1, encoder_kwargs=dict(embed_dim=64, num_heads=2))  # depth 12
    assert m.global_indices == (2, 5, 8, 11) and m.out_indices == (11,) and m.window_size == 14
    assert not any("cls_token" in n or n.startswith("encoder.norm.") for n, _ in m.named_parameters())


def test_negative_block_indices_count_from_the_end():
    torch.manual_seed(0)
    a = C2FMAEViT(**TINY, window_size=4, global_indices=(3,), out_indices=(1, 3))
    b = C2FMAEViT(**TINY, window_size=4, global_indices=(-1,), out_indices=(-3, -1))
    b.load_state_dict(a.state_dict())
    assert b.global_indices == (3,) and b.out_indices == (1, 3)
    x = torch.randn(1, 3, 64, 64)
    for oa, ob in zip(a.eval()(x), b.eval()(x), strict=True):
        torch.testing.assert_close(oa, ob)  # block -1 really is the global one


def test_grad_checkpointing_and_frozen_stages():
    torch.manual_seed(0)
    a = C2FMAEViT(**TINY, window_size=4, global_indices=(3,), out_indices=(1, 3))
    b = C2FMAEViT(**TINY, window_size=4, global_indices=(3,), out_indices=(1, 3), with_cp=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 64, 64)
    for m in (a, b):
        sum(o.square().mean() for o in m(x)).backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad, msg=n)
    f = C2FMAEViT(**TINY, frozen_stages=2).train()
    frozen = {n for n, p in f.named_parameters() if not p.requires_grad}
    assert "encoder.pos_embed" in frozen and "encoder.patch_embed.proj.weight" in frozen
    assert "encoder.blocks.1.mlp.fc2.bias" in frozen and "encoder.blocks.2.mlp.fc2.bias" not in frozen
    assert not f.encoder.blocks[1].training and f.encoder.blocks[2].training


@pytest.mark.parametrize("kind", ["safetensors", "export_dir", "pretrain_ckpt", "hf_hub"])
def test_pretrained_sources_load_exactly(kind, tmp_path, hub_cache):
    sd = tiny_encoder_sd()
    if kind == "safetensors":
        src = tmp_path / "enc.safetensors"
        save_file(sd, src)
    elif kind == "export_dir":
        src = tmp_path / "export"
        src.mkdir()
        save_file(sd, src / "model.safetensors")
    elif kind == "pretrain_ckpt":  # c2fmae pretraining checkpoint: encoder.* next to decoder / adapters
        src = tmp_path / "ckpt.pt"
        model = {f"encoder.{k}": v for k, v in sd.items()}
        model.update({"decoder.0.weight": torch.zeros(3), "adapters.rgb.proj.weight": torch.zeros(2)})
        torch.save({"model": model, "step": 3}, src)
    else:  # a Hub repo already in the (offline) cache
        snap = hub_cache / "models--c2fmae--tiny-test" / "snapshots" / ("a" * 40)
        snap.mkdir(parents=True)
        save_file(sd, snap / "model.safetensors")
        (hub_cache / "models--c2fmae--tiny-test" / "refs").mkdir()
        (hub_cache / "models--c2fmae--tiny-test" / "refs" / "main").write_text("a" * 40)
        src = "hf-hub:c2fmae/tiny-test"
    if kind == "hf_hub":  # mmengine's loader (init_detector / load_from) reads the same id as backbone weights
        from mmengine.runner.checkpoint import CheckpointLoader

        ckpt = CheckpointLoader.load_checkpoint(src)["state_dict"]
        assert set(ckpt) == {f"backbone.encoder.{k}" for k in sd}
    m = C2FMAEViT(**TINY, pretrained=str(src))
    m.init_weights()
    own = m.encoder.state_dict()
    assert set(own) == set(sd) - {"cls_token", "norm.weight", "norm.bias"}
    for k, v in own.items():
        torch.testing.assert_close(v, sd[k], rtol=0, atol=0, msg=k)
    # init_cfg form, pos embed resampled to another storage size
    m = C2FMAEViT(**TINY, img_size=96, init_cfg=dict(type="Pretrained", checkpoint=str(src)))
    m.init_weights()
    assert m.encoder.pos_embed.shape == (1, 1 + 12 * 12, 64)


def test_wrong_checkpoint_reports_keys_by_name(tmp_path):
    sd = tiny_encoder_sd()
    del sd["blocks.2.mlp.fc1.weight"]
    sd["blocks.7.attn.qkv.weight"] = torch.zeros(192, 64)
    save_file(sd, tmp_path / "bad.safetensors")
    m = C2FMAEViT(**TINY, pretrained=str(tmp_path / "bad.safetensors"))
    with pytest.raises(KeyError) as e:
        m.init_weights()
    msg = str(e.value)
    assert "bad.safetensors" in msg and "'blocks.2.mlp.fc1.weight'" in msg and "'blocks.7.attn.qkv.weight'" in msg
    # a shallower model's weights: the missing blocks are named
    save_file(tiny_encoder_sd(depth=2), tmp_path / "depth2.safetensors")
    m = C2FMAEViT(**TINY, pretrained=str(tmp_path / "depth2.safetensors"))
    with pytest.raises(KeyError, match=r"blocks\.3\.attn\.proj\.weight"):
        m.init_weights()
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        C2FMAEViT(**TINY, pretrained=str(tmp_path / "nope.safetensors")).init_weights()


def test_mmengine_load_checkpoint_is_strict_about_the_encoder(tmp_path):
    """mmengine's non-strict loader (init_detector / init_model / load_from): the encoder must still match."""
    from mmengine.runner import load_checkpoint

    sd = tiny_encoder_sd()
    save_file(sd, tmp_path / "enc.safetensors")
    net = _Net()
    net.backbone = C2FMAEViT(**TINY, img_size=96)  # pos embed stored at 12x12, the export's at 8x8
    load_checkpoint(net, str(tmp_path / "enc.safetensors"), map_location="cpu")
    own = net.backbone.encoder.state_dict()
    model = timm.create_model("c2fmae_vit_test", depth=4, img_size=96)
    model.load_state_dict(timm.models.vision_transformer.checkpoint_filter_fn(dict(sd), model))  # timm's resampling
    for k, v in own.items():
        torch.testing.assert_close(v, model.state_dict()[k], rtol=0, atol=0, msg=k)
    save_file(tiny_encoder_sd(depth=2), tmp_path / "depth2.safetensors")
    with pytest.raises(KeyError, match=r"missing keys \['blocks\.2\.attn\.proj\.bias'"):
        load_checkpoint(_Net(), str(tmp_path / "depth2.safetensors"), map_location="cpu")
    bad = {f"backbone.encoder.{k}": v for k, v in sd.items()}
    bad["backbone.encoder.blocks.0.attn.qkv.weight"] = torch.zeros(3, 3)
    with pytest.raises(KeyError, match=r"blocks\.0\.attn\.qkv\.weight: checkpoint \(3, 3\) vs model \(192, 64\)"):
        _Net().load_state_dict(bad, strict=False)


def test_simple_fpn_strides_and_ln2d():
    torch.manual_seed(0)
    fpn = SimpleFPN(64, [16, 32, 64, 64], 32, num_outs=5, norm_cfg=dict(type="LN2d", requires_grad=True))
    outs = fpn((torch.randn(2, 64, 8, 8),))
    assert [tuple(o.shape) for o in outs] == [(2, 32, s, s) for s in (32, 16, 8, 4, 2)]
    ln = cmm.LN2d(32)
    x = torch.randn(2, 32, 5, 6)
    torch.testing.assert_close(ln(x), F.layer_norm(x.permute(0, 2, 3, 1), (32,), eps=1e-6).permute(0, 3, 1, 2))
    with pytest.raises(ValueError, match="in_channels"):
        SimpleFPN(64, [64, 64, 64, 64], 32, num_outs=5)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = C2FMAEViT(**TINY, final_norm=True)
        self.decode_head = nn.Linear(64, 5)


def test_layer_decay_lrs():
    net, base_lr, d, L = _Net(), 1e-3, 0.5, 4
    ctor = C2FMAELayerDecayOptimizerConstructor(
        dict(optimizer=dict(type="AdamW", lr=base_lr, weight_decay=0.05)), dict(decay_rate=d, num_layers=L))
    groups = ctor(net).optimizer.param_groups
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    assert len(lr_of) == sum(1 for _ in net.parameters())
    for name, p in net.named_parameters():
        lr, wd = lr_of[id(p)]
        if ".blocks." in name:
            i = int(name.split(".blocks.")[1].split(".")[0]) + 1  # block i = timm blocks.{i-1}
            assert lr == pytest.approx(base_lr * d ** (L + 1 - i)), name
        elif "patch_embed" in name or "pos_embed" in name:
            assert lr == pytest.approx(base_lr * d ** (L + 1)), name
        else:  # final norm, heads
            assert lr == pytest.approx(base_lr), name
        no_wd = p.ndim == 1 or name.endswith("pos_embed")
        assert wd == (0.0 if no_wd else 0.05), name
    bad = C2FMAELayerDecayOptimizerConstructor(dict(optimizer=dict(type="AdamW", lr=1e-3)),
                                               dict(decay_rate=0.5, num_layers=12))
    with pytest.raises(ValueError, match="num_layers=12 but the backbone has 4 blocks"):
        bad(net)
    with pytest.raises(KeyError, match="paramwise_cfg"):  # without it mmengine would skip add_params
        C2FMAELayerDecayOptimizerConstructor(dict(optimizer=dict(type="AdamW", lr=1e-3)))


def test_registries_and_configs():
    from mmdet.registry import MODELS as DET_MODELS
    from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS as DET_CTORS
    from mmseg.registry import MODELS as SEG_MODELS
    from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS as SEG_CTORS

    for reg in (DET_MODELS, SEG_MODELS):
        assert reg.get("C2FMAEViT") is C2FMAEViT and reg.get("SimpleFPN") is SimpleFPN
    for reg in (DET_CTORS, SEG_CTORS):
        assert reg.get("C2FMAELayerDecayOptimizerConstructor") is C2FMAELayerDecayOptimizerConstructor
    assert set(cmm.list_configs()) == {
        "mask-rcnn_c2fmae-vit-b_simplefpn_lsj-100e_coco", "upernet_c2fmae-vit-b_8xb2-amp-160k_ade20k-512x512"}
    with pytest.raises(FileNotFoundError, match="available"):
        cmm.config_path("nope")


def test_local_loader_weights_only_policy(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    ckpt = {"state_dict": {"w": torch.ones(2)}, "meta": {"cfg": argparse.Namespace(lr=0.1)}}  # not weights-only
    torch.save(ckpt, run / "iter_1.pth")
    with pytest.raises(pickle.UnpicklingError, match=RUN_MARKER):
        load_from_local(str(run / "iter_1.pth"))
    (run / RUN_MARKER).write_text(str(run / "iter_1.pth"))  # mmengine's CheckpointHook writes this
    assert load_from_local(str(run / "iter_1.pth"))["meta"]["cfg"].lr == 0.1
    torch.save({"state_dict": {"w": torch.ones(2)}}, tmp_path / "plain.pth")  # weights-only: anywhere
    assert load_from_local(str(tmp_path / "plain.pth"))["state_dict"]["w"].sum() == 2
    sd = tiny_encoder_sd()
    save_file(sd, tmp_path / "enc.safetensors")
    out = load_from_local(str(tmp_path / "enc.safetensors"))["state_dict"]
    assert set(out) == {f"backbone.encoder.{k}" for k in load_file(tmp_path / "enc.safetensors")}

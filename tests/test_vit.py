"""The timm contract of the registered C2FMAE encoders."""
import pytest
import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models.vision_transformer import VisionTransformer

from c2fmae.models.vit import HF_HUB_ORG

ALL_NAMES = sorted(
    [f"c2fmae_vit_{s}" for s in ("small", "base", "large", "huge")]
    + [f"c2fmae_vit_{s}_patch16_224" for s in ("small", "base", "large", "huge")]
    + ["c2fmae_vit_test"]
)
WIDTH = {"test": 64, "small": 384, "base": 768, "large": 1024, "huge": 1280}
DEPTH = {"test": 2, "small": 12, "base": 12, "large": 24, "huge": 32}


def test_list_models_lists_every_name():
    assert timm.list_models("c2fmae*") == ALL_NAMES


@pytest.mark.parametrize("name", ["c2fmae_vit_test", "c2fmae_vit_small", "c2fmae_vit_base_patch16_224"])
def test_create_and_forward(name):
    model = timm.create_model(name).eval()
    size = model.pretrained_cfg["input_size"]
    with torch.no_grad():
        out = model(torch.randn(2, *size))
    width = WIDTH[name.split("_")[2]]
    assert isinstance(model, VisionTransformer)
    assert out.shape == (2, width)  # num_classes=0 by default: pooled features
    assert len(model.blocks) == DEPTH[name.split("_")[2]]


@pytest.mark.parametrize("name", ["c2fmae_vit_large", "c2fmae_vit_huge_patch16_224", "c2fmae_vit_huge"])
def test_large_models_on_meta_device(name):
    size = name.split("_")[2]
    with torch.device("meta"):
        model = timm.create_model(name)
        out = model(torch.empty(1, 3, 224, 224))
    assert out.shape == (1, WIDTH[size])
    assert len(model.blocks) == DEPTH[size]
    assert model.patch_embed.patch_size == (16, 16)


def test_default_cfg_points_at_hub_safetensors():
    model = timm.create_model("c2fmae_vit_base")
    cfg = model.pretrained_cfg
    assert cfg["tag"] == "in1k_1600e"
    assert cfg["hf_hub_id"] == f"{HF_HUB_ORG}/c2fmae_vit_base_patch16_224.in1k_1600e"
    assert cfg["hf_hub_filename"] == "model.safetensors"
    assert tuple(cfg["mean"]) == IMAGENET_DEFAULT_MEAN and tuple(cfg["std"]) == IMAGENET_DEFAULT_STD
    assert cfg["num_classes"] == 0 and cfg["license"] == "apache-2.0"
    tagged = timm.create_model("c2fmae_vit_base.in1k_400e").pretrained_cfg
    assert tagged["hf_hub_id"].endswith(".in1k_400e")


def test_timm_api_num_classes_pool_features_intermediates():
    x = torch.randn(2, 3, 64, 64)
    model = timm.create_model("c2fmae_vit_test", num_classes=5, global_pool="avg").eval()
    assert model(x).shape == (2, 5)
    model.reset_classifier(0)
    assert model(x).shape == (2, 64)

    feats = timm.create_model("c2fmae_vit_test", features_only=True, out_indices=(0, 1)).eval()
    maps = feats(x)
    assert [m.shape for m in maps] == [(2, 64, 8, 8)] * 2
    assert feats.feature_info.reduction() == [8, 8]
    default = timm.create_model("c2fmae_vit_test", features_only=True)  # last min(3, depth) blocks
    assert len(default(x)) == 2

    model = timm.create_model("c2fmae_vit_test").eval()
    final, inter = model.forward_intermediates(x, indices=2)
    assert final.shape == (2, 65, 64) and [t.shape for t in inter] == [(2, 64, 8, 8)] * 2
    # the last intermediate is the last block's patch tokens, before the final norm
    tokens = model.blocks(model._pos_embed(model.patch_embed(x)))
    torch.testing.assert_close(inter[-1], tokens[:, 1:].transpose(1, 2).reshape(2, 64, 8, 8))


def test_grad_checkpointing_gives_same_output_and_grads():
    torch.manual_seed(0)
    model = timm.create_model("c2fmae_vit_test", num_classes=3)
    x = torch.randn(2, 3, 64, 64)
    ref = model(x)
    ref.sum().backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    out = model(x)
    out.sum().backward()
    torch.testing.assert_close(out, ref)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[n], msg=n)


def test_every_parameter_is_used():
    """timm's test_model_backward contract: no pretraining-only parameters in the encoder."""
    model = timm.create_model("c2fmae_vit_test")
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert unused == []

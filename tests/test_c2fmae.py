"""C2FMAE pretraining model: forward contract, cascade vs parallel, gradients, export, bad input."""
import dataclasses

import pytest
import timm
import torch
import yaml

from c2fmae.models.c2fmae import C2FMAE, C2FMAEConfig
from c2fmae.models.vit import encoder_state_dict

C, K = 6, 8


def _cfg(**kw):
    base = dict(encoder="c2fmae_vit_test", decoder_dim=32, decoder_heads=2, decoder_depth=1,
                num_classes=C, max_instances=K)
    return C2FMAEConfig(**dict(base, **kw))


def _batch(B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    sem = torch.randint(0, C, (B, 16, 16), generator=g)
    sem[:, :2, :2] = 255
    return {"image": torch.randn(B, 3, 64, 64, generator=g), "semantic": sem,
            "instance": torch.randint(0, 5, (B, 16, 16), generator=g) * 11}


def test_forward_contract_and_budget():
    torch.manual_seed(0)
    model = C2FMAE(_cfg())
    assert model.num_visible == 32  # N / 2 with three inputs (98 at 224 / 16)
    for t in (0.0, 0.3, 0.9):
        out = model(_batch(), progress=t)
        assert {"loss", "loss_sem", "loss_ins", "loss_rgb", "pred_sem", "pred_ins", "pred_rgb", "mask",
                "strategy"} <= set(out)
        assert out["pred_sem"].shape == (4, 64, 4 * C) and out["pred_ins"].shape == (4, 64, 4 * 16)
        assert out["pred_rgb"].shape == (4, 64, 8 * 8 * 3) and out["mask"].shape == (4, 3, 64)
        assert ((1 - out["mask"]).sum((1, 2)) == 32).all()  # exact visible budget per sample
        assert torch.isfinite(out["loss"]) and out["loss"].item() == pytest.approx(
            sum(out[f"loss_{t}"].item() for t in ("sem", "ins", "rgb")), rel=1e-6)
    assert model.unpatchify(out["pred_sem"], "sem").shape == (4, C, 16, 16)
    assert model.unpatchify(out["pred_rgb"], "rgb").shape == (4, 3, 64, 64)
    assert C2FMAE(_cfg(inputs=["rgb"], targets=["sem", "rgb"])).num_visible == 16  # N / 4 with one input


def test_config_is_plain_and_round_trips():
    cfg = _cfg(decoder="parallel")
    d = dataclasses.asdict(cfg)
    assert C2FMAEConfig.from_dict(yaml.safe_load(yaml.safe_dump(d))) == cfg
    with pytest.raises(KeyError, match="decoder_width"):
        C2FMAEConfig.from_dict(dict(d, decoder_width=3))
    with pytest.raises(ValueError, match="decoder='pixel'"):
        C2FMAEConfig(decoder="pixel")
    with pytest.raises(ValueError, match="inputs"):
        C2FMAEConfig(inputs=["rgb", "depth"])


def test_cascade_and_parallel_differ_only_in_context():
    torch.manual_seed(0)
    cas, par = C2FMAE(_cfg(decoder="cascade")), C2FMAE(_cfg(decoder="parallel"))
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(cas) == shapes(par)
    par.load_state_dict(cas.state_dict())  # strict: the same parameter set
    batch, noise = _batch(), torch.rand(4, 3, 64)
    torch.manual_seed(1)
    a = cas(batch, noise=noise, strategy="sem")
    torch.manual_seed(1)
    b = par(batch, noise=noise, strategy="sem")
    assert torch.equal(a["mask"], b["mask"])
    torch.testing.assert_close(a["pred_sem"], b["pred_sem"])  # first stage: context H in both
    assert not torch.allclose(a["pred_ins"], b["pred_ins"])  # later stages: H + F^{k-1} vs H
    assert not torch.allclose(a["pred_rgb"], b["pred_rgb"])


def test_gradients_reach_every_stage():
    torch.manual_seed(0)
    model = C2FMAE(_cfg())
    model(_batch(8), progress=0.5)["loss"].backward()
    trainable = {k: p for k, p in model.named_parameters() if p.requires_grad}
    missing = [k for k, p in trainable.items() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing
    frozen = {k for k, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"encoder.pos_embed", "decoder.pos_embed"}
    # cascade: the last stage's loss alone reaches the first stage; parallel: it does not
    for mode, reaches in (("cascade", True), ("parallel", False)):
        m = C2FMAE(_cfg(decoder=mode))
        m(_batch(), progress=0.5)["loss_rgb"].backward()
        g = m.decoder.stages["sem"].blocks[0].attn.qkv.weight.grad
        assert (g is not None and g.abs().sum() > 0) == reaches, mode


def test_exported_encoder_gives_the_same_features():
    torch.manual_seed(0)
    kwargs = dict(drop_path_rate=0.0)
    model = C2FMAE(_cfg(encoder_kwargs=kwargs)).eval()
    timm_model = timm.create_model("c2fmae_vit_test", **kwargs).eval()
    timm_model.load_state_dict(encoder_state_dict({"model": model.state_dict()}))  # strict
    img = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = timm_model.forward_features(img)
        torch.testing.assert_close(model.encoder.forward_features(img), ref, rtol=0, atol=0)
        # the pretraining path with every rgb token visible (in position order) is the deployed encoder
        ids = torch.arange(64).expand(2, -1)
        tokens = model.embed_inputs({"image": img}, {}, inputs=["rgb"])
        torch.testing.assert_close(model.forward_encoder(tokens, ids), ref, rtol=1e-5, atol=1e-5)


def test_bad_input_names_the_problem():
    model = C2FMAE(_cfg())
    good = _batch(2)
    with pytest.raises(ValueError, match=r"batch\['semantic'\] must have shape \(B, 16, 16\).*\(2, 8, 8\)"):
        model(dict(good, semantic=good["semantic"][:, ::2, ::2]))
    with pytest.raises(ValueError, match=r"batch\['instance'\] must have shape"):
        model(dict(good, instance=good["instance"][:, :, :15]))
    bad = good["semantic"].clone()
    bad[0, 5, 5] = C + 3
    with pytest.raises(ValueError, match=rf"batch\['semantic'\] has class ids \[{C + 3}\].*num_classes={C}"):
        model(dict(good, semantic=bad))
    many = torch.arange(16 * 16).reshape(1, 16, 16).expand(2, -1, -1)
    with pytest.raises(ValueError, match=r"batch\[.instance.\]: image 0 .* 255 instances.*max_instances=8"):
        model(dict(good, instance=many))
    with pytest.raises(KeyError, match=r"batch\['instance'\] is missing.*'ins'"):
        model({k: v for k, v in good.items() if k != "instance"})
    with pytest.raises(TypeError, match=r"batch\['semantic'\] must hold integer ids"):
        model(dict(good, semantic=good["semantic"].float()))
    with pytest.raises(ValueError, match=r"num_visible=0 must be in \[1, 64\]"):
        C2FMAE(_cfg(num_visible=0))
    with pytest.raises(ValueError, match=r"noise must have shape \(2, 3, 64\)"):
        model(good, noise=torch.rand(2, 64))
    with pytest.raises(ValueError, match=r"batch\['image'\] must be a float tensor \(B, 3, 64, 64\)"):
        model(dict(good, image=good["image"][..., :32]))
    # rgb-only model: semantic maps are needed only when the curriculum draws guided masking
    rgb = C2FMAE(_cfg(inputs=["rgb"], targets=["rgb"]))
    with pytest.raises(KeyError, match=r"batch\['semantic'\] is missing.*guided masking"):
        rgb({"image": good["image"]}, progress=0.0)
    assert torch.isfinite(rgb({"image": good["image"]}, progress=1.0)["loss"])


def test_encoder_grad_checkpointing_keeps_loss_and_grads():
    torch.manual_seed(0)
    a, b = C2FMAE(_cfg()), C2FMAE(_cfg())
    b.load_state_dict(a.state_dict())
    b.encoder.set_grad_checkpointing(True)  # what `grad_checkpointing=true` in training sets
    losses = []
    for m in (a, b):
        torch.manual_seed(1)  # same masks and instance relabelling
        loss = m(_batch(), progress=0.3)["loss"]
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    for (n, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert (pa.grad is None) == (pb.grad is None), n
        if pa.grad is not None:
            torch.testing.assert_close(pa.grad, pb.grad, msg=n)

"""Export to the timm Hub layout, loading back through timm, checkpoint filtering, bad input."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file
from timm.layers import resample_abs_pos_embed

from c2fmae import hub
from c2fmae.cli import main as cli_main
from c2fmae.models.vit import HF_HUB_ORG, checkpoint_filter_fn


def write_hub_cache(cache: Path, repo_id: str, export_dir: Path) -> Path:
    """Lay `export_dir` out as huggingface_hub's cache would after a download of `repo_id`."""
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for f in export_dir.iterdir():
        shutil.copy(f, snapshot / f.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def pretraining_checkpoint(encoder: torch.nn.Module) -> dict:
    """A checkpoint shaped like the pretraining model's (DESIGN §4): encoder + adapters + decoder."""
    d = encoder.embed_dim
    model = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    model.update({
        "adapters.sem.embed.weight": torch.randn(134, 64),
        "adapters.sem.proj.weight": torch.randn(d, 64, 2, 2),
        "adapters.ins.embed.weight": torch.randn(65, 64),
        "decoder.stages.0.mask_token": torch.randn(1, 1, 256),
        "decoder.stages.0.cross_attn.q.weight": torch.randn(256, 256),
        "decoder.stages.2.head.weight": torch.randn(192, 256),
    })
    return {"model": model, "step": 10, "config": {"model": {"encoder": "c2fmae_vit_test", "encoder_kwargs": {}}}}


@pytest.fixture(scope="module")
def test_encoder():
    torch.manual_seed(0)
    return timm.create_model("c2fmae_vit_test").eval()


def test_export_layout_and_local_dir_roundtrip(tmp_path, test_encoder):
    out = hub.export(test_encoder, tmp_path / "export", arch="c2fmae_vit_test")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "vit_small_patch16_224"
    assert config["model_args"]["embed_dim"] == 64 and config["model_args"]["patch_size"] == 8
    card = (out / "README.md").read_text()
    assert "c2fmae_vit_test" in card and "no numbers are claimed" in card
    weights = load_file(out / "model.safetensors")
    for k, v in test_encoder.state_dict().items():
        torch.testing.assert_close(weights[k], v, rtol=0, atol=0)
    loaded = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(loaded(x), test_encoder(x))
    # re-export over an existing directory replaces it whole
    hub.export(test_encoder, out, arch="c2fmae_vit_test", results={"k-NN top-1": "12.5"})
    assert "| k-NN top-1 | 12.5 |" in (out / "README.md").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_pretrained_true_from_local_hub_cache(tmp_path, hub_cache):
    """The exact user call, served from a Hub cache laid out as a download would leave it."""
    torch.manual_seed(1)
    small = timm.create_model("c2fmae_vit_small")
    repo_id = f"{HF_HUB_ORG}/c2fmae_vit_small_patch16_224.in1k_1600e"
    export_dir = hub.export(small, tmp_path / "small", arch="c2fmae_vit_small")
    write_hub_cache(hub_cache, repo_id, export_dir)

    loaded = timm.create_model("c2fmae_vit_small", pretrained=True)
    for k, v in small.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, rtol=0, atol=0, msg=k)

    # plain timm through hf-hub:, in a process that never imports c2fmae
    code = (
        "import sys, timm, torch\n"
        f"m = timm.create_model('hf-hub:{repo_id}', pretrained=True)\n"
        "assert type(m).__name__ == 'VisionTransformer', type(m)\n"
        "assert not any(k.startswith('c2fmae') for k in sys.modules), 'c2fmae was imported'\n"
        "print(float(sum(p.double().sum() for p in m.parameters())))\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hub_cache))
    res = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    expected = float(sum(p.detach().double().sum() for p in small.parameters()))
    assert float(res.stdout.strip().splitlines()[-1]) == pytest.approx(expected, rel=1e-9)


def test_pretraining_checkpoint_loads_through_filter(tmp_path, test_encoder):
    ckpt = pretraining_checkpoint(test_encoder)
    path = tmp_path / "checkpoint-10.pt"
    torch.save(ckpt, path)
    # the timm user path: pretrained_cfg_overlay=dict(file=...) runs our checkpoint_filter_fn
    model = timm.create_model("c2fmae_vit_test", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    for k, v in test_encoder.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0)
    # the exporter reads the architecture from the checkpoint's config
    out = hub.export(path, tmp_path / "exp")
    assert json.loads((out / "config.json").read_text())["model_args"]["embed_dim"] == 64


def test_mae_style_checkpoint_and_resized_pos_embed(test_encoder):
    # MAE's full pretraining checkpoint: encoder keys at top level next to mask_token / decoder_*
    sd = dict(test_encoder.state_dict())
    sd.update({"mask_token": torch.zeros(1, 1, 32), "decoder_embed.weight": torch.zeros(32, 64)})
    bigger = timm.create_model("c2fmae_vit_test", img_size=96)
    filtered = checkpoint_filter_fn({"model": sd}, bigger)
    assert "mask_token" not in filtered and not any(k.startswith("decoder") for k in filtered)
    expected = resample_abs_pos_embed(sd["pos_embed"], new_size=(12, 12), num_prefix_tokens=1)
    torch.testing.assert_close(filtered["pos_embed"], expected)
    bigger.load_state_dict(filtered)  # strict


def test_avg_pool_model_takes_final_norm_as_fc_norm(test_encoder):
    model = timm.create_model("c2fmae_vit_test", global_pool="avg")
    sd = checkpoint_filter_fn(test_encoder.state_dict(), model)
    model.load_state_dict(sd)  # strict: norm.* became fc_norm.*
    torch.testing.assert_close(model.fc_norm.weight, test_encoder.norm.weight)


def test_run_dir_export_takes_the_highest_step(tmp_path):
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    for step in (100, 200):
        torch.save({"step": step}, ckpts / f"step_{step:08d}.pt")
    os.utime(ckpts / "step_00000100.pt", (2e9, 2e9))  # a copy made step 100 the newest file
    assert hub.load_checkpoint(tmp_path / "run")["step"] == 200


def test_bad_inputs_name_what_is_wrong(tmp_path, test_encoder):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        hub.export(tmp_path / "nope.safetensors", tmp_path / "o", arch="c2fmae_vit_test")
    # a checkpoint of another architecture
    with pytest.raises(ValueError, match="embed dim 64.*768"):
        hub.export(test_encoder.state_dict(), tmp_path / "o", arch="c2fmae_vit_base")
    # wrong depth: missing keys are named
    with pytest.raises(ValueError, match=r"missing keys \['blocks\.2"):
        hub.export(test_encoder.state_dict(), tmp_path / "o", arch="c2fmae_vit_test", encoder_kwargs={"depth": 3})
    # not an encoder at all
    with pytest.raises(KeyError, match="no RGB encoder"):
        hub.export({"decoder.w": torch.zeros(1)}, tmp_path / "o", arch="c2fmae_vit_test")
    # a corrupt file
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt.pt: cannot read checkpoint"):
        hub.export(bad, tmp_path / "o", arch="c2fmae_vit_test")
    with pytest.raises(ValueError, match="unknown architecture 'vit_tiny'"):
        hub.export(test_encoder.state_dict(), tmp_path / "o", arch="vit_tiny")
    assert not (tmp_path / "o").exists()


def test_cli_export_and_push(tmp_path, test_encoder, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save(pretraining_checkpoint(test_encoder), run_dir / "checkpoints" / "checkpoint-10.pt")

    uploaded = {}

    class FakeApi:  # records what push_to_hub sends instead of reaching the network
        def __init__(self, **kwargs):
            pass

        def create_repo(self, repo_id, private, exist_ok):
            return type("Repo", (), {"repo_id": repo_id})()

        def upload_folder(self, repo_id, folder_path, revision, commit_message):
            uploaded[repo_id] = sorted(os.listdir(folder_path))
            return type("Info", (), {"commit_url": f"https://hub/{repo_id}/commit/1"})()

    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    rc = cli_main(["export", str(run_dir), "--out", str(tmp_path / "exp"), "--push-to-hub", "me/c2fmae-test"])
    assert rc == 0
    assert uploaded == {"me/c2fmae-test": ["README.md", "config.json", "model.safetensors"]}
    out = capsys.readouterr().out
    assert 'timm.create_model("hf-hub:me/c2fmae-test", pretrained=True)' in out
    # the printed local-dir line loads the exported weights (without pretrained=True timm builds an untrained model)
    line = next(ln for ln in out.splitlines() if "local-dir:" in ln).split("load it with: ", 1)[1]
    loaded = eval(line, {"timm": timm})
    exported = load_file(tmp_path / "exp" / "model.safetensors")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in exported.items())
    assert "# me/c2fmae-test" in (tmp_path / "exp" / "README.md").read_text()


def test_cli_unknown_command_and_missing_extra(capsys):
    assert cli_main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err
    assert cli_main([]) == 0
    assert "pretrain" in capsys.readouterr().out

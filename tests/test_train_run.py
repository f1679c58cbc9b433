"""The embedded default run at test size: it trains, its loss falls, it leaves a complete run directory."""
import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from c2fmae.cli import main as cli_main

# the embedded default recipe, shrunk: c2fmae_vit_test (dim 64, depth 2, patch 8, 64 px), slim decoder
TINY = ["model.encoder_kwargs={img_size: 64, patch_size: 8, embed_dim: 64, depth: 2, num_heads: 2}",
        "model.decoder_dim=32", "model.decoder_heads=2", "data.img_size=64", "data.num_val_samples=4",
        "num_threads=1", "num_workers=0"]


def _not_blank(path) -> bool:
    a = np.asarray(Image.open(path).convert("RGB")).astype(np.float32)
    return a.std() > 20 and len(np.unique(a.reshape(-1, 3), axis=0)) > 100


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    rc = cli_main(["pretrain", *TINY, "data.num_samples=192", "batch_size=8", "epochs=1", "optim.lr=2e-3",
                   "optim.warmup_epochs=0.1", "log_every=2", "ckpt_every=8", "keep_last=2", f"output_dir={out}"])
    assert rc == 0
    (run,) = out.iterdir()
    return run


def test_default_run_trains_and_loss_falls(default_run):
    recs = [json.loads(line) for line in (default_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == list(range(2, 25, 2))              # 192 / 8 = 24 steps
    for r in recs:
        assert {"loss", "loss_sem", "loss_ins", "loss_rgb", "lr", "img_per_s", "progress"} <= set(r)
    first, last = np.mean([r["loss"] for r in recs[:3]]), np.mean([r["loss"] for r in recs[-3:]])
    assert last < 0.7 * first, (first, last)
    assert max(r["lr"] for r in recs) == pytest.approx(2e-3, rel=0.3) and recs[-1]["lr"] < 2e-4  # warmup + cosine


def test_run_directory_contents(default_run):
    ckpts = sorted(p.name for p in (default_run / "checkpoints").iterdir())
    assert ckpts == ["step_00000016.pt", "step_00000024.pt"]               # every 8 steps, keep last 2
    ckpt = torch.load(default_run / "checkpoints" / ckpts[-1], weights_only=True)
    assert ckpt["step"] == 24 and ckpt["config"]["model"]["decoder"] == "cascade"
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "config"} <= set(ckpt)
    for name in ("recon_start.png", "recon_end.png", "curriculum.png"):
        assert _not_blank(default_run / name), name
    start, end = (np.asarray(Image.open(default_run / f"recon_{t}.png")) for t in ("start", "end"))
    assert start.shape == end.shape and not np.array_equal(start, end)      # the predictions changed
    assert (default_run / "config.yaml").is_file()


def test_exported_weights_load_with_timm_offline(default_run):
    export = default_run / "export"
    ckpt = torch.load(default_run / "checkpoints" / "step_00000024.pt", weights_only=True)
    enc = {k[len("encoder."):]: v for k, v in ckpt["model"].items() if k.startswith("encoder.")}
    m = timm.create_model("c2fmae_vit_test", pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(export / "model.safetensors")))
    for k, v in m.state_dict().items():
        assert torch.equal(v, enc[k]), k
    plain = timm.create_model(f"local-dir:{export}", pretrained=True)       # plain timm, config.json
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(plain.eval().forward_features(x), m.eval().forward_features(x), atol=1e-6)


def test_visualize_cli(default_run, tmp_path, capsys):
    out = tmp_path / "viz.png"
    assert cli_main(["visualize", str(default_run), "--num-samples", "2", "--strategy", "ins", "--out", str(out)]) == 0
    assert _not_blank(out)
    # given images and masks (files written like a labelled folder)
    img = (np.random.default_rng(0).random((80, 100, 3)) * 255).astype(np.uint8)
    sem = np.zeros((80, 100), np.uint8)
    sem[:, 50:] = 3
    ins = np.zeros((80, 100), np.uint16)
    ins[10:40, 10:40] = 1
    Image.fromarray(img).save(tmp_path / "a.jpg")
    Image.fromarray(sem).save(tmp_path / "a_sem.png")
    Image.fromarray(ins).save(tmp_path / "a_ins.png")
    out2 = tmp_path / "given.png"
    assert cli_main(["visualize", str(default_run), "--images", str(tmp_path / "a.jpg"), "--semantic",
                     str(tmp_path / "a_sem.png"), "--instance", str(tmp_path / "a_ins.png"), "--out", str(out2)]) == 0
    assert Image.open(out2).size[1] < Image.open(out).size[1]              # one row instead of two
    assert cli_main(["visualize", str(default_run), "--images", str(tmp_path / "a.jpg"), "--semantic",
                     str(tmp_path / "nope.png"), "--instance", str(tmp_path / "a_ins.png"), "--out", str(out2)]) == 1
    assert "nope.png" in capsys.readouterr().err


def test_print_line_loads_with_timm(default_run, capsys):
    # the command's last line is the one that loads the export with timm; resume=auto on a finished run
    # continues from its last checkpoint and only re-exports
    rc = cli_main(["pretrain", *TINY, "data.num_samples=192", "batch_size=8", "epochs=1",
                   f"output_dir={default_run.parent}", "resume=auto", "viz_samples=0"])
    assert rc == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("python -c '") and line.endswith("'") and "local-dir:" in line, line
    scope = {}
    exec(line[len("python -c '"):-1], scope)                                  # the printed line, as is
    from safetensors.torch import load_file
    saved = load_file(default_run / "export" / "model.safetensors")
    assert saved.keys() == scope["m"].state_dict().keys()
    assert all(torch.equal(v, saved[k]) for k, v in scope["m"].state_dict().items())  # weights loaded

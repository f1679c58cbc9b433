"""Exact resume: a `c2fmae pretrain` process killed with SIGKILL after a checkpoint and restarted with
`resume=auto` ends with the same weights, optimizer state and losses as an uninterrupted run.

The runs span several epochs and are killed mid-epoch, so the data position matters: map-style
synthetic scenes (a new permutation each epoch) and an iterable WebDataset shard stream (shuffled
shards and shuffle buffer, resumed by skipping the consumed micro-batches).
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from test_train_run import TINY  # tests/ is on sys.path (pytest rootdir-relative import)

from c2fmae.data import SyntheticScenes, write_shards

# 40 samples / batch 8 = 5 steps per epoch, 6 epochs; checkpoints every 7 steps land mid-epoch
RUN = [*TINY, "deterministic=true", "num_workers=0", "data.num_samples=40", "batch_size=8", "epochs=6",
       "optim.lr=1e-3", "optim.warmup_epochs=1", "log_every=1", "ckpt_every=7", "keep_last=10", "viz_samples=0"]
TOTAL = 30


def _cmd(out, name, extra=()):
    return [sys.executable, "-m", "c2fmae.cli", "pretrain", *RUN, *extra, f"output_dir={out}", f"name={name}"]


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def _final(run_dir):
    return torch.load(run_dir / "checkpoints" / f"step_{TOTAL:08d}.pt", weights_only=True)


def _losses(run_dir):
    return {r["step"]: r["loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}


def _kill_after_checkpoint(cmd, ckpt_dir):
    """Start `cmd`, SIGKILL it as soon as its first checkpoint file exists; the checkpoint step."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    try:
        deadline = time.monotonic() + 300
        while not (ckpt_dir.is_dir() and any(p.name.startswith("step_") for p in ckpt_dir.iterdir())):
            assert proc.poll() is None, f"run exited before its first checkpoint: {proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return sorted(p.name for p in ckpt_dir.iterdir() if p.name.startswith("step_"))


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    write_shards(SyntheticScenes(40, 64, None, seed=5).iter_raw(), d, samples_per_shard=8, image_format="png",
                 progress=False)
    return ["data.source=shards", f"data.path={d}/shard-{{000000..000004}}.tar", "data.num_classes=10",
            "data.shuffle_buffer=16"]


@pytest.mark.slow
@pytest.mark.parametrize("source", ["synthetic", "shards"])
def test_sigkill_then_resume_auto_equals_uninterrupted(source, shards, tmp_path):
    extra = shards if source == "shards" else []
    _run(_cmd(tmp_path, "ref", extra))
    ref = _final(tmp_path / "ref")

    killed = _kill_after_checkpoint(_cmd(tmp_path, "cut", extra), tmp_path / "cut" / "checkpoints")
    assert f"step_{TOTAL:08d}.pt" not in killed and not (tmp_path / "cut" / "export").exists()  # killed midway
    first = int(killed[-1][5:13])
    assert 0 < first < TOTAL and first % 5, first                             # mid-epoch
    p = _run(_cmd(tmp_path, "cut", [*extra, "resume=auto"]))                  # the same command + resume=auto
    assert "local-dir:" in p.stdout.strip().splitlines()[-1]

    got = _final(tmp_path / "cut")
    assert got["step"] == ref["step"] == TOTAL
    for k, v in ref["model"].items():
        assert torch.equal(got["model"][k], v), k
    for i, s in ref["optimizer"]["state"].items():
        for k, v in s.items():
            assert torch.equal(got["optimizer"]["state"][i][k], v), (i, k)
    assert got["scheduler"] == ref["scheduler"]
    assert _losses(tmp_path / "cut") == _losses(tmp_path / "ref")             # every step logged once, same loss
    assert sorted(_losses(tmp_path / "ref")) == list(range(1, TOTAL + 1))


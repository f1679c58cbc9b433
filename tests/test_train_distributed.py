"""2-process training on CPU (gloo) through torchrun equals the 1-process run with the same global batch.

A global batch is split into `world_size * accum_steps` micro-batches, each with its own samples and
masking seed (`c2fmae.train.sampler`), so 2 processes x 1 micro-batch and 1 process x 2 accumulated
micro-batches compute the same gradients (up to float reduction order): DDP must match it, and FSDP2
(`fsdp=true`, parameters sharded over the 2 ranks) too.
"""
import json
import os
import subprocess
import sys

import pytest
import torch
from test_train_run import TINY  # tests/ is on sys.path (pytest rootdir-relative import)

RUN = [*TINY, "num_workers=0", "data.num_samples=48", "batch_size=8", "steps=5", "optim.lr=1e-3",
       "optim.warmup_epochs=0.5", "optim.clip_grad=1.0", "log_every=1", "ckpt_every=100", "viz_samples=0"]


def _pretrain(out, name, *extra, nproc=1):
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] \
        if nproc > 1 else [sys.executable]
    cmd = [*launch, "-m", "c2fmae.cli", "pretrain", *RUN, *extra, f"output_dir={out}", f"name={name}"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    ckpt = torch.load(out / name / "checkpoints" / "step_00000005.pt", weights_only=True)
    assert ckpt["world_size"] == nproc
    return ckpt


def _losses(run_dir) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _rel_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    num = sum(float((a[k].double() - b[k].double()).norm()) ** 2 for k in a) ** 0.5
    return num / sum(float(b[k].double().norm()) ** 2 for k in b) ** 0.5


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return out, _pretrain(out, "single", "accum_steps=2")


@pytest.mark.slow
def test_ddp_two_processes_equal_one_process(single):
    out, ref = single
    ddp = _pretrain(out, "ddp", nproc=2)
    assert _rel_diff(ddp["model"], ref["model"]) < 1e-5
    assert _losses(out / "ddp") == pytest.approx(_losses(out / "single"), rel=1e-5)  # logged mean over ranks
    assert (out / "ddp" / "export" / "model.safetensors").is_file()             # rank 0 exported


@pytest.mark.slow
def test_fsdp2_two_processes_equal_one_process(single):
    out, ref = single
    fsdp = _pretrain(out, "fsdp", "fsdp=true", nproc=2)
    assert _rel_diff(fsdp["model"], ref["model"]) < 1e-5                     # full (unsharded) state dict
    assert fsdp["step"] == 5 and fsdp["config"]["fsdp"] is True

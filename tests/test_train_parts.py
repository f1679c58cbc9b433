"""Checkpoint files, the lr schedule and the resumable sampler (no model needed)."""
import math
import os

import pytest
import torch

from c2fmae.train.checkpoint import (
    checkpoint_path,
    get_rng_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    set_rng_state,
)
from c2fmae.train.sampler import StepBatchSampler
from c2fmae.train.schedule import CosineSchedule


def test_checkpoint_atomic_keep_last_and_weights_only(tmp_path):
    for step in (5, 10, 15, 20):
        save_checkpoint({"step": step, "w": torch.full((2,), float(step)), "rng": get_rng_state()},
                        checkpoint_path(tmp_path, step))
    assert [p.name for p in list_checkpoints(tmp_path)] == [f"step_{s:08d}.pt" for s in (5, 10, 15, 20)]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if ".tmp" in p.name]
    prune_checkpoints(tmp_path, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000015.pt", "step_00000020.pt"]
    ckpt = torch.load(latest_checkpoint(tmp_path), weights_only=True)  # plain types and tensors only
    assert ckpt["step"] == 20 and torch.equal(ckpt["w"], torch.full((2,), 20.0))


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="bad.pt"):
        load_checkpoint(bad)


def test_rng_state_roundtrip(tmp_path):
    import random

    import numpy as np
    path = save_checkpoint({"rng": get_rng_state()}, tmp_path / "r.pt")
    first = (random.random(), float(np.random.rand()), torch.rand(3))
    set_rng_state(load_checkpoint(path)["rng"])
    again = (random.random(), float(np.random.rand()), torch.rand(3))
    assert first[:2] == again[:2] and torch.equal(first[2], again[2])


def test_cosine_schedule_hand_values():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p]}, {"params": [], "lr_scale": 0.5}], lr=1.0)
    s = CosineSchedule(opt, lr=1.0, total_steps=10, warmup_steps=4, min_lr=0.1)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        s.step()
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]                      # linear warmup
    assert lrs[4] == pytest.approx(1.0)                            # cosine start
    assert lrs[7] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 3 / 6)))
    assert all(lrs[i] >= lrs[i + 1] for i in range(4, 9))           # decreasing
    assert opt.param_groups[1]["lr"] == pytest.approx(0.5 * s.lr_at(10))
    s2 = CosineSchedule(opt, lr=1.0, total_steps=10, warmup_steps=4, min_lr=0.1)
    s2.load_state_dict(s.state_dict())
    assert s2.lr_at(s2.step_count) == s.lr_at(s.step_count)


@pytest.mark.parametrize("world,accum", [(2, 1), (1, 2), (2, 2)])
def test_sampler_same_global_batches_for_any_split(world, accum):
    """The samples of each optimizer step do not depend on how the global batch is split."""
    ref = list(StepBatchSampler(50, 8, seed=3, epoch=2))                 # 6 steps of 8
    parts = [list(StepBatchSampler(50, 8, 3, 2, rank=r, world_size=world, accum_steps=accum))
             for r in range(world)]
    for step in range(6):
        got = [i for r in range(world) for i in sum(parts[r][step * accum:(step + 1) * accum], [])]
        assert got == ref[step]
    seen = sum(ref, [])
    assert len(set(seen)) == len(seen) == 48                             # no repeats within an epoch
    assert list(StepBatchSampler(50, 8, 3, 2, start_step=4)) == ref[4:]  # resume mid-epoch
    assert list(StepBatchSampler(50, 8, 3, 3)) != ref                    # new order each epoch


def test_save_checkpoint_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = checkpoint_path(tmp_path, 1)
    save_checkpoint({"step": 1}, path)

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint({"step": 2}, path)
    assert load_checkpoint(path)["step"] == 1 and os.listdir(path.parent) == [path.name]

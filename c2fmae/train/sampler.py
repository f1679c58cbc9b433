"""Deterministic, resumable batch sampling for map-style datasets, sharded over ranks.

Epoch `e` visits `randperm(len(dataset), seed=(seed, e))` in global batches of `batch_size`
(drop-last). A global batch is split into `world_size * accum_steps` micro-batches; micro-batch
`j = rank * accum_steps + k` goes to rank `rank` as its k-th accumulation step. So the samples (and,
with the per-micro-batch seed of the training loop, the masks) of one optimizer step are the same
for any (world_size, accum_steps) with the same product, and the position in the data is a pure
function of the step: a resumed run continues with the exact next batch.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["StepBatchSampler", "micro_seed"]


def micro_seed(seed: int, step: int, micro: int) -> int:
    """Seed of the global RNG for micro-batch `micro` of optimizer step `step` (masking, drop path)."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(step), int(micro)]).generate_state(1)[0])


class StepBatchSampler(Sampler[list[int]]):
    """Yields this rank's micro-batches of one epoch, from optimizer step `start_step` (within the epoch).

    Args:
        num_samples: dataset length.
        batch_size: global batch per optimizer step.
        seed, epoch: the permutation of this epoch.
        rank, world_size, accum_steps: sharding; `batch_size` must be divisible by world_size * accum_steps.
        start_step: first optimizer step of the epoch to yield (resume).
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, epoch: int, rank: int = 0,
                 world_size: int = 1, accum_steps: int = 1, start_step: int = 0):
        parts = world_size * accum_steps
        if batch_size % parts:
            raise ValueError(f"batch_size={batch_size} is not divisible by world_size*accum_steps={parts}")
        if num_samples < batch_size:
            raise ValueError(f"the dataset has {num_samples} samples, fewer than one batch of {batch_size}")
        self.num_samples, self.batch_size, self.seed, self.epoch = num_samples, batch_size, seed, epoch
        self.rank, self.accum_steps, self.micro = rank, accum_steps, batch_size // parts
        self.steps_per_epoch = num_samples // batch_size
        self.start_step = start_step

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accum_steps

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(micro_seed(self.seed, self.epoch, -1 & 0xFFFF))
        perm = torch.randperm(self.num_samples, generator=g).tolist()
        for s in range(self.start_step, self.steps_per_epoch):
            for k in range(self.accum_steps):
                j = self.rank * self.accum_steps + k
                start = s * self.batch_size + j * self.micro
                yield perm[start:start + self.micro]

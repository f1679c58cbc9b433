"""Process-group setup for torchrun (one process to many nodes) and DDP / FSDP2 wrapping.

`torchrun --nproc_per_node=N -m c2fmae.cli pretrain ...` sets RANK / WORLD_SIZE / LOCAL_RANK; without
them the run is a single process. The backend is nccl on GPU and gloo on CPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistInfo", "init_distributed", "cleanup_distributed", "wrap_model", "broadcast_object",
           "gather_objects", "all_reduce_mean"]


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _resolve_device(device: str, local_rank: int) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = f"cuda:{local_rank}"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} but CUDA is not available (use device=cpu)")
    return torch.device(device)


def init_distributed(device: str = "auto") -> DistInfo:
    """Initialise the default process group from torchrun's environment (no-op for one process)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = _resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=dev if dev.type == "cuda" else None)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank (identity without a process group)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """`[obj of rank 0, obj of rank 1, ...]` on every rank."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (for logging)."""
    if dist.is_initialized():
        x = x.clone()
        dist.all_reduce(x)
        x /= dist.get_world_size()
    return x


def wrap_model(model: nn.Module, info: DistInfo, fsdp: bool = False, mixed_bf16: bool = False,
               find_unused_parameters: bool = False) -> nn.Module:
    """DDP, or FSDP2 `fully_shard` on each encoder block and then the whole model.

    FSDP2 shards the module in place (parameters become DTensors) and returns it; DDP returns a
    wrapper whose `.module` is the model.
    """
    if fsdp:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        if not dist.is_initialized():
            raise RuntimeError("fsdp=true needs a process group: launch with torchrun")
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if mixed_bf16 else None
        kw = {"mp_policy": mp} if mp is not None else {}
        for block in getattr(getattr(model, "encoder", None), "blocks", []):
            fully_shard(block, **kw)
        fully_shard(model, **kw)
        return model
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP
        ids = [info.device.index] if info.device.type == "cuda" else None
        return DDP(model, device_ids=ids, find_unused_parameters=find_unused_parameters)
    return model

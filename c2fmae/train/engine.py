"""The pretraining loop: `train(cfg)` runs one C2FMAE pretraining job and returns its run directory.

One optimizer step = `accum_steps` micro-batches per rank; the global RNG is re-seeded from
`(seed, step, micro-batch)` before each forward, so masking and drop-path depend on the step and
micro-batch index only: runs are exact across resume, and equal (up to float reduction order) for
any world_size x accum_steps with the same product (2 DDP ranks == 1 process with accum_steps=2).
Resume restores model, optimizer, schedule, grad scaler, step, RNG states and the data position
(a pure function of the step; the curriculum is one too: progress = step / total).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from c2fmae.data import build_dataset, worker_init_fn
from c2fmae.models.c2fmae import C2FMAE

from .checkpoint import (
    checkpoint_path,
    get_rng_state,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    set_rng_state,
)
from .config import TrainConfig, config_to_dict
from .distributed import (
    DistInfo,
    all_reduce_mean,
    broadcast_object,
    cleanup_distributed,
    gather_objects,
    init_distributed,
    wrap_model,
)
from .logger import MetricsLogger, truncate_metrics
from .run import resolve_run
from .sampler import StepBatchSampler, micro_seed
from .schedule import CosineSchedule

__all__ = ["train", "param_groups"]

LOSS_KEYS = ("loss", "loss_sem", "loss_ins", "loss_rgb")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases, norms (1-d params), tokens, pos embeds and the model's
    `no_weight_decay()` names (MAE's `add_weight_decay`)."""
    skip_names = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim <= 1 or name in skip_names or name.endswith(("token", "_embed"))
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _precision(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    p = cfg.precision
    if p == "auto":
        p = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[p]


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _check_model_vs_data(model: C2FMAE, cfg: TrainConfig) -> None:
    img = getattr(model.encoder.patch_embed, "img_size", None)
    size = getattr(cfg.data, "img_size", None)
    if img is not None and size is not None and tuple(img) != (size, size):
        raise ValueError(f"data.img_size={size} does not match the encoder's img_size {tuple(img)} "
                         f"(set model.encoder_kwargs.img_size={size} or data.img_size={img[0]})")


class _Trainer:
    """Holds the objects of one run; `run()` is the loop."""

    def __init__(self, cfg: TrainConfig, info: DistInfo):
        self.cfg, self.info = cfg, info
        dev = info.device
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        # data (build fails here, naming a missing path, before the model is built)
        try:
            self.dataset = build_dataset(cfg.data, train=True, rank=info.rank, world_size=info.world_size)
        except (FileNotFoundError, NotADirectoryError) as e:
            raise FileNotFoundError(f"data.path={cfg.data.path!r} (data.source={cfg.data.source}): {e}") from e
        missing = [u for u in getattr(self.dataset, "urls", []) if "://" not in u and not u.startswith("pipe:")
                   and not os.path.isfile(u)]
        if missing:  # local shards are read lazily: check them all now, not after the first epoch
            raise FileNotFoundError(f"data.path={cfg.data.path!r}: {len(missing)} of {len(self.dataset.urls)} "
                                    f"shards do not exist, e.g. {missing[0]}")
        self.iterable = isinstance(self.dataset, torch.utils.data.IterableDataset)
        n = cfg.data.num_samples if self.iterable else len(self.dataset)  # shards: epoch = data.num_samples
        if n < cfg.batch_size:
            raise ValueError(f"batch_size={cfg.batch_size} is larger than the dataset ({n} samples; "
                             f"data.num_samples / data.path)")
        if cfg.batch_size % (info.world_size * cfg.accum_steps):
            raise ValueError(f"batch_size={cfg.batch_size} is not divisible by world_size*accum_steps="
                             f"{info.world_size}*{cfg.accum_steps}")
        self.steps_per_epoch = n // cfg.batch_size
        self.total_steps = cfg.steps or max(1, round(cfg.epochs * self.steps_per_epoch))

        # run directory (after the data checks, so a bad path leaves no run behind)
        # and the checkpoint to resume (decided on rank 0, shared with all ranks)
        self.run_dir, resume_from = broadcast_object(resolve_run(cfg) if info.is_main else None)
        self.run_dir = Path(self.run_dir)
        ckpt = load_checkpoint(resume_from) if resume_from else None
        if ckpt is not None and "step" not in ckpt:
            raise ValueError(f"resume: {resume_from} is not a training checkpoint (no 'step')")

        # model (same init on every rank), weights of the checkpoint before wrapping
        torch.manual_seed(cfg.seed)
        self.model = C2FMAE(cfg.model)
        _check_model_vs_data(self.model, cfg)
        if ckpt is not None:
            self.model.load_state_dict(ckpt["model"])
        if cfg.grad_checkpointing:
            self.model.encoder.set_grad_checkpointing(True)  # timm's checkpoint_seq over the encoder blocks
        self.model.to(dev)
        self.amp_dtype = _precision(cfg, dev)
        self.wrapped = wrap_model(self.model, info, fsdp=cfg.fsdp, mixed_bf16=self.amp_dtype is torch.bfloat16,
                                  find_unused_parameters=cfg.find_unused_parameters)
        self.forward = torch.compile(self.wrapped) if cfg.compile else self.wrapped

        # optimizer, schedule, scaler
        o = cfg.optim
        self.lr = o.lr if o.lr is not None else o.blr * cfg.batch_size / 256
        fused = (dev.type == "cuda") if o.fused is None else o.fused
        self.optimizer = torch.optim.AdamW(param_groups(self.model, o.weight_decay), lr=self.lr, betas=o.betas,
                                           eps=o.eps, fused=fused or None)
        warmup = round(o.warmup_epochs * self.steps_per_epoch)
        self.schedule = CosineSchedule(self.optimizer, self.lr, self.total_steps, warmup, o.min_lr)
        self.scaler = torch.amp.GradScaler(dev.type, enabled=self.amp_dtype is torch.float16)
        self.step = 0
        if ckpt is not None:
            self._load_state(ckpt)
        self.logger = MetricsLogger(self.run_dir, enabled=info.is_main, tensorboard=cfg.tensorboard,
                                    wandb_project=cfg.wandb, config=config_to_dict(cfg))
        if info.is_main:
            truncate_metrics(self.logger.path, self.step)

    # ------------------------------------------------------------------ state
    def _load_state(self, ckpt: dict[str, Any]) -> None:
        if self.cfg.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
            set_optimizer_state_dict(self.wrapped, self.optimizer, ckpt["optimizer"],
                                     options=StateDictOptions(full_state_dict=True))
        else:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["step"])
        rng = ckpt.get("rng") or []
        if len(rng) == self.info.world_size:
            set_rng_state(rng[self.info.rank])

    def _state(self) -> dict[str, Any] | None:
        """The checkpoint dict (on rank 0; None elsewhere). Collective under FSDP."""
        if self.cfg.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict
            model_sd, optim_sd = get_state_dict(self.wrapped, self.optimizer,
                                                options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        else:
            model_sd, optim_sd = self.model.state_dict(), self.optimizer.state_dict()
        rng = gather_objects(get_rng_state())
        if not self.info.is_main:
            return None
        return {
            "model": {k: v.detach().cpu() for k, v in model_sd.items()}, "optimizer": optim_sd,
            "scheduler": self.schedule.state_dict(), "scaler": self.scaler.state_dict(), "step": self.step,
            "epoch": self.step // self.steps_per_epoch, "total_steps": self.total_steps, "rng": rng,
            "world_size": self.info.world_size, "config": config_to_dict(self.cfg),
        }

    def save(self) -> Path | None:
        state = self._state()
        path = None
        if self.info.is_main:
            path = save_checkpoint(state, checkpoint_path(self.run_dir, self.step))
            prune_checkpoints(self.run_dir, self.cfg.keep_last)
        return path

    # ------------------------------------------------------------------ data
    def _batches(self, start_step: int):
        """Micro-batches from optimizer step `start_step` to the end of training, epoch by epoch.

        Map-style datasets: `StepBatchSampler` (exact position, any world size). Iterable (shard)
        datasets: epoch `e` is the stream of `set_epoch(e)`, cut at `data.num_samples // batch_size`
        steps; a resumed run skips the micro-batches already consumed in the epoch (same num_workers).
        """
        cfg, info = self.cfg, self.info
        micro = cfg.batch_size // (info.world_size * cfg.accum_steps)
        step = start_step
        while step < self.total_steps:
            epoch, pos = divmod(step, self.steps_per_epoch)
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            kw = dict(num_workers=cfg.num_workers, pin_memory=info.device.type == "cuda",
                      worker_init_fn=worker_init_fn)
            if self.iterable:
                loader = torch.utils.data.DataLoader(self.dataset, batch_size=micro, drop_last=True, **kw)
            else:
                sampler = StepBatchSampler(len(self.dataset), cfg.batch_size, cfg.seed, epoch, info.rank,
                                           info.world_size, cfg.accum_steps, pos)
                loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=sampler, **kw)
            it = iter(loader)
            if self.iterable:
                for _ in range(pos * cfg.accum_steps):
                    next(it)
            for _ in range(pos, self.steps_per_epoch):
                try:
                    yield [next(it) for _ in range(cfg.accum_steps)]
                except StopIteration:
                    raise ValueError(f"data.path: the data of epoch {epoch} ran out before "
                                     f"{self.steps_per_epoch} steps on rank {info.rank}; set data.num_samples to the "
                                     f"number of samples in the shards (now {cfg.data.num_samples})") from None
                step += 1
                if step >= self.total_steps:
                    return

    # ------------------------------------------------------------------ loop
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.info.device.type, dtype=self.amp_dtype)

    def train_step(self, micro_batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        cfg, info = self.cfg, self.info
        progress = self.step / self.total_steps
        sums: dict[str, torch.Tensor] = {}
        for k, batch in enumerate(micro_batches):
            torch.manual_seed(micro_seed(cfg.seed, self.step, info.rank * cfg.accum_steps + k))
            batch = _to(batch, info.device)
            sync = k == len(micro_batches) - 1 or not hasattr(self.wrapped, "no_sync")
            ctx = contextlib.nullcontext() if sync else self.wrapped.no_sync()
            if cfg.fsdp and hasattr(self.wrapped, "set_requires_gradient_sync"):
                self.wrapped.set_requires_gradient_sync(k == len(micro_batches) - 1)
            with ctx:
                with self._autocast():
                    out = self.forward(batch, progress=progress)
                self.scaler.scale(out["loss"] / cfg.accum_steps).backward()
            for key in LOSS_KEYS:
                if key in out:
                    sums[key] = sums.get(key, 0.0) + out[key].detach().float() / cfg.accum_steps
        if cfg.optim.clip_grad is not None:
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.wrapped.parameters(), cfg.optim.clip_grad)
            sums["grad_norm"] = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP2: a DTensor
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        self.step += 1
        return sums

    def run(self) -> Path:
        from c2fmae import viz
        cfg, info = self.cfg, self.info
        main = info.is_main
        if main:
            (self.run_dir / "config.yaml").write_text(_yaml(config_to_dict(cfg)))
            viz.curriculum_plot(self.model.cfg, self.run_dir / "curriculum.png", total_steps=self.total_steps,
                                step=self.step)
        if self.step == 0:
            self._viz(tag="start")
        bar = None
        if main:
            from tqdm.auto import tqdm
            bar = tqdm(total=self.total_steps, initial=self.step, desc=self.run_dir.name, unit="step",
                       dynamic_ncols=True)
        acc: dict[str, torch.Tensor] = {}
        n_acc, t0 = 0, time.perf_counter()
        self.wrapped.train()
        for micro_batches in self._batches(self.step):
            sums = self.train_step(micro_batches)
            for k, v in sums.items():
                acc[k] = acc.get(k, 0.0) + v
            n_acc += 1
            last = self.step == self.total_steps
            if self.step % cfg.log_every == 0 or last:
                means = {k: all_reduce_mean(v / n_acc).item() for k, v in acc.items()}
                if not math.isfinite(means["loss"]):
                    raise FloatingPointError(f"non-finite loss at step {self.step}: {means} (last checkpoint "
                                             f"is kept; try optim.clip_grad=1.0 or precision=fp32)")
                dt = time.perf_counter() - t0
                metrics = {**means, "lr": self.schedule.get_last_lr()[0], "img_per_s": n_acc * cfg.batch_size / dt,
                           "epoch": self.step / self.steps_per_epoch, "progress": self.step / self.total_steps}
                self.logger.log(self.step, metrics)
                if bar is not None:
                    post = {k.replace("loss_", ""): f"{means[k]:.3f}" for k in LOSS_KEYS if k in means}
                    bar.set_postfix(post | {"img/s": f"{metrics['img_per_s']:.1f}"}, refresh=False)  # in this order
                acc, n_acc, t0 = {}, 0, time.perf_counter()
            if bar is not None:
                bar.update(1)
            if cfg.viz_every and self.step % cfg.viz_every == 0 and not last:
                self._viz(tag=f"step{self.step:08d}")
            if self.step % cfg.ckpt_every == 0 and not last:
                self.save()
        if bar is not None:
            bar.close()
        final = self.save()
        self._viz(tag="end")
        self.logger.close()
        if main and cfg.export and final is not None:
            from c2fmae.hub import export
            export(final, self.run_dir / "export")
        return self.run_dir

    def _viz(self, tag: str) -> None:
        """Reconstruction grid of fixed eval samples (rank 0 writes; every rank runs it under FSDP)."""
        from c2fmae import viz
        if not (self.info.is_main or self.cfg.fsdp) or self.cfg.viz_samples == 0:
            return
        model = self.wrapped if self.cfg.fsdp else self.model
        viz.save_reconstructions(model, self.cfg, self.run_dir / f"recon_{tag}.png",
                                 progress=self.step / self.total_steps, device=self.info.device,
                                 num_samples=self.cfg.viz_samples, write=self.info.is_main)


def _yaml(d: dict[str, Any]) -> str:
    import yaml
    return yaml.safe_dump(d, sort_keys=False)


def train(cfg: TrainConfig) -> Path:
    """Run (or resume) pretraining with `cfg`; returns the run directory. Launch under torchrun for DDP."""
    info = init_distributed(cfg.device)
    try:
        return _Trainer(cfg, info).run()
    finally:
        cleanup_distributed()

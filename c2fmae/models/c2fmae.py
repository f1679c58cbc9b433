""" C2FMAE pretraining model: input adapters + timm ViT encoder + coarse-to-fine decoder + losses

Paper: `From Semantics to Pixels: Coarse-to-Fine Masked Autoencoders for Hierarchical Visual
Understanding` - https://arxiv.org/abs/2603.09955 ; design choices the paper leaves open are
documented in DESIGN §4 and are all fields of `C2FMAEConfig`.

    model = C2FMAE(C2FMAEConfig())
    out = model(batch, progress=step / total_steps)
    out["loss"].backward()

`model.encoder` is a plain timm `VisionTransformer` (its keys are `encoder.*`): the rgb adapter is
its `patch_embed`, the shared position embedding its (frozen, sin-cos) `pos_embed`, as in MAE.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import timm
import torch
import torch.nn as nn
from timm.models import checkpoint_seq

from .. import curriculum, losses, masking
from .adapters import IdAdapter, relabel_instances, sincos_pos_embed_2d
from .decoder import DECODER_MODES, C2FDecoder

__all__ = ["MODALITIES", "BATCH_KEYS", "C2FMAEConfig", "C2FMAE"]

MODALITIES = ("rgb", "sem", "ins")
BATCH_KEYS = {"rgb": "image", "sem": "semantic", "ins": "instance"}


@dataclass
class C2FMAEConfig:
    """ Every default of DESIGN §4. Plain types only (YAML via `dataclasses.asdict`). """
    encoder: str = "c2fmae_vit_base_patch16_224"  # a registered timm arch
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)  # img_size, patch_size, embed_dim, ...
    inputs: list[str] = field(default_factory=lambda: ["rgb", "sem", "ins"])
    targets: list[str] = field(default_factory=lambda: ["sem", "ins", "rgb"])  # = decoder stage order
    decoder: str = "cascade"  # cascade | parallel | pixel (MAE decoder, rgb -> rgb only)
    decoder_dim: int = 256
    decoder_depth: int = 2  # self-attention blocks per stage (after 1 cross-attention block)
    decoder_heads: int = 8
    decoder_mlp_ratio: float = 4.0
    pixel_decoder_dim: int = 512  # MAE decoder
    pixel_decoder_depth: int = 8
    pixel_decoder_heads: int = 16
    num_visible: int | None = None  # None: N/2 with several inputs (98 at 224/16), N/4 with one (49)
    dirichlet_alpha: float = 1.0
    num_classes: int = 133  # COCO panoptic
    ignore_index: int = 255
    max_instances: int = 64  # K
    id_embed_dim: int = 64  # Embedding width of the sem / ins adapters
    ins_embed_dim: int = 16  # E, instance embedding predicted per label pixel
    delta_var: float = 0.5  # discriminative loss margins and norm weight
    delta_dist: float = 1.5
    ins_reg_weight: float = 0.001
    loss_weights: dict[str, float] = field(default_factory=lambda: {"sem": 1.0, "ins": 1.0, "rgb": 1.0})
    norm_pix_loss: bool = True
    schedule: str = "linear"  # linear | cosine | step | fixed
    t1: float = 0.4
    t2: float = 0.8
    fixed_probs: list[float] = field(default_factory=lambda: [0.0, 0.0, 1.0])  # (sem, ins, random)
    check_inputs: bool = True  # validate ids in the batch (one host sync per step)

    def __post_init__(self):
        self.inputs, self.targets = list(self.inputs), list(self.targets)
        self.fixed_probs = [float(p) for p in self.fixed_probs]
        self.encoder_kwargs, self.loss_weights = dict(self.encoder_kwargs), dict(self.loss_weights)
        for name in ("inputs", "targets"):
            vals = getattr(self, name)
            bad = [v for v in vals if v not in MODALITIES]
            if not vals or bad or len(set(vals)) != len(vals):
                raise ValueError(f"C2FMAEConfig.{name}={vals}: need distinct names from {MODALITIES}")
        if self.decoder not in DECODER_MODES:
            raise ValueError(f"C2FMAEConfig.decoder={self.decoder!r} is not one of {DECODER_MODES}")
        if self.decoder == "pixel" and (self.inputs != ["rgb"] or self.targets != ["rgb"]):
            raise ValueError("C2FMAEConfig.decoder='pixel' (MAE) needs inputs=['rgb'] and targets=['rgb']")
        curriculum.strategy_probs(0.0, self.schedule, self.t1, self.t2, self.fixed_probs)  # validates
        missing = [t for t in self.targets if t not in self.loss_weights]
        if missing:
            raise ValueError(f"C2FMAEConfig.loss_weights has no weight for targets {missing}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> C2FMAEConfig:
        """ Inverse of `dataclasses.asdict`; unknown keys raise a KeyError naming them. """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise KeyError(f"unknown C2FMAEConfig keys {unknown}; valid keys: {sorted(names)}")
        return cls(**d)


class C2FMAE(nn.Module):
    """ Coarse-to-fine masked autoencoder (see module docstring and DESIGN §4). """

    def __init__(self, cfg: C2FMAEConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or C2FMAEConfig()
        self.encoder = timm.create_model(cfg.encoder, **{"num_classes": 0, **cfg.encoder_kwargs})  # no head
        enc = self.encoder
        if getattr(enc, "cls_token", None) is None or enc.no_embed_class or enc.pos_embed is None:
            raise ValueError(f"encoder {cfg.encoder} must have a cls token and an absolute pos embed incl. cls slot")
        self.patch_size = enc.patch_embed.patch_size[0]
        self.grid_size = tuple(enc.patch_embed.grid_size)  # (h, w)
        self.img_size = tuple(enc.patch_embed.img_size)
        self.num_patches = N = self.grid_size[0] * self.grid_size[1]
        self.in_chans = enc.patch_embed.proj.in_channels
        D = enc.embed_dim
        if ("sem" in cfg.inputs + cfg.targets or "ins" in cfg.inputs + cfg.targets) and self.patch_size % 4:
            raise ValueError(f"semantic / instance maps are at stride 4: patch size {self.patch_size} must divide by 4")
        self.label_patch = self.patch_size // 4  # label pixels per patch side
        default_visible = N // 2 if len(cfg.inputs) > 1 else N // 4
        self.num_visible = default_visible if cfg.num_visible is None else cfg.num_visible
        if not 0 < self.num_visible <= N:
            raise ValueError(f"C2FMAEConfig.num_visible={cfg.num_visible} must be in [1, {N}] (patches per image)")

        # input adapters (rgb = encoder.patch_embed); shared frozen sin-cos pos embed = encoder.pos_embed
        self.adapters = nn.ModuleDict()
        if "sem" in cfg.inputs:
            self.adapters["sem"] = IdAdapter(cfg.num_classes + 1, self.label_patch, D, cfg.id_embed_dim)
        if "ins" in cfg.inputs:
            self.adapters["ins"] = IdAdapter(cfg.max_instances + 1, self.label_patch, D, cfg.id_embed_dim)

        q2 = self.label_patch ** 2
        out_dims = {"rgb": self.patch_size ** 2 * self.in_chans, "sem": q2 * cfg.num_classes,
                    "ins": q2 * cfg.ins_embed_dim}
        pixel = cfg.decoder == "pixel"
        self.decoder = C2FDecoder(
            cfg.decoder, tuple(cfg.targets), out_dims, tuple(cfg.inputs), D, self.grid_size,
            dim=cfg.pixel_decoder_dim if pixel else cfg.decoder_dim,
            depth=cfg.pixel_decoder_depth if pixel else cfg.decoder_depth,
            num_heads=cfg.pixel_decoder_heads if pixel else cfg.decoder_heads,
            mlp_ratio=4.0 if pixel else cfg.decoder_mlp_ratio,
        )
        self.initialize_weights()

    def initialize_weights(self):
        """ MAE initialisation: sin-cos pos embeds, xavier linears / patch projections, N(0, .02) tokens. """
        enc = self.encoder
        enc.pos_embed.data.copy_(sincos_pos_embed_2d(enc.embed_dim, self.grid_size, cls_token=True)[None])
        enc.pos_embed.requires_grad_(False)
        self.apply(self._init_weights)
        for conv in [enc.patch_embed.proj] + [a.proj for a in self.adapters.values()]:
            nn.init.xavier_uniform_(conv.weight.data.view([conv.weight.shape[0], -1]))
        nn.init.normal_(enc.cls_token, std=0.02)
        for stage in self.decoder.stages.values():
            nn.init.normal_(stage.mask_token, std=0.02)
            if stage.cross_attn:
                nn.init.normal_(stage.input_embed, std=0.02)
                nn.init.normal_(stage.query_embed, std=0.02)

    @staticmethod
    def _init_weights(m: nn.Module):
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)
        elif isinstance(m, nn.Embedding):
            nn.init.trunc_normal_(m.weight, std=0.02)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"encoder.pos_embed", "encoder.cls_token", "decoder.pos_embed"}

    # ---------------------------------------------------------------- inputs, masks and targets
    def _needed(self, strategy: torch.Tensor | None) -> set[str]:
        need = set(self.cfg.inputs) | set(self.cfg.targets)
        if strategy is not None:
            if bool((strategy == masking.SEMANTIC).any()):
                need.add("sem")
            if bool((strategy == masking.INSTANCE).any()):
                need.add("ins")
        return need

    def check_batch(self, batch: dict, need: set[str]) -> None:
        """ Raise an error naming the batch key and the problem (missing, shape, dtype, id range). """
        H, W = self.img_size
        for m in sorted(need):
            key = BATCH_KEYS[m]
            if key not in batch or batch[key] is None:
                why = "input/target" if m in self.cfg.inputs + self.cfg.targets else "guided masking"
                raise KeyError(f"batch[{key!r}] is missing: modality {m!r} is needed ({why}); "
                               f"batch keys: {sorted(batch)}")
            x = batch[key]
            if m == "rgb":
                if x.ndim != 4 or tuple(x.shape[1:]) != (self.in_chans, H, W) or not x.is_floating_point():
                    raise ValueError(f"batch['image'] must be a float tensor (B, {self.in_chans}, {H}, {W}), "
                                     f"got {x.dtype} {tuple(x.shape)}")
                continue
            if x.ndim != 3 or tuple(x.shape[1:]) != (H // 4, W // 4):
                raise ValueError(f"batch[{key!r}] must have shape (B, {H // 4}, {W // 4}) (stride 4 of the "
                                 f"{H}x{W} image), got {tuple(x.shape)}")
            if x.is_floating_point() or x.dtype == torch.bool:
                raise TypeError(f"batch[{key!r}] must hold integer ids, got dtype {x.dtype}")
            if m == "sem" and self.cfg.check_inputs:
                C, ign = self.cfg.num_classes, self.cfg.ignore_index
                bad = (x < 0) | ((x >= C) & (x != ign))
                if bool(bad.any()):
                    vals = torch.unique(x[bad])[:8].tolist()
                    raise ValueError(f"batch['semantic'] has class ids {vals} outside [0, {C}) (num_classes={C}) "
                                     f"that are not ignore_index={ign}")
        sizes = {BATCH_KEYS[m]: batch[BATCH_KEYS[m]].shape[0] for m in need | set(self.cfg.inputs)}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"batch tensors disagree on the batch size: {sizes}")

    @torch.no_grad()
    def prepare(
            self, batch: dict, progress: float = 0.0, noise: torch.Tensor | None = None,
            strategy: torch.Tensor | str | None = None,
    ) -> dict:
        """ Validate the batch, relabel instances, draw strategies and masks, build the targets.

        noise: [B, M, N] (or [B, N] with one input) per-position U[0, 1) noise; strategy: [B] codes
        (0 sem, 1 ins, 2 random) or one name of `masking.STRATEGIES`; drawn from the curriculum when None.
        """
        cfg = self.cfg
        need = self._needed(None)
        self.check_batch(batch, need)
        ref = batch[BATCH_KEYS[(cfg.inputs + cfg.targets)[0]]]
        B, dev = ref.shape[0], ref.device
        if strategy is None:
            probs = curriculum.strategy_probs(progress, cfg.schedule, cfg.t1, cfg.t2, cfg.fixed_probs)
            strategy = curriculum.draw_strategy(probs, B, dev)
        elif isinstance(strategy, str):
            if strategy not in masking.STRATEGIES:
                raise ValueError(f"strategy={strategy!r} is not one of {masking.STRATEGIES}")
            strategy = torch.full((B,), masking.STRATEGIES.index(strategy), dtype=torch.long, device=dev)
        strategy = strategy.to(dev).long()
        if strategy.shape != (B,):
            raise ValueError(f"strategy must have shape ({B},), got {tuple(strategy.shape)}")
        extra = self._needed(strategy) - need
        self.check_batch(batch, extra)
        need |= extra

        p = {"strategy": strategy}
        sem = batch.get("semantic")
        if "sem" in need:
            p["sem"] = torch.where(sem == cfg.ignore_index, torch.full_like(sem, cfg.num_classes), sem).long()
        if "ins" in need:
            p["ins"] = relabel_instances(batch["instance"], cfg.max_instances)

        # masks: one score per (input, position), Dirichlet budgets, one argsort
        M, N = len(cfg.inputs), self.num_patches
        if noise is None:
            noise = torch.rand(B, M, N, device=dev)
        if tuple(noise.shape) != (B, M, N) and not (M == 1 and tuple(noise.shape) == (B, N)):
            raise ValueError(f"noise must have shape ({B}, {M}, {N}) (batch, inputs, patches), got {list(noise.shape)}")
        noise = noise.reshape(B, M, N).to(dev)
        region = rank_noise = None
        if bool((strategy != masking.RANDOM).any()):
            s = self.label_patch
            sem_r = masking.patch_majority(p["sem"], s, cfg.num_classes + 1) if "sem" in p else None
            ins_r = masking.patch_majority(p["ins"], s, cfg.max_instances + 1) if "ins" in p else None
            region, R = masking.guided_regions(strategy, sem_r, ins_r, cfg.num_classes + 1, cfg.max_instances + 1)
            rank_noise = torch.rand(B, R, device=dev)  # region order, shared by the modalities of a sample
        score = masking.guided_scores(noise, strategy, region, rank_noise)
        budgets = masking.dirichlet_budgets(B, M, self.num_visible, cfg.dirichlet_alpha, dev)
        p["mask"], p["ids_keep"], p["ids_restore"] = masking.make_masks(score, budgets, self.num_visible)

        # targets in patch form
        if "rgb" in cfg.targets:
            p["target_rgb"] = losses.norm_pix_target(losses.patchify(batch["image"], self.patch_size),
                                                     cfg.norm_pix_loss)
        for t in ("sem", "ins"):
            if t in cfg.targets:
                p[f"target_{t}"] = losses.patchify(p[t] if t == "ins" else sem, self.label_patch)  # [B, N, Q]
        return p

    # ---------------------------------------------------------------- encoder / decoder / loss
    def embed_inputs(self, batch: dict, prep: dict, inputs: list[str] | None = None) -> torch.Tensor:
        """ All tokens of every input (default cfg.inputs), modality-major, with pos embed: [B, M*N, D]. """
        pos = self.encoder.pos_embed[:, 1:]
        toks = []
        for m in inputs or self.cfg.inputs:
            x = self.encoder.patch_embed(batch["image"]) if m == "rgb" else self.adapters[m](prep[m])
            toks.append(x + pos)
        return torch.cat(toks, dim=1)

    def forward_encoder(self, tokens: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """ tokens: [B, M*N, D], ids_keep: [B, V] -> latent [B, 1+V, D] (MAE `forward_encoder`). """
        enc = self.encoder
        x = torch.gather(tokens, 1, ids_keep[..., None].expand(-1, -1, tokens.shape[-1]))  # [B, V, D]
        cls = (enc.cls_token + enc.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = enc.pos_drop(torch.cat([cls, x], dim=1))
        x = enc.norm_pre(x)
        if enc.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(enc.blocks, x)
        else:
            x = enc.blocks(x)
        return enc.norm(x)

    def forward_loss(self, preds: dict, prep: dict) -> dict:
        """ Loss of every target on the positions its modality hid (all positions if not an input). """
        cfg, out = self.cfg, {}
        B, N = prep["mask"].shape[0], self.num_patches
        total = 0.0
        for t, pred in preds.items():
            mask = prep["mask"][:, cfg.inputs.index(t)] if t in cfg.inputs else pred.new_ones(B, N)
            if t == "rgb":
                loss = losses.norm_pix_mse(pred, prep["target_rgb"], mask)
            elif t == "sem":
                logits = pred.reshape(B, N, -1, cfg.num_classes)
                loss = losses.semantic_ce(logits, prep["target_sem"], mask, cfg.ignore_index)
            else:
                emb = pred.reshape(B, N, -1, cfg.ins_embed_dim)
                loss = losses.discriminative_loss(emb, prep["target_ins"], mask, cfg.max_instances + 1,
                                                  cfg.delta_var, cfg.delta_dist, cfg.ins_reg_weight)
            out[f"loss_{t}"] = loss
            total = total + cfg.loss_weights[t] * loss
        out["loss"] = total
        return out

    def forward(
            self, batch: dict, progress: float = 0.0, noise: torch.Tensor | None = None,
            strategy: torch.Tensor | str | None = None,
    ) -> dict:
        """ batch: {'image', 'semantic', 'instance'} (TEAM.md contract); progress t = step / total steps.

        Returns {'loss', 'loss_<target>', 'pred_<target>' [B, N, out_dim] (patch form, see
        `unpatchify`), 'mask' [B, M, N] (1 = hidden, cfg.inputs order), 'strategy' [B]}.
        """
        prep = self.prepare(batch, progress, noise, strategy)
        latent = self.forward_encoder(self.embed_inputs(batch, prep), prep["ids_keep"])  # [B, 1+V, D]
        preds = self.decoder(latent, prep["ids_keep"], prep["ids_restore"])
        out = self.forward_loss(preds, prep)
        out.update({f"pred_{t}": v for t, v in preds.items()})
        out["mask"], out["strategy"] = prep["mask"], prep["strategy"]
        return out

    def unpatchify(self, pred: torch.Tensor, target: str) -> torch.Tensor:
        """ pred_<target> [B, N, out] -> rgb [B, 3, H, W] / sem logits [B, C, H/4, W/4] / ins [B, E, H/4, W/4]. """
        if target == "rgb":
            return losses.unpatchify(pred, self.patch_size, self.grid_size, self.in_chans)
        ch = self.cfg.num_classes if target == "sem" else self.cfg.ins_embed_dim
        return losses.unpatchify(pred, self.label_patch, self.grid_size, ch)

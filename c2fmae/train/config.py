"""Typed training configuration: dataclasses, YAML recipes with `_base_` inheritance, dotted overrides.

`TrainConfig` nests the model's `C2FMAEConfig` (`model.*`) and the data's `DataConfig` (`data.*`)
unchanged, next to the optimiser (`optim.*`) and the run settings. A recipe is a YAML file whose keys
mirror the dataclasses; it may name a `_base_` file (relative to itself) that it overrides. The
shipped recipes live in `c2fmae/configs/` and are found by name:

    load_config("c2fmae_vit_base_in1k", ["epochs=400", "optim.blr=1.0e-4"])
    load_config("c2fmae_vit_base_in1k_400e")   # `_<N>e` suffix = the same recipe with epochs=N

Every key and value is checked against the dataclass field types before anything runs; an unknown
key or a bad value raises `ConfigError` naming the key (`model.decodr: unknown key; ...`).
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from c2fmae.data import DataConfig
from c2fmae.models.c2fmae import C2FMAEConfig

__all__ = ["ConfigError", "OptimConfig", "TrainConfig", "load_config", "config_to_dict", "config_from_dict",
           "recipe_path", "list_recipes", "CONFIG_DIR"]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A bad configuration key or value; the message starts with the dotted key."""


@dataclass
class OptimConfig:
    """AdamW + per-step cosine schedule (MAE recipe: lr = blr * batch_size / 256)."""
    blr: float = 1.5e-4                     # base lr per 256 images
    lr: float | None = None                 # absolute lr; overrides blr when set
    min_lr: float = 0.0                     # end of the cosine
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.05              # not applied to biases, norms, tokens, pos embeds
    warmup_epochs: float = 40.0             # linear warmup (converted to steps)
    clip_grad: float | None = None          # max grad norm; None = no clipping
    fused: bool | None = None               # None = fused AdamW where available (CUDA)


@dataclass
class TrainConfig:
    """One pretraining run. `batch_size` is the GLOBAL batch (all ranks x accumulation steps)."""
    model: C2FMAEConfig = field(default_factory=C2FMAEConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    batch_size: int = 4096                  # global batch per optimizer step
    accum_steps: int = 1                    # gradient accumulation (micro-batch = batch / world / accum)
    epochs: float = 1600.0                  # length in epochs of `data.num_samples` (or the dataset length)
    steps: int = 0                          # > 0: total optimizer steps (overrides epochs)
    seed: int = 0                           # model init, data order, masking (pure function of the step)
    device: str = "auto"                    # auto | cpu | cuda | cuda:N
    precision: str = "auto"                 # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp16 | fp32
    compile: bool = False                   # torch.compile the model
    fsdp: bool = False                      # FSDP2 fully_shard per encoder block (ViT-L/H) instead of DDP
    grad_checkpointing: bool = False        # activation checkpointing in the encoder blocks
    find_unused_parameters: bool = False    # DDP option (needed when some modality is never used)
    deterministic: bool = False             # torch.use_deterministic_algorithms (bit-exact resume tests)
    num_workers: int = 8                    # DataLoader workers per rank
    num_threads: int = 0                    # torch CPU threads per rank; 0 = torch's default (all cores)
    output_dir: str = "runs"                # runs go to <output_dir>/<name>
    name: str = ""                          # run name; "" = <recipe>-<timestamp>
    resume: str = ""                        # "" | auto | path to a run dir or checkpoint
    ckpt_every: int = 1000                  # save every N steps (and always at the end)
    keep_last: int = 3                      # keep the last k step checkpoints
    log_every: int = 10                     # metrics.jsonl / progress bar every N steps
    viz_every: int = 0                      # reconstruction grid every N steps; 0 = start and end only
    viz_samples: int = 4                    # rows in the reconstruction grid
    export: bool = True                     # export the timm encoder to <run>/export at the end
    tensorboard: bool = False               # TensorBoard logs in <run>/tb
    wandb: str = ""                         # W&B project name ("" = off)
    recipe: str = ""                        # set by load_config: the recipe the run came from


_CHOICES = {"device": None, "precision": ("auto", "bf16", "fp16", "fp32")}


def _validate(cfg: TrainConfig) -> None:
    """Cross-field checks that plain types cannot express."""
    def bad(key: str, msg: str) -> None:
        raise ConfigError(f"{key}: {msg}")

    if cfg.precision not in _CHOICES["precision"]:
        bad("precision", f"must be one of {_CHOICES['precision']}, got {cfg.precision!r}")
    if cfg.device != "auto" and not re.fullmatch(r"cpu|cuda(:\d+)?|mps", cfg.device):
        bad("device", f"must be auto, cpu, cuda or cuda:N, got {cfg.device!r}")
    for key in ("batch_size", "accum_steps", "ckpt_every", "keep_last", "log_every"):
        if getattr(cfg, key) < 1:
            bad(key, f"must be >= 1, got {getattr(cfg, key)}")
    for key in ("steps", "viz_every", "num_workers", "num_threads", "viz_samples"):
        if getattr(cfg, key) < 0:
            bad(key, f"must be >= 0, got {getattr(cfg, key)}")
    if cfg.steps == 0 and cfg.epochs <= 0:
        bad("epochs", f"must be > 0 when steps=0, got {cfg.epochs}")
    if cfg.batch_size % cfg.accum_steps:
        bad("accum_steps", f"batch_size={cfg.batch_size} is not divisible by accum_steps={cfg.accum_steps}")
    o = cfg.optim
    if o.blr <= 0 or (o.lr is not None and o.lr <= 0):
        bad("optim.lr" if o.lr is not None else "optim.blr", "learning rate must be > 0")
    if o.min_lr < 0:
        bad("optim.min_lr", f"must be >= 0, got {o.min_lr}")
    if not all(0 <= b < 1 for b in o.betas):
        bad("optim.betas", f"each beta must be in [0, 1), got {o.betas}")
    if o.weight_decay < 0:
        bad("optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
    if o.warmup_epochs < 0:
        bad("optim.warmup_epochs", f"must be >= 0, got {o.warmup_epochs}")
    if o.clip_grad is not None and o.clip_grad <= 0:
        bad("optim.clip_grad", f"must be > 0 or null, got {o.clip_grad}")
    if cfg.resume not in ("", "auto") and not Path(cfg.resume).exists():
        bad("resume", f"no such checkpoint or run directory: {cfg.resume}")


# ----------------------------------------------------------------------------- typed (de)serialisation

def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert `value` (from YAML or the command line) to the annotated type `tp`, or raise naming `key`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: cannot be {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _build(tp, value, key + ".")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads '1e-4' as a string
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else value.split(",")
        if not isinstance(value, (list, tuple)):
            value = [value]
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {list(value)!r}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: unsupported value {value!r} for type {tp}")


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """Instantiate dataclass `cls` from a (partial) nested dict, checking every key and value."""
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for k, v in values.items():
        if k not in names:
            close = [n for n in names if n.startswith(k[:3])] or names
            raise ConfigError(f"{prefix}{k}: unknown key; {cls.__name__} has: {', '.join(close)}")
        kwargs[k] = _coerce(v, hints[k], prefix + k)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError, KeyError) as e:
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        if prefix and msg.startswith(cls.__name__ + "."):  # "C2FMAEConfig.decoder=..." -> "model.decoder=..."
            msg = prefix + msg[len(cls.__name__) + 1:]
        where = prefix.rstrip(".") or cls.__name__
        raise ConfigError(msg if prefix and msg.startswith(prefix) else f"{where}: {msg}") from e


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (YAML / `torch.load(weights_only=True)` safe) of a config dataclass."""
    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(dataclasses.asdict(cfg))


def config_from_dict(d: dict[str, Any]) -> TrainConfig:
    """Inverse of `config_to_dict` (used on resume and by `visualize`)."""
    cfg = _build(TrainConfig, d)
    _validate(cfg)
    return cfg


# ----------------------------------------------------------------------------- recipes and overrides

def list_recipes() -> list[str]:
    """Names of the recipes shipped in `c2fmae/configs` (without `.yaml`)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if not p.stem.startswith("_"))


def recipe_path(name: str) -> tuple[Path, dict[str, Any]]:
    """Resolve a recipe name or file to a path; a `_<N>e` suffix adds the override `epochs=N`."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise ConfigError(f"--config: no such file: {name}")
        return p, {}
    if (CONFIG_DIR / f"{name}.yaml").is_file():
        return CONFIG_DIR / f"{name}.yaml", {}
    m = re.fullmatch(r"(.+)_(\d+)e", name)
    if m and (CONFIG_DIR / f"{m.group(1)}.yaml").is_file():
        return CONFIG_DIR / f"{m.group(1)}.yaml", {"epochs": int(m.group(2))}
    raise ConfigError(f"--config: no recipe or file named {name!r}; shipped recipes: {', '.join(list_recipes())}")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        # nested mappings merge key by key; an empty mapping replaces (`model.encoder_kwargs={}`)
        out[k] = _merge(out[k], v) if isinstance(v, dict) and v and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in _seen:
        raise ConfigError(f"_base_: circular inheritance through {path}")
    try:
        d = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config keys")
    base = d.pop("_base_", None)
    if base is None:
        return d
    base_path = (path.parent / base) if not Path(base).is_absolute() else Path(base)
    if not base_path.is_file():
        raise ConfigError(f"_base_: {path} inherits from {base}, which does not exist")
    return _merge(_read_yaml(base_path, _seen + (path,)), d)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["optim.lr=1e-3", "model.decoder=parallel"]` -> nested dict (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{item}: overrides are key=value (e.g. optim.blr=1.5e-4)")
        key, raw = item.split("=", 1)
        key = key.strip().lstrip("-").replace("-", "_") if key.startswith("--") else key.strip()
        if not key or any(not p for p in key.split(".")):
            raise ConfigError(f"{item}: empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: conflicts with an earlier override of {p}")
        node[parts[-1]] = value
    return out


def load_config(config: str | None = "default", overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Build a validated `TrainConfig` from a recipe (name or YAML path) and `key=value` overrides."""
    values: dict[str, Any] = {}
    name = ""
    if config:
        path, extra = recipe_path(config)
        values = _merge(_read_yaml(path), extra)
        name = Path(config).stem if path.parent != CONFIG_DIR else config
    values = _merge(values, parse_overrides(list(overrides)))
    values.setdefault("recipe", name)
    cfg = _build(TrainConfig, values)
    _validate(cfg)
    return cfg

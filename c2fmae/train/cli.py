"""`c2fmae pretrain` and `c2fmae visualize` (dispatched lazily by `c2fmae/cli.py`)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["add_pretrain_arguments", "pretrain_main", "add_visualize_arguments", "visualize_main",
           "build_config"]


def add_pretrain_arguments(parser: argparse.ArgumentParser) -> None:
    from .config import list_recipes
    parser.description = (
        "Pretrain C2FMAE. Without arguments: the embedded default run (a small C2FMAE on synthetic scenes, "
        "a few minutes on a CPU). Recipes: " + ", ".join(list_recipes())
        + " (append _400e/_800e/_1600e to a recipe name, or pass epochs=N). "
        "Distributed: torchrun --nproc_per_node=N -m c2fmae.cli pretrain ...")
    parser.add_argument("--config", "-c", default=None,
                        help="recipe name (c2fmae/configs) or YAML file; default: 'default' (embedded run)")
    parser.add_argument("--resume", default=None, metavar="RUN_DIR|CKPT|auto",
                        help="continue a run exactly (its saved config, plus the overrides given here)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides, e.g. model.decoder=parallel optim.blr=1.0e-4 steps=100")


def build_config(config: str | None, overrides: list[str], resume: str | None = None):
    """The validated `TrainConfig` of a command line (checkpoint config first when resuming a path)."""
    from .checkpoint import load_checkpoint
    from .config import ConfigError, _merge, config_from_dict, load_config, parse_overrides
    from .run import checkpoint_to_resume
    overrides = list(overrides) + ([f"resume={resume}"] if resume else [])
    values = parse_overrides(overrides)
    target = values.get("resume")
    if target not in (None, "", "auto"):
        if config:
            raise ConfigError(f"--config: not used with --resume {target} (the run's saved config is used; "
                              f"pass key=value overrides instead)")
        try:
            _, ckpt_path = checkpoint_to_resume(str(target))
        except FileNotFoundError as e:
            raise ConfigError(str(e)) from e
        saved = load_checkpoint(ckpt_path).get("config")
        if not isinstance(saved, dict):
            raise ConfigError(f"resume: {ckpt_path} holds no training config")
        return config_from_dict(_merge(saved, values))
    return load_config(config or "default", overrides)


def pretrain_main(args: argparse.Namespace) -> int:
    from .config import ConfigError, config_to_dict
    try:
        cfg = build_config(args.config, args.overrides, args.resume)
    except ConfigError as e:
        print(f"c2fmae pretrain: bad config: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        import yaml
        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
        return 0
    from .engine import train
    try:
        run_dir = train(cfg)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"c2fmae pretrain: {e}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        export = run_dir / "export"
        print(f"run directory: {run_dir}")
        if export.is_dir():
            shown = os.path.relpath(export) if not os.path.relpath(export).startswith("..") else str(export)
            print("load the pretrained encoder with timm:")
            print(f'python -c \'import timm; m = timm.create_model("local-dir:{shown}", pretrained=True); '
                  f'print(m.pretrained_cfg)\'')
    return 0


def add_visualize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="run directory (its newest checkpoint) or checkpoint file")
    parser.add_argument("--images", nargs="*", default=[], help="image files; default: synthetic scenes")
    parser.add_argument("--semantic", nargs="*", default=[], help="semantic mask PNGs, one per image")
    parser.add_argument("--instance", nargs="*", default=[], help="instance mask PNGs, one per image")
    parser.add_argument("--num-samples", type=int, default=4, help="synthetic scenes shown when no --images")
    parser.add_argument("--strategy", default=None,
                        help="masking strategy: sem | ins | random; default: drawn from the curriculum at --progress")
    parser.add_argument("--progress", type=float, default=1.0, help="curriculum progress t in [0, 1] (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the masks")
    parser.add_argument("--out", default="reconstructions.png", help="output PNG")


def visualize_main(args: argparse.Namespace) -> int:
    from c2fmae import viz
    try:
        path = viz.visualize_checkpoint(args.checkpoint, args.out, images=args.images, semantic=args.semantic,
                                        instance=args.instance, num_samples=args.num_samples,
                                        strategy=args.strategy, progress=args.progress, seed=args.seed)
    except (FileNotFoundError, ValueError) as e:
        print(f"c2fmae visualize: {e}", file=sys.stderr)
        return 1
    print(f"wrote {Path(path)}")
    return 0

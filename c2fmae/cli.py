"""The `c2fmae` command: one entry point, one module per sub-command.

Each sub-command lives next to the code it drives and exposes two functions there,
`add_arguments(parser)` and `main(args) -> int | None`; they are imported only when that command runs,
so `c2fmae export` works without the training extra, and a missing extra is named.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, function prefix, extra that module needs, one-line help)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "pretrain": ("c2fmae.train.cli", "pretrain", "train", "pretrain C2FMAE (default: embedded synthetic-scene run)"),
    "visualize": ("c2fmae.train.cli", "visualize", "train", "reconstruction grids for images and masks"),
    "label": ("c2fmae.labeling.cli", "label", "label", "pseudo-label images into WebDataset shards"),
    "export": ("c2fmae.hub", "export", "", "export a run / checkpoint to the timm Hub layout (optionally push)"),
    "eval": ("c2fmae.eval.cli", "eval", "train", "k-NN / linear / segmentation probes on frozen features"),
    "finetune": ("c2fmae.eval.cli", "finetune", "train", "fine-tune an encoder for classification"),
}


def _usage() -> str:
    lines = ["usage: c2fmae COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, _, _, help_) in COMMANDS.items()]
    lines += ["", "`c2fmae COMMAND --help` shows the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"c2fmae: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, prefix, extra, help_ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        hint = f" (install it with: pip install 'c2fmae[{extra}]')" if extra else ""
        print(f"c2fmae {name}: cannot import {module_name}: {e}{hint}", file=sys.stderr)
        return 1
    parser = argparse.ArgumentParser(prog=f"c2fmae {name}", description=help_)
    getattr(module, f"add_{prefix}_arguments")(parser)
    args = parser.parse_args(rest)
    return int(getattr(module, f"{prefix}_main")(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

"""Export C2FMAE encoders to the timm Hugging Face Hub layout, and push them.

An export directory holds exactly what timm reads from a Hub repo:

- `model.safetensors` - the encoder's state dict (timm `VisionTransformer` keys);
- `config.json`      - written by timm's own `save_for_hf`; its `architecture` is the *plain* timm
                       name (e.g. `vit_base_patch16_224`) with `model_args`, so
                       `timm.create_model("hf-hub:<repo>")` works without installing c2fmae;
- `README.md`        - the model card rendered from `c2fmae/model_cards/model_card.md`.

`c2fmae export RUN_DIR|CKPT --out DIR [--push-to-hub ORG/REPO]` is the command-line form.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import save_for_hf
from torch import nn

from .models.vit import ARCH_TO_TIMM, SHORT_NAMES, checkpoint_filter_fn

__all__ = ["load_checkpoint", "build_encoder", "export", "push_to_hub", "render_model_card"]

_CKPT_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin")


def _find_checkpoint(run_dir: Path) -> Path:
    """The newest checkpoint file in a run directory (or its `checkpoints/` folder).

    Training checkpoints `step_N.pt` are ordered by N (file times change on copies); other files by time.
    """
    candidates = [p for d in (run_dir, run_dir / "checkpoints") if d.is_dir()
                  for p in d.iterdir() if p.suffix in _CKPT_SUFFIXES and p.is_file()]
    if not candidates:
        raise FileNotFoundError(f"{run_dir}: no checkpoint ({', '.join(_CKPT_SUFFIXES)}) in it or in checkpoints/")
    def order(p: Path) -> tuple[int, float]:
        step = re.fullmatch(r"step_(\d+)\.pt", p.name)
        return (int(step[1]) if step else -1, p.stat().st_mtime)

    return max(candidates, key=order)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint file safely: safetensors, or `torch.load(weights_only=True)`.

    `path` may also be a run directory, from which the newest checkpoint is taken.
    """
    path = Path(path)
    if path.is_dir():
        path = _find_checkpoint(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt / truncated / pickled objects that are not weights
        raise ValueError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from e


def _arch_from(ckpt: dict[str, Any], arch: str | None, encoder_kwargs: dict | None) -> tuple[str, dict]:
    model_cfg = ckpt.get("config", {}).get("model", {}) if isinstance(ckpt.get("config"), dict) else {}
    arch = arch or model_cfg.get("encoder")
    if arch is None:
        raise ValueError("cannot tell the architecture: pass arch= (e.g. 'c2fmae_vit_base') for a bare state dict")
    kwargs = dict(model_cfg.get("encoder_kwargs") or {}) if encoder_kwargs is None else dict(encoder_kwargs)
    arch = SHORT_NAMES.get(arch, arch)
    if arch not in ARCH_TO_TIMM:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {sorted(ARCH_TO_TIMM)}")
    return arch, kwargs


def build_encoder(
    src: nn.Module | dict | str | os.PathLike,
    arch: str | None = None,
    encoder_kwargs: dict | None = None,
) -> tuple[nn.Module, str, dict]:
    """Build the timm encoder held by `src` and return `(encoder, arch, encoder_kwargs)`.

    `src` is a C2FMAE pretraining model (anything with `.encoder` and `.cfg`), a timm encoder
    (with `arch`), a state dict / checkpoint dict, or a checkpoint path / run directory.
    The load is strict: a checkpoint of another architecture raises with the offending keys.
    """
    if isinstance(src, nn.Module):
        cfg = getattr(src, "cfg", None)
        if hasattr(src, "encoder") and cfg is not None:
            arch = arch or cfg.encoder
            encoder_kwargs = dict(cfg.encoder_kwargs) if encoder_kwargs is None else encoder_kwargs
        ckpt = {"model": src.state_dict()}
    else:
        ckpt = load_checkpoint(src) if isinstance(src, (str, os.PathLike)) else src
    arch, encoder_kwargs = _arch_from(ckpt, arch, encoder_kwargs)
    encoder = timm.create_model(arch, pretrained=False, **{**encoder_kwargs, "num_classes": 0})
    state_dict = checkpoint_filter_fn(ckpt, encoder)
    missing, unexpected = encoder.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint does not match {arch} {encoder_kwargs or ''}: "
            f"missing keys {missing[:10]}, unexpected keys {unexpected[:10]}"
        )
    return encoder.eval(), arch, encoder_kwargs


def render_model_card(
    repo_id: str,
    arch: str,
    encoder_kwargs: dict,
    num_params: int,
    provenance: str,
    results: dict[str, Any] | None = None,
) -> str:
    """Render the model card. Only numbers given in `results` (measured ones) are shown."""
    from importlib.resources import files

    template = files("c2fmae").joinpath("model_cards/model_card.md").read_text(encoding="utf-8")
    if results:
        rows = "\n".join(f"| {k} | {v} |" for k, v in results.items())
        results_md = f"| metric | value |\n|---|---|\n{rows}"
    else:
        results_md = "No evaluation of these weights has been measured yet; no numbers are claimed."
    timm_arch, base_args = ARCH_TO_TIMM[arch]
    return template.format(
        repo_id=repo_id,
        arch=arch,
        timm_arch=timm_arch,
        model_args=json.dumps(dict(base_args, **encoder_kwargs)),
        num_params=f"{num_params / 1e6:.1f}M",
        provenance=provenance.strip(),
        results=results_md,
    )


def export(
    src: nn.Module | dict | str | os.PathLike,
    out_dir: str | os.PathLike,
    arch: str | None = None,
    encoder_kwargs: dict | None = None,
    repo_id: str | None = None,
    provenance: str | None = None,
    results: dict[str, Any] | None = None,
) -> Path:
    """Write the timm Hub layout for the encoder in `src` to `out_dir` (atomically) and return it.

    See `build_encoder` for what `src` may be. `repo_id` only names the repo in the model card.
    """
    encoder, arch, encoder_kwargs = build_encoder(src, arch, encoder_kwargs)
    out_dir = Path(out_dir)
    timm_arch, base_args = ARCH_TO_TIMM[arch]
    if provenance is None:
        provenance = (f"Exported by c2fmae from `{src}`." if isinstance(src, (str, os.PathLike))
                      else "Exported by c2fmae from an in-memory model.")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        save_for_hf(
            encoder,
            tmp,
            model_config={"pretrained_cfg": {"architecture": timm_arch}},
            model_args=dict(base_args, **encoder_kwargs),
            safe_serialization=True,
        )
        card = render_model_card(
            repo_id or f"local export of {arch}", arch, encoder_kwargs,
            sum(p.numel() for p in encoder.parameters()), provenance, results,
        )
        (tmp / "README.md").write_text(card, encoding="utf-8")
        # swap the finished directory into place; an old export is removed only afterwards
        old = out_dir.with_name(f".{out_dir.name}.old") if out_dir.exists() else None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
        tmp.rename(out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def push_to_hub(
    export_dir: str | os.PathLike,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Add C2FMAE encoder",
) -> str:
    """Upload an export directory (see `export`) to the Hub repo `repo_id`; returns the commit url."""
    from huggingface_hub import HfApi

    export_dir = Path(export_dir)
    for name in ("model.safetensors", "config.json", "README.md"):
        if not (export_dir / name).is_file():
            raise FileNotFoundError(f"{export_dir / name} missing: run c2fmae.hub.export first")
    api = HfApi(token=token, library_name="c2fmae")
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    info = api.upload_folder(repo_id=repo_id, folder_path=str(export_dir), revision=revision,
                             commit_message=commit_message)
    return str(getattr(info, "commit_url", info))


def add_export_arguments(parser) -> None:
    parser.add_argument("src", help="run directory, training checkpoint (.pt) or state dict (.safetensors/.pth)")
    parser.add_argument("--out", required=True, help="output directory (timm Hub layout)")
    parser.add_argument("--arch", default=None, help="c2fmae architecture when SRC does not record it")
    parser.add_argument("--encoder-kwargs", default=None, type=json.loads,
                        help='JSON dict of encoder overrides, e.g. \'{"img_size": 96}\'')
    parser.add_argument("--push-to-hub", default=None, metavar="ORG/REPO", help="also upload to this Hub repo")
    parser.add_argument("--results", default=None, help="JSON file of measured results for the model card")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")


def export_main(args) -> int:
    results = json.loads(Path(args.results).read_text()) if args.results else None
    out = export(args.src, args.out, arch=args.arch, encoder_kwargs=args.encoder_kwargs,
                 repo_id=args.push_to_hub, results=results)
    print(f"exported to {out}")
    print(f'load it with: timm.create_model("local-dir:{out}", pretrained=True)')
    if args.push_to_hub:
        url = push_to_hub(out, args.push_to_hub, private=args.private)
        print(f"pushed to {url}")
        print(f'load it with: timm.create_model("hf-hub:{args.push_to_hub}", pretrained=True)')
    return 0

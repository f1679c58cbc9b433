"""Frozen-feature extraction for the probes: load any timm-loadable encoder, build eval data, run it.

An encoder is named like timm names it:
  * a timm / c2fmae architecture (`vit_small_patch16_224`, `c2fmae_vit_base`, add `pretrained=True`),
  * `local-dir:/path/to/export` (the layout `c2fmae export` writes) or `hf-hub:org/repo`,
  * a c2fmae training checkpoint file (`.pth`/`.pt`, architecture read from its config) or a
    `.safetensors` encoder state dict (architecture from `arch=`).

Data is a torchvision `ImageFolder` tree (`root/<class>/<img>`), image-classification WebDataset
shards (`KEY.jpg` + `KEY.cls`, `LabelledShards`), any dataset yielding `(image, label)` or the c2fmae
sample dicts (`{"image", "semantic", "instance", "label"}`, see TEAM.md).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from c2fmae.atomic import atomic_open

__all__ = [
    "load_encoder",
    "image_folder",
    "LabelledShards",
    "image_shards",
    "build_loader",
    "unpack_batch",
    "extract_features",
    "extract_patch_features",
    "write_json",
]

_CKPT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


def _is_path_like(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.endswith((*_CKPT_SUFFIXES, ".safetensors"))


def load_encoder(
    name: str,
    pretrained: bool = False,
    arch: str | None = None,
    img_size: int | None = None,
    num_classes: int = 0,
    **kwargs: Any,
) -> nn.Module:
    """Build an encoder (timm model, feature head removed unless `num_classes` > 0).

    Args:
        name: timm architecture, `local-dir:`/`hf-hub:` name, export directory, or checkpoint file.
        pretrained: load the architecture's default pretrained weights (timm names only; `local-dir:`,
            `hf-hub:`, directories and checkpoint files always load their weights).
        arch: architecture for a `.safetensors` / state-dict file that carries no config.
        img_size: input size for ViTs (position embeddings are resampled when loading).
        num_classes: classifier outputs (0 = pooled features, the probes' default).
        **kwargs: more `timm.create_model` kwargs (`drop_path_rate`, `global_pool`, ...).
    """
    if img_size is not None:
        kwargs["img_size"] = img_size
    path = Path(os.path.expanduser(name))
    if name.startswith(("local-dir:", "hf-hub:")):
        if name.startswith("local-dir:") and not (Path(name[len("local-dir:") :]) / "config.json").is_file():
            raise FileNotFoundError(f"--model {name!r}: no config.json in that directory")
        return timm.create_model(name, pretrained=True, num_classes=num_classes, **kwargs)
    if path.is_dir() and (path / "config.json").is_file():  # a `c2fmae export` / timm `save_for_hf` folder
        return timm.create_model(f"local-dir:{path}", pretrained=True, num_classes=num_classes, **kwargs)
    if path.exists():  # a checkpoint file or a training run directory
        return _encoder_from_file(path, arch, num_classes, **kwargs)
    if _is_path_like(name):
        raise FileNotFoundError(f"--model {name!r}: file not found")
    if not timm.is_model(name.split(".")[0]):
        raise ValueError(f"--model {name!r} is neither a timm architecture, a local-dir:/hf-hub: name nor a path")
    return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)


def _encoder_from_file(path: Path, arch: str | None, num_classes: int, **kwargs: Any) -> nn.Module:
    """Encoder from a c2fmae training checkpoint / run directory or a bare encoder state dict file."""
    from c2fmae.hub import load_checkpoint
    from c2fmae.models.vit import checkpoint_filter_fn

    ckpt = load_checkpoint(path)
    model_cfg = ckpt.get("config", {}).get("model", {}) if isinstance(ckpt.get("config"), dict) else {}
    arch = arch or model_cfg.get("encoder")
    if not arch:
        raise ValueError(f"--model {str(path)!r}: the file names no architecture; pass --arch")
    kwargs = dict(model_cfg.get("encoder_kwargs") or {}, **kwargs)
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, **kwargs)
    state = checkpoint_filter_fn(ckpt, model)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(("head.", "fc_norm."))]
    if missing or unexpected:
        raise KeyError(f"--model {str(path)!r} does not fit {arch}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


def image_folder(root: str | os.PathLike, model: nn.Module, img_size: int | None = None, train: bool = False):
    """A torchvision `ImageFolder` at `root` with the encoder's eval (or train) transform from timm."""
    from torchvision.datasets import ImageFolder

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist (expected <root>/<class>/<image>)")
    try:
        return ImageFolder(str(root), transform=_timm_transform(model, img_size, train))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"image folder {str(root)!r}: {e}") from e


class LabelledShards(torch.utils.data.IterableDataset):
    """Image-classification WebDataset shards yielding `(transform(image), label)`.

    A sample is `KEY.{jpg,jpeg,png,webp}` + `KEY.cls` (the class index as text, webdataset's
    convention). `urls` is anything `c2fmae.data.shards.expand_urls` takes (a folder of `*.tar`, a brace
    pattern, `::`-joined list, `pipe:` / `https://` urls). Shards are split over DataLoader workers, in
    order (no shuffling: the probes need no order). `len()` and `classes` (`"0"` .. max label) cost one
    pass over the shards, done once.
    """

    def __init__(self, urls: str, transform: Any = None):
        from c2fmae.data.shards import expand_urls

        self.urls, self.transform = expand_urls(urls), transform
        self._labels: list[int] | None = None

    def _samples(self, urls: list[str]):
        from c2fmae.data.io import BadSampleError
        from c2fmae.data.shards import IMAGE_EXTS, iter_tar

        for url in urls:
            for key, files in iter_tar(url):
                ext = next((e for e in IMAGE_EXTS if e in files), None)
                if ext is None or "cls" not in files:
                    raise BadSampleError(
                        f"{url}:{key}: a classification sample needs an image (.jpg/.png/.webp) and a .cls "
                        f"member, has {sorted(files)}"
                    )
                try:
                    label = int(files["cls"].decode().strip())
                except ValueError:
                    cls = files["cls"][:20]
                    raise BadSampleError(f"{url}:{key}.cls: not an integer class index: {cls!r}") from None
                if label < 0:
                    raise BadSampleError(f"{url}:{key}.cls: negative class index {label}")
                yield files[ext], label

    def labels(self) -> list[int]:
        """Every sample's label, in shard order (one pass, cached)."""
        if self._labels is None:
            self._labels = [label for _, label in self._samples(self.urls)]
        return self._labels

    @property
    def classes(self) -> list[str]:
        labels = self.labels()
        return [str(i) for i in range(max(labels) + 1)] if labels else []

    def __len__(self) -> int:
        return len(self.labels())

    def __iter__(self):
        from PIL import Image

        info = torch.utils.data.get_worker_info()
        urls = self.urls[info.id :: info.num_workers] if info is not None else self.urls
        for data, label in self._samples(urls):
            image = Image.open(io.BytesIO(data)).convert("RGB")
            yield (self.transform(image) if self.transform is not None else image), label


def image_shards(urls: str, model: nn.Module, img_size: int | None = None, train: bool = False) -> LabelledShards:
    """`LabelledShards` at `urls` with the encoder's eval (or train) transform from timm."""
    return LabelledShards(urls, _timm_transform(model, img_size, train))


def _timm_transform(model: nn.Module, img_size: int | None, train: bool):
    from timm.data import create_transform, resolve_data_config

    cfg = resolve_data_config({}, model=model)
    if img_size is not None:
        cfg["input_size"] = (3, img_size, img_size)
    return create_transform(**cfg, is_training=train)


def build_loader(
    dataset, batch_size: int = 64, shuffle: bool = False, num_workers: int = 0, drop_last: bool = False
) -> torch.utils.data.DataLoader:
    """A plain DataLoader (iterable datasets are never shuffled by the loader)."""
    iterable = isinstance(dataset, torch.utils.data.IterableDataset)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and not iterable,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available(),
    )


def unpack_batch(batch: Any, key: str = "label") -> tuple[torch.Tensor, torch.Tensor | None]:
    """(images, targets) from an `(image, label)` batch or a c2fmae dict batch (`key`: label / semantic)."""
    if isinstance(batch, dict):
        if "image" not in batch:
            raise KeyError(f"batch has no 'image' key (keys: {sorted(batch)})")
        return batch["image"], batch.get(key)
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise TypeError(f"unsupported batch type {type(batch).__name__}: expected (image, label) or a dict")


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def _features(model: nn.Module, x: torch.Tensor, patches: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pooled pre-logits features `(B, D)` and (optionally) last-layer patch features `(B, D, h, w)`.

    One `forward_features` pass: the pooled feature is timm's `forward_head(pre_logits=True)`; the patch
    map is the same token sequence without the prefix (cls / register) tokens, on the patch grid.
    """
    f = model.forward_features(x)
    pooled = model.forward_head(f, pre_logits=True)
    if pooled.ndim > 2:  # models whose pre-logits keep a spatial map
        pooled = pooled.flatten(2).mean(-1)
    if not patches:
        return pooled, None
    if f.ndim == 4:
        return pooled, f  # CNN: already NCHW
    tokens = f[:, getattr(model, "num_prefix_tokens", 0) :]  # [B, L, D]
    pe = getattr(model, "patch_embed", None)
    if pe is not None and hasattr(pe, "dynamic_feat_size"):
        h, w = pe.dynamic_feat_size(x.shape[-2:])
    elif hasattr(model, "forward_intermediates"):
        out = model.forward_intermediates(x, indices=1, norm=True, output_fmt="NCHW", intermediates_only=True)
        return pooled, out[-1]
    else:
        h = w = 0
    if h * w != tokens.shape[1]:
        raise ValueError(f"cannot place {tokens.shape[1]} tokens of {type(model).__name__} on a patch grid")
    return pooled, tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)


@torch.no_grad()
def extract(
    model: nn.Module,
    loader: Iterable,
    pooled: bool = True,
    patches: bool = False,
    device: str | torch.device = "cpu",
    amp: bool = True,
    desc: str = "features",
) -> dict[str, torch.Tensor]:
    """Frozen features of every sample in one pass, on CPU in float32.

    Returns `"features"` `(N, D)` + `"labels"` `(N,)` when `pooled`, and `"patch_features"`
    `(N, D, h, w)` + `"masks"` `(N, Hm, Wm)` (semantic, 255 = ignore) when `patches`.
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    model.eval().to(device)
    out: dict[str, list[torch.Tensor]] = {"features": [], "labels": [], "patch_features": [], "masks": []}
    for batch in tqdm(loader, desc=desc, leave=False):
        x, y = unpack_batch(batch, "label")
        if pooled and y is None:
            raise KeyError("the dataset yields no image-level 'label' (needed by the k-NN / linear probes)")
        if patches and not (isinstance(batch, dict) and "semantic" in batch):
            raise KeyError("the dataset yields no 'semantic' mask (needed by the segmentation probe)")
        with _autocast(device, amp):
            f, p = _features(model, x.to(device), patches)
        if pooled:
            out["features"].append(f.float().cpu())
            out["labels"].append(torch.as_tensor(y).long())
        if patches:
            out["patch_features"].append(p.float().cpu())
            out["masks"].append(batch["semantic"].long())
    if not (out["features"] or out["patch_features"]):
        raise ValueError(f"{desc}: the dataset is empty")
    return {k: torch.cat(v) for k, v in out.items() if v}


def extract_features(
    model: nn.Module, loader: Iterable, device: str | torch.device = "cpu", amp: bool = True, desc: str = "features"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled pre-logits features `(N, D)` and image labels `(N,)`."""
    out = extract(model, loader, True, False, device, amp, desc)
    return out["features"], out["labels"]


def extract_patch_features(
    model: nn.Module,
    loader: Iterable,
    device: str | torch.device = "cpu",
    amp: bool = True,
    desc: str = "patch features",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Last-layer patch feature maps `(N, D, h, w)` (prefix tokens dropped) and semantic masks `(N, Hm, Wm)`."""
    out = extract(model, loader, False, True, device, amp, desc)
    return out["patch_features"], out["masks"]


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write `obj` as JSON atomically (temp file in the same directory + os.replace)."""
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
    return Path(path)

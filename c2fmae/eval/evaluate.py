"""Run the frozen-feature probes (k-NN, linear, segmentation) of one encoder on a train / held-out split.

`eval_datasets(data, ...)` builds the split from an `ImageFolder` root (`<root>/train`, `<root>/val`),
image-classification WebDataset shards (`wds:URL`, `KEY.jpg` + `KEY.cls`) or a c2fmae data source
(`synthetic`, `folder:PATH`, `shards:URL`; see `c2fmae.data.DataConfig`), and
`run_probes(encoder, train_set, val_set, ...)` extracts features once and returns one result dict.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .features import build_loader, extract, image_folder, image_shards
from .probes import knn_classify, linear_probe
from .segmentation import seg_probe

__all__ = ["PROBES", "eval_datasets", "run_probes"]

PROBES = ("knn", "linear", "seg")
_C2FMAE_SOURCES = ("synthetic", "folder", "shards")


def eval_datasets(
    data: str,
    model: nn.Module | None = None,
    img_size: int | None = None,
    train_split: str = "train",
    val_split: str = "val",
    num_samples: int | None = None,
    val_samples: int | None = None,
    seed: int = 0,
    train_transform: bool = False,
    val_data: str | None = None,
):
    """`(train_set, val_set)` for `data`: ImageFolder root, `wds:URL`, `synthetic`, `folder:PATH` or `shards:URL`.

    ImageFolder: `<data>/<train_split>/<class>/*` and `<data>/<val_split>/<class>/*` (or `val_data`),
    with the encoder's timm eval transform. `wds:URL`: classification shards (`KEY.jpg` + `KEY.cls`)
    with the same transform; `val_data` names the held-out shards. c2fmae sources:
    `build_dataset(DataConfig(...), train=...)`; synthetic scenes have a disjoint held-out stream
    (`split="val"`), folder / shard sources need `val_data`; `img_size=None` means the encoder's input
    size (the `DataConfig` default when `model` is None too). Both splits use the deterministic eval
    view (no crop / flip), as DINO and MAE extract probe features; `train_transform=True` keeps the
    training augmentation (fine-tuning).
    """
    source, _, path = data.partition(":")
    if source in _C2FMAE_SOURCES and (source == "synthetic" or path):
        if img_size is None and model is not None:  # the encoder's input size, as timm's data config says
            from timm.data import resolve_data_config

            img_size = resolve_data_config({}, model=model)["input_size"][-1]
        return _c2fmae_split(source, path, val_data, img_size, num_samples, val_samples, seed, train_transform)
    if source == "wds" and path:
        return _wds_split(path, val_data, model, img_size, train_transform)
    root = Path(data)
    if not root.is_dir():
        raise FileNotFoundError(
            f"--data {data!r}: not a directory and not one of synthetic / folder:PATH / shards:URL / wds:URL"
        )
    dirs = [root / train_split, Path(val_data) if val_data else root / val_split]
    for d in dirs:
        if not d.is_dir():
            raise FileNotFoundError(
                f"--data {data!r}: missing split folder {str(d)!r} "
                "(expected <root>/train/<class>/... and <root>/val/<class>/..., or --val-data DIR)"
            )
    if model is None:
        raise ValueError("an ImageFolder split needs the model (for its timm data config)")
    splits = [image_folder(d, model, img_size, train=t) for d, t in zip(dirs, (train_transform, False), strict=True)]
    if splits[0].classes != splits[1].classes:
        raise ValueError(
            f"--data {data!r}: train classes {splits[0].classes[:5]}... differ from val classes "
            f"{splits[1].classes[:5]}..."
        )
    return splits[0], splits[1]


def _wds_split(url: str, val_url: str | None, model: nn.Module | None, img_size: int | None, train_transform: bool):
    if not val_url:
        raise ValueError(f"--data wds:{url}: a held-out split is needed, pass --val-data URL")
    if model is None:
        raise ValueError("a wds: split needs the model (for its timm data config)")
    train = image_shards(url, model, img_size, train=train_transform)
    val = image_shards(val_url.removeprefix("wds:"), model, img_size)
    if len(val.classes) > len(train.classes):
        raise ValueError(
            f"--val-data {val_url!r}: class index {len(val.classes) - 1} never occurs in the training shards {url!r}"
        )
    return train, val


def _c2fmae_split(
    source: str,
    path: str,
    val_path: str | None,
    img_size: int | None,
    num_samples: int | None,
    val_samples: int | None,
    seed: int,
    train_transform: bool,
):
    from c2fmae.data import DataConfig, build_dataset, build_transform

    if source != "synthetic" and not val_path:
        raise ValueError(f"--data {source}:{path}: a held-out split is needed, pass --val-data PATH")
    kw: dict[str, Any] = {"source": source, "path": path, "val_path": val_path or "", "seed": seed}
    if img_size is not None:
        kw["img_size"] = img_size
    if num_samples:
        kw["num_samples"] = num_samples
    if val_samples or num_samples:
        kw["num_val_samples"] = val_samples or num_samples
    cfg = DataConfig(**kw)
    train, val = build_dataset(cfg, train=True), build_dataset(cfg, train=False)
    if not train_transform:
        train.transform = build_transform(cfg, train=False)  # probe features from the eval view
    return train, val


def _class_info(dataset) -> tuple[int | None, list[str] | None]:
    n = getattr(dataset, "num_classes", None)
    names = getattr(dataset, "class_names", None)
    return n, list(names) if names is not None else None


def run_probes(
    encoder: nn.Module,
    train_set,
    val_set,
    probes: tuple[str, ...] | list[str] = PROBES,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    amp: bool = True,
    k: int = 20,
    temperature: float = 0.07,
    linear_epochs: int = 100,
    linear_lr: float = 1e-3,
    seg_epochs: int = 30,
    seg_lr: float = 1e-3,
    num_seg_classes: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Extract frozen features of `encoder` on both splits and run the requested probes.

    Returns `{"knn": {"top1", ...}, "linear": {...}, "seg": {"miou", "pixel_acc", "iou"}, "num_train",
    "num_val", "feature_dim", "seconds"}` (accuracies and IoUs in [0, 1]).
    """
    bad = [p for p in probes if p not in PROBES]
    if bad or not probes:
        raise ValueError(f"--probes: unknown {bad} (choose from {list(PROBES)})")
    t0 = time.time()
    out: dict[str, Any] = {}
    need_pooled = "knn" in probes or "linear" in probes
    tr, te = [
        extract(
            encoder,
            build_loader(ds, batch_size, num_workers=num_workers),
            need_pooled,
            "seg" in probes,
            device,
            amp,
            desc=f"features ({split})",
        )
        for ds, split in ((train_set, "train"), (val_set, "val"))
    ]
    key = "features" if need_pooled else "patch_features"
    out.update(num_train=len(tr[key]), num_val=len(te[key]))
    if need_pooled:
        ftr, ytr, fte, yte = tr["features"], tr["labels"], te["features"], te["labels"]
        out["feature_dim"] = ftr.shape[1]
        if "knn" in probes:
            out["knn"] = dict(
                knn_classify(ftr, ytr, fte, yte, k=k, temperature=temperature), k=k, temperature=temperature
            )
        if "linear" in probes:
            res = linear_probe(ftr, ytr, fte, yte, epochs=linear_epochs, lr=linear_lr, seed=seed, device=device)
            out["linear"] = dict(res, epochs=linear_epochs, lr=linear_lr)
    if "seg" in probes:
        mtr, mte = tr["masks"], te["masks"]
        n, names = _class_info(train_set)
        n = num_seg_classes or n
        if n is None:  # infer from the masks
            valid = torch.cat([mtr[mtr != 255], mte[mte != 255]])
            n = int(valid.max()) + 1 if valid.numel() else 1
        res = seg_probe(
            tr["patch_features"],
            mtr,
            te["patch_features"],
            mte,
            n,
            class_names=names,
            epochs=seg_epochs,
            lr=seg_lr,
            seed=seed,
            device=device,
        )
        out["seg"] = dict(res, epochs=seg_epochs, lr=seg_lr, num_classes=n)
    out["seconds"] = round(time.time() - t0, 2)
    return out

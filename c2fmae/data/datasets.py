"""`DataConfig` and `build_dataset`: synthetic scenes, an image folder with mask folders, or shards.

Map-style datasets (synthetic, folder) return the full dataset for every rank: use a
`DistributedSampler` and call both `sampler.set_epoch(e)` and `dataset.set_epoch(e)`; sample `i` of
epoch `e` is then a pure function of `(seed, e, i)`, so a resumed run sees exactly the same data.
Shards are split by rank here and by DataLoader worker inside the dataset. Use
`worker_init_fn` in the DataLoader (one torch thread per worker) and `persistent_workers=False`
so each epoch's workers see the new epoch.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .io import BadSampleError, check_triple, decode_image, decode_mask
from .shards import ShardDataset
from .synthetic import SyntheticScenes
from .transforms import JointTransform, sample_rng
from .vocab import COCO_PANOPTIC_CLASSES

SOURCES = ("synthetic", "folder", "shards")
_IMG_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


@dataclass
class DataConfig:
    """Where pretraining data comes from and how it is augmented (plain types; YAML-serialisable).

    source: "synthetic" (embedded default) | "folder" | "shards".
    path: folder of images (with sibling `semantic/`, `instance/`) or a shard url pattern.
    val_path: the same for the validation split (`train=False`); empty = `path`.
    img_size / scale / ratio / hflip / interpolation: the joint RandomResizedCrop + flip.
    num_samples / num_val_samples / scene_size: synthetic dataset lengths and raw scene side
    (0 = img_size).
    num_classes: semantic classes (0 = the source's: 10 synthetic, 133 COCO-panoptic otherwise);
    ids >= num_classes other than 255 are an error naming the file.
    shuffle_buffer: shard sample shuffle buffer. skip_bad: skip-and-count bad samples (default off: error).
    """
    source: str = "synthetic"
    path: str = ""
    val_path: str = ""
    img_size: int = 224
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    interpolation: str = "bicubic"
    num_samples: int = 10000
    num_val_samples: int = 1000
    scene_size: int = 0
    num_classes: int = 0
    seed: int = 0
    shuffle_buffer: int = 1000
    skip_bad: bool = False

    def __post_init__(self):
        self.scale, self.ratio = tuple(self.scale), tuple(self.ratio)
        if self.source not in SOURCES:
            raise ValueError(f"data.source must be one of {SOURCES}, got {self.source!r}")
        if self.source != "synthetic" and not self.path:
            raise ValueError(f"data.path is required for data.source={self.source!r}")
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"data.scale must be (min, max) with 0 < min <= max <= 1, got {self.scale}")
        if len(self.ratio) != 2 or not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"data.ratio must be (min, max) with 0 < min <= max, got {self.ratio}")
        if self.img_size < 8 or self.img_size % 4:
            raise ValueError(f"data.img_size must be a multiple of 4 and >= 8, got {self.img_size}")
        if not 0 <= self.hflip <= 1:
            raise ValueError(f"data.hflip must be a probability, got {self.hflip}")
        if self.interpolation not in ("bicubic", "bilinear", "nearest"):
            raise ValueError(f"data.interpolation must be bicubic|bilinear|nearest, got {self.interpolation!r}")
        for k in ("num_samples", "num_val_samples"):
            if getattr(self, k) < 1:
                raise ValueError(f"data.{k} must be >= 1, got {getattr(self, k)}")

    def asdict(self) -> dict:
        return dataclasses.asdict(self)


def worker_init_fn(worker_id: int) -> None:
    """DataLoader worker init: one torch thread per worker (workers x threads must not oversubscribe)."""
    torch.set_num_threads(1)


def _sibling(root: Path, name: str) -> Path:
    return root.parent / name if (root.parent / name).is_dir() else root / name


class FolderDataset(torch.utils.data.Dataset):
    """Images under `path` with masks `semantic/REL.png` and `instance/REL.png` beside it.

    `path` is the image folder (`root/images`, masks in `root/semantic`, `root/instance`) or `root`
    itself when it holds `images/`. REL is the image's path relative to the image folder with a
    `.png` suffix; nested folders work. A missing mask fails at construction, naming the file.
    """

    def __init__(self, path: str | os.PathLike, transform: JointTransform | None = None, seed: int = 0,
                 num_classes: int | None = None, class_names: tuple[str, ...] = COCO_PANOPTIC_CLASSES):
        root = Path(path)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {root}")
        if (root / "images").is_dir():
            root = root / "images"
        self.root, self.transform, self.seed, self.epoch = root, transform, seed, 0
        self.num_classes, self.class_names = num_classes, class_names
        self.sem_dir, self.ins_dir = _sibling(root, "semantic"), _sibling(root, "instance")
        self.files = sorted(p for p in root.rglob("*") if p.suffix.lower() in _IMG_EXTS and p.is_file())
        if not self.files:
            raise FileNotFoundError(f"no images ({', '.join(_IMG_EXTS)}) under {root}")
        for f in self.files:
            for m in self.mask_paths(f):
                if not m.is_file():
                    raise FileNotFoundError(f"mask {m} for image {f} is missing")

    def mask_paths(self, f: Path) -> tuple[Path, Path]:
        rel = f.relative_to(self.root).with_suffix(".png")
        return self.sem_dir / rel, self.ins_dir / rel

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def raw(self, index: int):
        f = self.files[index]
        sp, ip = self.mask_paths(f)
        image, sem, ins = decode_image(f, str(f)), decode_mask(sp, str(sp)), decode_mask(ip, str(ip))
        check_triple(image, sem, ins, str(f), self.num_classes)
        return image, sem, ins

    def __getitem__(self, index: int) -> dict:
        image, sem, ins = self.raw(index)
        if self.transform is None:
            return {"image": image, "semantic": sem, "instance": ins}
        return self.transform(image, sem, ins, sample_rng(self.seed, self.epoch, index))

    def iter_raw(self):
        """Yield `(key, image, semantic, instance)` for the shard writer (key from the relative path)."""
        for i, f in enumerate(self.files):
            key = str(f.relative_to(self.root).with_suffix("")).replace("/", "_").replace(".", "_")
            yield key, *self.raw(i)


def build_transform(cfg: DataConfig, train: bool = True) -> JointTransform:
    return JointTransform(cfg.img_size, cfg.scale, cfg.ratio, cfg.hflip, train=train,
                          interpolation=cfg.interpolation)


def build_dataset(cfg: DataConfig, train: bool = True, rank: int = 0, world_size: int = 1):
    """The dataset `cfg` describes, yielding transformed samples (the batch dict without batch dim).

    Every dataset has `.num_classes`, `.class_names` and `.set_epoch(epoch)`; synthetic scenes also
    `.num_scene_labels` and a `label` per sample. `rank`/`world_size` split shards (map-style
    datasets are split by the sampler instead).
    """
    transform = build_transform(cfg, train)
    if cfg.source == "synthetic":
        n = cfg.num_samples if train else cfg.num_val_samples
        return SyntheticScenes(n, cfg.scene_size or cfg.img_size, transform, cfg.seed, "train" if train else "val")
    num_classes = cfg.num_classes or len(COCO_PANOPTIC_CLASSES)
    path = cfg.path if train or not cfg.val_path else cfg.val_path
    if cfg.source == "folder":
        ds = FolderDataset(path, transform, cfg.seed, num_classes)
    else:
        ds = ShardDataset(path, transform, cfg.seed, rank, world_size, shuffle=train,
                          shuffle_buffer=cfg.shuffle_buffer, num_classes=num_classes, skip_bad=cfg.skip_bad)
    ds.num_classes = num_classes
    ds.class_names = COCO_PANOPTIC_CLASSES if num_classes == len(COCO_PANOPTIC_CLASSES) else \
        tuple(str(i) for i in range(num_classes))
    return ds


__all__ = ["DataConfig", "FolderDataset", "build_dataset", "build_transform", "worker_init_fn",
           "BadSampleError"]

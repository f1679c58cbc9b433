"""Joint (image, semantic, instance) transforms: one crop box and one flip for all three.

The image is resampled with PIL (bicubic by default, antialiased); masks are resampled by nearest
neighbour with explicit index maps that follow the same pixel-centre convention as PIL's `box`
resize (`src = left + (x + 0.5) * w / S`), so ids are never interpolated and stay aligned with the
image. The stride-4 target maps sample the full-resolution output at pixel `4i + 2` of each 4x4
cell, i.e. `semantic = semantic_full[2::4, 2::4]`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)  # == timm.data.IMAGENET_DEFAULT_MEAN
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
_PIL_INTERP = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}


@dataclass(frozen=True)
class CropParams:
    """A crop box in source pixels and a horizontal flip flag."""
    top: int
    left: int
    height: int
    width: int
    flip: bool


def random_resized_crop_params(h: int, w: int, rng: np.random.Generator, scale=(0.2, 1.0),
                               ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params, driven by a numpy Generator (reproducible)."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        cw = int(round(math.sqrt(target_area * aspect)))
        ch = int(round(math.sqrt(target_area / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    in_ratio = w / h  # fallback: central crop with the ratio clamped
    if in_ratio < min(ratio):
        cw, ch = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        ch, cw = h, int(round(h * max(ratio)))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def _index_map(start: int, length: int, size: int, limit: int) -> np.ndarray:
    """Nearest source index for each of `size` output pixels covering [start, start+length)."""
    src = start + (np.arange(size) + 0.5) * (length / size)
    return np.clip(np.floor(src).astype(np.int64), 0, limit - 1)


class JointTransform:
    """RandomResizedCrop + horizontal flip applied identically to image and masks, then normalise.

    Args:
        img_size: output side (multiple of 4).
        scale, ratio: RandomResizedCrop area-fraction and aspect ranges (train only).
        hflip: flip probability (train only).
        train: False gives the deterministic eval view (central square crop, no flip).
        interpolation: image resampling: 'bicubic' | 'bilinear' | 'nearest' (masks are always nearest).
        stride: target map stride (4 = the model's contract).
        full_masks: also return `semantic_full` / `instance_full` at img_size (tests, visualisation).
    Call: `t(image, semantic, instance, rng)` -> `{"image": (3,S,S) float, "semantic": (S/4,S/4) long,
    "instance": (S/4,S/4) long}`.
    """

    def __init__(self, img_size: int = 224, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), hflip: float = 0.5,
                 train: bool = True, interpolation: str = "bicubic", mean=IMAGENET_DEFAULT_MEAN,
                 std=IMAGENET_DEFAULT_STD, stride: int = 4, full_masks: bool = False):
        if img_size % stride:
            raise ValueError(f"img_size={img_size} must be a multiple of the target stride {stride}")
        if interpolation not in (*_PIL_INTERP, "nearest"):
            raise ValueError(f"interpolation must be bicubic|bilinear|nearest, got {interpolation!r}")
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {tuple(scale)}")
        self.img_size, self.scale, self.ratio, self.hflip = img_size, tuple(scale), tuple(ratio), hflip
        self.train, self.interpolation, self.stride, self.full_masks = train, interpolation, stride, full_masks
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def get_params(self, h: int, w: int, rng: np.random.Generator) -> CropParams:
        if not self.train:
            s = min(h, w)
            return CropParams((h - s) // 2, (w - s) // 2, s, s, False)
        top, left, ch, cw = random_resized_crop_params(h, w, rng, self.scale, self.ratio)
        return CropParams(top, left, ch, cw, bool(rng.random() < self.hflip))

    def apply(self, image: np.ndarray, semantic: np.ndarray, instance: np.ndarray, p: CropParams) -> dict:
        h, w = image.shape[:2]
        S, s = self.img_size, self.stride
        ys = _index_map(p.top, p.height, S, h)
        xs = _index_map(p.left, p.width, S, w)
        if p.flip:
            xs = xs[::-1]
        if self.interpolation == "nearest":
            img = image[ys][:, xs]
        else:
            box = (p.left, p.top, p.left + p.width, p.top + p.height)
            pil = Image.fromarray(image).resize((S, S), _PIL_INTERP[self.interpolation], box=box)
            if p.flip:
                pil = pil.transpose(Image.FLIP_LEFT_RIGHT)
            img = np.array(pil)
        x = torch.from_numpy(np.require(img, requirements=['C', 'W'])).permute(2, 0, 1).float().div_(255)
        out = {
            "image": (x - self.mean) / self.std,                                   # (3, S, S)
            "semantic": torch.from_numpy(semantic[ys[s // 2::s]][:, xs[s // 2::s]].astype(np.int64)),
            "instance": torch.from_numpy(instance[ys[s // 2::s]][:, xs[s // 2::s]].astype(np.int64)),
        }                                                                           # (S/4, S/4) each
        if self.full_masks:
            out["semantic_full"] = torch.from_numpy(semantic[ys][:, xs].astype(np.int64))
            out["instance_full"] = torch.from_numpy(instance[ys][:, xs].astype(np.int64))
        return out

    def __call__(self, image: np.ndarray, semantic: np.ndarray, instance: np.ndarray,
                 rng: np.random.Generator) -> dict:
        return self.apply(image, semantic, instance, self.get_params(*image.shape[:2], rng))

    def __repr__(self) -> str:
        return (f"JointTransform(img_size={self.img_size}, scale={self.scale}, hflip={self.hflip}, "
                f"train={self.train}, interpolation={self.interpolation!r})")


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one transformed sample: a pure function of (seed, epoch, index)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index) & 0xFFFFFFFFFFFF])

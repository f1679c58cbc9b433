"""Synthetic scenes: photo-textured images with exact semantic and instance masks.

The embedded default data. Every scene is a pure function of `(seed, split, index)`: stuff regions
(sky, grass, gravel, brick wall, wood) separated by wavy boundaries, then 6-16 overlapping "thing"
instances (coins, fur balls, cups, suit patches, rockets) pasted back to front, so later ones occlude
earlier ones. Fills are cut from the photographs scikit-image ships (`skimage.data`: astronaut,
chelsea, coffee, rocket, brick, grass, gravel, coins); the 24 coins are cut out with exact masks by
the sobel + watershed recipe of the scikit-image gallery. Each scene also has an image-level
*scene type* (`label`) that decides which stuff and thing classes dominate; it is learnable from the
image (k-NN / linear probes).
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image

from .transforms import JointTransform, sample_rng

STUFF_CLASSES = ("sky", "grass", "gravel", "wall", "wood")
THING_CLASSES = ("coin", "ball", "cup", "patch", "rocket")
CLASS_NAMES = STUFF_CLASSES + THING_CLASSES
# scene type -> (stuff top, stuff bottom, optional third stuff region, thing-class weights)
SCENES = {
    "field": ("sky", "grass", "gravel", {"ball": 6, "rocket": 1, "patch": 1}),
    "quarry": ("sky", "gravel", "grass", {"coin": 6, "patch": 2, "ball": 1}),
    "street": ("wall", "gravel", "grass", {"patch": 5, "ball": 2, "coin": 1}),
    "table": ("wall", "wood", None, {"cup": 5, "coin": 3}),
    "launch": ("sky", "gravel", "wall", {"rocket": 6, "patch": 1}),
}
SCENE_NAMES = tuple(SCENES)
_TINTS = {"grass": (0.55, 0.85, 0.35), "gravel": (0.95, 0.88, 0.75), "wall": (0.95, 0.5, 0.38)}
_BANK = 256  # texture side in the bank


def _resize(a: np.ndarray, h: int, w: int) -> np.ndarray:
    return np.asarray(Image.fromarray(a).resize((w, h), Image.BILINEAR, reducing_gap=None))


@functools.lru_cache(maxsize=1)
def texture_bank() -> dict:
    """Float32 [0, 1] textures and coin cut-outs from skimage.data (built once per process)."""
    import skimage.data as d
    from scipy import ndimage as ndi
    from skimage.filters import sobel
    from skimage.segmentation import watershed

    bank: dict = {}
    for name in ("grass", "gravel", "brick"):
        g = _resize(getattr(d, name)(), _BANK, _BANK).astype(np.float32) / 255
        key = "wall" if name == "brick" else name
        bank[key] = g[..., None] * np.asarray(_TINTS[key], np.float32)  # tinted grey photo
    sky = _resize(d.rocket()[0:140, 120:290], _BANK, _BANK).astype(np.float32) / 255
    bank["sky"] = sky
    wood = d.coffee()[0:400, 480:600]
    bank["wood"] = _resize(np.concatenate([wood, wood[:, ::-1]], 1), _BANK, _BANK).astype(np.float32) / 255
    bank["ball"] = _resize(d.chelsea()[0:300, 60:400], _BANK, _BANK).astype(np.float32) / 255
    bank["cup"] = _resize(d.coffee()[10:390, 100:480], 128, 128).astype(np.float32) / 255
    bank["patch"] = _resize(d.astronaut()[230:512, 0:180], _BANK, _BANK).astype(np.float32) / 255
    bank["rocket"] = _resize(d.rocket()[60:427, 300:340], 192, 24).astype(np.float32) / 255
    # coins: sobel elevation + watershed from dark/bright markers -> exact instance masks
    coins = d.coins()
    markers = np.zeros_like(coins)
    markers[coins < 30], markers[coins > 150] = 1, 2
    seg = ndi.binary_fill_holes(watershed(sobel(coins), markers) - 1)
    labels, n = ndi.label(seg)
    cut = []
    for sl, i in zip(ndi.find_objects(labels), range(1, n + 1), strict=True):
        m = labels[sl] == i
        if m.sum() > 300:  # drop specks
            g = coins[sl].astype(np.float32) / 255
            cut.append((np.repeat(g[..., None], 3, 2), m))
    bank["coins"] = cut
    return bank


def _idx(n: int, src: int, offset: int = 0) -> np.ndarray:
    return np.minimum(offset + (np.arange(n) * (src / n)).astype(np.int64), offset + src - 1)


def _fill(tex: np.ndarray, h: int, w: int, rng: np.random.Generator, zoom=(0.6, 1.2)) -> np.ndarray:
    """A random crop of `tex` resampled to h x w (nearest index maps: fast)."""
    th, tw = tex.shape[:2]
    ch = min(th, max(2, int(h * rng.uniform(*zoom)))) if h < th else th
    cw = min(tw, max(2, int(w * rng.uniform(*zoom)))) if w < tw else tw
    y0, x0 = rng.integers(0, th - ch + 1), rng.integers(0, tw - cw + 1)
    out = tex[_idx(h, ch, y0)][:, _idx(w, cw, x0)]
    return out[:, ::-1] if rng.random() < 0.5 else out


def _shape_mask(kind: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = (h - 1) / 2, (w - 1) / 2
    if kind in ("ball", "cup"):
        return ((yy - cy) / (h / 2)) ** 2 + ((xx - cx) / (w / 2)) ** 2 <= 1
    if kind == "patch":  # rotated rectangle inside the box
        a = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)
        v = -(xx - cx) * np.sin(a) + (yy - cy) * np.cos(a)
        r = min(h, w) / 2
        return (np.abs(u) <= r * rng.uniform(0.6, 1.0)) & (np.abs(v) <= r * rng.uniform(0.35, 0.7))
    # rocket: body + pointed nose
    t = yy / max(h - 1, 1)
    half = np.where(t < 0.25, (t / 0.25) * w / 2, w / 2)
    return np.abs(xx - cx) <= half


def render_scene(size: int, rng: np.random.Generator, scene: int | None = None):
    """Draw one scene; returns `(image uint8 HxWx3, semantic uint8 HxW, instance uint16 HxW, scene)`."""
    bank = texture_bank()
    H = W = size
    scene = int(rng.integers(len(SCENES))) if scene is None else scene
    top, bottom, third, weights = SCENES[SCENE_NAMES[scene]]
    img = np.empty((H, W, 3), np.float32)
    sem = np.empty((H, W), np.uint8)
    # stuff: wavy horizon, optional blob of a third class on the ground
    xs = np.arange(W)
    horizon = H * rng.uniform(0.3, 0.55) + H * 0.05 * np.sin(xs / W * rng.uniform(2, 7) + rng.uniform(0, 6))
    ground = np.arange(H)[:, None] >= horizon[None, :]
    regions = [(top, ~ground), (bottom, ground)]
    if third is not None and rng.random() < 0.7:
        cy, cx = rng.uniform(0.55, 0.95) * H, rng.uniform(0, 1) * W
        ry, rx = rng.uniform(0.1, 0.25) * H, rng.uniform(0.2, 0.5) * W
        yy, xx = np.mgrid[0:H, 0:W]
        blob = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1) & ground
        regions.append((third, blob))
    for name, m in regions:
        tex = _fill(bank[name], H, W, rng)
        gain = rng.uniform(0.8, 1.15)
        img[m] = tex[m] * gain
        sem[m] = CLASS_NAMES.index(name)
    # things, back to front; a soft drop shadow darkens what lies below
    ins = np.zeros((H, W), np.uint16)
    names = list(weights)
    p = np.asarray([weights[k] for k in names], np.float64)
    n_inst = int(rng.integers(6, 17))
    for k in range(1, n_inst + 1):
        kind = names[rng.choice(len(names), p=p / p.sum())]
        s = rng.uniform(0.08, 0.3) * size
        if kind == "coin":
            g, m0 = bank["coins"][rng.integers(len(bank["coins"]))]
            h, w = max(3, int(s)), max(3, int(s * m0.shape[1] / m0.shape[0]))
            iy, ix = _idx(h, m0.shape[0]), _idx(w, m0.shape[1])
            mask, tex = m0[iy][:, ix], g[iy][:, ix] * np.asarray(
                (1.0, 0.85, 0.45) if rng.random() < 0.5 else (0.9, 0.92, 0.95), np.float32)
        else:
            h, w = (max(4, int(s * 1.8)), max(3, int(s * 0.35))) if kind == "rocket" else \
                (max(3, int(s)), max(3, int(s * rng.uniform(0.7, 1.4))))
            mask = _shape_mask(kind, h, w, rng)
            tex = _fill(bank[kind], h, w, rng, zoom=(0.8, 1.6) if kind != "cup" else (1.0, 1.0))
            if kind == "ball":  # spherical shading
                yy, xx = np.mgrid[0:h, 0:w]
                r2 = ((yy - 0.35 * h) / h) ** 2 + ((xx - 0.35 * w) / w) ** 2
                tex = tex * (1.2 - 1.2 * r2)[..., None]
        y0 = int(rng.integers(-h // 3, H - 2 * h // 3))
        x0 = int(rng.integers(-w // 3, W - 2 * w // 3))
        ya, yb, xa, xb = max(y0, 0), min(y0 + h, H), max(x0, 0), min(x0 + w, W)
        if ya >= yb or xa >= xb:
            continue
        m = mask[ya - y0:yb - y0, xa - x0:xb - x0]
        sy, sx = min(ya + 2, H), min(xa + 2, W)  # shadow offset (2, 2) px
        sm = m[: H - sy, : W - sx] if sy < H and sx < W else None
        if sm is not None:
            region = img[sy:sy + sm.shape[0], sx:sx + sm.shape[1]]
            region[sm] *= 0.6
        img[ya:yb, xa:xb][m] = tex[ya - y0:yb - y0, xa - x0:xb - x0][m]
        sem[ya:yb, xa:xb][m] = CLASS_NAMES.index(kind)
        ins[ya:yb, xa:xb][m] = k
    # global light gradient + sensor noise
    light = 1 + 0.15 * (np.linspace(-1, 1, W)[None, :] * np.cos(rng.uniform(0, 6.3)))
    img = img * light[..., None].astype(np.float32) + rng.normal(0, 0.012, (H, W, 1)).astype(np.float32)
    image = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    # renumber visible instances 1..K (fully occluded ones vanish)
    ids = np.unique(ins)
    lut = np.zeros(int(ids.max()) + 1, np.uint16)
    lut[ids] = np.arange(len(ids), dtype=np.uint16)
    return image, sem, lut[ins], scene


class SyntheticScenes(torch.utils.data.Dataset):
    """Map-style dataset of synthetic scenes; sample `i` of epoch `e` depends only on (seed, e, i).

    Args:
        num_samples: dataset length (scene i is fixed across epochs; its crop/flip changes).
        scene_size: side of the raw scene in pixels.
        transform: a JointTransform, or None for raw `(image, semantic, instance)` + label.
        seed: dataset seed; `split` ("train" / "val") selects disjoint scene streams.
    """

    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES
    thing_classes = THING_CLASSES
    stuff_classes = STUFF_CLASSES
    num_scene_labels = len(SCENES)
    scene_names = SCENE_NAMES

    def __init__(self, num_samples: int = 10000, scene_size: int = 96, transform: JointTransform | None = None,
                 seed: int = 0, split: str = "train"):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if scene_size < 16:
            raise ValueError(f"scene_size must be >= 16, got {scene_size}")
        self.num_samples, self.scene_size, self.transform = num_samples, scene_size, transform
        self.seed, self.split, self.epoch = seed, split, 0
        texture_bank()  # build before DataLoader workers fork

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def raw(self, index: int):
        """`(image, semantic, instance, scene_label)` at full resolution."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} synthetic scenes")
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, 0 if self.split == "train" else 1, index])
        return render_scene(self.scene_size, rng, scene=index % self.num_scene_labels)

    def __getitem__(self, index: int) -> dict:
        image, sem, ins, label = self.raw(index)
        if self.transform is None:
            return {"image": image, "semantic": sem, "instance": ins, "label": label}
        out = self.transform(image, sem, ins, sample_rng(self.seed, self.epoch, index))
        out["label"] = torch.tensor(label, dtype=torch.long)
        return out

    def iter_raw(self):
        """Yield `(key, image, semantic, instance)` for the shard writer."""
        for i in range(self.num_samples):
            image, sem, ins, _ = self.raw(i)
            yield f"{self.split}_{i:08d}", image, sem, ins

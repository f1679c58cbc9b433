"""Pseudo-label backends: images in, (semantic, instance) maps out.

A backend is an object with `class_names` (its vocabulary; class id = index), `thing_mask`
(which classes get instance ids) and `label(images) -> [(semantic, instance), ...]` for a list of
uint8 HxWx3 arrays, one call per batch. Semantic uses 255 for "no label"; instance 0 for
"no instance". `build_labeler(name, **kw)` makes one: `classical` (scikit-image superpixels, no
weights), `grounded-sam` and `mask2former` (transformers; see `c2fmae.labeling.hf`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from c2fmae.data.vocab import COCO_PANOPTIC_CLASSES, COCO_PANOPTIC_STUFF

BACKENDS = ("grounded-sam", "mask2former", "classical")
IGNORE = 255


@dataclass(frozen=True)
class Vocabulary:
    """Class names (id = index) and which of them are stuff (no instance ids)."""
    names: tuple[str, ...]
    stuff: frozenset[str] = frozenset()

    def __post_init__(self):
        if not self.names:
            raise ValueError("vocabulary is empty")
        if len(self.names) > IGNORE:
            raise ValueError(f"vocabulary has {len(self.names)} classes; at most {IGNORE} fit (255 = ignore)")
        if len(set(self.names)) != len(self.names):
            dup = sorted({n for n in self.names if self.names.count(n) > 1})
            raise ValueError(f"vocabulary has duplicate names: {dup}")

    @property
    def thing_mask(self) -> np.ndarray:
        return np.array([n not in self.stuff for n in self.names], bool)

    @classmethod
    def coco(cls) -> Vocabulary:
        return cls(COCO_PANOPTIC_CLASSES, frozenset(COCO_PANOPTIC_STUFF))

    @classmethod
    def from_file(cls, path: str | Path) -> Vocabulary:
        """One class per line; a line `name (stuff)` marks a stuff class; `#` comments and blank lines skipped."""
        names, stuff = [], set()
        for line in Path(path).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if line.endswith("(stuff)"):
                line = line[: -len("(stuff)")].strip()
                stuff.add(line)
            names.append(line)
        try:
            return cls(tuple(names), frozenset(stuff))
        except ValueError as e:
            raise ValueError(f"--vocab {path}: {e}") from e


def paint(shape: tuple[int, int], masks: list[np.ndarray], classes: list[int], scores: list[float],
          thing_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compose per-detection boolean masks into semantic/instance maps; higher scores drawn on top."""
    sem = np.full(shape, IGNORE, np.uint8)
    ins = np.zeros(shape, np.uint16)
    k = 0
    for i in np.argsort(np.asarray(scores, np.float64), kind="stable"):
        m, c = masks[i], int(classes[i])
        sem[m] = c
        if thing_mask[c]:
            k += 1
            ins[m] = k
        else:
            ins[m] = 0
    ids = np.unique(ins)  # renumber visible instances 1..K
    lut = np.zeros(int(ids.max()) + 1, np.uint16)
    lut[ids] = np.arange(len(ids), dtype=np.uint16)
    return sem, lut[ins]


# basic colour terms and their sRGB prototypes: the classical backend's vocabulary
COLOUR_TERMS = {"black": (20, 20, 20), "white": (240, 240, 240), "gray": (128, 128, 128),
                "red": (200, 30, 30), "orange": (240, 140, 30), "yellow": (230, 220, 40),
                "green": (50, 160, 50), "blue": (40, 70, 200), "purple": (120, 50, 160),
                "pink": (240, 150, 180), "brown": (120, 75, 35)}


def _region_means(reg: np.ndarray, lab: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean colour (n, 3) and pixel count (n,) of each region id."""
    cnt = np.bincount(reg.ravel(), minlength=n)
    sums = np.stack([np.bincount(reg.ravel(), lab[..., c].ravel(), n) for c in range(3)], 1)
    return sums / np.maximum(cnt, 1)[:, None], cnt


class ClassicalLabeler:
    """SLIC superpixels merged by colour similarity into regions (no weights, CPU).

    Regions become instances when they look like objects (they touch at most one image border and
    cover 0.2%-25% of the image); others are stuff. The semantic class is the basic colour term
    (black, white, gray, red, ...) nearest to the region's mean colour in CIELAB.
    """

    def __init__(self, n_segments: int = 200, compactness: float = 10.0, merge_threshold: float = 12.0):
        self.n_segments, self.compactness, self.merge_threshold = n_segments, compactness, merge_threshold
        self.vocab = Vocabulary(tuple(COLOUR_TERMS), frozenset())
        self.class_names = self.vocab.names
        self.thing_mask = self.vocab.thing_mask
        from skimage.color import rgb2lab

        self._protos = rgb2lab(np.asarray(list(COLOUR_TERMS.values()), np.uint8)[None])[0]

    def _regions(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components
        from skimage.color import rgb2lab
        from skimage.segmentation import slic

        lab = rgb2lab(img)
        seg = slic(img, n_segments=self.n_segments, compactness=self.compactness, start_label=0,
                   channel_axis=-1)  # converts to CIELAB itself
        n = int(seg.max()) + 1
        mean, _ = _region_means(seg, lab, n)
        a = np.concatenate([seg[:, :-1].ravel(), seg[:-1].ravel()])  # neighbour pairs
        b = np.concatenate([seg[:, 1:].ravel(), seg[1:].ravel()])
        keep = (a != b) & (np.linalg.norm(mean[a] - mean[b], axis=1) < self.merge_threshold)
        graph = coo_matrix((np.ones(keep.sum()), (a[keep], b[keep])), shape=(n, n))
        _, comp = connected_components(graph, directed=False)
        return comp[seg], lab

    def label(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for img in images:
            reg, lab = self._regions(img)
            h, w = reg.shape
            n = int(reg.max()) + 1
            mean, cnt = _region_means(reg, lab, n)
            cls = np.argmin(((mean[:, None] - self._protos[None]) ** 2).sum(-1), 1).astype(np.uint8)
            borders = sum(np.isin(np.arange(n), np.unique(e)) for e in (reg[0], reg[-1], reg[:, 0], reg[:, -1]))
            frac = cnt / (h * w)
            thing = (borders <= 1) & (frac >= 0.002) & (frac <= 0.25)
            ids = np.zeros(n, np.uint16)
            ids[thing] = np.arange(1, thing.sum() + 1, dtype=np.uint16)
            out.append((cls[reg], ids[reg]))
        return out


def build_labeler(name: str, **kw):
    """A backend by name; keyword arguments go to its constructor (unknown ones are an error)."""
    if name == "classical":
        return ClassicalLabeler(**kw)
    if name == "grounded-sam":
        from .hf import GroundedSAMLabeler
        return GroundedSAMLabeler(**kw)
    if name == "mask2former":
        from .hf import Mask2FormerLabeler
        return Mask2FormerLabeler(**kw)
    raise ValueError(f"--backend must be one of {BACKENDS}, got {name!r}")

"""Label overlays for people: image | semantic colours | instance outlines, with a class legend."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from c2fmae.atomic import atomic_write_bytes


def palette(n: int = 256, seed: int = 3) -> np.ndarray:
    """A fixed, well-spread colour per id (id 255 = ignore -> black)."""
    rng = np.random.default_rng(seed)
    pal = rng.integers(40, 256, (n, 3)).astype(np.uint8)
    pal[255 % n] = 0
    return pal


def render_overlay(image: np.ndarray, semantic: np.ndarray, instance: np.ndarray,
                   class_names: tuple[str, ...] | list[str] = (), alpha: float = 0.55) -> np.ndarray:
    """A uint8 (H+legend, 3W, 3) panel: image, image blended with class colours, instance outlines."""
    from skimage.segmentation import find_boundaries

    pal = palette()
    sem_rgb = pal[semantic.astype(np.int64) % 256]
    blend = (image * (1 - alpha) + sem_rgb * alpha).astype(np.uint8)
    blend[semantic == 255] = (image[semantic == 255] * 0.3).astype(np.uint8)
    outl = image.copy()
    edges = find_boundaries(instance.astype(np.int64), mode="inner") & (instance > 0)
    ins_pal = palette(seed=11)
    outl[instance > 0] = (outl[instance > 0] * 0.6 + ins_pal[instance[instance > 0] % 256] * 0.4).astype(np.uint8)
    outl[edges] = (255, 255, 0)
    panel = np.concatenate([image, blend, outl], 1)
    ids, counts = np.unique(semantic[semantic != 255], return_counts=True)
    order = ids[np.argsort(-counts)][:8]
    h = panel.shape[0]
    canvas = Image.new("RGB", (panel.shape[1], h + 14 * max(1, (len(order) + 2) // 3)), (0, 0, 0))
    canvas.paste(Image.fromarray(panel), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for j, c in enumerate(order):
        x, y = (j % 3) * (panel.shape[1] // 3) + 2, h + 2 + 14 * (j // 3)
        draw.rectangle([x, y, x + 10, y + 10], fill=tuple(int(v) for v in pal[c]))
        name = class_names[c] if c < len(class_names) else str(c)
        draw.text((x + 14, y - 1), name, fill=(255, 255, 255))
    return np.asarray(canvas)


def save_overlay(path: str | Path, image: np.ndarray, semantic: np.ndarray, instance: np.ndarray,
                 class_names=()) -> None:
    import io

    buf = io.BytesIO()
    Image.fromarray(render_overlay(image, semantic, instance, class_names)).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())

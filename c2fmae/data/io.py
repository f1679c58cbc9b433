"""Reading, checking and encoding raw (image, semantic, instance) triples.

A raw sample is `(image uint8 HxWx3, semantic uint8/uint16 HxW, instance uint16/int32 HxW)` at full
resolution; semantic 255 = ignore, instance 0 = no instance. Masks are PNG files decoded with PIL
(8- or 16-bit), never through an 8-bit RGB decoder, so instance ids above 255 survive.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

IGNORE_INDEX = 255


class BadSampleError(ValueError):
    """A sample that cannot be used; the message names the file/key and what is wrong."""


def decode_image(data: bytes | str | Path, name: str = "") -> np.ndarray:
    """Decode an image (bytes or path) to uint8 HxWx3 RGB; raises BadSampleError naming `name`."""
    name = name or str(data if not isinstance(data, bytes) else "<bytes>")
    try:
        src = io.BytesIO(data) if isinstance(data, bytes) else data
        with Image.open(src) as im:
            im.load()
            return np.array(im.convert("RGB"))  # writable (torch.from_numpy warns on read-only)
    except Exception as e:  # PIL raises many types for broken files
        raise BadSampleError(f"{name}: cannot decode image ({type(e).__name__}: {e})") from e


def decode_mask(data: bytes | str | Path, name: str = "") -> np.ndarray:
    """Decode an 8- or 16-bit single-channel PNG mask to an integer HxW array (ids kept exactly)."""
    name = name or str(data if not isinstance(data, bytes) else "<bytes>")
    try:
        src = io.BytesIO(data) if isinstance(data, bytes) else data
        with Image.open(src) as im:
            im.load()
            if im.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
                raise ValueError(f"mask mode {im.mode!r} is not a single-channel id map")
            arr = np.asarray(im)
    except BadSampleError:
        raise
    except Exception as e:
        raise BadSampleError(f"{name}: cannot decode mask ({type(e).__name__}: {e})") from e
    if arr.dtype not in (np.uint8, np.uint16):
        arr = arr.astype(np.int64)
        if arr.min() < 0 or arr.max() > 65535:
            raise BadSampleError(f"{name}: mask ids outside [0, 65535]")
        arr = arr.astype(np.uint16)
    return arr


def encode_mask(mask: np.ndarray) -> bytes:
    """PNG-encode an id map: 8-bit when all ids < 256, else 16-bit (lossless)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be HxW, got shape {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() > 65535):
        raise ValueError(f"mask ids must lie in [0, 65535], got [{mask.min()}, {mask.max()}]")
    buf = io.BytesIO()
    if mask.size == 0 or mask.max() < 256:
        Image.fromarray(mask.astype(np.uint8), mode="L").save(buf, format="PNG")
    else:
        Image.fromarray(mask.astype(np.uint16)).save(buf, format="PNG")  # mode I;16
    return buf.getvalue()


def encode_image(image: np.ndarray, fmt: str = "jpg", quality: int = 95) -> bytes:
    """Encode uint8 HxWx3 as JPEG (`jpg`) or lossless PNG (`png`)."""
    buf = io.BytesIO()
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    if fmt in ("jpg", "jpeg"):
        pil.save(buf, format="JPEG", quality=quality)
    elif fmt == "png":
        pil.save(buf, format="PNG")
    else:
        raise ValueError(f"image format must be 'jpg' or 'png', got {fmt!r}")
    return buf.getvalue()


def check_triple(image: np.ndarray, semantic: np.ndarray, instance: np.ndarray, name: str,
                 num_classes: int | None = None) -> None:
    """Raise BadSampleError (naming `name`) if shapes disagree or ids are out of range."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise BadSampleError(f"{name}: image must be HxWx3, got shape {image.shape}")
    for what, m in (("semantic", semantic), ("instance", instance)):
        if m.shape != image.shape[:2]:
            raise BadSampleError(f"{name}: {what} mask has size {m.shape[1]}x{m.shape[0]} (WxH) but the "
                                 f"image is {image.shape[1]}x{image.shape[0]}")
    if num_classes is not None and semantic.size:
        bad = (semantic >= num_classes) & (semantic != IGNORE_INDEX)
        if bad.any():
            ids = np.unique(semantic[bad])[:5].tolist()
            raise BadSampleError(f"{name}: semantic ids {ids} out of range [0, {num_classes}) "
                                 f"(and != {IGNORE_INDEX} ignore)")



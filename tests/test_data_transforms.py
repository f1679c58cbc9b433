"""Joint transforms: masks stay aligned with the image, ids are never interpolated, reproducible."""
import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from c2fmae.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, DataConfig, JointTransform, sample_rng


def _palette_scene(rng, h=37, w=53, k=12):
    """Random blobs of k colours; semantic = colour index, instance = 16-bit id derived from it."""
    lab = ndi.zoom(rng.integers(0, k, (h // 4 + 1, w // 4 + 1)), 4, order=0)[:h, :w]
    lab = np.where(rng.random((h, w)) < 0.05, rng.integers(0, k, (h, w)), lab)  # 1-px specks
    palette = rng.permutation(256)[: k * 3].reshape(k, 3).astype(np.uint8)
    return palette[lab], lab.astype(np.uint8), (lab.astype(np.uint16) * 1000 + 7), palette


def _unnormalise(x: torch.Tensor) -> np.ndarray:
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1)
    return (x * std + mean).mul(255).round().permute(1, 2, 0).numpy().astype(np.int64)


@pytest.mark.parametrize("seed", range(12))
def test_mask_drawn_from_image_colours_stays_equal(seed):
    rng = np.random.default_rng(seed)
    img, sem, ins, palette = _palette_scene(rng)
    t = JointTransform(32, scale=(0.05, 1.0), ratio=(0.5, 2.0), hflip=0.5, interpolation="nearest",
                       full_masks=True)
    out = t(img, sem, ins, rng)
    pix = _unnormalise(out["image"])                                   # (32, 32, 3)
    colour_id = np.argmin(np.abs(pix[:, :, None, :] - palette[None, None].astype(np.int64)).sum(-1), -1)
    assert np.array_equal(colour_id, out["semantic_full"].numpy())     # mask == the image's own colours
    assert np.array_equal(out["instance_full"].numpy(), colour_id * 1000 + 7)
    assert np.array_equal(out["semantic"].numpy(), colour_id[2::4, 2::4])   # stride-4 map, same grid
    assert out["semantic"].shape == (8, 8) and out["semantic"].dtype == torch.long


@pytest.mark.parametrize("seed", range(6))
def test_bicubic_image_edges_match_nearest_masks(seed):
    """Two-colour image upsampled ~5x: bicubic's 50% crossing sits on the mask boundary (+-2 px at
    corners); a misalignment of half a source pixel would put errors ~3 px away."""
    rng = np.random.default_rng(100 + seed)
    lab = ndi.zoom(rng.integers(0, 2, (6, 6)), 3, order=0)            # 18 x 18 binary blobs
    img = np.where(lab[..., None] == 1, 230, 20).astype(np.uint8).repeat(3, 2)
    t = JointTransform(64, scale=(0.2, 0.4), hflip=0.5, full_masks=True)
    out = t(img, lab.astype(np.uint8), lab.astype(np.uint16), rng)
    pred = _unnormalise(out["image"]).mean(-1) > 125
    mask = out["semantic_full"].numpy() == 1
    edge = ndi.binary_dilation(mask, iterations=2) & ~ndi.binary_erosion(mask, iterations=2)
    assert not np.any((pred != mask) & ~edge)
    if mask.any() and not mask.all():
        assert (pred == mask).mean() > 0.9


def test_no_interpolated_ids_on_real_scene():
    from c2fmae.data import SyntheticScenes

    ds = SyntheticScenes(4, scene_size=80)
    t = JointTransform(64, scale=(0.1, 1.0))
    for i in range(4):
        img, sem, ins, _ = ds.raw(i)
        for e in range(3):
            out = t(img, sem, ins, sample_rng(0, e, i))
            assert set(out["semantic"].unique().tolist()) <= set(np.unique(sem).tolist())
            assert set(out["instance"].unique().tolist()) <= set(np.unique(ins).tolist())


def test_pure_function_of_seed_epoch_index():
    from c2fmae.data import build_dataset

    ds = build_dataset(DataConfig(img_size=32, num_samples=8, seed=3))
    ds.set_epoch(2)
    a = ds[5]
    ds.set_epoch(0)
    c = ds[5]
    ds2 = build_dataset(DataConfig(img_size=32, num_samples=8, seed=3))
    ds2.set_epoch(2)
    b = ds2[5]                                                          # a fresh "resumed" dataset
    for k in ("image", "semantic", "instance", "label"):
        assert torch.equal(a[k], b[k])
    assert not torch.equal(a["image"], c["image"])                     # a new epoch, a new crop


def test_eval_view_is_central_and_deterministic():
    img = np.arange(40 * 60 * 3, dtype=np.uint8).reshape(40, 60, 3)
    lab = np.tile(np.arange(60, dtype=np.uint8), (40, 1))
    t = JointTransform(40, train=False, interpolation="nearest", full_masks=True)
    out = t(img, lab, lab.astype(np.uint16), np.random.default_rng(0))
    assert np.array_equal(out["semantic_full"].numpy()[0], np.arange(10, 50))   # central 40x40


@pytest.mark.parametrize("kw, key", [({"source": "imagenet"}, "data.source"), ({"scale": (0.5, 0.2)}, "data.scale"),
                                     ({"img_size": 30}, "data.img_size"), ({"source": "folder"}, "data.path"),
                                     ({"interpolation": "lanczos"}, "data.interpolation")])
def test_bad_config_names_the_key(kw, key):
    with pytest.raises(ValueError, match=key):
        DataConfig(**kw)

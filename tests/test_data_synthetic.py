"""Synthetic scenes: exact, consistent masks, reproducibility, a learnable scene label, the batch contract."""
import numpy as np
import torch

from c2fmae.data import DataConfig, JointTransform, SyntheticScenes, build_dataset, worker_init_fn
from c2fmae.data.synthetic import STUFF_CLASSES


def test_masks_are_exact_and_consistent():
    ds = SyntheticScenes(10, scene_size=96)
    n_stuff = len(STUFF_CLASSES)
    for i in range(10):
        img, sem, ins, label = ds.raw(i)
        assert img.shape == (96, 96, 3) and img.dtype == np.uint8 and sem.shape == ins.shape == (96, 96)
        assert np.array_equal(ins > 0, sem >= n_stuff)          # thing pixels <=> an instance
        ids = np.unique(ins[ins > 0])
        assert len(ids) >= 3 and np.array_equal(ids, np.arange(1, len(ids) + 1))   # visible, renumbered
        for k in ids:                                             # one class per instance
            assert len(np.unique(sem[ins == k])) == 1
        assert 0 <= label < ds.num_scene_labels and label == i % ds.num_scene_labels
        assert img.std() > 20                                     # textured, not flat


def test_occlusion_happens():
    """Some instance is cut by a later one: its visible area is below its drawn shape's bounding box fill."""
    ds = SyntheticScenes(20, scene_size=96)
    from scipy import ndimage as ndi
    split = 0
    for i in range(20):
        _, _, ins, _ = ds.raw(i)
        for k in np.unique(ins[ins > 0]):
            split += ndi.label(ins == k)[1] > 1                  # occluded into several pieces
    assert split > 0


def test_reproducible_and_splits_differ():
    a, b = SyntheticScenes(3, 64, seed=1), SyntheticScenes(3, 64, seed=1)
    v = SyntheticScenes(3, 64, seed=1, split="val")
    assert all(np.array_equal(x, y) for x, y in zip(a.raw(2)[:3], b.raw(2)[:3], strict=True))
    assert not np.array_equal(a.raw(2)[0], v.raw(2)[0])


def test_scene_label_is_learnable_from_the_image():
    """Nearest-centroid on colour histograms of held-out scenes beats chance (1/5) by far."""
    def feats(ds):
        x, y = [], []
        for i in range(len(ds)):
            img, _, _, lab = ds.raw(i)
            h = [np.histogram(img[..., c], bins=8, range=(0, 256))[0] for c in range(3)]
            x.append(np.concatenate(h) / img[..., 0].size)
            y.append(lab)
        return np.asarray(x), np.asarray(y)
    xtr, ytr = feats(SyntheticScenes(100, 48))
    xte, yte = feats(SyntheticScenes(50, 48, split="val"))
    cent = np.stack([xtr[ytr == c].mean(0) for c in range(5)])
    pred = np.argmin(((xte[:, None] - cent[None]) ** 2).sum(-1), 1)
    assert (pred == yte).mean() > 0.6


class _CountThreads(JointTransform):
    """A JointTransform that also reports the torch thread count of the process it runs in."""

    def __call__(self, *args):
        return {**super().__call__(*args), "threads": torch.tensor(torch.get_num_threads())}


def test_loader_batches_match_the_contract():
    ds = build_dataset(DataConfig(img_size=64, num_samples=8, scale=(0.5, 1.0)))
    assert ds.num_classes == 10 and len(ds.class_names) == 10 and ds.num_scene_labels == 5
    ds.transform = _CountThreads(64, scale=(0.5, 1.0))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, worker_init_fn=worker_init_fn)
        batch = next(iter(loader))
    finally:
        torch.set_num_threads(threads)
    assert batch.pop("threads").tolist() == [1, 1, 1, 1]                # one torch thread per loader worker
    assert batch["image"].shape == (4, 3, 64, 64) and batch["image"].dtype == torch.float32
    assert batch["semantic"].shape == batch["instance"].shape == (4, 16, 16)
    assert batch["semantic"].dtype == batch["instance"].dtype == batch["label"].dtype == torch.long
    assert int(batch["semantic"].max()) < 10 and abs(float(batch["image"].mean())) < 1.5
    val = build_dataset(DataConfig(img_size=64, num_val_samples=4), train=False)
    assert len(val) == 4 and torch.equal(val[1]["image"], val[1]["image"])

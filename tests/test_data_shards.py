"""WebDataset shards and the image folder: round trips, rank/worker splitting, bad-input reports."""
import io
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from c2fmae.data import (
    BadSampleError,
    DataConfig,
    FolderDataset,
    ShardDataset,
    SyntheticScenes,
    build_dataset,
    decode_image,
    iter_shards,
    worker_init_fn,
    write_shard,
    write_shards,
)


def _samples(n, size=40, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)
        sem = rng.integers(0, 133, (size, size + 8)).astype(np.uint8)
        sem[0, 0] = 255                                                  # ignore survives
        ins = rng.integers(0, 3000, (size, size + 8)).astype(np.uint16)  # 16-bit ids survive
        yield f"s{i:04d}", img, sem, ins


def test_write_then_read_gives_identical_triples(tmp_path):
    ref = list(_samples(7))
    paths = write_shards(iter(ref), tmp_path, samples_per_shard=3, image_format="png", progress=False)
    assert [p.rsplit("/", 1)[1] for p in paths] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    got = list(iter_shards(str(tmp_path / "shard-{000000..000002}.tar")))   # brace pattern
    assert len(got) == 7
    for (k, a, b, c), (k2, a2, b2, c2) in zip(ref, got, strict=True):
        assert k == k2 and np.array_equal(a, a2) and np.array_equal(b, b2) and np.array_equal(c, c2)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    # jpg: masks exact, image = PIL's decode of the stored jpeg; a pipe: url reads the same
    write_shard(tmp_path / "j.tar", ref[:2], image_format="jpg")
    with tarfile.open(tmp_path / "j.tar") as tar:
        jpg = tar.extractfile("s0000.jpg").read()
    got = list(iter_shards(f"pipe:cat {tmp_path / 'j.tar'}"))
    assert np.array_equal(got[0][1], decode_image(jpg)) and np.array_equal(got[0][3], ref[0][3])
    # same input, same bytes (restartable writers produce identical shards)
    write_shard(tmp_path / "j2.tar", ref[:2], image_format="jpg")
    assert (tmp_path / "j.tar").read_bytes() == (tmp_path / "j2.tar").read_bytes()


def test_two_workers_two_ranks_see_each_sample_once(tmp_path):
    write_shards(_samples(22, size=16), tmp_path, samples_per_shard=3, progress=False)   # 8 shards, last short
    for epoch in (0, 1):
        seen = Counter()
        for rank in range(2):
            ds = ShardDataset(str(tmp_path), None, seed=5, rank=rank, world_size=2, shuffle=True,
                              shuffle_buffer=4, return_key=True)
            ds.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, worker_init_fn=worker_init_fn)
            seen.update(s["key"] for s in loader)
        assert seen == Counter({f"s{i:04d}": 1 for i in range(22)})


def test_shard_dataset_yields_the_batch_contract(tmp_path):
    write_shards(_samples(4), tmp_path, samples_per_shard=2, progress=False)
    ds = build_dataset(DataConfig(source="shards", path=str(tmp_path / "shard-{000000..000001}.tar"), img_size=32))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["semantic"].shape == (4, 8, 8)
    assert batch["instance"].dtype == torch.long and int(batch["instance"].max()) > 255


def _raw_tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _png(a):
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("case, match", [("corrupt", "bad.jpg: cannot decode image"),
                                         ("size", r"bad: instance mask has size 8x4"),
                                         ("range", r"bad: semantic ids \[200\] out of range")])
def test_bad_shard_samples_are_named(tmp_path, case, match):
    img, sem, ins = np.zeros((6, 8, 3), np.uint8), np.zeros((6, 8), np.uint8), np.zeros((6, 8), np.uint16)
    jpg = b"not a jpeg" if case == "corrupt" else _png(img)
    if case == "size":
        ins = np.zeros((4, 8), np.uint16)
    if case == "range":
        sem[2, 2] = 200
    _raw_tar(tmp_path / "x.tar", {"good.png": _png(img), "good.sem.png": _png(np.zeros((6, 8), np.uint8)),
                                  "good.ins.png": _png(np.zeros((6, 8), np.uint16)),
                                  "bad.jpg": jpg, "bad.sem.png": _png(sem), "bad.ins.png": _png(ins)})
    with pytest.raises(BadSampleError, match=match) as e:
        list(iter_shards(str(tmp_path / "x.tar"), num_classes=133))
    assert "x.tar:bad" in str(e.value)
    ds = ShardDataset(str(tmp_path / "x.tar"), None, num_classes=133, skip_bad=True, shuffle=False)
    with pytest.warns(UserWarning, match="x.tar:bad"):
        assert len(list(ds)) == 1
    assert ds.num_skipped == 1


def _folder(root, n=3, nested=True):
    for i, (_, img, sem, ins) in enumerate(_samples(n, size=24)):
        rel = f"sub/img{i}" if nested and i == 0 else f"img{i}"
        for d, a, ext in (("images", img, ".jpg"), ("semantic", sem, ".png"), ("instance", ins, ".png")):
            (root / d / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(a).save(root / d / (rel + ext), quality=95)


def test_folder_dataset_and_repacking_into_shards(tmp_path):
    _folder(tmp_path)
    ds = FolderDataset(tmp_path / "images", num_classes=133)
    assert len(ds) == 3 and ds.files[-1].parent.name == "sub"
    paths = write_shards(ds.iter_raw(), tmp_path / "shards", samples_per_shard=2, image_format="png", progress=False)
    back = list(iter_shards(paths))
    assert [k for k, *_ in back] == ["img1", "img2", "sub_img0"]
    for (_, a, b, c), i in zip(back, range(3), strict=True):
        a0, b0, c0 = ds.raw(i)
        assert np.array_equal(b, b0) and np.array_equal(c, c0) and np.array_equal(a, a0)
    out = build_dataset(DataConfig(source="folder", path=str(tmp_path), img_size=16))[0]
    assert out["semantic"].shape == (4, 4)


def test_folder_bad_inputs_name_the_file(tmp_path):
    _folder(tmp_path, nested=False)
    (tmp_path / "images" / "img1.jpg").write_bytes(b"\xff\xd8 broken")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "semantic" / "img2.png")
    ds = FolderDataset(tmp_path, num_classes=133)
    with pytest.raises(BadSampleError, match="img1.jpg: cannot decode image"):
        ds.raw(1)
    with pytest.raises(BadSampleError, match="img2.jpg: semantic mask has size 5x5"):
        ds.raw(2)
    with pytest.raises(BadSampleError, match="img0.jpg: semantic ids .* out of range"):
        FolderDataset(tmp_path, num_classes=100).raw(0)
    (tmp_path / "instance" / "img0.png").unlink()
    with pytest.raises(FileNotFoundError, match="instance/img0.png"):
        FolderDataset(tmp_path)


def test_synthetic_scenes_pack_into_shards(tmp_path):
    ds = SyntheticScenes(5, scene_size=48)
    paths = write_shards(ds.iter_raw(), tmp_path, samples_per_shard=4, image_format="png", progress=False)
    for (k, img, sem, ins), i in zip(iter_shards(paths), range(5), strict=True):
        a, b, c, _ = ds.raw(i)
        assert k == f"train_{i:08d}" and np.array_equal(img, a) and np.array_equal(sem, b) and np.array_equal(ins, c)

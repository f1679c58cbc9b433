"""The labelling job: classical backend on real photos, resumability after a kill, ranks, bad inputs."""
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest
import skimage.data
from PIL import Image
from scipy import ndimage as ndi

from c2fmae.data import iter_shards
from c2fmae.labeling import COLOUR_TERMS, ClassicalLabeler, LabelJob, Vocabulary, render_overlay

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def _photo_folder(root, n=8, size=96):
    """Crops of scikit-image's photographs, saved as JPEG (and one PNG in a sub-folder)."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = getattr(skimage.data, PHOTOS[i % 4])()
        y, x = (i * 37) % (img.shape[0] - size), (i * 53) % (img.shape[1] - size)
        crop = img[y:y + size * 2:2, x:x + size * 2:2] if img.shape[0] > 2 * size + y else img[y:y + size, x:x + size]
        Image.fromarray(np.ascontiguousarray(crop)).save(root / f"img{i:02d}.jpg", quality=90)
    (root / "sub").mkdir(exist_ok=True)
    Image.fromarray(skimage.data.coffee()[::4, ::4]).save(root / "sub" / "coffee.png")
    return root


def test_classical_finds_the_coins():
    """Independent truth: the scikit-image gallery's sobel + watershed coin masks."""
    from skimage.filters import sobel
    from skimage.segmentation import watershed

    coins = skimage.data.coins()
    markers = np.zeros_like(coins)
    markers[coins < 30], markers[coins > 150] = 1, 2
    truth, n = ndi.label(ndi.binary_fill_holes(watershed(sobel(coins), markers) - 1))
    sem, ins = ClassicalLabeler().label([np.repeat(coins[..., None], 3, 2)])[0]
    found = 0
    for i in range(1, n + 1):
        m = truth == i
        if m.sum() < 300:
            continue
        ids, cnt = np.unique(ins[m], return_counts=True)
        j = ids[np.argmax(cnt)]
        found += bool(j > 0 and cnt.max() > 0.5 * m.sum() and (truth[ins == j] == i).mean() > 0.8)
    assert found >= 15                                                  # of the 24 coins
    assert set(np.unique(sem)) <= set(range(len(COLOUR_TERMS)))


def test_classical_job_on_photographs(tmp_path):
    src = _photo_folder(tmp_path / "in")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    job = LabelJob(ClassicalLabeler(n_segments=60), str(src), str(tmp_path / "out"), shard_size=4, batch_size=3,
                   overlays=1, progress=False, backend="classical")
    s = job.run()
    assert s["labelled"] == 9 and [b["name"] for b in s["unreadable"]] == [str(src / "broken.jpg")]
    shards = sorted((tmp_path / "out").glob("labels-*.tar"))
    assert len(shards) == 3
    got = list(iter_shards([str(p) for p in shards], num_classes=len(COLOUR_TERMS)))
    assert len(got) == 9 and got[-1][0] == "sub_coffee"
    coffee = skimage.data.coffee()[::4, ::4]
    assert np.array_equal(got[-1][1], coffee)                           # png input stored losslessly
    for _, img, sem, ins in got:
        assert sem.shape == ins.shape == img.shape[:2] and sem.max() < len(COLOUR_TERMS)
    assert sum(ins.max() > 0 for *_, ins in got) >= 5 and len({int(s.max()) for _, _, s, _ in got}) >= 3
    with tarfile.open(shards[0]) as tar:                                # jpeg input stored as is
        assert tar.extractfile("img00.jpg").read() == (src / "img00.jpg").read_bytes()
    meta = json.loads((tmp_path / "out" / "vocab.json").read_text())
    assert meta["class_names"] == list(COLOUR_TERMS)
    overlays = sorted((tmp_path / "out" / "overlays").glob("*.png"))
    assert len(overlays) == 3
    ov = np.asarray(Image.open(overlays[0]))
    assert ov.shape[1] == 3 * got[0][1].shape[1] and ov.shape[0] > got[0][1].shape[0]
    # restart: everything is done, nothing relabelled, the unreadable image is still reported
    s2 = LabelJob(ClassicalLabeler(n_segments=60), str(src), str(tmp_path / "out"), shard_size=4, progress=False).run()
    assert s2["skipped_units"] == 3 and s2["labelled"] == 0 and len(s2["unreadable"]) == 1


@pytest.mark.slow
def test_killed_job_restarts_to_the_same_shards(tmp_path):
    src = _photo_folder(tmp_path / "in", n=11, size=64)
    args = ["--backend", "classical", "--segments", "40", "--input", str(src), "--shard-size", "1",
            "--batch-size", "1", "--overlays", "0", "--quiet"]
    ref = LabelJob(ClassicalLabeler(n_segments=40), str(src), str(tmp_path / "ref"), shard_size=1, batch_size=1,
                   overlays=0, progress=False).run()
    assert ref["labelled"] == 12
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "c2fmae.cli", "label", *args, "--output", str(out)],
                            env={**os.environ, "RANK": "0", "WORLD_SIZE": "1"})
    deadline = time.time() + 120
    while not list(out.glob("labels-*.tar")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(out.glob("labels-*.tar")))
    assert 1 <= done < 12, f"kill landed outside the run ({done} shards)"
    s = LabelJob(ClassicalLabeler(n_segments=40), str(src), str(out), shard_size=1, batch_size=1, overlays=0,
                 progress=False).run()
    assert s["skipped_units"] == done and s["labelled"] == 12 - done
    names = sorted(p.name for p in (tmp_path / "ref").glob("labels-*.tar"))
    assert names == sorted(p.name for p in out.glob("labels-*.tar")) and len(names) == 12
    for n in names:
        assert (tmp_path / "ref" / n).read_bytes() == (out / n).read_bytes()
    assert not list(out.glob(".*.tmp"))


def test_progress_bar_shows_the_rate(tmp_path, capsys):
    src = _photo_folder(tmp_path / "in", n=2, size=32)
    LabelJob(ClassicalLabeler(n_segments=20), str(src), str(tmp_path / "out"), overlays=0).run()
    err = capsys.readouterr().err
    assert "label rank 0: 100%" in err and "3/3" in err
    assert re.search(r"\d(img/s|s/img)\]", err)                            # images/s (or s/img when slow)


def test_two_ranks_split_the_shards(tmp_path):
    src = _photo_folder(tmp_path / "in", n=5, size=48)
    lab = ClassicalLabeler(n_segments=30)
    single = LabelJob(lab, str(src), str(tmp_path / "one"), shard_size=2, overlays=0, progress=False)
    single.run()
    per_rank = [LabelJob(lab, str(src), str(tmp_path / "two"), shard_size=2, overlays=0, progress=False,
                         rank=r, world_size=2).run() for r in range(2)]
    assert [s["units"] for s in per_rank] == [2, 1]
    for p in (tmp_path / "one").glob("labels-*.tar"):
        assert p.read_bytes() == (tmp_path / "two" / p.name).read_bytes()


def test_input_shards_map_one_to_one_and_broken_members_are_reported(tmp_path):
    import io
    import tarfile

    from c2fmae.data import SyntheticScenes, write_shards

    write_shards(SyntheticScenes(3, 48).iter_raw(), tmp_path / "in", samples_per_shard=2, progress=False)
    with tarfile.open(tmp_path / "in" / "extra.tar", "w") as tar:
        for name, data in (("bad.jpg", b"\xff\xd8 nope"), ("nomedia.txt", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    s = LabelJob(ClassicalLabeler(n_segments=30), str(tmp_path / "in"), str(tmp_path / "out"), overlays=0,
                 progress=False).run()
    assert s["labelled"] == 3 and len(s["unreadable"]) == 2
    assert any("extra.tar:bad.jpg" in b["name"] for b in s["unreadable"])
    assert sorted(p.name for p in (tmp_path / "out").glob("*.tar")) == ["extra.tar", "shard-000000.tar",
                                                                         "shard-000001.tar"]
    keys = [k for k, *_ in iter_shards(str(tmp_path / "out" / "shard-000000.tar"))]
    assert keys == ["train_00000000", "train_00000001"]


def test_vocab_file_and_errors(tmp_path):
    f = tmp_path / "v.txt"
    f.write_text("# my classes\ncat\nsky (stuff)\n\nroad (stuff)\n")
    v = Vocabulary.from_file(f)
    assert v.names == ("cat", "sky", "road") and v.thing_mask.tolist() == [True, False, False]
    f.write_text("cat\ncat\n")
    with pytest.raises(ValueError, match="v.txt: vocabulary has duplicate names"):
        Vocabulary.from_file(f)
    assert len(Vocabulary.coco().names) == 133 and Vocabulary.coco().thing_mask.sum() == 80
    with pytest.raises(FileNotFoundError, match="no images"):
        LabelJob(ClassicalLabeler(), str(tmp_path), str(tmp_path / "o"))
    with pytest.raises(FileNotFoundError, match="--input .*typo: .*typo not found"):
        LabelJob(ClassicalLabeler(), str(tmp_path / "typo"), str(tmp_path / "o"))
    (tmp_path / "s-0.tar").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"s-1.tar, .*s-2.tar not found"):
        LabelJob(ClassicalLabeler(), str(tmp_path / "s-{0..2}.tar"), str(tmp_path / "o"))


def test_overlay_shows_classes_and_outlines():
    img = np.full((20, 30, 3), 100, np.uint8)
    sem = np.full((20, 30), 255, np.uint8)
    sem[5:15, 5:15] = 2
    ins = np.zeros((20, 30), np.uint16)
    ins[5:15, 5:15] = 1
    ov = render_overlay(img, sem, ins, ("a", "b", "c"))
    assert ov.shape[1] == 90 and ov.shape[0] > 20
    assert tuple(ov[5, 65]) == (255, 255, 0) and tuple(ov[10, 70]) != (255, 255, 0)   # outline, not fill
    assert tuple(ov[0, 30]) == (30, 30, 30)                              # ignored pixels dimmed

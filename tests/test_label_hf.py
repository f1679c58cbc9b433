"""The transformers backends (Grounding DINO + SAM-HQ, Mask2Former) with tiny random-init models.

The models are built here and saved with `save_pretrained` (no download; HF_HUB_OFFLINE=1 in
conftest), then run end to end through `c2fmae label`. Their random outputs are replaced by
hand-made ones (forward hooks) where a test checks the labeller's own logic against known values.
"""
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from c2fmae.cli import main as cli_main
from c2fmae.data import iter_shards
from c2fmae.data.vocab import COCO_PANOPTIC_CLASSES
from c2fmae.labeling import Vocabulary
from c2fmae.labeling.hf import GroundedSAMLabeler, Mask2FormerLabeler, sam_boxes
from c2fmae.labeling.tiny import save_tiny_grounded_sam, save_tiny_mask2former

pytest.importorskip("transformers")

VOCAB = ("person", "cat", "traffic light", "cup", "sky-other-merged", "wall-brick")
STUFF = frozenset({"sky-other-merged", "wall-brick"})
M2F_CLASSES = ("person", "cat", "sky-other-merged", "wall-brick", "unicorn")  # "unicorn" is not in COCO


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-models")
    det, seg = save_tiny_grounded_sam(root, VOCAB)
    m2f = save_tiny_mask2former(root / "mask2former", M2F_CLASSES)
    return {"detector": det, "segmenter": seg, "mask2former": m2f}


def _photos(root, sizes=((48, 64), (64, 48), (40, 40), (56, 72), (64, 64))):
    """Real photographs (scikit-image's samples) of several sizes, plus one corrupt file."""
    root.mkdir(parents=True)
    names = ("astronaut", "chelsea", "coffee", "rocket")
    for i, (h, w) in enumerate(sizes):
        img = Image.fromarray(getattr(skimage.data, names[i % 4])()).resize((w, h), Image.BICUBIC)
        img.save(root / f"photo{i}.png")
    (root / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return root


def _check_shards(out, class_names, thing, n_images):
    """Shards read back with c2fmae.data: valid triples, ids in range, instances only on thing classes."""
    got = list(iter_shards(str(out), num_classes=len(class_names)))
    assert len(got) == n_images
    labelled = 0
    for key, img, sem, ins in got:
        assert sem.shape == ins.shape == img.shape[:2]
        ids = np.unique(sem)
        assert set(ids.tolist()) <= set(range(len(class_names))) | {255}
        assert (sem[ins > 0] != 255).all() and thing[sem[ins > 0]].all()        # instances are things
        on_stuff = (sem != 255) & ~thing[np.minimum(sem, len(class_names) - 1)]
        assert (ins[on_stuff] == 0).all()
        labelled += (sem != 255).sum()
        src = np.asarray(Image.open(out.parent / "in" / f"{key}.png").convert("RGB"))
        assert np.array_equal(img, src)                                        # png stored losslessly
    assert labelled > 0
    return got


def test_grounded_sam_end_to_end_through_the_cli(tmp_path, tiny_dir, capsys):
    src = _photos(tmp_path / "in")
    (tmp_path / "vocab.txt").write_text("".join(f"{n} (stuff)\n" if n in STUFF else f"{n}\n" for n in VOCAB))
    rc = cli_main(["label", "--backend", "grounded-sam", "--detector", str(tiny_dir["detector"]),
                   "--segmenter", str(tiny_dir["segmenter"]), "--vocab", str(tmp_path / "vocab.txt"),
                   "--box-threshold", "0", "--input", str(src), "--output", str(tmp_path / "out"),
                   "--shard-size", "4", "--batch-size", "3", "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "5 images labelled, 1 unreadable" in text and "zz_broken.jpg" in text
    assert sorted(p.name for p in (tmp_path / "out").glob("*.tar")) == ["labels-000000.tar", "labels-000001.tar"]
    thing = np.array([n not in STUFF for n in VOCAB])
    got = _check_shards(tmp_path / "out", VOCAB, thing, 5)
    assert sum(int(ins.max()) for *_, ins in got) > 0
    assert len(list((tmp_path / "out" / "overlays").glob("*.png"))) == 3


def test_grounded_sam_prompts_and_detections(tiny_dir):
    lab = GroundedSAMLabeler(str(tiny_dir["detector"]), str(tiny_dir["segmenter"]), Vocabulary(VOCAB, STUFF),
                             box_threshold=0.3, device="cpu")
    [(text, tc)] = lab.prompts
    assert text == "person . cat . traffic light . cup . sky . wall brick ."
    # [CLS] person . cat . traffic light . cup . sky . wall brick . [SEP]
    assert tc.tolist() == [-1, 0, -1, 1, -1, 2, 2, -1, 3, -1, 4, -1, 5, 5, -1, -1]
    chunks = lab._chunk_prompts(8)                                             # a short text encoder
    assert len(chunks) > 1 and all(len(t) <= 8 for _, t in chunks)
    assert sorted(c for _, t in chunks for c in set(t.tolist()) - {-1}) == list(range(len(VOCAB)))

    # replace the random detector output by known boxes and token scores
    L, Q = lab.detector.config.max_text_len, lab.detector.config.num_queries
    logits, boxes = torch.full((1, Q, L), -10.0), torch.full((1, Q, 4), 0.5)
    rows = [(2.0, [5, 6], (0.5, 0.5, 0.5, 0.5)),      # traffic light, kept
            (1.5, [3], (0.3, 0.3, 0.2, 0.2)),         # cat, kept
            (1.0, [3], (0.31, 0.3, 0.2, 0.2)),        # cat, same box, lower score: removed by NMS
            (1.2, [1], (0.3, 0.3, 0.2, 0.2)),         # person, same box: kept (class-wise NMS)
            (0.4, [12, 13], (0.9, 0.2, 0.4, 0.2)),    # wall brick, box runs off the right edge: clipped
            (-2.0, [8], (0.5, 0.5, 0.1, 0.1))]        # cup below the threshold: dropped
    for q, (logit, toks, box) in enumerate(rows):
        logits[0, q, toks] = logit
        boxes[0, q] = torch.tensor(box)
    logits[0, 6, 2] = 8.0                                                      # a "." token: never a class

    def fake(module, args, out):
        out.logits, out.pred_boxes = logits.clone(), boxes.clone()
        return out

    handle = lab.detector.register_forward_hook(fake)
    try:
        [(bx, sc, cl)] = lab._detect([np.zeros((50, 100, 3), np.uint8)])
    finally:
        handle.remove()
    assert cl.tolist() == [2, 1, 0, 5]
    np.testing.assert_allclose(sc.numpy(), torch.sigmoid(torch.tensor([2.0, 1.5, 1.2, 0.4])).numpy(), rtol=1e-6)
    np.testing.assert_allclose(bx.numpy(), [[25, 12.5, 75, 37.5], [20, 10, 40, 20], [20, 10, 40, 20],
                                            [70, 5, 100, 15]], atol=1e-4)


def test_sam_boxes_match_the_processor(tiny_dir):
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(tiny_dir["segmenter"])
    img = np.zeros((50, 100, 3), np.uint8)
    boxes = torch.tensor([[10.0, 5.0, 60.0, 45.0], [0.0, 0.0, 100.0, 50.0]])
    ref = proc(images=img, input_boxes=[boxes.tolist()], return_tensors="pt")
    got = sam_boxes(boxes, ref["original_sizes"][0], ref["reshaped_input_sizes"][0])
    torch.testing.assert_close(got, ref["input_boxes"][0].float())


def test_mask2former_end_to_end_through_the_cli(tmp_path, tiny_dir, capsys):
    src = _photos(tmp_path / "in")
    rc = cli_main(["label", "--backend", "mask2former", "--model", str(tiny_dir["mask2former"]),
                   "--input", str(src), "--output", str(tmp_path / "out"), "--batch-size", "5", "--quiet"])
    assert rc == 0 and "5 images labelled, 1 unreadable" in capsys.readouterr().out
    thing = Vocabulary.coco().thing_mask
    got = _check_shards(tmp_path / "out", COCO_PANOPTIC_CLASSES, thing, 5)
    model_ids = {COCO_PANOPTIC_CLASSES.index(n) for n in M2F_CLASSES if n in COCO_PANOPTIC_CLASSES}
    assert {int(v) for *_, sem, _ in got for v in np.unique(sem)} <= model_ids | {255}


def test_mask2former_classes_stuff_and_padding(tiny_dir):
    """Known query outputs: each image's left half is one cat, its right half a second cat (top),
    sky (bottom left) and an unknown class (bottom right); two image sizes share a padded batch."""
    lab = Mask2FormerLabeler(str(tiny_dir["mask2former"]), device="cpu")
    cat, sky = COCO_PANOPTIC_CLASSES.index("cat"), COCO_PANOPTIC_CLASSES.index("sky-other-merged")
    assert lab.to_vocab.tolist() == [0, cat, sky, COCO_PANOPTIC_CLASSES.index("wall-brick"), -1]
    queries = [(1, np.s_[:, :2]), (1, np.s_[:2, 2:]), (2, np.s_[2:, 2:3]), (4, np.s_[2:, 3:])]  # quarter grid

    def fake(module, args, kwargs, out):
        pm = kwargs["pixel_mask"]
        B, Q, mh, mw = out.masks_queries_logits.shape
        cls = torch.zeros(B, Q, len(M2F_CLASSES) + 1)
        cls[:, :, -1] = 10.0                                                   # "no object"
        masks = torch.full((B, Q, mh, mw), -10.0)
        for b in range(B):
            h = int(pm[b].any(1).sum()) * mh // pm.shape[-2]
            w = int(pm[b].any(0).sum()) * mw // pm.shape[-1]
            for q, (c, region) in enumerate(queries):
                cls[b, q, :] = 0.0
                cls[b, q, c] = 10.0
                grid = torch.full((4, 4), -10.0)
                grid[region] = 10.0
                masks[b, q, :h, :w] = grid.repeat_interleave(h // 4, 0).repeat_interleave(w // 4, 1)
        out.class_queries_logits, out.masks_queries_logits = cls, masks
        return out

    images = [np.zeros((64, 64, 3), np.uint8), np.zeros((64, 128, 3), np.uint8)]
    handle = lab.model.register_forward_hook(fake, with_kwargs=True)
    try:
        inp = lab.proc(images=images, return_tensors="pt")
        assert not inp["pixel_mask"][0].all()                                  # the first image is padded
        labels = lab.label(images)
    finally:
        handle.remove()
    for (sem, ins), img in zip(labels, images, strict=True):
        h, w = img.shape[:2]
        want_sem = np.full((h, w), 255)
        want_sem[:, : w // 2] = cat
        want_sem[: h // 2, w // 2:] = cat
        want_sem[h // 2:, w // 2: 3 * w // 4] = sky
        assert (sem == want_sem).mean() > 0.95                                 # all but the blurred borders
        a, b = ins[h // 2, w // 4], ins[h // 4, 7 * w // 8]
        assert a > 0 and b > 0 and a != b and sorted(np.unique(ins).tolist()) == [0, 1, 2]
        assert (ins[sem == sky] == 0).all()

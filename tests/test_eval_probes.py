"""Probes on data whose answer is known: k-NN / linear / segmentation probe, layer-decay fine-tuning."""

import math

import pytest
import timm
import torch
import torch.nn.functional as F

from c2fmae.eval import (
    confusion_matrix,
    finetune,
    knn_classify,
    layer_decay_param_groups,
    linear_probe,
    lr_at,
    miou,
    seg_probe,
)


def _clusters(n_per: int, num_classes: int = 4, dim: int = 16, spread: float = 0.3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(123)) * 3
    y = torch.arange(num_classes).repeat_interleave(n_per)
    x = centers[y] + spread * torch.randn(len(y), dim, generator=g)
    return x, y


def test_knn_and_linear_separable_give_100():
    xtr, ytr = _clusters(50, seed=0)
    xte, yte = _clusters(25, seed=1)
    assert knn_classify(xtr, ytr, xte, yte, k=10)["top1"] == 1.0
    assert linear_probe(xtr, ytr, xte, yte, epochs=30, lr=1e-2)["top1"] == 1.0


def test_shuffled_labels_give_chance():
    num_classes = 4
    xtr, ytr = _clusters(100, num_classes, seed=0)
    xte, yte = _clusters(100, num_classes, seed=1)
    g = torch.Generator().manual_seed(0)
    ytr, yte = ytr[torch.randperm(len(ytr), generator=g)], yte[torch.randperm(len(yte), generator=g)]
    # 400 test samples: the std of the accuracy at chance (0.25) is ~0.022
    assert abs(knn_classify(xtr, ytr, xte, yte, k=20)["top1"] - 1 / num_classes) < 0.08
    res = linear_probe(xtr, ytr, xte, yte, epochs=30, lr=1e-2)
    assert abs(res["top1"] - 1 / num_classes) < 0.08


def test_knn_votes_are_temperature_weighted():
    # test point [1, 0]; two class-0 neighbours at cos 0.6, one class-1 neighbour at cos 0.99
    xtr = torch.tensor([[0.6, 0.8], [0.6, -0.8], [0.99, math.sqrt(1 - 0.99**2)]])
    ytr = torch.tensor([0, 0, 1])
    xte, yte = torch.tensor([[1.0, 0.0]]), torch.tensor([1])
    # hand values: T=0.07 -> class 1 weight e^(0.99/0.07) > 2 e^(0.6/0.07); T=10 -> plain majority (class 0)
    assert math.exp(0.99 / 0.07) > 2 * math.exp(0.6 / 0.07) and math.exp(0.099) < 2 * math.exp(0.06)
    assert knn_classify(xtr, ytr, xte, yte, k=3, temperature=0.07, num_classes=2)["top1"] == 1.0
    assert knn_classify(xtr, ytr, xte, yte, k=3, temperature=10.0, num_classes=2)["top1"] == 0.0


def test_confusion_and_miou_hand_values():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 2]])
    cm = confusion_matrix(pred, target, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    mean, iou = miou(cm)
    # class 0: tp 1, fp 1, fn 1 -> 1/3; class 1: 2/3; class 2: 1/2
    assert iou == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert mean == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    # a class absent from masks and predictions is not averaged
    assert miou(confusion_matrix(pred, target, 4))[0] == pytest.approx(mean)


def _patch_task(n: int, num_classes: int, seed: int, informative: bool = True):
    """Patch grid 6x6 of random classes, masks at 2x the grid; features = noisy one-hot of the class."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.randint(0, num_classes, (n, 6, 6), generator=g)
    masks = grid.repeat_interleave(2, 1).repeat_interleave(2, 2)
    masks[:, 0, 0] = 255  # some ignored pixels
    src = grid if informative else torch.randint(0, num_classes, (n, 6, 6), generator=g)
    feats = F.one_hot(src, num_classes).permute(0, 3, 1, 2).float() * 4
    feats = torch.cat([feats, torch.randn(n, 8, 6, 6, generator=g)], 1)  # + pure-noise channels
    return feats, masks


def test_seg_probe_known_case():
    ftr, mtr = _patch_task(64, 5, 0)
    fte, mte = _patch_task(32, 5, 1)
    res = seg_probe(ftr, mtr, fte, mte, 5, epochs=15, lr=5e-2)
    assert res["miou"] > 0.95 and res["pixel_acc"] > 0.97
    # features unrelated to the masks: mIoU near chance (1/5 of the pixels per class -> IoU ~ 0.1)
    ftr, mtr = _patch_task(64, 5, 0, informative=False)
    fte, mte = _patch_task(32, 5, 1, informative=False)
    assert seg_probe(ftr, mtr, fte, mte, 5, epochs=15, lr=5e-2)["miou"] < 0.25


def test_layer_decay_scales_match_mae_formula():
    model = timm.create_model("c2fmae_vit_test", num_classes=3)
    ld, depth = 0.5, len(model.blocks)
    groups = layer_decay_param_groups(model, weight_decay=0.05, layer_decay=ld)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    wd = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert set(scale) == {id(p) for p in names.values()}
    # MAE util/lr_decay.py: layer id 0 = embeddings, i + 1 = blocks.i, depth + 1 = head; scale ld^(L - id)
    for name, p in names.items():
        if name.startswith(("cls_token", "pos_embed", "patch_embed")):
            layer = 0
        elif name.startswith("blocks."):
            layer = int(name.split(".")[1]) + 1
        elif name.startswith("head."):
            layer = depth + 1
        else:
            continue  # final norm: timm groups it with the last block, MAE with the head
        assert scale[id(p)] == pytest.approx(ld ** (depth + 1 - layer)), name
        assert wd[id(p)] == (0.0 if p.ndim == 1 or name in ("cls_token", "pos_embed") else 0.05), name


def test_lr_schedule_warmup_then_cosine():
    assert lr_at(0, 100, 1.0, warmup=10) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, warmup=10) == pytest.approx(1.0)
    assert lr_at(55, 100, 1.0, warmup=10, min_lr=0.0) == pytest.approx(0.5)
    assert lr_at(100, 100, 1.0, warmup=10, min_lr=0.1) == pytest.approx(0.1)


def test_finetune_loss_decreases_on_separable_images():
    torch.manual_seed(0)
    n = 32
    y = torch.arange(n) % 2
    x = torch.randn(n, 3, 32, 32) * 0.5
    x[:, 0] += torch.where(y == 1, 1.5, -1.5)[:, None, None]  # class = sign of the red channel
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8, shuffle=True)
    model = timm.create_model("c2fmae_vit_test", num_classes=2, img_size=32)
    hist = finetune(
        model, loader, loader, epochs=4, lr=1e-3, warmup_epochs=0.5, layer_decay=0.75, label_smoothing=0.0
    )
    first, last = sum(hist["losses"][:4]) / 4, sum(hist["losses"][-4:]) / 4
    assert last < 0.5 * first
    assert hist["val"][-1]["top1"] == 1.0
    assert sorted(set(hist["lr_scales"])) == pytest.approx([0.75**3, 0.75**2, 0.75, 1.0])


def test_bad_inputs_name_the_problem():
    x, y = _clusters(5)
    with pytest.raises(ValueError, match="equal D"):
        knn_classify(x, y, x[:, :3], y)
    with pytest.raises(ValueError, match="differ in length"):
        linear_probe(x, y[:-1], x, y)
    with pytest.raises(ValueError, match="temperature"):
        knn_classify(x, y, x, y, temperature=0)
    with pytest.raises(ValueError, match=r"mask ids must be in \[0, 2\)"):
        confusion_matrix(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 7), 2)
    with pytest.raises(ValueError, match="layer_decay"):
        layer_decay_param_groups(timm.create_model("c2fmae_vit_test"), layer_decay=1.5)
    with pytest.raises(ValueError, match="num_classes=0"):
        finetune(timm.create_model("c2fmae_vit_test", num_classes=0), [], epochs=1)

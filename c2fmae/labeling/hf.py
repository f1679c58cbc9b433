"""transformers backends: Grounding DINO + SAM-HQ, and Mask2Former panoptic.

Models load with `from_pretrained(id_or_local_dir)` (Hub ids, or folders written by
`save_pretrained`; with HF_HUB_OFFLINE=1 only local files are used). Inference is batched, on CUDA
in bf16 autocast when a GPU is present, else fp32 on CPU.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from c2fmae.data.vocab import prompt_name

from .backends import Vocabulary, paint

DEFAULT_DETECTOR = "IDEA-Research/grounding-dino-base"
DEFAULT_SEGMENTER = "syscv-community/sam-hq-vit-base"
DEFAULT_MASK2FORMER = "facebook/mask2former-swin-large-coco-panoptic"


def _transformers():
    try:
        import transformers
    except ImportError as e:
        raise ImportError("the grounded-sam and mask2former backends need transformers: "
                          "pip install 'c2fmae[label]'") from e
    return transformers


def _device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _load(cls, name: str, what: str):
    try:
        return cls.from_pretrained(name)
    except OSError as e:
        raise OSError(f"{what}: cannot load {name!r} (a Hub id or a local save_pretrained folder): {e}") from e


class GroundedSAMLabeler:
    """Open-vocabulary boxes from Grounding DINO, masks from SAM-HQ prompted with those boxes.

    The vocabulary is written as prompts `"cat . dog . traffic light ."`, split into as many chunks
    as the text encoder's `max_text_len` needs; each box gets the class whose tokens score highest.
    Boxes above `box_threshold` go through class-wise NMS (`nms_iou`), at most `max_detections`
    per image, then SAM-HQ turns each box into a mask; masks are painted by ascending score.
    """

    def __init__(self, detector: str = DEFAULT_DETECTOR, segmenter: str = DEFAULT_SEGMENTER,
                 vocab: Vocabulary | None = None, box_threshold: float = 0.3, nms_iou: float = 0.5,
                 max_detections: int = 100, device: str | None = None):
        tf = _transformers()
        self.device = _device(device)
        self.vocab = vocab or Vocabulary.coco()
        self.class_names, self.thing_mask = self.vocab.names, self.vocab.thing_mask
        self.box_threshold, self.nms_iou, self.max_detections = box_threshold, nms_iou, max_detections
        self.det_proc = _load(tf.AutoProcessor, detector, "--detector")
        self.detector = _load(tf.GroundingDinoForObjectDetection, detector, "--detector")
        self.detector.eval().to(self.device)
        self.sam_proc = _load(tf.AutoProcessor, segmenter, "--segmenter")
        self.sam = _load(tf.SamHQModel, segmenter, "--segmenter").eval().to(self.device)
        self.prompts = self._chunk_prompts(self.detector.config.max_text_len)

    def _chunk_prompts(self, max_len: int) -> list[tuple[str, np.ndarray]]:
        """[(prompt, token_class (L,) int: class id per token or -1)] covering the vocabulary."""
        tok = self.det_proc.tokenizer
        chunks, cur = [], []
        for c in range(len(self.class_names)):
            trial = cur + [c]
            text = " . ".join(prompt_name(self.class_names[i]) for i in trial) + " ."
            if cur and len(tok(text)["input_ids"]) > max_len:
                chunks.append(cur)
                trial = [c]
            cur = trial
        chunks.append(cur)
        out = []
        for ids in chunks:
            text, spans = "", []
            for c in ids:
                name = prompt_name(self.class_names[c])
                spans.append((len(text), len(text) + len(name), c))
                text += name + " . "
            text = text.strip()
            enc = tok(text, return_offsets_mapping=True)
            tc = np.full(len(enc["input_ids"]), -1)
            for t, (s, e) in enumerate(enc["offset_mapping"]):
                for a, b, c in spans:
                    if e > s and s >= a and e <= b:
                        tc[t] = c
            out.append((text, tc))
        return out

    @torch.inference_mode()
    def _detect(self, images: list[np.ndarray]):
        from torchvision.ops import batched_nms

        B = len(images)
        boxes, scores, classes = [[] for _ in range(B)], [[] for _ in range(B)], [[] for _ in range(B)]
        for text, tc in self.prompts:
            inp = self.det_proc(images=images, text=[text] * B, return_tensors="pt", padding=True).to(self.device)
            with _autocast(self.device):
                out = self.detector(**inp)
            prob = out.logits.float().sigmoid()[..., : len(tc)]                # (B, Q, L)
            valid = torch.as_tensor(tc >= 0, device=prob.device)
            cls_of_tok = torch.as_tensor(np.maximum(tc, 0), device=prob.device)
            prob = prob.masked_fill(~valid, 0)
            score, tok = prob.max(-1)                                           # (B, Q)
            cls = cls_of_tok[tok]
            for b in range(B):
                h, w = images[b].shape[:2]
                cx, cy, bw, bh = out.pred_boxes[b].float().unbind(-1)
                xyxy = torch.stack([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], -1)
                keep = score[b] > self.box_threshold
                boxes[b].append(xyxy[keep].clamp(min=0))
                scores[b].append(score[b][keep])
                classes[b].append(cls[b][keep])
        dets = []
        for b in range(B):
            bx, sc, cl = torch.cat(boxes[b]), torch.cat(scores[b]), torch.cat(classes[b])
            h, w = images[b].shape[:2]
            bx[:, 0::2], bx[:, 1::2] = bx[:, 0::2].clamp(max=w), bx[:, 1::2].clamp(max=h)
            ok = (bx[:, 2] - bx[:, 0] >= 1) & (bx[:, 3] - bx[:, 1] >= 1)
            bx, sc, cl = bx[ok], sc[ok], cl[ok]
            keep = batched_nms(bx, sc, cl, self.nms_iou)[: self.max_detections]
            dets.append((bx[keep].cpu(), sc[keep].cpu(), cl[keep].cpu()))
        return dets

    @torch.inference_mode()
    def label(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        dets = self._detect(images)
        inp = self.sam_proc(images=images, return_tensors="pt")
        with _autocast(self.device):
            emb, inter = self.sam.get_image_embeddings(inp["pixel_values"].to(self.device))
        out = []
        for b, (bx, sc, cl) in enumerate(dets):
            shape = images[b].shape[:2]
            if len(bx) == 0:
                out.append(paint(shape, [], [], [], self.thing_mask))
                continue
            orig, resized = inp["original_sizes"][b:b + 1], inp["reshaped_input_sizes"][b:b + 1]
            with _autocast(self.device):
                pred = self.sam(image_embeddings=emb[b:b + 1], intermediate_embeddings=[x[b:b + 1] for x in inter],
                                input_boxes=sam_boxes(bx, orig[0], resized[0]).to(self.device, emb.dtype)[None],
                                multimask_output=False)
            masks = self.sam_proc.post_process_masks(pred.pred_masks.float().cpu(), orig, resized)[0][:, 0].numpy()
            out.append(paint(shape, list(masks), cl.tolist(), sc.tolist(), self.thing_mask))
        return out


def sam_boxes(boxes: torch.Tensor, original_size, resized_size) -> torch.Tensor:
    """xyxy boxes (N, 4) in original pixels -> SAM's input frame (the image resized to its longest edge)."""
    (oh, ow), (rh, rw) = (int(v) for v in original_size), (int(v) for v in resized_size)
    return boxes.float() * torch.tensor([rw / ow, rh / oh, rw / ow, rh / oh])


class Mask2FormerLabeler:
    """Mask2Former panoptic segmentation: one pass gives semantic classes and instances.

    Model classes map to the vocabulary by name (`id2label`, compared after `prompt_name`
    normalisation); classes outside the vocabulary are left as 255. Stuff segments of one class
    are fused; things keep one instance id per segment.
    """

    def __init__(self, model: str = DEFAULT_MASK2FORMER, vocab: Vocabulary | None = None,
                 score_threshold: float = 0.5, device: str | None = None):
        tf = _transformers()
        self.device = _device(device)
        self.vocab = vocab or Vocabulary.coco()
        self.class_names, self.thing_mask = self.vocab.names, self.vocab.thing_mask
        self.score_threshold = score_threshold
        self.proc = _load(tf.AutoImageProcessor, model, "--model")
        self.model = _load(tf.Mask2FormerForUniversalSegmentation, model, "--model").eval().to(self.device)
        by_name = {prompt_name(n).lower(): i for i, n in enumerate(self.class_names)}
        id2label = self.model.config.id2label
        self.to_vocab = np.full(len(id2label), -1)
        for i, n in id2label.items():
            self.to_vocab[int(i)] = by_name.get(prompt_name(n).lower(), -1)
        if (self.to_vocab < 0).all():
            raise ValueError(f"--model {model}: none of its {len(id2label)} classes is in the vocabulary")
        self.fuse = {int(i) for i, v in enumerate(self.to_vocab) if v >= 0 and not self.thing_mask[v]}

    @torch.inference_mode()
    def label(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        inp = self.proc(images=images, return_tensors="pt")
        with _autocast(self.device):
            out = self.model(**inp.to(self.device))
        cls, masks = out.class_queries_logits.float(), out.masks_queries_logits.float()
        labels = []
        for b, im in enumerate(images):
            # a batch is padded bottom/right to its largest image; post-processing would stretch the
            # padding over the image, so crop each image's masks to its own (valid) part first
            m = masks[b:b + 1]
            if "pixel_mask" in inp:
                valid, (H, W) = inp["pixel_mask"][b].bool(), inp["pixel_mask"].shape[-2:]
                h, w = int(valid.any(1).sum()), int(valid.any(0).sum())
                m = m[..., : math.ceil(h * m.shape[-2] / H), : math.ceil(w * m.shape[-1] / W)]
            size = im.shape[:2]
            r = self.proc.post_process_panoptic_segmentation(
                type(out)(class_queries_logits=cls[b:b + 1], masks_queries_logits=m), threshold=self.score_threshold,
                label_ids_to_fuse=self.fuse, target_sizes=[size])[0]
            seg = r["segmentation"].cpu().numpy()
            segs, classes, scores = [], [], []
            for s in r["segments_info"]:
                c = self.to_vocab[s["label_id"]]
                if c >= 0:
                    segs.append(seg == s["id"])
                    classes.append(int(c))
                    scores.append(float(s["score"]))
            labels.append(paint(size, segs, classes, scores, self.thing_mask))
        return labels

"""Tiny random-init transformers models for the labelling backends, written with `save_pretrained`.

They load exactly like the real checkpoints (`--detector/--segmenter/--model DIR`), so the whole
labelling pipeline runs offline without downloads: for tests and for measuring the pipeline's own
overhead. Their weights are random, so their labels are meaningless. The Grounding DINO tokenizer
is a BERT WordPiece tokenizer built from an in-memory vocabulary (the words of the class names).
Constraints met here: Grounding DINO needs `decoder_layers >= 2` and three feature levels at 64 px;
SAM-HQ's `num_pos_feats` must be half the prompt encoder's width. `full_size=True` gives instead
transformers' default architectures with their default processors, still random-init (Grounding
DINO Swin-T + BERT-base at 800 px, SAM-HQ ViT-B at 1024 px, Mask2Former Swin-S at 800 px): the
compute of the released models, for throughput benchmarks without downloads.

    from c2fmae.labeling.tiny import save_tiny_grounded_sam, save_tiny_mask2former
    det, seg = save_tiny_grounded_sam("tiny/")        # tiny/grounding-dino, tiny/sam-hq
    m2f = save_tiny_mask2former("tiny/mask2former")
"""
from __future__ import annotations

from pathlib import Path

import torch

from c2fmae.data.vocab import COCO_PANOPTIC_CLASSES, prompt_name

_SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _swin(image_size: int, out_features: list[str]):
    from transformers import SwinConfig

    return SwinConfig(image_size=image_size, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                      window_size=4, out_features=out_features)


def save_tiny_grounding_dino(path: str | Path, class_names=COCO_PANOPTIC_CLASSES, image_size: int = 64,
                             max_text_len: int = 256, seed: int = 0, full_size: bool = False) -> Path:
    """A ~0.4M-parameter Grounding DINO (Swin + 1-layer BERT) and its processor, saved to `path`.

    `max_text_len` (256, as the released checkpoints) sets how many prompt chunks a vocabulary needs."""
    import transformers as tf

    torch.manual_seed(seed)
    words = sorted({w for n in class_names for w in prompt_name(n).lower().split()})
    vocab = {w: i for i, w in enumerate((*_SPECIAL, ".", *words))}
    tokenizer = tf.BertTokenizerFast(vocab=vocab)
    if full_size:
        cfg = tf.GroundingDinoConfig(text_config=tf.BertConfig(vocab_size=len(vocab)), max_text_len=max_text_len)
        image_proc = tf.GroundingDinoImageProcessor()
    else:
        text = tf.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=max_text_len)
        cfg = tf.GroundingDinoConfig(
            backbone_config=_swin(image_size, ["stage2", "stage3", "stage4"]), text_config=text, d_model=32,
            encoder_layers=1, decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_attention_heads=2,
            decoder_attention_heads=2, num_queries=20, num_feature_levels=3, encoder_n_points=2, decoder_n_points=2,
            max_text_len=max_text_len)
        image_proc = tf.GroundingDinoImageProcessor(size={"shortest_edge": image_size, "longest_edge": image_size})
    model = tf.GroundingDinoForObjectDetection(cfg)
    return _save(model, tf.GroundingDinoProcessor(image_processor=image_proc, tokenizer=tokenizer), path)


def save_tiny_sam_hq(path: str | Path, image_size: int = 64, seed: int = 0, full_size: bool = False) -> Path:
    """A tiny SAM-HQ (2-layer ViT, patch 8) and its processor (longest edge `image_size`), saved to `path`."""
    import transformers as tf

    torch.manual_seed(seed)
    if full_size:
        return _save(tf.SamHQModel(tf.SamHQConfig()), tf.SamHQProcessor(image_processor=tf.SamImageProcessor()), path)
    width = 16  # prompt encoder / mask decoder width; the vision encoder's num_pos_feats must be width // 2
    vision = tf.SamHQVisionConfig(hidden_size=32, output_channels=width, num_hidden_layers=2, num_attention_heads=2,
                                  image_size=image_size, patch_size=8, window_size=4, global_attn_indexes=[1],
                                  num_pos_feats=width // 2, mlp_dim=64)
    prompt = tf.SamHQPromptEncoderConfig(hidden_size=width, image_size=image_size, patch_size=8, mask_input_channels=4)
    decoder = tf.SamHQMaskDecoderConfig(hidden_size=width, mlp_dim=32, num_attention_heads=2, iou_head_hidden_dim=16,
                                        vit_dim=32)
    model = tf.SamHQModel(tf.SamHQConfig(vision_config=vision, prompt_encoder_config=prompt,
                                         mask_decoder_config=decoder))
    proc = tf.SamHQProcessor(image_processor=tf.SamImageProcessor(
        size={"longest_edge": image_size}, pad_size={"height": image_size, "width": image_size}))
    return _save(model, proc, path)


def _save(model, proc, path: str | Path) -> Path:
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return Path(path)


def save_tiny_grounded_sam(root: str | Path, class_names=COCO_PANOPTIC_CLASSES, image_size: int = 64,
                           seed: int = 0, full_size: bool = False) -> tuple[Path, Path]:
    """Both grounded-sam models under `root`: returns `(root/grounding-dino, root/sam-hq)`."""
    root = Path(root)
    return (save_tiny_grounding_dino(root / "grounding-dino", class_names, image_size, seed=seed, full_size=full_size),
            save_tiny_sam_hq(root / "sam-hq", image_size, seed, full_size))


def save_tiny_mask2former(path: str | Path, class_names=COCO_PANOPTIC_CLASSES, image_size: int = 64,
                          seed: int = 0, class_scale: float = 40.0, mask_scale: float = 30.0,
                          full_size: bool = False) -> Path:
    """A ~0.35M-parameter Mask2Former (Swin backbone) whose `id2label` is `class_names`, saved to `path`.

    An untouched random head gives every query the same class with a low score and near-0.5 mask
    probabilities, so panoptic post-processing keeps nothing. Here the class head is centred on
    random inputs (queries spread over the classes) and scaled by `class_scale` (confident scores),
    and the mask head by `mask_scale` (crisp masks), so the labels have several segments.
    """
    import transformers as tf

    torch.manual_seed(seed)
    names = dict(enumerate(class_names))
    labels = dict(id2label=names, label2id={n: i for i, n in names.items()})
    if full_size:
        cfg = tf.Mask2FormerConfig(**labels)
        proc = tf.Mask2FormerImageProcessor()
    else:
        cfg = tf.Mask2FormerConfig(
            backbone_config=_swin(image_size, ["stage1", "stage2", "stage3", "stage4"]), feature_size=32,
            mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=64, encoder_layers=1, decoder_layers=2,
            num_attention_heads=2, dim_feedforward=64, num_queries=12, **labels)
        proc = tf.Mask2FormerImageProcessor(size={"shortest_edge": image_size, "longest_edge": 2 * image_size})
    model = tf.Mask2FormerForUniversalSegmentation(cfg).eval()
    head, mask_out = model.class_predictor, model.model.transformer_module.decoder.mask_predictor.mask_embedder
    with torch.no_grad():
        logits = model(pixel_values=torch.randn(2, 3, 64, 64)).class_queries_logits
        head.bias.sub_(logits.mean((0, 1)))
        for p in (head.weight, head.bias):
            p.mul_(class_scale)
        for p in list(mask_out.parameters())[-2:]:
            p.mul_(mask_scale)
    return _save(model, proc, path)

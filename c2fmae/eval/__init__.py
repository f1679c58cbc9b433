"""Representation quality: frozen-feature probes (k-NN, linear, segmentation) and classification fine-tuning.

`c2fmae eval` / `c2fmae finetune` are the command-line forms (`c2fmae.eval.cli`).
"""

from .evaluate import PROBES, eval_datasets, run_probes
from .features import (
    LabelledShards,
    extract,
    extract_features,
    extract_patch_features,
    image_shards,
    load_encoder,
    write_json,
)
from .finetune import evaluate_classifier, finetune, layer_decay_param_groups, lr_at
from .probes import accuracy, knn_classify, linear_probe
from .segmentation import confusion_matrix, evaluate_seg_probe, miou, seg_probe, train_seg_probe

__all__ = [
    "PROBES",
    "eval_datasets",
    "run_probes",
    "extract",
    "extract_features",
    "extract_patch_features",
    "load_encoder",
    "LabelledShards",
    "image_shards",
    "write_json",
    "evaluate_classifier",
    "finetune",
    "layer_decay_param_groups",
    "lr_at",
    "accuracy",
    "knn_classify",
    "linear_probe",
    "confusion_matrix",
    "evaluate_seg_probe",
    "miou",
    "seg_probe",
    "train_seg_probe",
]

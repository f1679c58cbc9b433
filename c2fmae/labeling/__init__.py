"""Pseudo-labelling: backends (Grounding DINO + SAM-HQ, Mask2Former, classical superpixels) and the
sharded, resumable `c2fmae label` job writing WebDataset shards with label overlays."""
from .backends import BACKENDS, COLOUR_TERMS, ClassicalLabeler, Vocabulary, build_labeler, paint
from .job import LabelJob, plan_units
from .overlay import render_overlay, save_overlay

__all__ = ["BACKENDS", "COLOUR_TERMS", "ClassicalLabeler", "Vocabulary", "build_labeler", "paint",
           "LabelJob", "plan_units", "render_overlay", "save_overlay"]

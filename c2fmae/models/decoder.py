""" C2FMAE decoder: one stage module for every target, wired as cascade, parallel or pixel (MAE)

A stage decodes one target on the full patch grid:
  queries = encoder tokens of the target's own modality at their positions (mask token elsewhere)
            + pos embed + task embed
  -> [1 cross-attention block: queries -> context, + MLP] -> `depth` self-attention blocks -> norm -> head
Context of stage k (DESIGN §4):
- cascade (C2FMAE):  stage 1 `H`; stage k `H ⊕ (F^{k-1} + pos)`, F^{k-1} the previous stage's grid output
- parallel (MultiMAE): every stage `H`
- pixel (MAE): a single stage without cross-attention whose self-attention runs over
  `[cls] + full grid`; numerically MAE's decoder (`decoder_embed`, `mask_token`, `decoder_blocks`,
  `decoder_norm`, `decoder_pred`).
`H` is the encoder output projected to the decoder width, plus the position and input-modality
embedding of every visible token. Cascade and parallel have the same parameters.

Shapes: B batch, V visible tokens, M inputs, N = h*w positions, De encoder dim, D decoder dim.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp
from timm.models.vision_transformer import Block

from .adapters import sincos_pos_embed_2d

__all__ = ["DECODER_MODES", "CrossAttentionBlock", "DecoderStage", "C2FDecoder"]

DECODER_MODES = ("cascade", "parallel", "pixel")
_norm = partial(nn.LayerNorm, eps=1e-6)


class CrossAttentionBlock(nn.Module):
    """ Pre-norm cross-attention (queries -> context) + MLP, both residual. """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.num_heads = num_heads
        self.norm_q, self.norm_kv = _norm(dim), _norm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = _norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """ x: [B, L, D]; context: [B, S, D] -> [B, L, D] """
        B, L, D = x.shape
        H = self.num_heads
        q = self.q(self.norm_q(x)).reshape(B, L, H, D // H).transpose(1, 2)  # [B, H, L, D/H]
        kv = self.kv(self.norm_kv(context)).reshape(B, -1, 2, H, D // H).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, kv[0], kv[1])  # [B, H, L, D/H]
        x = x + self.proj(a.transpose(1, 2).reshape(B, L, D))
        return x + self.mlp(self.norm2(x))


class DecoderStage(nn.Module):
    """ Decode one target on the full grid (see module docstring).

    Args:
        enc_dim: encoder width De.
        dim, depth, num_heads, mlp_ratio: decoder width, self-attention blocks, heads, MLP ratio.
        out_dim: head output per position (e.g. p*p*3 for rgb).
        num_inputs: number of input modalities M (for the context's modality embedding).
        cross_attn: C2FMAE/MultiMAE stage (True) or MAE decoder (False: no cross-attention,
            cls token joins the queries, no task embeddings).
    """

    def __init__(
            self, enc_dim: int, dim: int, depth: int, num_heads: int, out_dim: int, num_inputs: int = 1,
            mlp_ratio: float = 4.0, cross_attn: bool = True,
    ):
        super().__init__()
        self.embed = nn.Linear(enc_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.cross_attn = cross_attn
        if cross_attn:
            self.input_embed = nn.Parameter(torch.zeros(1, num_inputs, dim))  # modality of a context token
            self.query_embed = nn.Parameter(torch.zeros(1, 1, dim))  # task embedding of the queries
            self.xattn = CrossAttentionBlock(dim, num_heads, mlp_ratio)
        self.blocks = nn.ModuleList([
            Block(dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=_norm) for _ in range(depth)])
        self.norm = _norm(dim)
        self.head = nn.Linear(dim, out_dim)

    def forward(
            self,
            latent: torch.Tensor,
            ids_keep: torch.Tensor,
            ids_restore: torch.Tensor,
            pos_embed: torch.Tensor,
            query_index: int | None,
            extra_context: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ latent: [B, 1+V, De]; ids_keep: [B, V]; ids_restore: [B, M*N]; pos_embed: [1, 1+N, D];
        query_index: the target's slot among the inputs (None: not an input, all mask tokens);
        extra_context: [B, N, D] appended to the context (cascade).
        Returns feat [B, N, D] (normed stage output F) and pred [B, N, out_dim].
        """
        x = self.embed(latent)  # [B, 1+V, D]
        B, V1, D = x.shape
        N = pos_embed.shape[1] - 1
        if query_index is None:
            q = self.mask_token.expand(B, N, -1)
        else:
            # append mask tokens and unshuffle to the modality-major grid, then take the target's slot
            mask_tokens = self.mask_token.expand(B, ids_restore.shape[1] + 1 - V1, -1)
            full = torch.cat([x[:, 1:], mask_tokens], dim=1)  # no cls
            full = torch.gather(full, 1, ids_restore[..., None].expand(-1, -1, D))  # [B, M*N, D]
            q = full[:, query_index * N:(query_index + 1) * N]
        q = q + pos_embed[:, 1:]  # [B, N, D]

        if self.cross_attn:
            q = q + self.query_embed
            # context H: visible tokens + their position and modality embeddings, and the cls token
            ctx = x[:, 1:] + pos_embed[0, 1:][ids_keep % N] + self.input_embed[0][ids_keep // N]
            ctx = torch.cat([x[:, :1] + pos_embed[:, :1], ctx], dim=1)  # [B, 1+V, D]
            if extra_context is not None:
                ctx = torch.cat([ctx, extra_context], dim=1)  # [B, 1+V+N, D]
            q = self.xattn(q, ctx)
        else:
            q = torch.cat([x[:, :1] + pos_embed[:, :1], q], dim=1)  # MAE: cls joins self-attention

        for blk in self.blocks:
            q = blk(q)
        feat = self.norm(q)
        pred = self.head(feat)
        if not self.cross_attn:
            feat, pred = feat[:, 1:], pred[:, 1:]  # remove cls token
        return feat, pred


class C2FDecoder(nn.Module):
    """ Decoder stages for `targets` (in order), wired by `mode` (cascade | parallel | pixel).

    Args:
        mode: 'cascade', 'parallel' or 'pixel' (MAE decoder; one target).
        targets: stage order, e.g. ('sem', 'ins', 'rgb').
        out_dims: head width per target.
        inputs: input modalities of the encoder, in token order.
        enc_dim, grid_size: encoder width and patch grid (h, w).
        dim, depth, num_heads, mlp_ratio: stage hyper-parameters.
    """

    def __init__(
            self, mode: str, targets: tuple[str, ...], out_dims: dict[str, int], inputs: tuple[str, ...],
            enc_dim: int, grid_size: tuple[int, int], dim: int = 256, depth: int = 2, num_heads: int = 8,
            mlp_ratio: float = 4.0,
    ):
        super().__init__()
        if mode not in DECODER_MODES:
            raise ValueError(f"decoder={mode!r} is not one of {DECODER_MODES}")
        self.mode = mode
        self.query_index = {t: (list(inputs).index(t) if t in inputs else None) for t in targets}
        self.stages = nn.ModuleDict({
            t: DecoderStage(enc_dim, dim, depth, num_heads, out_dims[t], len(inputs), mlp_ratio,
                            cross_attn=mode != "pixel")
            for t in targets})
        # fixed 2D sin-cos pos embed with a (zero) cls slot, as MAE's `decoder_pos_embed`
        self.pos_embed = nn.Parameter(sincos_pos_embed_2d(dim, grid_size, cls_token=True)[None], requires_grad=False)

    def forward(self, latent: torch.Tensor, ids_keep: torch.Tensor, ids_restore: torch.Tensor) -> dict:
        """ latent: [B, 1+V, De] -> {target: pred [B, N, out_dim]} """
        preds, extra = {}, None
        for t, stage in self.stages.items():
            feat, preds[t] = stage(latent, ids_keep, ids_restore, self.pos_embed, self.query_index[t], extra)
            if self.mode == "cascade":
                extra = feat + self.pos_embed[:, 1:]  # F^{k-1} + pos, context of the next stage
        return preds

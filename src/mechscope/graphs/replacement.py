"""The local replacement model of one prompt (circuit-tracer's definition, docs/graphs.md).

Run the real model once; freeze every attention pattern and every normalisation denominator
(ln1, ln2, ln_final) at their values on this prompt; replace each MLP output by its transcoder's
feature writes + an error node (real output - transcoder output) + b_dec + the live skip term.
What remains is affine in the node values:

    embed [pos, d]   (token nodes: hook_embed, W_E[tok] * embed_scale; learned positions constant)
    writes [L, pos, d] (per layer: sum of a_s * W_dec[s] over active features + the error)
    -> (transcoder inputs [L, pos, d] (ln2 output, what W_enc reads), final [d] (ln_final output
        at the last position, what the demeaned unembedding reads))

LayerNorm centring, norm gains and biases, OV circuits under the frozen patterns, the skip path,
b_V / b_O / b_dec are live or constant. At the excluded positions (the first token) features and
errors are zero and the MLP output is the real one (its skip term stays live), so with every node at
its real value the frozen model reproduces the real run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mechscope.errors import GraphError
from mechscope.models.components import NormParams
from mechscope.models.lean import LeanModel
from mechscope.sae.transcoder import Transcoder, check_transcoder_fits, mlp_input


@dataclass
class Frozen:
    """The real run of one prompt and what the replacement model freezes from it.

    tokens [pos]; patterns: per layer [H, pos, pos]; scale1 / scale2: per layer the ln1 / ln2
    denominators [pos, 1]; scale_f: ln_final's [pos, 1] (ones without a norm); tc_in / mlp_out:
    per layer the real transcoder inputs and MLP outputs [pos, d]; codes: per layer the
    transcoder activations [pos, d_tc] (zero at excluded positions); errors [L, pos, d] (zero at
    excluded positions); const [L, pos, d]: the MLP output's constant part (b_dec, or at excluded
    positions the real output minus its skip term); logits: the real last-position logits [vocab].
    """

    tokens: Tensor
    patterns: list[Tensor]
    scale1: list[Tensor]
    scale2: list[Tensor]
    scale_f: Tensor
    tc_in: list[Tensor]
    mlp_out: list[Tensor]
    codes: list[Tensor]
    errors: Tensor
    const: Tensor
    logits: Tensor

    @property
    def n_pos(self) -> int:
        return int(self.tokens.shape[0])


def check_supported(lean: LeanModel, transcoders: Sequence[Transcoder]) -> None:
    """GraphError unless the replacement model is defined here for `lean` and `transcoders`
    (sequential pre-norm blocks, no post-norms, one transcoder per layer 0..L-1 that fits)."""
    if lean.attn_only or lean.arch.parallel or not lean.arch.pre_norm:
        raise GraphError(
            "attribution graphs need sequential pre-norm blocks with MLPs (GPT-2 / Llama style); "
            "this model is attention-only, parallel or post-norm"
        )
    if any(w.ln1_post is not None or w.ln2_post is not None for w in lean.layers):
        raise GraphError("post-attention / post-MLP norms (Gemma-2/3) are not frozen here yet")
    layers = [tc.layer for tc in transcoders]
    if layers != list(range(lean.n_layers)):
        raise GraphError(
            f"need one transcoder per layer 0..{lean.n_layers - 1} in order, got layers {layers}"
        )
    for tc in transcoders:
        try:
            check_transcoder_fits(lean, tc)
        except ValueError as e:
            raise GraphError(str(e)) from e


def _scale(lean: LeanModel, x: Tensor) -> Tensor:
    """The denominator [..., 1] lean's norm divides x [..., d] by (ones without a norm)."""
    kind = lean.norm.kind
    if kind is None:
        return torch.ones_like(x[..., :1])
    if kind == "LN":
        x = x - x.mean(-1, keepdim=True)
    return (x.pow(2).mean(-1, keepdim=True) + lean.norm.eps).sqrt()


def frozen_norm(lean: LeanModel, x: Tensor, scale: Tensor, params: NormParams) -> Tensor:
    """lean's norm of x [..., d] with its denominator frozen at scale [..., 1]; centring (LN),
    gain and bias stay live."""
    if lean.norm.kind == "LN":
        x = x - x.mean(-1, keepdim=True)
    return lean.norm.affine(x / scale, params)


@torch.no_grad()
def freeze(
    lean: LeanModel, transcoders: Sequence[Transcoder], tokens: Tensor, n_excluded: int = 1
) -> Frozen:
    """Run tokens [pos] through `lean` and freeze what the replacement model needs.

    n_excluded: leading positions whose features and errors are zeroed (circuit-tracer's
    zero_positions: the BOS attention sink).
    """
    check_supported(lean, transcoders)
    dtype = lean.W_E.dtype
    for tc in transcoders:
        if tc.W_dec.dtype != dtype or tc.W_dec.device != lean.device:
            raise GraphError(
                f"transcoder of layer {tc.layer} is {tc.W_dec.dtype} on {tc.W_dec.device}, the "
                f"model {dtype} on {lean.device}: move it with .to(device, dtype)"
            )
    L = lean.n_layers
    names = ["blocks.0.hook_resid_pre", f"blocks.{L - 1}.hook_resid_post"]
    for l in range(L):
        names += [f"blocks.{l}.attn.hook_pattern", f"blocks.{l}.hook_resid_pre"]
        names += [f"blocks.{l}.hook_mlp_in", f"blocks.{l}.hook_mlp_out"]
    cache: dict[str, Tensor] = {}
    logits = lean.forward(tokens[None], cache=cache)[0, -1]
    acts = {n: cache[n][0] for n in dict.fromkeys(names)}
    tc_in, outs, codes, errs, consts = [], [], [], [], []
    for l, tc in enumerate(transcoders):
        x = mlp_input(lean, l, acts[f"blocks.{l}.hook_mlp_in"]).to(dtype)
        y = acts[f"blocks.{l}.hook_mlp_out"].to(dtype)
        a = tc.encode(x)
        a[:n_excluded] = 0
        skip = tc.skip(x)
        err = y - (a @ tc.W_dec + tc.b_dec + skip)
        err[:n_excluded] = 0
        const = tc.b_dec.expand_as(y).clone()
        const[:n_excluded] = (y - skip)[:n_excluded]
        tc_in.append(x)
        outs.append(y)
        codes.append(a)
        errs.append(err)
        consts.append(const)
    final = acts[f"blocks.{L - 1}.hook_resid_post"].to(dtype)
    return Frozen(
        tokens=tokens,
        patterns=[acts[f"blocks.{l}.attn.hook_pattern"].to(dtype) for l in range(L)],
        scale1=[_scale(lean, acts[f"blocks.{l}.hook_resid_pre"].to(dtype)) for l in range(L)],
        scale2=[_scale(lean, acts[f"blocks.{l}.hook_mlp_in"].to(dtype)) for l in range(L)],
        scale_f=_scale(lean, final),
        tc_in=tc_in,
        mlp_out=outs,
        codes=codes,
        errors=torch.stack(errs),
        const=torch.stack(consts),
        logits=logits,
    )


def token_vectors(lean: LeanModel, tokens: Tensor) -> Tensor:
    """The token nodes' vectors [pos, d]: hook_embed's output (W_E[tok] * embed_scale)."""
    return lean.W_E[tokens] * lean.arch.embed_scale


def frozen_forward(
    lean: LeanModel,
    fz: Frozen,
    transcoders: Sequence[Transcoder],
    embed: Tensor,
    writes: Tensor,
) -> tuple[Tensor, Tensor]:
    """The replacement model: (transcoder inputs [L, pos, d], ln_final output at the last
    position [d]) of token-node vectors embed [pos, d] and MLP writes [L, pos, d] (feature
    decoder writes + errors; the constant parts and skip terms are added here). Affine in both."""
    n = fz.n_pos
    resid = embed
    if lean.W_pos is not None:
        resid = resid + lean.W_pos[:n]
    ins = []
    for l, w in enumerate(lean.layers):
        x = frozen_norm(lean, resid, fz.scale1[l], w.ln1)
        v = torch.einsum("pm,kmd->pkd", x, w.W_V) + w.b_V  # [pos, K, d_head]
        if v.shape[1] != lean.n_heads:
            v = v.repeat_interleave(lean.n_heads // v.shape[1], 1)
        z = torch.einsum("hqk,khd->qhd", fz.patterns[l], v)
        resid = resid + z.flatten(1) @ w.W_O.flatten(0, 1) + w.b_O
        x2 = frozen_norm(lean, resid, fz.scale2[l], w.ln2)
        ins.append(x2)
        resid = resid + fz.const[l] + writes[l] + transcoders[l].skip(x2)
    final = frozen_norm(lean, resid[-1], fz.scale_f[-1], lean.ln_final)
    return torch.stack(ins), final

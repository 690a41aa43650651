"""A lean forward pass over a bridge's weights, with per-head hooks on every architecture.

TransformerLens's bridge serves per-head q/k/v inputs and per-head results only for some attention
classes, and its hooked forward is several times slower than a plain one. `LeanModel` runs the
same computation from the bridge's processed weights (compatibility mode: norms folded, LayerNorm
models' weights centred) with the HookedTransformer hook names, per-head hooks always available,
and optional hooks costing nothing when absent. It is built from declared components
(components.py, declare.py): GPT-2, OPT, GPT-NeoX/Pythia, GPT-J, Llama, Mistral, Qwen2/3,
Gemma 1/2/3, OLMo 1/2 and Phi-2/3, each held equal to HF's logits and the bridge's hooks.

Hook names (shapes; H query heads, K key/value heads, K = H without grouped-query attention):
    hook_embed, hook_pos_embed (learned positions only)   [batch, pos, d_model]
    blocks.{l}.hook_resid_pre                    [batch, pos, d_model]
    blocks.{l}.hook_q_input                      [batch, pos, H, d_model]  (split inputs)
    blocks.{l}.hook_{k,v}_input                  [batch, pos, K, d_model]
    blocks.{l}.attn.hook_q / hook_k, hook_v      [batch, pos, H / K, d_head] (projections)
    blocks.{l}.attn.hook_rot_q / hook_rot_k      the same after q/k norm and rotation (rotary)
    blocks.{l}.attn.hook_attn_scores, hook_pattern  [batch, H, query_pos, key_pos]
    blocks.{l}.attn.hook_z                       [batch, pos, H, d_head]
    blocks.{l}.attn.hook_result                  [batch, pos, H, d_model]
    blocks.{l}.hook_attn_out                     [batch, pos, d_model] (after a post-norm)
    blocks.{l}.hook_resid_mid (sequential blocks), hook_mlp_in, hook_mlp_out  [batch, pos, d_model]
    blocks.{l}.mlp.hook_pre, hook_post (and hook_pre_linear, gated)  [batch, pos, d_mlp]
    blocks.{l}.hook_resid_post, ln_final.hook_normalized   [batch, pos, d_model]
`hook_names()` lists exactly the hooks this model fires (it is read off a forward pass).

Split models: each block runs on the device its weights are on (as a bridge loaded with a
`device_map` places them, or as `dispatch` puts them), the residual stream moves between blocks,
hooks see each block's tensors on that block's device (a hook's replacement is moved there), and
logits and every piece's output come back on `device`, the embedding's device.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from types import SimpleNamespace
from typing import Any, Self

import torch
from torch import Tensor

from mechscope.errors import ModelLoadError
from mechscope.models.components import (
    ACTS,
    Norm,
    NormParams,
    attention_mask,
    softcap,
)
from mechscope.models.declare import Arch, declare, unsupported

Hook = Callable[[Tensor], Tensor | None]


def lean_supports(model: Any) -> bool:
    """Whether `LeanModel` computes this bridge's architecture exactly (see `unsupported`)."""
    return isinstance(model, LeanModel) or unsupported(model) is None


@dataclass
class LayerWeights:
    """One block's weights in HookedTransformer layout (absent biases are zeros)."""

    ln1: NormParams
    W_Q: Tensor  # [H, d_model, d_head]
    W_K: Tensor  # [K, d_model, d_head]
    W_V: Tensor
    b_Q: Tensor  # [H, d_head]
    b_K: Tensor  # [K, d_head]
    b_V: Tensor
    W_O: Tensor  # [H, d_head, d_model]
    b_O: Tensor  # [d_model]
    ln2: NormParams = None
    W_in: Tensor | None = None  # [d_model, d_mlp]; None = attention-only
    b_in: Tensor | None = None
    W_out: Tensor | None = None  # [d_mlp, d_model]
    b_out: Tensor | None = None
    W_gate: Tensor | None = None  # [d_model, d_mlp] (gated MLPs)
    b_gate: Tensor | None = None
    ln1_post: NormParams = None  # Gemma-2/3's norms of the attention and MLP outputs
    ln2_post: NormParams = None
    q_norm: NormParams = None  # q/k norm (Qwen3, Gemma-3: per head; OLMo-2: over all heads)
    k_norm: NormParams = None

    @property
    def device(self) -> torch.device:
        """Where this block's weights are, and where it runs."""
        return self.W_Q.device

    def to(
        self, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> LayerWeights:
        """A copy with every weight on `device` and / or in `dtype`."""
        return LayerWeights(
            **{f.name: _move(getattr(self, f.name), device, dtype) for f in fields(self)}
        )


def _move(x: Any, device: str | torch.device | None, dtype: torch.dtype | None = None) -> Any:
    if isinstance(x, tuple):
        return tuple(None if t is None else t.to(device=device, dtype=dtype) for t in x)
    return None if x is None else x.to(device=device, dtype=dtype)


def _norm_params(module: Any) -> NormParams:
    """(weight, bias or None) of a norm module; None when it has no parameters."""
    params = dict(module.named_parameters()) if module is not None else {}
    w = next((v for k, v in params.items() if k.endswith("weight")), None)
    b = next((v for k, v in params.items() if k.endswith("bias")), None)
    return None if w is None else (w.detach(), None if b is None else b.detach())


def _weight(bridge: Any, module: Any, name: str, l: int) -> Tensor | None:
    """Block l's weight `name` from its own module (on the device it was placed on); models
    built from stacked weights (`from_weights`) have none, and give bridge.name[l]."""
    if module is not None:
        own = getattr(module, name, None)
        return own.detach() if isinstance(own, Tensor) else None
    stacked = getattr(bridge, name, None)
    return None if stacked is None else stacked[l].detach()


class LeanModel:
    """Plain-tensor forward of a TransformerBridge's weights with HookedTransformer hook names."""

    causal: bool = True  # each position attends to itself and earlier ones

    def __init__(self, bridge: Any) -> None:
        why = unsupported(bridge)
        if why is not None:
            name = getattr(bridge.cfg, "model_name", "?")
            raise ModelLoadError(
                f"mechscope's engines cannot compute this model ({name}) exactly: {why}. "
                "Patching, circuits and SAE methods cannot run on it (loading and hooking it "
                "with TransformerLens work). Supported families: "
                "mechscope.models.declare.FAMILIES (docs/families.md)."
            )
        self._init(declare(bridge), bridge)

    def _init(self, arch: Arch, bridge: Any) -> None:
        self.arch = arch
        self.cfg = bridge.cfg
        self.n_layers, self.n_heads, self.d_head = arch.n_layers, arch.n_heads, arch.d_head
        self.n_kv_heads = arch.n_kv_heads
        self.attn_only = arch.attn_only
        self.act = ACTS[arch.act]
        self.norm: Norm = arch.norm
        self.pre_norm: Norm = arch.norm if arch.pre_norm else Norm(None)  # of the block inputs
        self.tokenizer = getattr(bridge, "tokenizer", None)
        self.W_E = bridge.W_E.detach()
        pos = getattr(bridge, "pos_embed", None)
        self.W_pos: Tensor | None = None
        if pos is not None and arch.positions == "learned":
            # HF's OPT stores two rows before position 0 (its module's `offset`)
            offset = int(getattr(getattr(pos, "original_component", None), "offset", 0) or 0)
            self.W_pos = pos.W_pos.detach()[offset:]
        self.W_U, self.b_U = bridge.W_U.detach(), bridge.b_U.detach()
        self.ln_final = _norm_params(bridge.ln_final) if self.norm.kind else None
        # one dtype throughout: some bridges keep a few parameters in float32 under bf16
        dtype = self.W_E.dtype
        self.layers = [self._layer(bridge, l).to(dtype=dtype) for l in range(self.n_layers)]
        self.W_U, self.b_U = self.W_U.to(dtype), self.b_U.to(dtype)
        self.W_pos = _move(self.W_pos, None, dtype)
        self.ln_final = _move(self.ln_final, None, dtype)
        self._names: list[str] | None = None

    def _layer(self, bridge: Any, l: int) -> LayerWeights:
        block = bridge.blocks[l]
        attn, mlp = block.attn, getattr(block, "mlp", None)
        W = {
            n: _weight(bridge, attn, n, l)
            for n in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O")
        }
        H, K, dh = self.n_heads, self.n_kv_heads, self.d_head
        W_Q, W_O = W["W_Q"], W["W_O"]
        assert W_Q is not None and W_O is not None and W["W_K"] is not None
        zeros = lambda *s: torch.zeros(*s, dtype=W_Q.dtype, device=W_Q.device)  # noqa: E731
        lw = LayerWeights(
            ln1=_norm_params(getattr(block, "ln1", None)) if self.norm.kind else None,
            W_Q=W_Q,
            W_K=W["W_K"],
            W_V=W["W_V"] if W["W_V"] is not None else zeros(K, W_Q.shape[1], dh),
            b_Q=W["b_Q"] if W["b_Q"] is not None else zeros(H, dh),
            b_K=W["b_K"] if W["b_K"] is not None else zeros(K, dh),
            b_V=W["b_V"] if W["b_V"] is not None else zeros(K, dh),
            W_O=W_O,
            b_O=W["b_O"] if W["b_O"] is not None else zeros(W_O.shape[-1]),
            q_norm=_norm_params(getattr(attn, "q_norm", None)),
            k_norm=_norm_params(getattr(attn, "k_norm", None)),
            ln1_post=_norm_params(getattr(block, "ln1_post", None)),
            ln2_post=_norm_params(getattr(block, "ln2_post", None)),
        )
        if not self.attn_only:
            ln2 = getattr(block, "ln2", None)
            lw.ln2 = _norm_params(ln2) if ln2 is not None else lw.ln1  # GPT-J, Phi: one norm
            for n in ("W_in", "b_in", "W_out", "b_out", "W_gate", "b_gate"):
                setattr(lw, n, _weight(bridge, mlp, n, l))
            assert lw.W_in is not None and lw.W_out is not None
            lw.b_in = lw.b_in if lw.b_in is not None else zeros(lw.W_in.shape[1])
            lw.b_out = lw.b_out if lw.b_out is not None else zeros(lw.W_out.shape[1])
            if self.arch.gated and lw.b_gate is None:
                lw.b_gate = zeros(lw.W_in.shape[1])
        if not self.arch.pre_norm:  # OLMo-2: the bridge's ln1 / ln2 are the output norms
            lw.ln1_post, lw.ln2_post, lw.ln1, lw.ln2 = lw.ln1, lw.ln2, None, None
        return lw

    @property
    def device(self) -> torch.device:
        """The embedding's device: tokens go in and logits come out here."""
        return self.W_E.device

    @property
    def rotary(self) -> bool:
        return self.arch.positions == "rotary"

    @property
    def head_decomposition(self) -> str | None:
        """Why the residual stream is not a sum of per-head outputs with per-head q/k/v (which
        circuits' edge graph needs), or None when it is."""
        if any(w.ln1_post is not None or w.ln2_post is not None for w in self.layers):
            return "post-attention / post-MLP norms rescale the summed head outputs"
        if any(w.q_norm is not None and w.q_norm[0].numel() != self.d_head for w in self.layers):
            return "q/k norms over all heads together couple the heads' queries and keys"
        return None

    def dispatch(
        self, layer_devices: Sequence[str | torch.device], unembed: str | torch.device | None = None
    ) -> Self:
        """Place block l on layer_devices[l], the embeddings with block 0 and the unembedding on
        `unembed` (default: the last block's device), in place; returns self. For splits the
        bridge's loader refuses, such as some blocks on a GPU and the rest on the CPU (both run
        where they are; nothing is offloaded)."""
        if len(layer_devices) != self.n_layers:
            raise ValueError(
                f"layer_devices has {len(layer_devices)} entries for {self.n_layers} blocks"
            )
        self.layers = [w.to(d) for w, d in zip(self.layers, layer_devices, strict=True)]
        self.W_E = self.W_E.to(layer_devices[0])
        self.W_pos = _move(self.W_pos, layer_devices[0])
        last = unembed if unembed is not None else layer_devices[-1]
        self.W_U, self.b_U = self.W_U.to(last), self.b_U.to(last)
        self.ln_final = _move(self.ln_final, last)
        return self

    @classmethod
    def from_weights(
        cls,
        weights: Mapping[str, Tensor],
        *,
        normalization: str | None = None,
        eps: float = 1e-5,
        act_fn: str = "gelu_new",
        attn_scale: float = -1.0,
        tokenizer: Any = None,
    ) -> Self:
        """A model from HookedTransformer-layout weights, without a bridge (hand-built and
        converted models): W_E [vocab, d], W_U [d, vocab], b_U [vocab]; W_Q, W_K, W_V
        [layer, head, d, d_head]; b_Q, b_K, b_V [layer, head, d_head]; W_O [layer, head, d_head,
        d]; b_O [layer, d]; optional W_pos [n_ctx, d] and MLPs W_in [layer, d, d_mlp], b_in,
        W_out [layer, d_mlp, d], b_out (none: attention-only). normalization "LN" / "RMS":
        norms without affine parameters; attn_scale <= 0: sqrt(d_head)."""
        n_layers, n_heads, _, d_head = weights["W_Q"].shape
        cfg = SimpleNamespace(
            n_layers=n_layers,
            n_heads=n_heads,
            d_head=d_head,
            eps=eps,
            attn_only="W_in" not in weights,
            act_fn=act_fn,
            normalization_type=normalization,
            attn_scale=attn_scale,
        )
        no_affine = SimpleNamespace(named_parameters=lambda: iter(()))
        parts: dict[str, Any] = dict(weights)
        if "W_pos" in parts:
            parts["pos_embed"] = SimpleNamespace(W_pos=parts.pop("W_pos"))
        bridge = SimpleNamespace(
            cfg=cfg,
            tokenizer=tokenizer,
            ln_final=no_affine,
            blocks=[
                SimpleNamespace(ln1=no_affine, ln2=no_affine, attn=None, mlp=None)
                for _ in range(n_layers)
            ],
            **parts,
        )
        self = cls.__new__(cls)
        self._init(declare(bridge), bridge)
        return self

    # -- components ------------------------------------------------------------------------------
    def _project(self, l: int, x: Tensor, letter: int, heads: Tensor | None = None) -> Tensor:
        """hook_q / hook_k / hook_v [batch, pos, k, d_head] of normalised inputs x: one
        [batch, pos, d_model] for every head, or per head [batch, pos, k, d_model] for `heads`."""
        w = self.layers[l]
        W, b = ((w.W_Q, w.b_Q), (w.W_K, w.b_K), (w.W_V, w.b_V))[letter]
        if heads is not None:
            W, b = W[heads], b[heads]
        eq = "bpm,hmd->bphd" if x.ndim == 3 else "bphm,hmd->bphd"
        out = torch.einsum(eq, x, W) + b
        clip = self.arch.clip_qkv
        return out if clip is None else out.clamp(-clip, clip)

    def finish_qk(self, l: int, x: Tensor, letter: int, positions: Tensor) -> Tensor:
        """Queries (letter 0) or keys (letter 1) [batch, pos, k, d_head] of layer l as attention
        reads them: q/k norm, then rotation at absolute `positions` [pos] (identity without
        either)."""
        w = self.layers[l]
        p = w.q_norm if letter == 0 else w.k_norm
        if p is not None:
            if p[0].numel() == x.shape[-1]:
                x = self.norm(x, p)
            else:  # OLMo-2: one norm over all heads together
                x = self.norm(x.flatten(2), p).view_as(x)
        rot = self.arch.rotary[l]
        if rot is None:
            return x
        cos, sin = rot.tables(positions)
        return rot(x, cos, sin)

    def attend(
        self, l: int, q: Tensor, k: Tensor, v: Tensor, q_positions: Tensor, h: Any = None
    ) -> Tensor:
        """z [batch, q_pos, H', d_head] from finished queries [batch, q_pos, H', d_head] at
        absolute positions q_positions, keys and values [batch, k_pos, K', d_head] of positions
        0.. (K' = H' / group: each key/value head serves `group` consecutive query heads) of
        layer l; h: the block's hook h(name, x) -> x at attn.hook_attn_scores / hook_pattern."""
        if k.shape[2] != q.shape[2]:
            g = q.shape[2] // k.shape[2]
            k, v = k.repeat_interleave(g, 2), v.repeat_interleave(g, 2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / self.arch.attn_scale
        scores = softcap(scores, self.arch.attn_softcap)
        mask = attention_mask(
            q_positions.to(q.device), k.shape[1], self.causal, self.arch.window[l]
        )
        scores = scores.masked_fill(mask, float("-inf"))
        if h is not None:
            scores = h("attn.hook_attn_scores", scores)
        pattern = scores.float().softmax(-1).to(v.dtype)
        if h is not None:
            pattern = h("attn.hook_pattern", pattern)
        return torch.einsum("bhqk,bkhd->bqhd", pattern, v)

    def post_norm(self, p: NormParams, x: Tensor) -> Tensor:
        """An attention or MLP output x [..., d_model] through its post-norm p (ln1_post /
        ln2_post of a layer; None: x unchanged)."""
        return x if p is None else self.norm(x, p)

    def _mlp(self, w: LayerWeights, y: Tensor, h: Any = None) -> Tensor:
        """MLP output [..., d_model] (before a post-norm) of its normalised input y."""
        assert w.W_in is not None and w.W_out is not None
        assert w.b_in is not None and w.b_out is not None
        hook = h or (lambda _, x: x)
        if w.W_gate is not None:
            assert w.b_gate is not None
            pre = hook("mlp.hook_pre", y @ w.W_gate + w.b_gate)
            lin = hook("mlp.hook_pre_linear", y @ w.W_in + w.b_in)
            post = hook("mlp.hook_post", self.act(pre) * lin)
        else:
            pre = hook("mlp.hook_pre", y @ w.W_in + w.b_in)
            post = hook("mlp.hook_post", self.act(pre))
        return post @ w.W_out + w.b_out

    # -- per-head pieces (the circuits delta forward) ------------------------------------------
    def head_qkv(self, l: int, x: Tensor, letter: int, heads: Tensor) -> Tensor:
        """Query, key or value (letter 0, 1, 2) [batch, pos, k, d_head] (hook_{q,k,v}) of
        `heads` [k] of layer l (query heads for q, key/value heads for k and v), each from its own
        residual input x [batch, pos, k, d_model] (hook_{q,k,v}_input)."""
        w = self.layers[l]
        dev = w.device
        out = self._project(l, self.pre_norm(x.to(dev), w.ln1), letter, heads.to(dev))
        return out.to(x.device)

    def head_results(
        self,
        l: int,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        heads: Tensor,
        q_pos: Sequence[int] | None = None,
    ) -> Tensor:
        """Outputs [batch, q_pos, k, d_model] (attn.hook_result) of query `heads` [k] of layer l
        from their queries [batch, q_pos, k, d_head] (hook_q) at positions q_pos (default: all),
        and the keys and values each of them reads [batch, pos, k, d_head] (hook_k, hook_v of its
        key/value head)."""
        w = self.layers[l]
        if w.q_norm is not None and w.q_norm[0].numel() != self.d_head:
            raise ModelLoadError(
                "per-head attention pieces do not exist for this model: its q/k norms act on all "
                "heads together (OLMo-2)"
            )
        dev, back = w.device, q.device
        q, k, v, heads = q.to(dev), k.to(dev), v.to(dev), heads.to(dev)
        n = k.shape[1]
        qp = (
            torch.arange(n, device=dev)
            if q_pos is None
            else torch.tensor([p % n for p in q_pos], device=dev)
        )
        q = self.finish_qk(l, q, 0, qp)
        k = self.finish_qk(l, k, 1, torch.arange(n, device=dev))
        z = self.attend(l, q, k, v, qp)
        return torch.einsum("bqhd,hdm->bqhm", z, w.W_O[heads]).to(back)

    def mlp_out(self, l: int, x: Tensor) -> Tensor:
        """Output [..., d_model] (hook_mlp_out) of MLP l from its input x [..., d_model]
        (hook_mlp_in)."""
        w = self.layers[l]
        y = self.pre_norm(x.to(w.device), w.ln2)
        return self.post_norm(w.ln2_post, self._mlp(w, y)).to(x.device)

    def unembed(self, resid: Tensor) -> Tensor:
        """Logits [..., vocab] of final residual-stream vectors [..., d_model]."""
        y = self.norm(resid.to(self.W_U.device), self.ln_final)
        return softcap(y @ self.W_U + self.b_U, self.arch.final_softcap).to(resid.device)

    def heads_at(self, hook: str) -> int:
        """How many heads a per-head hook has: key/value heads for keys and values and their
        inputs (hook_k, hook_v, hook_rot_k, hook_k_input, hook_v_input), query heads else."""
        kv = ("hook_k", "hook_v", "hook_rot_k", "hook_k_input", "hook_v_input")
        return self.n_kv_heads if hook.endswith(kv) else self.n_heads

    def key_hook(self, l: int) -> str:
        """The hook whose values are layer l's keys as attention reads them (prefix_kv's keys)."""
        return f"blocks.{l}.attn.hook_rot_k" if self.rotary else f"blocks.{l}.attn.hook_k"

    def hook_names(self) -> list[str]:
        """Every hook name this model fires, in forward order (read off a one-token forward)."""
        if self._names is None:
            cache: dict[str, Tensor] = {}
            with torch.no_grad():
                self.forward(torch.zeros(1, 1, dtype=torch.long, device=self.device), cache=cache)
            self._names = list(cache)
        return list(self._names)

    # -- the forward -------------------------------------------------------------------------------
    def forward(
        self,
        tokens: Tensor,
        hooks: Mapping[str, Hook] | None = None,
        cache: dict[str, Tensor] | None = None,
        *,
        start_layer: int = 0,
        resid: Tensor | None = None,
        logit_pos: Sequence[int] | None = None,
        start_pos: int = 0,
        prefix_kv: Sequence[tuple[Tensor, Tensor] | None] | None = None,
    ) -> Tensor:
        """Logits [batch, pos, vocab] of tokens [batch, pos].

        hooks: name -> fn(activation) returning a replacement (or None to keep it).
        cache: if given, filled with every activation (after hooks), keyed by hook name.
        start_layer, resid: run only blocks start_layer.. from `resid` [batch, pos, d_model], the
            value of `blocks.{start_layer}.hook_resid_pre` (embedding hooks do not fire);
            start_layer = n_layers runs only ln_final and the unembedding. Patching sweeps use
            it to skip the layers a patch cannot change.
        logit_pos: unembed only these positions: logits [batch, len(logit_pos), vocab]. Without
            hooks or cache, the last layer then also runs only these query positions.
        start_pos, prefix_kv: run only positions start_pos.. (causal attention leaves earlier ones
            as they were): `resid` (needed when start_layer > 0) is [batch, pos - start_pos,
            d_model], else tokens start_pos.. are embedded at their positions; prefix_kv[l] holds
            layer l's keys as attention reads them (`key_hook(l)`: hook_rot_k with rotary
            positions, else hook_k) and values (hook_v) of positions < start_pos,
            [batch, start_pos, K, d_head] each. Hooks and cache then see positions start_pos..
            only (attention scores and patterns [batch, H, pos - start_pos, pos]): an
            incremental KV cache for generation (mechscope.steering).
        """
        hooks = hooks or {}
        if hooks:
            unknown = set(hooks) - set(self.hook_names())
            if unknown:
                raise KeyError(
                    f"Unknown hook names {sorted(unknown)}; this model's hooks are like "
                    f"{self.hook_names()[:4]} ... (see LeanModel.hook_names(), "
                    f"{len(self.hook_names())} in all)."
                )

        def h(name: str, x: Tensor) -> Tensor:
            f = hooks.get(name)
            if f is not None:
                r = f(x)
                if r is not None:
                    x = r.to(x.device)
            if cache is not None:
                cache[name] = x
            return x

        if tokens.ndim != 2:
            raise ValueError(f"tokens must be [batch, pos], got shape {tuple(tokens.shape)}")
        pos = tokens.shape[1]
        if start_pos and (prefix_kv is None or (resid is None and start_layer > 0)):
            raise ValueError("start_pos > 0 needs prefix_kv, and resid when start_layer > 0")
        if start_pos and not self.causal:
            raise ValueError(
                "start_pos > 0 assumes causal attention; this model's is bidirectional"
            )
        if logit_pos is not None:  # absolute positions -> positions within the window
            logit_pos = [(p + pos if p < 0 else p) - start_pos for p in logit_pos]
            if min(logit_pos) < 0:
                raise ValueError(f"logit_pos must lie at or after start_pos={start_pos}")
        tokens = tokens.to(self.device)
        if resid is None and start_layer == 0:
            resid = h("hook_embed", self.W_E[tokens[:, start_pos:]] * self.arch.embed_scale)
            if self.W_pos is not None:
                resid = resid + h("hook_pos_embed", self.W_pos[start_pos:pos].expand_as(resid))
        elif (
            resid is None
            or resid.shape[:2] != (tokens.shape[0], pos - start_pos)
            or start_layer > self.n_layers
        ):
            got = None if resid is None else tuple(resid.shape)
            raise ValueError(
                f"resid {got} must be [batch, pos - start_pos, d_model] matching tokens "
                f"{tuple(tokens.shape)}, and start_layer {start_layer} in [0, {self.n_layers}]"
            )
        # the last layer needs only the queries whose logits are read
        last_q = logit_pos if (logit_pos is not None and not hooks and cache is None) else None
        for l in range(start_layer, self.n_layers):
            rows = last_q if l == self.n_layers - 1 else None
            resid = self._block(l, resid, h, hooks, cache, start_pos, prefix_kv, rows)
            if rows is not None:
                return self.unembed(resid).to(self.device)
        if logit_pos is not None:
            resid = resid[:, list(logit_pos)]
        final = h("ln_final.hook_normalized", self.norm.normalize(resid.to(self.W_U.device)))
        final = self.norm.affine(final, self.ln_final)
        return softcap(final @ self.W_U + self.b_U, self.arch.final_softcap).to(self.device)

    __call__ = forward

    def _block(
        self,
        l: int,
        resid: Tensor,
        h: Callable[[str, Tensor], Tensor],
        hooks: Mapping[str, Hook],
        cache: dict[str, Tensor] | None,
        start_pos: int,
        prefix_kv: Sequence[tuple[Tensor, Tensor] | None] | None,
        rows: Sequence[int] | None,
    ) -> Tensor:
        """Block l on resid [batch, pos - start_pos, d_model] (positions start_pos..); with
        `rows`, only those query rows go on past attention: [batch, len(rows), d_model]."""
        w = self.layers[l]
        b = f"blocks.{l}"
        hb = lambda name, x: h(f"{b}.{name}", x)  # noqa: E731
        resid = hb("hook_resid_pre", resid.to(w.device))
        n = resid.shape[1]
        positions = torch.arange(start_pos, start_pos + n, device=w.device)
        H, K = self.n_heads, self.n_kv_heads
        if cache is not None or any(f"{b}.hook_{x}_input" in hooks for x in "qkv"):
            ins = [
                hb(f"hook_{x}_input", resid.unsqueeze(2).expand(-1, -1, k, -1))
                for x, k in zip("qkv", (H, K, K), strict=True)
            ]
            xq, xk, xv = (self.pre_norm(x, w.ln1) for x in ins)
        else:  # no per-head inputs wanted: normalise once
            xq = xk = xv = self.pre_norm(resid, w.ln1)
        if rows is not None:
            xq = xq[:, list(rows)]
        q_positions = positions if rows is None else positions[list(rows)]
        q = hb("attn.hook_q", self._project(l, xq, 0))
        k = hb("attn.hook_k", self._project(l, xk, 1))
        v = hb("attn.hook_v", self._project(l, xv, 2))
        if self.rotary or w.q_norm is not None:
            q = self.finish_qk(l, q, 0, q_positions)
            k = self.finish_qk(l, k, 1, positions)
            if self.rotary:
                q, k = hb("attn.hook_rot_q", q), hb("attn.hook_rot_k", k)
        if start_pos:
            kv = prefix_kv[l] if prefix_kv is not None else None
            if kv is None:
                raise ValueError(f"prefix_kv[{l}] is missing")
            k, v = torch.cat([kv[0].to(k.device), k], 1), torch.cat([kv[1].to(v.device), v], 1)
        z = hb("attn.hook_z", self.attend(l, q, k, v, q_positions, hb))
        if cache is not None or f"{b}.attn.hook_result" in hooks:
            result = hb("attn.hook_result", torch.einsum("bqhd,hdm->bqhm", z, w.W_O))
            attn = result.sum(2) + w.b_O
        else:  # no per-head results wanted: one matmul over all heads
            attn = z.flatten(2) @ w.W_O.flatten(0, 1) + w.b_O
        attn_out = hb("hook_attn_out", self.post_norm(w.ln1_post, attn))
        pre = resid if rows is None else resid[:, list(rows)]
        if self.attn_only:
            return hb("hook_resid_post", pre + attn_out)
        if self.arch.parallel:
            mlp_in = hb("hook_mlp_in", pre)
        else:
            pre = hb("hook_resid_mid", pre + attn_out)
            mlp_in = hb("hook_mlp_in", pre)
        mlp = self._mlp(w, self.pre_norm(mlp_in, w.ln2), hb)
        mlp_out = hb("hook_mlp_out", self.post_norm(w.ln2_post, mlp))
        out = pre + attn_out + mlp_out if self.arch.parallel else pre + mlp_out
        return hb("hook_resid_post", out)

    def run_with_cache(
        self,
        tokens: Tensor,
        hooks: Mapping[str, Hook] | None = None,
        *,
        names: Sequence[str] | None = None,
        stop_after: str | None = None,
    ) -> tuple[Tensor | None, dict[str, Tensor]]:
        """(logits [batch, pos, vocab] or None, cache: hook name -> activation, shaped and placed
        as the hook fires, after `hooks`' replacements) of tokens [batch, pos].

        names: cache only these hooks (default: every hook). stop_after: the hook after which the
            forward ends (nothing later runs; the logits are then None), or "logits" to run to
            the end. Default: right after the last of `names` in forward order, or the end when
            every hook is cached.
        """
        order = self.hook_names()
        wanted = None if names is None else list(dict.fromkeys(names))
        unknown = [n for n in wanted or [] if n not in order]
        if stop_after is not None and stop_after not in (*order, "logits"):
            unknown.append(stop_after)
        if unknown:
            raise KeyError(
                f"Unknown hook names {unknown}; this model's hooks are like {order[:4]} ... "
                f"(see LeanModel.hook_names(), {len(order)} in all)."
            )
        if stop_after is not None:
            stop = stop_after
        elif wanted is None:
            stop = "logits"
        else:
            stop = max(wanted, key=order.index) if wanted else order[0]
        if stop != "logits" and wanted and max(map(order.index, wanted)) > order.index(stop):
            raise ValueError(
                f"stop_after={stop!r} comes before hook {max(wanted, key=order.index)!r}, "
                "which would then not fire; stop at or after the last hook named"
            )
        cache: dict[str, Tensor] = {}
        user = dict(hooks or {})

        def record(name: str) -> Hook:
            def hook(x: Tensor) -> Tensor:
                f = user.get(name)
                r = f(x) if f is not None else None
                x = x if r is None else r.to(x.device)
                if wanted is None or name in wanted:
                    cache[name] = x
                if name == stop:
                    raise _Stop
                return x

            return hook

        extra = set(wanted or []) | ({stop} - {"logits"})
        run_hooks = {**user, **{n: record(n) for n in extra}}
        try:
            logits = self.forward(tokens, run_hooks, cache if wanted is None else None)
        except _Stop:
            return None, cache
        return logits, cache


class _Stop(Exception):
    """Raised in the hook `run_with_cache` stops after: the rest of the forward is not run."""


_LEAN: weakref.WeakKeyDictionary[Any, LeanModel] = weakref.WeakKeyDictionary()


def as_lean(model: Any) -> LeanModel:
    """The LeanModel of a TransformerBridge, built once per bridge (a LeanModel is returned as
    is). Build a new `LeanModel(bridge)` after changing the bridge's weights in place."""
    if isinstance(model, LeanModel):
        return model
    lean = _LEAN.get(model)
    if lean is None:
        lean = _LEAN[model] = LeanModel(model)
    return lean

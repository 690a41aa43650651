"""A lean forward pass over a bridge's weights, with per-head hooks on every architecture.

TransformerLens's bridge serves per-head q/k/v inputs (`blocks.{l}.hook_q_input`) and per-head
results (`blocks.{l}.attn.hook_result`) only for some attention classes (HF GPT-2 family), and
its hooked forward is several times slower than a plain one. `LeanModel` runs the same computation
from the bridge's processed weights (compatibility mode: LayerNorm folded, weights centred) with the
HookedTransformer hook names, per-head hooks always available, and optional hooks costing nothing
when absent. Tests hold it equal to the bridge to 1e-5 on every bundled model; hot loops (patching
sweeps, ACDC) run on it.

Hook names (shapes):
    hook_embed, hook_pos_embed                   [batch, pos, d_model]
    blocks.{l}.hook_resid_pre                    [batch, pos, d_model]
    blocks.{l}.hook_{q,k,v}_input                [batch, pos, head, d_model]  (split inputs)
    blocks.{l}.attn.hook_{q,k,v}, hook_z         [batch, pos, head, d_head]
    blocks.{l}.attn.hook_attn_scores, hook_pattern  [batch, head, query_pos, key_pos]
    blocks.{l}.attn.hook_result                  [batch, pos, head, d_model]
    blocks.{l}.hook_attn_out                     [batch, pos, d_model]
    blocks.{l}.hook_resid_mid, hook_mlp_in, hook_mlp_out   [batch, pos, d_model]
    blocks.{l}.mlp.hook_pre, hook_post           [batch, pos, d_mlp]
    blocks.{l}.hook_resid_post, ln_final.hook_normalized   [batch, pos, d_model]

Split models: each block runs on the device its weights are on (as a bridge loaded with a
`device_map` places them, or as `dispatch` puts them), the residual stream moves between blocks,
hooks see each block's tensors on that block's device (a hook's replacement is moved there), and
logits and every piece's output come back on `device`, the embedding's device.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Self

import torch
import torch.nn.functional as F
from torch import Tensor

from mechscope.errors import ModelLoadError

Hook = Callable[[Tensor], Tensor | None]

_ACTS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "relu": F.relu,
    "silu": F.silu,
}


def unsupported(cfg: Any) -> str | None:
    """Why `LeanModel` cannot compute this architecture exactly, or None if it can (GPT-2-style
    blocks: learned or no positions, LayerNorm or none, one ungated MLP after attention, one key
    and value per head)."""
    heads = getattr(cfg, "n_heads", None)
    pos = getattr(cfg, "positional_embedding_type", "standard")
    checks = [
        (pos == "standard", f"{pos} positions"),
        (not getattr(cfg, "parallel_attn_mlp", False), "parallel attention and MLP"),
        (not getattr(cfg, "gated_mlp", False), "a gated MLP"),
        (getattr(cfg, "normalization_type", None) in ("LN", "LNPre", None), "normalization"),
        (str(getattr(cfg, "act_fn", "gelu_new")) in _ACTS, "activation"),
        (getattr(cfg, "n_key_value_heads", None) in (None, heads), "grouped keys and values"),
        ("local" not in (getattr(cfg, "attn_types", None) or ()), "local attention"),
    ]
    bad = [what for ok, what in checks if not ok]
    return ", ".join(bad) or None


def _positions(bridge: Any) -> Tensor | None:
    """Learned position embeddings [n_ctx, d_model] (None: no position embedding). HF's OPT
    stores two rows before position 0 (its module's `offset`), which are skipped."""
    module = getattr(bridge, "pos_embed", None)
    if module is None:
        return None
    offset = int(getattr(getattr(module, "original_component", None), "offset", 0) or 0)
    return module.W_pos.detach()[offset:]


def lean_supports(cfg: Any) -> bool:
    """Whether `LeanModel` computes this architecture exactly (see `unsupported`)."""
    return unsupported(cfg) is None


_ATTN_WEIGHTS = ("W_Q", "W_K", "W_V", "b_Q", "b_K", "b_V", "W_O", "b_O")


@dataclass
class LayerWeights:
    """One block's weights in HookedTransformer layout."""

    ln1: tuple[Tensor, Tensor] | None  # (weight, bias) [d_model] each; None = no norm
    W_Q: Tensor  # [head, d_model, d_head]
    W_K: Tensor
    W_V: Tensor
    b_Q: Tensor  # [head, d_head]
    b_K: Tensor
    b_V: Tensor
    W_O: Tensor  # [head, d_head, d_model]
    b_O: Tensor  # [d_model]
    ln2: tuple[Tensor, Tensor] | None = None
    W_in: Tensor | None = None  # [d_model, d_mlp]; None = attention-only
    b_in: Tensor | None = None
    W_out: Tensor | None = None  # [d_mlp, d_model]
    b_out: Tensor | None = None

    @property
    def device(self) -> torch.device:
        """Where this block's weights are, and where it runs."""
        return self.W_Q.device

    def to(self, device: str | torch.device) -> LayerWeights:
        """A copy with every weight on `device`."""
        return LayerWeights(**{k: _move(v, device) for k, v in vars(self).items()})


def _move(x: Any, device: str | torch.device) -> Any:
    if isinstance(x, tuple):
        return tuple(t.to(device) for t in x)
    return None if x is None else x.to(device)


def _block_weight(bridge: Any, l: int, part: str, name: str) -> Tensor:
    """Block l's weight `name` from the block itself (on the device it was placed on), else
    from the bridge's stacked [layer, ...] tensor."""
    own = getattr(getattr(bridge.blocks[l], part, None), name, None)
    return (own if isinstance(own, Tensor) else getattr(bridge, name)[l]).detach()


def _ln_params(module: Any) -> tuple[Tensor, Tensor] | None:
    params = dict(module.named_parameters())
    w = next((v for k, v in params.items() if k.endswith("weight")), None)
    b = next((v for k, v in params.items() if k.endswith("bias")), None)
    if w is None:
        return None
    return w.detach(), (b.detach() if b is not None else torch.zeros_like(w))


class LeanModel:
    """Plain-tensor forward of a TransformerBridge's weights with HookedTransformer hook names."""

    causal: bool = True  # each position attends to itself and earlier ones

    def __init__(self, bridge: Any) -> None:
        cfg = bridge.cfg
        why = unsupported(cfg)
        if why is not None:
            raise ModelLoadError(
                f"mechscope's engines compute GPT-2-style blocks exactly; this model "
                f"({getattr(cfg, 'model_name', '?')}) differs in: {why}. Patching, circuits and "
                "SAE methods cannot run on it yet (loading and hooking it with TransformerLens "
                "work)."
            )
        self.cfg = cfg
        self.n_layers: int = cfg.n_layers
        self.n_heads: int = cfg.n_heads
        self.d_head: int = cfg.d_head
        self.eps: float = float(cfg.eps)
        self.attn_only: bool = bool(getattr(cfg, "attn_only", False))
        self.act = _ACTS.get(str(getattr(cfg, "act_fn", "gelu_new")), F.gelu)
        self.normalized = getattr(cfg, "normalization_type", None) is not None
        self.scale = (
            float(cfg.attn_scale)
            if getattr(cfg, "attn_scale", -1.0) > 0
            else float(self.d_head) ** 0.5
        )
        self.tokenizer = getattr(bridge, "tokenizer", None)
        g = lambda t: t.detach()  # noqa: E731
        self.W_E = g(bridge.W_E)
        self.W_pos = _positions(bridge)
        self.W_U, self.b_U = g(bridge.W_U), g(bridge.b_U)
        self.ln_final = _ln_params(bridge.ln_final) if self.normalized else None
        self.layers: list[LayerWeights] = []
        for l in range(self.n_layers):
            block = bridge.blocks[l]
            w = {n: _block_weight(bridge, l, "attn", n) for n in _ATTN_WEIGHTS}
            lw = LayerWeights(
                ln1=_ln_params(block.ln1) if self.normalized else None,
                W_Q=w["W_Q"],
                W_K=w["W_K"],
                W_V=w["W_V"],
                b_Q=w["b_Q"],
                b_K=w["b_K"],
                b_V=w["b_V"],
                W_O=w["W_O"],
                b_O=w["b_O"],
            )
            if not self.attn_only:
                lw.ln2 = _ln_params(block.ln2) if self.normalized else None
                lw.W_in, lw.b_in, lw.W_out, lw.b_out = (
                    _block_weight(bridge, l, "mlp", n) for n in ("W_in", "b_in", "W_out", "b_out")
                )
            self.layers.append(lw)

    @property
    def device(self) -> torch.device:
        """The embedding's device: tokens go in and logits come out here."""
        return self.W_E.device

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
        W_out [layer, d_mlp, d], b_out (none: attention-only). normalization "LN": LayerNorms
        without affine parameters; attn_scale <= 0: sqrt(d_head)."""
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
            blocks=[SimpleNamespace(ln1=no_affine, ln2=no_affine) for _ in range(n_layers)],
            **parts,
        )
        return cls(bridge)

    # -- pieces ---------------------------------------------------------------------------------
    def _ln(self, x: Tensor, p: tuple[Tensor, Tensor] | None) -> Tensor:
        if not self.normalized:
            return x
        x = x - x.mean(-1, keepdim=True)
        x = x / (x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()
        return x if p is None else x * p[0] + p[1]

    def head_qkv(self, l: int, x: Tensor, letter: int, heads: Tensor) -> Tensor:
        """Query, key or value (letter 0, 1, 2) [batch, pos, k, d_head] of `heads` [k] of layer l,
        each from its own residual input x [batch, pos, k, d_model] (hook_{q,k,v}_input)."""
        w = self.layers[l]
        W, b = ((w.W_Q, w.b_Q), (w.W_K, w.b_K), (w.W_V, w.b_V))[letter]
        dev, heads = w.device, heads.to(w.device)
        out = torch.einsum("bpkm,kmd->bpkd", self._ln(x.to(dev), w.ln1), W[heads]) + b[heads]
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
        """Outputs [batch, q_pos, k, d_model] (attn.hook_result) of `heads` [k] of layer l from
        their queries [batch, q_pos, k, d_head] at positions q_pos (default: all) and keys and
        values [batch, pos, k, d_head]."""
        w = self.layers[l]
        dev, back = w.device, q.device
        q, k, v, heads = q.to(dev), k.to(dev), v.to(dev), heads.to(dev)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / self.scale
        if self.causal:
            n = k.shape[1]
            mask = torch.triu(torch.ones(n, n, dtype=torch.bool, device=dev), 1)
            scores = scores.masked_fill(mask if q_pos is None else mask[list(q_pos)], float("-inf"))
        z = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v)
        return torch.einsum("bqhd,hdm->bqhm", z, w.W_O[heads]).to(back)

    def mlp_out(self, l: int, x: Tensor) -> Tensor:
        """Output [..., d_model] (hook_mlp_out) of MLP l from its input x [..., d_model]."""
        w = self.layers[l]
        assert w.W_in is not None and w.W_out is not None
        assert w.b_in is not None and w.b_out is not None
        y = self._ln(x.to(w.device), w.ln2)
        return (self.act(y @ w.W_in + w.b_in) @ w.W_out + w.b_out).to(x.device)

    def unembed(self, resid: Tensor) -> Tensor:
        """Logits [..., vocab] of final residual-stream vectors [..., d_model]."""
        y = self._ln(resid.to(self.W_U.device), self.ln_final)
        return (y @ self.W_U + self.b_U).to(resid.device)

    def hook_names(self) -> list[str]:
        """Every hook name this model fires, in forward order."""
        names = ["hook_embed", "hook_pos_embed"]
        for l in range(self.n_layers):
            b = f"blocks.{l}"
            names += [f"{b}.hook_resid_pre"]
            names += [f"{b}.hook_{x}_input" for x in "qkv"]
            names += [f"{b}.attn.hook_{x}" for x in "qkv"]
            names += [f"{b}.attn.hook_attn_scores", f"{b}.attn.hook_pattern", f"{b}.attn.hook_z"]
            names += [f"{b}.attn.hook_result", f"{b}.hook_attn_out"]
            if not self.attn_only:
                names += [f"{b}.hook_resid_mid", f"{b}.hook_mlp_in", f"{b}.mlp.hook_pre"]
                names += [f"{b}.mlp.hook_post", f"{b}.hook_mlp_out"]
            names += [f"{b}.hook_resid_post"]
        return [*names, "ln_final.hook_normalized"]

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
            as they were): `resid` is [batch, pos - start_pos, d_model] and prefix_kv[l] holds
            layer l's attention keys and values (hook_k, hook_v) of positions < start_pos,
            [batch, start_pos, head, d_head] each. Needs `resid`; no hooks, no cache.
        """
        hooks = hooks or {}
        unknown = set(hooks) - set(self.hook_names())
        if unknown:
            raise KeyError(f"Unknown hook names {sorted(unknown)}; see LeanModel.hook_names().")

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
        if start_pos and (resid is None or hooks or cache is not None or prefix_kv is None):
            raise ValueError("start_pos > 0 needs resid and prefix_kv, and no hooks or cache")
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
            resid = h("hook_embed", self.W_E[tokens])
            if self.W_pos is not None:
                resid = resid + h("hook_pos_embed", self.W_pos[:pos].expand_as(resid))
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
        # True = masked out: later keys (causal), or nothing (bidirectional models)
        causal = torch.ones(pos - start_pos, pos, dtype=torch.bool).triu(1 + start_pos)
        if not self.causal:
            causal.zero_()
        masks: dict[torch.device, Tensor] = {}
        # the last layer needs only the queries whose logits are read
        last_q = logit_pos if (logit_pos is not None and not hooks and cache is None) else None
        for l, w in enumerate(self.layers):
            if l < start_layer:
                continue
            b = f"blocks.{l}"
            resid = h(f"{b}.hook_resid_pre", resid.to(w.device))
            mask = masks.setdefault(w.device, causal.to(w.device))
            if l == self.n_layers - 1 and last_q is not None:
                return self._last_layer(resid, w, mask, last_q, start_pos, prefix_kv)
            if cache is not None or any(f"{b}.hook_{x}_input" in hooks for x in "qkv"):
                per_head = resid.unsqueeze(2).expand(-1, -1, self.n_heads, -1)
                q_in = self._ln(h(f"{b}.hook_q_input", per_head), w.ln1)
                k_in = self._ln(h(f"{b}.hook_k_input", per_head), w.ln1)
                v_in = self._ln(h(f"{b}.hook_v_input", per_head), w.ln1)
                eq = "bphm,hmd->bphd"
            else:  # no per-head inputs wanted: normalise once (8x less work)
                q_in = k_in = v_in = self._ln(resid, w.ln1)
                eq = "bpm,hmd->bphd"
            q = h(f"{b}.attn.hook_q", torch.einsum(eq, q_in, w.W_Q) + w.b_Q)
            k = h(f"{b}.attn.hook_k", torch.einsum(eq, k_in, w.W_K) + w.b_K)
            v = h(f"{b}.attn.hook_v", torch.einsum(eq, v_in, w.W_V) + w.b_V)
            if start_pos:
                k, v = self._with_prefix(k, v, prefix_kv, l)
            scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / self.scale
            scores = h(f"{b}.attn.hook_attn_scores", scores.masked_fill(mask, float("-inf")))
            pattern = h(f"{b}.attn.hook_pattern", scores.softmax(-1))
            z = h(f"{b}.attn.hook_z", torch.einsum("bhqk,bkhd->bqhd", pattern, v))
            if cache is not None or f"{b}.attn.hook_result" in hooks:
                result = h(f"{b}.attn.hook_result", torch.einsum("bqhd,hdm->bqhm", z, w.W_O))
                attn_out = h(f"{b}.hook_attn_out", result.sum(2) + w.b_O)
            else:  # no per-head results wanted: one matmul over all heads
                attn_out = h(f"{b}.hook_attn_out", z.flatten(2) @ w.W_O.flatten(0, 1) + w.b_O)
            if self.attn_only:
                resid = h(f"{b}.hook_resid_post", resid + attn_out)
                continue
            assert (
                w.W_in is not None
                and w.W_out is not None
                and w.b_in is not None
                and w.b_out is not None
            )
            resid = h(f"{b}.hook_resid_mid", resid + attn_out)
            mlp_in = self._ln(h(f"{b}.hook_mlp_in", resid), w.ln2)
            pre = h(f"{b}.mlp.hook_pre", mlp_in @ w.W_in + w.b_in)
            post = h(f"{b}.mlp.hook_post", self.act(pre))
            mlp_out = h(f"{b}.hook_mlp_out", post @ w.W_out + w.b_out)
            resid = h(f"{b}.hook_resid_post", resid + mlp_out)
        if logit_pos is not None:
            resid = resid[:, list(logit_pos)]
        final = h("ln_final.hook_normalized", self._ln(resid.to(self.W_U.device), self.ln_final))
        return (final @ self.W_U + self.b_U).to(self.device)

    __call__ = forward

    @staticmethod
    def _with_prefix(
        k: Tensor, v: Tensor, prefix_kv: Sequence[tuple[Tensor, Tensor] | None] | None, layer: int
    ) -> tuple[Tensor, Tensor]:
        kv = prefix_kv[layer] if prefix_kv is not None else None
        if kv is None:
            raise ValueError(f"prefix_kv[{layer}] is missing")
        return torch.cat([kv[0].to(k.device), k], 1), torch.cat([kv[1].to(v.device), v], 1)

    def _last_layer(
        self,
        resid: Tensor,
        w: LayerWeights,
        mask: Tensor,
        q_pos: Sequence[int],
        start_pos: int,
        prefix_kv: Sequence[tuple[Tensor, Tensor] | None] | None,
    ) -> Tensor:
        """Logits [batch, len(q_pos), vocab] from the last block run for queries q_pos only."""
        x = self._ln(resid, w.ln1)
        xq = x[:, list(q_pos)]
        q = torch.einsum("bpm,hmd->bphd", xq, w.W_Q) + w.b_Q
        k = torch.einsum("bpm,hmd->bphd", x, w.W_K) + w.b_K
        v = torch.einsum("bpm,hmd->bphd", x, w.W_V) + w.b_V
        if start_pos:
            k, v = self._with_prefix(k, v, prefix_kv, self.n_layers - 1)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / self.scale
        pattern = scores.masked_fill(mask[list(q_pos)], float("-inf")).softmax(-1)
        z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
        out = resid[:, list(q_pos)] + z.flatten(2) @ w.W_O.flatten(0, 1) + w.b_O
        if not self.attn_only:
            out = out + self.mlp_out(self.n_layers - 1, out)
        return self.unembed(out).to(self.device)

    def run_with_cache(
        self, tokens: Tensor, hooks: Mapping[str, Hook] | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """(logits, cache of every activation)."""
        cache: dict[str, Tensor] = {}
        return self.forward(tokens, hooks, cache), cache


def as_lean(model: Any) -> LeanModel:
    """The LeanModel of a TransformerBridge (a LeanModel is returned as is)."""
    return model if isinstance(model, LeanModel) else LeanModel(model)

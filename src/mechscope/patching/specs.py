"""What a patch names: components, sites (hook + positions + heads) and patches (sets of sites).

A *component* is a family of activations, one hook per layer (`"z"` -> `blocks.{l}.attn.hook_z`).
Its *layout* says which axes a site can select:

    "pos"       [batch, pos, d]               resid_pre/mid/post, attn_out, mlp_out
    "pos_head"  [batch, pos, head, d]         z, result, q, k, v, q_input, k_input, v_input
    "head_pos"  [batch, head, dest, src]      pattern (positions are destination positions;
                                              `src_positions` narrows the source positions)

A `Site` selects one hook at some positions (and heads); a `Patch` is the set of sites replaced
together in one run. Sweeps are lists of one-site patches; a circuit test is one many-site patch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mechscope.errors import PatchingError

Layout = Literal["pos", "pos_head", "head_pos"]


COMPONENTS: dict[str, tuple[str, Layout]] = {
    "resid_pre": ("blocks.{l}.hook_resid_pre", "pos"),
    "resid_mid": ("blocks.{l}.hook_resid_mid", "pos"),
    "resid_post": ("blocks.{l}.hook_resid_post", "pos"),
    "attn_out": ("blocks.{l}.hook_attn_out", "pos"),
    "mlp_out": ("blocks.{l}.hook_mlp_out", "pos"),
    "z": ("blocks.{l}.attn.hook_z", "pos_head"),
    "result": ("blocks.{l}.attn.hook_result", "pos_head"),
    "q": ("blocks.{l}.attn.hook_q", "pos_head"),
    "k": ("blocks.{l}.attn.hook_k", "pos_head"),
    "v": ("blocks.{l}.attn.hook_v", "pos_head"),
    "q_input": ("blocks.{l}.hook_q_input", "pos_head"),
    "k_input": ("blocks.{l}.hook_k_input", "pos_head"),
    "v_input": ("blocks.{l}.hook_v_input", "pos_head"),
    "pattern": ("blocks.{l}.attn.hook_pattern", "head_pos"),
}


def check_component(component: str) -> tuple[str, Layout]:
    """(hook name template, layout) of `component`; PatchingError naming the choices if unknown."""
    if component not in COMPONENTS:
        raise PatchingError(
            f"Unknown component {component!r}. Choose one of: {', '.join(COMPONENTS)}."
        )
    return COMPONENTS[component]


@dataclass(frozen=True)
class Site:
    """One hook, restricted to `positions` and `heads` (None = all of them).

    src_positions: for the attention pattern only, the source (key) positions patched.
    """

    component: str
    layer: int
    positions: tuple[int, ...] | None = None
    heads: tuple[int, ...] | None = None
    src_positions: tuple[int, ...] | None = None

    def __str__(self) -> str:
        parts = [f"{self.component} layer {self.layer}"]
        for name in ("positions", "heads", "src_positions"):
            if getattr(self, name) is not None:
                parts.append(f"{name}={list(getattr(self, name))}")
        return f"site({', '.join(parts)})"

    @property
    def hook(self) -> str:
        return check_component(self.component)[0].format(l=self.layer)

    @property
    def layout(self) -> Layout:
        return check_component(self.component)[1]


Patch = tuple[Site, ...]


def site(
    component: str,
    layer: int,
    positions: int | Sequence[int] | None = None,
    heads: int | Sequence[int] | None = None,
    src_positions: int | Sequence[int] | None = None,
) -> Site:
    """A `Site` from ints or sequences (None = every position / head)."""

    def tup(x: int | Sequence[int] | None) -> tuple[int, ...] | None:
        if x is None:
            return None
        return (int(x),) if isinstance(x, int) else tuple(int(i) for i in x)

    return Site(component, int(layer), tup(positions), tup(heads), tup(src_positions))


def validate_site(s: Site, n_layers: int, n_heads: int, seq_len: int, hook_names: set[str]) -> None:
    """Raise PatchingError if `s` names an unknown component or hook, or indexes out of range."""
    _, layout = check_component(s.component)
    if not 0 <= s.layer < n_layers:
        raise PatchingError(f"{s}: layer {s.layer} out of range; the model has {n_layers} layers.")
    if s.hook not in hook_names:
        raise PatchingError(
            f"{s}: the model has no hook {s.hook!r} (attention-only models have no resid_mid, "
            "mlp_out). See LeanModel.hook_names()."
        )
    if s.src_positions is not None and layout != "head_pos":
        raise PatchingError(f"{s}: src_positions apply to the attention pattern only.")
    for what, ps in (("positions", s.positions), ("src_positions", s.src_positions)):
        bad = [p for p in ps or () if not 0 <= p < seq_len]
        if bad or ps == ():
            raise PatchingError(
                f"{s}: {what} {bad or '()'} out of range; prompts have {seq_len} tokens, so "
                f"positions are 0..{seq_len - 1} (use None for all)."
            )
    if s.heads is not None:
        if layout == "pos":
            raise PatchingError(
                f"{s}: component {s.component!r} has no head axis; use z/result/q/k/v/pattern "
                "to patch single heads."
            )
        bad = [h for h in s.heads if not 0 <= h < n_heads]
        if bad or not s.heads:
            raise PatchingError(
                f"{s}: heads {bad or '()'} out of range; the model has {n_heads} heads per layer."
            )

"""SAE evaluation with SAELens's metric definitions (`sae_lens/evals.py`), so numbers compare.

Over the non-special tokens of the evaluation batches:
    l0                  mean number of non-zero codes per token
    mse                 mean over tokens of ||x - x_hat||^2 (summed over dimensions)
    explained_variance  1 - E||x - x_hat||^2 / Var_total, Var_total = E||x||^2 - ||E x||^2
    cossim              mean cosine(x, x_hat)
    ce_recovered        (CE_zero_abl - CE_sae) / (CE_zero_abl - CE_orig), the SAE spliced in
                        (special positions keep their activation) vs the hook zero-ablated
    kl_score            (KL_zero_abl - KL_sae) / KL_zero_abl, KL(orig || patched) per token
    dead_frac           latents that never fire on the evaluation tokens
    dense_frac          latents firing on more than `dense_threshold` of the tokens
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mechscope.metrics import kl_div
from mechscope.models.lean import as_lean
from mechscope.sae.activations import (
    check_sae_fits,
    keep_mask,
    special_ids,
    splice_hook,
)
from mechscope.sae.model import SparseAutoencoder, check_finite


@dataclass
class SAEEval:
    """Evaluation of one SAE (SAELens definitions); `to_dict` gives the compact row."""

    name: str
    hook_name: str
    architecture: str
    d_sae: int
    n_tokens: int
    l0: float
    mse: float
    explained_variance: float
    cossim: float
    ce_orig: float
    ce_sae: float
    ce_zero_abl: float
    ce_recovered: float
    kl_sae: float
    kl_zero_abl: float
    kl_score: float
    dead_frac: float
    dense_frac: float
    feature_density: list[float] = field(default_factory=list, repr=False)

    def to_dict(self, with_density: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not with_density:
            d.pop("feature_density")
        return d


def _ce(logits: Tensor, tokens: Tensor, keep: Tensor) -> Tensor:
    """Next-token CE [n] at kept input positions (the last position has no target)."""
    ce = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="none"
    )
    return ce.view(tokens.shape[0], -1)[keep[:, :-1]]


@torch.no_grad()
def evaluate_sae(
    model: Any,
    sae: SparseAutoencoder,
    tokens: Iterable[Tensor],
    hook_name: str | None = None,
    name: str = "",
    dense_threshold: float = 0.1,
) -> SAEEval:
    """Evaluate `sae` spliced at `hook_name` (default: its own) over token batches [batch, pos].

    model: a TransformerBridge or LeanModel; the SAE must be on its device (tokens are moved).
    """
    lean = as_lean(model)
    hook = hook_name or sae.cfg.hook_name
    check_sae_fits(lean, sae, hook)
    specials = special_ids(lean)
    fires = torch.zeros(sae.d_sae, dtype=torch.float64)
    sums: dict[str, float] = {"sq_res": 0.0, "sq_norm": 0.0, "l0": 0.0, "cos": 0.0}
    sum_x = torch.zeros(sae.d_in, dtype=torch.float64)
    ce: dict[str, list[Tensor]] = {"orig": [], "sae": [], "abl": []}
    kl: dict[str, list[Tensor]] = {"sae": [], "abl": []}
    n = 0
    for batch in tokens:
        toks = batch.to(lean.W_E.device)
        keep = keep_mask(toks, specials)
        store: dict[str, Tensor] = {}

        def grab(x: Tensor, store: dict[str, Tensor] = store) -> None:
            store["x"] = x.to(sae.W_dec.device)  # the SAE's device (a split model's x moves)

        orig = lean.forward(toks, hooks={hook: grab})
        check_finite(store["x"], hook)
        kept = store["x"][keep.to(store["x"].device)]
        x = kept.double()
        codes = sae.encode(kept)
        x_hat = sae.decode(codes).double()
        fires += (codes != 0).sum(0).double().cpu()
        sums["l0"] += float((codes != 0).sum())
        sums["sq_res"] += float((x - x_hat).pow(2).sum())
        sums["sq_norm"] += float(x.pow(2).sum())
        sums["cos"] += float(F.cosine_similarity(x, x_hat, dim=-1).sum())
        sum_x += x.sum(0).cpu()
        n += x.shape[0]
        spliced = lean.forward(toks, hooks={hook: splice_hook(sae, keep)})
        ablated = lean.forward(toks, hooks={hook: torch.zeros_like})
        for key, logits in (("orig", orig), ("sae", spliced), ("abl", ablated)):
            ce[key].append(_ce(logits, toks, keep))
        kl["sae"].append(kl_div(orig, spliced, pos=None)[keep])
        kl["abl"].append(kl_div(orig, ablated, pos=None)[keep])
    if n == 0:
        raise ValueError("no (non-special) tokens to evaluate on")
    mse = sums["sq_res"] / n
    total_var = sums["sq_norm"] / n - float((sum_x / n).pow(2).sum())
    ce_m = {k: float(torch.cat(v).mean()) for k, v in ce.items()}
    kl_m = {k: float(torch.cat(v).mean()) for k, v in kl.items()}
    density = fires / n
    return SAEEval(
        name=name or f"{sae.cfg.architecture}@{hook}",
        hook_name=hook,
        architecture=sae.cfg.architecture,
        d_sae=sae.d_sae,
        n_tokens=n,
        l0=sums["l0"] / n,
        mse=mse,
        explained_variance=1.0 - mse / total_var if total_var > 1e-10 else float("nan"),
        cossim=sums["cos"] / n,
        ce_orig=ce_m["orig"],
        ce_sae=ce_m["sae"],
        ce_zero_abl=ce_m["abl"],
        ce_recovered=(ce_m["abl"] - ce_m["sae"]) / (ce_m["abl"] - ce_m["orig"]),
        kl_sae=kl_m["sae"],
        kl_zero_abl=kl_m["abl"],
        kl_score=(kl_m["abl"] - kl_m["sae"]) / kl_m["abl"],
        dead_frac=float((density == 0).double().mean()),
        dense_frac=float((density > dense_threshold).double().mean()),
        feature_density=density.tolist(),
    )


_COLUMNS = [
    ("name", "{}"),
    ("l0", "{:.1f}"),
    ("explained_variance", "{:.3f}"),
    ("mse", "{:.4g}"),
    ("ce_recovered", "{:.3f}"),
    ("kl_sae", "{:.4f}"),
    ("dead_frac", "{:.1%}"),
    ("dense_frac", "{:.1%}"),
]


def eval_table(evals: Sequence[SAEEval]) -> Any:
    """A rich Table, one row per evaluation."""
    from rich.table import Table

    table = Table(*[("EV" if c == "explained_variance" else c) for c, _ in _COLUMNS])
    for e in evals:
        d = e.to_dict()
        table.add_row(*[fmt.format(d[c]) for c, fmt in _COLUMNS])
    return table


def group_colour(i: int) -> str:
    """The i-th colour of plotly's default sequence: one colour per group across panels (plotly
    would otherwise colour every trace anew, so one group's panels would differ)."""
    from plotly.colors import qualitative

    return str(qualitative.Plotly[i % len(qualitative.Plotly)])


def pareto_figure(evals: Sequence[SAEEval], groups: Sequence[str] | None = None) -> Any:
    """Plotly figure: CE loss recovered and explained variance against L0, one trace per group
    in each panel, a group's two traces in one colour under one legend entry.

    groups: a label per evaluation (e.g. "local L0", "e2e L0"); default: the hook name.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    labels = list(groups) if groups is not None else [e.hook_name for e in evals]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("CE loss recovered", "explained variance"))
    for i, label in enumerate(dict.fromkeys(labels)):
        rows = sorted(
            (e for e, g in zip(evals, labels, strict=True) if g == label), key=lambda e: e.l0
        )
        for col, metric in ((1, "ce_recovered"), (2, "explained_variance")):
            fig.add_trace(
                go.Scatter(
                    x=[e.l0 for e in rows],
                    y=[getattr(e, metric) for e in rows],
                    mode="lines+markers",
                    name=label,
                    legendgroup=label,
                    showlegend=col == 1,
                    line={"color": group_colour(i)},
                    marker={"color": group_colour(i)},
                    text=[e.name for e in rows],
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="L0 (active latents per token)", type="log")
    fig.update_layout(title="SAE sparsity vs faithfulness", template="plotly_white")
    return fig

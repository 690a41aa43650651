"""The report's sections: one function per method, each calling only that method's public API.

Every function takes the demo's settings (`DemoConfig`) and a folder for side files, and returns a
`Section`: what was asked, what was found (two sentences with the numbers), the CLI commands that
rerun it alone with the same settings, plotly figures and a dict of every number shown. No method
logic lives here: the numbers are the API's results, picked and formatted.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mechscope.models.placement import Placement

EVOLUTION_MODEL = "code-2l"


@dataclass
class Section:
    """One section of the report (a failed stage has `error` set and no finding)."""

    key: str
    title: str
    question: str
    commands: list[str]
    finding: str = ""
    figures: list[Any] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)
    links: list[tuple[str, str]] = field(default_factory=list)  # (label, relative href)
    seconds: float = 0.0  # wall clock
    cpu_seconds: float = 0.0  # CPU time of this process (all threads): robust to other jobs
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class DemoConfig:
    """Settings of every stage; `DemoConfig.make(quick)` gives the full run or the CI one."""

    quick: bool = False
    # (1) patching: the docstring model, then both 2-layer families (GPT-2 and Llama)
    patch_models: tuple[str, ...] = ("code-attn4", "code-2l", "code-llama-2l")
    patch_n: int = 20
    patch_components: tuple[str, ...] = ("resid_pre", "z")
    # (2) circuits
    acdc_model: str = "code-attn4"
    acdc_n: int = 16
    acdc_tau: float = 0.01
    tracr_tasks: tuple[str, ...] = ("reverse", "proportion")
    tracr_taus: tuple[float, ...] = ()  # () = circuits.TAU_GRID
    # (3) bundled SAEs and (4) sensitive directions, on each model
    sae_models: tuple[str, ...] = ("code-2l", "code-llama-2l")
    directions_hook: str = "blocks.1.hook_resid_post"
    directions_sae: str = "blocks.1.hook_resid_post__local__l1-2"
    directions_families: tuple[str, ...] = ("isotropic", "cov_mixture", "real_mixture")
    directions_batches: int = 2
    directions_batch_size: int = 16
    directions_lengths: tuple[float, ...] | None = None  # None: the paper's sweep, scaled
    # (5) feature evolution
    evolution_coeff: float = 1.0
    evolution_batches: int = 16
    evolution_batch_size: int = 16
    # (6) stable regions
    regions_models: tuple[str, ...] = ("code-2l", "code-4l", "code-llama-2l")
    regions_revisions: tuple[str, ...] | None = None  # None: every bundled checkpoint
    regions_prompts: int = 64
    regions_steps: int = 31
    # (7) interaction basis
    basis_models: tuple[str, ...] = ("digits-mlp", "modadd-1l")
    seed: int = 0
    # where every stage loads its transformer (`mechscope demo --device/--device-map/--dtype`)
    placement: Placement = field(default_factory=Placement)

    @classmethod
    def make(cls, quick: bool, placement: Placement | None = None) -> DemoConfig:
        placement = placement or Placement()
        if not quick:
            return cls(placement=placement)
        return cls(
            placement=placement,
            quick=True,
            patch_n=4,
            acdc_n=4,
            tracr_taus=(1e-5, 1e-3, 0.1),
            directions_batches=1,
            directions_batch_size=4,
            directions_lengths=(0.5, 1.0, 2.0, 4.0),
            evolution_batches=2,
            evolution_batch_size=8,
            regions_revisions=("step-0", "main"),
            regions_prompts=8,
            regions_steps=11,
            basis_models=("digits-mlp",),
        )


Stage = Callable[[DemoConfig, Path], Section]


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def _label(labels: dict[str, list[str]], axes: tuple[str, ...], index: list[int]) -> str:
    return " ".join(
        f"{a}={labels[a][i] if a in labels else i}" for a, i in zip(axes, index, strict=True)
    )


def _placed(cfg: DemoConfig) -> str:
    """The placement options of a model-loading command (empty for the default placement)."""
    p = cfg.placement
    opts = [("--device", p.device), ("--device-map", p.device_map), ("--dtype", p.dtype)]
    return "".join(f" {flag} {shlex.quote(v)}" for flag, v in opts if v is not None)


def _unravel(flat: int, shape: tuple[int, ...]) -> list[int]:
    out = []
    for size in reversed(shape):
        out.append(flat % size)
        flat //= size
    return out[::-1]


# -- (1) activation patching ------------------------------------------------------------------
PATCHING = (
    "patching",
    "Activation patching on the docstring task",
    "Which activations carry the docstring answer, in code-attn4 and in the 2-layer GPT-2 and "
    "Llama models? Each residual-stream position and each head is patched one at a time, "
    "denoising (clean activations into the corrupted run: sufficient?) and noising (corrupted "
    "into the clean run: necessary?).",
)


def patching_commands(cfg: DemoConfig) -> list[str]:
    comps = " ".join(f"-c {c}" for c in cfg.patch_components)
    return [
        f"mechscope patch --model {m} --task docstring {comps} --direction {d} "
        f"--n {cfg.patch_n} --seed {cfg.seed} --out out/patch/{m}{_placed(cfg)}"
        for m in cfg.patch_models
        for d in ("denoising", "noising")
    ]


def _patch_model(cfg: DemoConfig, model: str, sec: Section) -> str:
    """Patch `model`'s components both ways into `sec` (numbers[model], figures); the finding."""
    from mechscope.patching import patch_task
    from mechscope.patching.plot import plot_result
    from mechscope.tasks import make_task

    bridge = cfg.placement.load(model)
    task = make_task("docstring", bridge.tokenizer, n=cfg.patch_n, seed=cfg.seed)
    nums: dict[str, Any] = {}
    parts = []
    for comp in cfg.patch_components:
        for direction in ("denoising", "noising"):
            r = patch_task(bridge, task, comp, direction)
            norm = r.normalised()
            # the most restoring (denoising) / most damaging (noising) single patch
            flat = int(norm.flatten().argmax() if direction == "denoising" else norm.argmin())
            where = _label(r.labels, r.axes, _unravel(flat, tuple(r.values.shape)))
            val = float(norm.flatten()[flat])
            nums[f"{comp}_{direction}"] = {
                "axes": list(r.axes),
                "clean": r.clean,
                "corrupted": r.corrupted,
                "metric": r.metric,
                "values": r.values.tolist(),
                "top": where,
                "top_normalised": val,
            }
            sec.figures.append(
                plot_result(r, title=f"{model}: {comp}, {direction} (0 = corrupted, 1 = clean)")
            )
        d, n = nums[f"{comp}_denoising"], nums[f"{comp}_noising"]
        parts.append(
            f"{comp}: denoising {d['top']} restores {d['top_normalised']:.2f}, "
            f"noising {n['top']} leaves {n['top_normalised']:.2f}"
        )
    sec.numbers[model] = nums
    first = nums[f"{cfg.patch_components[0]}_denoising"]
    return (
        f"{model} ({first['metric']}: clean {first['clean']:.2f}, corrupted "
        f"{first['corrupted']:.2f}): " + "; ".join(parts)
    )


def patching_section(cfg: DemoConfig, files: Path) -> Section:
    key, title, question = PATCHING
    sec = Section(key, title, question, patching_commands(cfg))
    found = [_patch_model(cfg, m, sec) for m in cfg.patch_models]
    sec.finding = (
        f"We patched {', '.join(cfg.patch_components)} of {', '.join(cfg.patch_models)} on "
        f"{cfg.patch_n} docstring prompts (0 = corrupted, 1 = clean). The strongest single "
        "patches: " + ". ".join(found) + "."
    )
    return sec


# -- (2) circuits -----------------------------------------------------------------------------
CIRCUITS = (
    "circuits",
    "ACDC circuit and tracr ground truth",
    "Which edges of code-attn4's computational graph does the docstring task need (ACDC, KL "
    "to the full model, resample ablation), how faithful is that circuit on held-out prompts, and "
    "does ACDC recover the known circuits of the tracr-compiled models?",
)


def _tracr_taus(cfg: DemoConfig) -> tuple[float, ...]:
    from mechscope.circuits import TAU_GRID

    return cfg.tracr_taus or tuple(TAU_GRID)


def circuits_commands(cfg: DemoConfig) -> list[str]:
    cmds = [
        f"mechscope acdc --model {cfg.acdc_model} --task docstring --tau {cfg.acdc_tau:g} "
        f"--n {cfg.acdc_n} --seed {cfg.seed} --test-seed {cfg.seed + 1} --out out/acdc-docstring"
        + _placed(cfg)
    ]
    taus = _tracr_taus(cfg)
    for name in cfg.tracr_tasks:  # a loop over the tau grid that pastes into a shell as it is
        cmds.append(
            f"for tau in {' '.join(f'{t:g}' for t in taus)}; do mechscope acdc --tracr {name} "
            f"--ablation zero --tau $tau --out out/acdc-{name}/tau-$tau/circuit; done"
        )
    return cmds


def circuits_section(cfg: DemoConfig, files: Path) -> Section:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from mechscope.circuits import acdc, acdc_task, roc
    from mechscope.circuits.render import write
    from mechscope.circuits.tracr import load_tracr
    from mechscope.tasks import make_split

    key, title, question = CIRCUITS
    sec = Section(key, title, question, circuits_commands(cfg))
    bridge = cfg.placement.load(cfg.acdc_model)
    search, test = make_split(
        "docstring", bridge.tokenizer, cfg.acdc_n, cfg.seed, test_seed=cfg.seed + 1
    )
    c = acdc_task(bridge, search, test, cfg.acdc_tau, "kl", "resample")
    graph = c.graph
    c.meta.update(model=cfg.acdc_model, seed=cfg.seed, test_seed=cfg.seed + 1)
    assert c.search is not None
    paths = write(c, files / "acdc-docstring")
    html = next(p for p in paths if p.suffix == ".html")
    sec.links.append(("the ACDC circuit drawing (SVG, edge list)", f"{files.name}/{html.name}"))
    sec.numbers["acdc"] = {
        "n_edges": c.n_edges,
        "n_graph_edges": len(graph.edges),
        "heads": c.heads,
        "edges": c.edges,
        "full": c.full,
        "value": c.value,
        "ablated": c.ablated,
        "faithfulness": _finite(c.faithfulness) if c.faithfulness is not None else None,
        "search_faithfulness": _finite(c.search.faithfulness),
        "logit_diff_faithfulness": _finite(c.test_metrics["logit_diff"].faithfulness),
        "tau": cfg.acdc_tau,
        "n_prompts": cfg.acdc_n,
        "n_test_prompts": len(test),
    }

    taus = _tracr_taus(cfg)
    fig = make_subplots(
        rows=1,
        cols=len(cfg.tracr_tasks) + 1,
        subplot_titles=["docstring, held-out prompts:<br>KL to the full model (lower is better)"]
        + [f"tracr {n}: edge ROC over tau" for n in cfg.tracr_tasks],
    )
    fig.add_trace(
        go.Bar(
            x=["full model", f"circuit ({c.n_edges} edges)", "all edges ablated"],
            y=[c.full, c.value, c.ablated],
            name="KL",
            showlegend=False,
        ),
        row=1,
        col=1,
    )
    tracr_parts = []
    for col, name in enumerate(cfg.tracr_tasks, start=2):
        tt = load_tracr(name)
        masks, sizes = [], []
        for tau in taus:
            ct = acdc(tt.model, tt.tokens, None, tau, tt.metric, "zero", tt.graph)
            masks.append(ct.present)
            sizes.append(ct.n_edges)
        r = roc(tt.graph, tt.truth, circuits=masks)
        exact = sum(bool((m == tt.truth).all()) for m in masks)
        sec.numbers[f"tracr_{name}"] = {
            "taus": list(taus),
            "n_edges": sizes,
            "n_true_edges": int(tt.truth.sum()),
            "n_graph_edges": len(tt.graph.edges),
            "exact_recoveries": exact,
            "edge_auc": r.edge_auc,
            "node_auc": r.node_auc,
        }
        pts = sorted(r.edge_points)
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in pts],
                y=[p[1] for p in pts],
                mode="lines+markers",
                name=f"{name} (AUC {r.edge_auc:.2f})",
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="false positive rate", range=[-0.02, 1.02], row=1, col=col)
        fig.update_yaxes(title_text="true positive rate", range=[-0.02, 1.02], row=1, col=col)
        tracr_parts.append(
            f"{name}: edge AUC {r.edge_auc:.2f}, node AUC {r.node_auc:.2f}, exactly the "
            f"{int(tt.truth.sum())} true edges at {exact} of {len(taus)} taus"
        )
    fig.update_layout(title="ACDC on code-attn4 (docstring) and on the tracr models")
    sec.figures.append(fig)
    nums = sec.numbers["acdc"]
    faith_s, search_s, ld_s = (
        "undefined" if nums[k] is None else f"{nums[k]:.2f}"
        for k in ("faithfulness", "search_faithfulness", "logit_diff_faithfulness")
    )
    sec.finding = (
        f"At tau {cfg.acdc_tau:g} on {cfg.acdc_n} docstring prompts ACDC keeps {c.n_edges} of "
        f"{len(graph.edges)} edges touching {len(c.heads)} heads. On {len(test)} held-out "
        f"prompts its KL is {c.value:.3f} against {c.ablated:.3f} fully ablated (faithfulness "
        f"{faith_s}; {search_s} on the prompts it was found on; {ld_s} on logit difference)."
        f" On the tracr models (zero ablation, {len(taus)} taus): " + "; ".join(tracr_parts) + "."
    )
    return sec


# -- (3) bundled SAEs -------------------------------------------------------------------------
SAES = (
    "saes",
    "Bundled sparse autoencoders",
    "How sparse and how faithful are the SAEs bundled for code-2l (local and end-to-end "
    "training, several sparsity coefficients) and for code-llama-2l (local), on held-out tokens "
    "with SAELens's definitions?",
)


def saes_commands(cfg: DemoConfig) -> list[str]:
    return [f"mechscope sae list --model {m}" for m in cfg.sae_models]


def _span(xs: list[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(min(xs))}-{fmt.format(max(xs))}" if xs else "-"


def _sae_model(model: str, sec: Section) -> str:
    """One model's bundled SAEs into `sec` (numbers[model], Pareto figure); the finding."""
    from mechscope.sae import SAEEval, pareto_figure
    from mechscope.sae.bundled import list_bundled

    entries = list_bundled(model)
    if not entries:
        raise RuntimeError(f"no bundled SAEs for {model} (mechscope sae build-bundled)")
    evals = [SAEEval(**e["evaluation"]) for e in entries]
    groups = [
        f"{e['training']['hook_name'].split('.hook')[0]} {e['training']['loss']}" for e in entries
    ]
    sec.figures.append(pareto_figure(evals, groups).update_layout(title=f"{model}: bundled SAEs"))
    sec.numbers[model] = {e.name: e.to_dict() for e in evals}
    local = [e for e, x in zip(evals, entries, strict=True) if x["training"]["loss"] == "local"]
    e2e = [e for e, x in zip(evals, entries, strict=True) if x["training"]["loss"] != "local"]
    found = (
        f"{model}: {len(evals)} SAEs ({len(local)} local, {len(e2e)} end-to-end) of the residual "
        f"stream, evaluated on {evals[0].n_tokens:,} held-out tokens. Local SAEs reach explained "
        f"variance {_span([e.explained_variance for e in local])} and CE recovered "
        f"{_span([e.ce_recovered for e in local], '{:.3f}')} at L0 "
        f"{_span([e.l0 for e in local], '{:.0f}')}"
    )
    if e2e:
        found += (
            f"; e2e SAEs keep CE recovered {_span([e.ce_recovered for e in e2e], '{:.3f}')} at "
            f"L0 {_span([e.l0 for e in e2e], '{:.0f}')} while explaining only "
            f"{_span([e.explained_variance for e in e2e])} of the variance"
        )
    return found + "."


def saes_section(cfg: DemoConfig, files: Path) -> Section:
    key, title, question = SAES
    sec = Section(key, title, question, saes_commands(cfg))
    sec.finding = " ".join(_sae_model(m, sec) for m in cfg.sae_models)
    return sec


# -- (4) sensitive directions ------------------------------------------------------------------
DIRECTIONS = (
    "directions",
    "Sensitive directions",
    "How much does moving the residual stream of code-2l and code-llama-2l along an SAE's "
    "reconstruction error change the next-token distribution, compared with the isotropic "
    "baseline and the improved (covariance-random and real-activation mixture) baselines of the "
    "same length?",
)


def directions_commands(cfg: DemoConfig) -> list[str]:
    fams = " ".join(f"-f {f}" for f in cfg.directions_families)
    lens = ""
    if cfg.directions_lengths is not None:
        lens = " --lengths " + ",".join(f"{x:g}" for x in cfg.directions_lengths)
    return [
        f"mechscope directions sweep --model {m} --hook {cfg.directions_hook} {fams} "
        f"--sae {cfg.directions_sae} --batches {cfg.directions_batches} "
        f"--batch-size {cfg.directions_batch_size}{lens} --seed {cfg.seed} "
        f"--out out/directions/{m}{_placed(cfg)}"
        for m in cfg.sae_models
    ]


def _directions_model(cfg: DemoConfig, model: str, sec: Section) -> str:
    """One model's sweep into `sec` (numbers[model], curves figure); the finding."""
    from mechscope.directions import DirectionsConfig, sweep_directions
    from mechscope.directions.plot import curves_figure
    from mechscope.models.lean import as_lean
    from mechscope.sae.bundled import load_bundled

    dcfg = DirectionsConfig(
        n_batches=cfg.directions_batches,
        batch_size=cfg.directions_batch_size,
        lengths=cfg.directions_lengths,
        seed=cfg.seed,
        progress=False,
    )
    lean = as_lean(cfg.placement.load(model))
    sae = load_bundled(model, cfg.directions_sae, lean.device)
    families = [*cfg.directions_families, "sae_error"]
    res = sweep_directions(
        lean,
        cfg.directions_hook,
        families,
        sae=sae,
        sae_name=cfg.directions_sae,
        cfg=dcfg,
    )
    sec.figures.append(curves_figure(res).update_layout(title=f"{model}: {cfg.directions_hook}"))
    eps = float(res.families["sae_error"]["error_norm"])
    at_eps = {f: res.kl_at(f, eps) for f in families}
    sec.numbers[model] = {
        "lengths": res.lengths,
        "curves": {f: res.curve(f) for f in families},
        "sae": cfg.directions_sae,
        "sae_l0": res.families["sae_error"].get("l0"),
        "error_norm": eps,
        "kl_at_error_norm": at_eps,
    }
    ratios = ", ".join(
        f"{at_eps['sae_error'] / at_eps[f]:.2f}x {f}"
        for f in cfg.directions_families
        if at_eps[f] > 0
    )
    return (
        f"{model}: at the SAE's mean error length L = {eps:.2f}, the error direction's mean KL "
        f"is {at_eps['sae_error']:.4f}: {ratios}"
    )


def directions_section(cfg: DemoConfig, files: Path) -> Section:
    key, title, question = DIRECTIONS
    sec = Section(key, title, question, directions_commands(cfg))
    found = [_directions_model(cfg, m, sec) for m in cfg.sae_models]
    n_lengths = len(sec.numbers[cfg.sae_models[0]]["lengths"])
    sec.finding = (
        f"Perturbations x + L d at {cfg.directions_hook} ({n_lengths} lengths, "
        f"{cfg.directions_batches} x {cfg.directions_batch_size} held-out sequences), for the "
        f"error of each model's bundled SAE {cfg.directions_sae} and the baselines (read off the "
        "curves, linear between lengths). " + ". ".join(found) + "."
    )
    return sec


# -- (5) feature evolution ---------------------------------------------------------------------
EVOLUTION = (
    "evolution",
    "Feature evolution across layers",
    "How do the SAE features of code-2l's layer 0 relate to those of layer 1: which pass "
    "through, disappear, appear or combine (AND / OR), and what communities does the feature "
    "graph form?",
)


def evolution_commands(cfg: DemoConfig) -> list[str]:
    return [
        f"mechscope evolution run --model {EVOLUTION_MODEL} --coeff {cfg.evolution_coeff:g} "
        f"--batches {cfg.evolution_batches} --batch-size {cfg.evolution_batch_size} "
        f"--out out/evolution --html out/evolution.html{_placed(cfg)}"
    ]


def evolution_section(cfg: DemoConfig, files: Path) -> Section:
    from mechscope.data.batches import eval_batches
    from mechscope.evolution import EvolutionConfig, compute_evolution
    from mechscope.evolution.classify import sankey_figure
    from mechscope.evolution.page import write_page
    from mechscope.models.lean import as_lean
    from mechscope.sae.bundled import load_bundled

    key, title, question = EVOLUTION
    sec = Section(key, title, question, evolution_commands(cfg))
    bridge = cfg.placement.load(EVOLUTION_MODEL)
    home = as_lean(bridge).device  # the SAEs (and the statistics) live with the model
    n_layers = int(bridge.cfg.n_layers)
    names = [
        f"blocks.{layer}.hook_resid_post__local__l1-{cfg.evolution_coeff:g}"
        for layer in range(n_layers)
    ]
    saes = [load_bundled(EVOLUTION_MODEL, n, home) for n in names]
    tokens = eval_batches(bridge, cfg.evolution_batches, batch_size=cfg.evolution_batch_size)
    result = compute_evolution(
        bridge, saes, tokens, EvolutionConfig(), names=names, model_name=EVOLUTION_MODEL
    )
    page = write_page(result, files / "evolution.html")
    sec.links.append(("the interactive feature-evolution page", f"{files.name}/{page.name}"))
    sec.figures.append(
        sankey_figure([p.classification for p in result.pairs], result.sizes, title=EVOLUTION_MODEL)
    )
    counts = result.counts()
    stats = result.community_stats()
    sec.numbers = {"n_tokens": result.n_tokens, "counts": counts, "communities": stats}
    c0, c1 = counts[0], counts[-1]
    algo = "louvain" if "louvain" in stats else next(iter(stats), None)
    comm = (
        f"; Louvain finds {stats[algo]['n_communities']} communities, "
        f"{stats[algo]['multi_layer']} spanning both layers"
        if algo is not None
        else ""
    )
    sec.finding = (
        f"Bundled local SAEs (lambda {cfg.evolution_coeff:g}) at every layer of {EVOLUTION_MODEL}, "
        f"related by their activations on {result.n_tokens:,} held-out tokens. Of layer 0's "
        f"{c0['features']} features ({c0['dead']} dead), {c0['pass_through']} pass through "
        f"(Pearson r >= 0.95) and {c0['disappearing']} disappear; layer {c1['layer']} has "
        f"{c1['appearing']} appearing features, {c1['and']} AND and {c1['or']} OR gates{comm}."
    )
    return sec


# -- (6) stable regions ------------------------------------------------------------------------
REGIONS = (
    "regions",
    "Stable regions over checkpoints and sizes",
    "Does the output change sharply at region boundaries when a residual activation is "
    "interpolated between two prompts', and does that sharpness grow with training and model "
    "size, in the GPT-2 and the Llama family (random-initialisation and isotropic controls "
    "alongside)?",
)


def regions_commands(cfg: DemoConfig) -> list[str]:
    ms = " ".join(f"-m {m}" for m in cfg.regions_models)
    rs = "".join(f" -r {r}" for r in cfg.regions_revisions or ())
    return [
        f"mechscope regions sweep {ms}{rs} --n-prompts {cfg.regions_prompts} "
        f"--n-steps {cfg.regions_steps} --seed {cfg.seed} --out out/regions{_placed(cfg)}"
    ]


def regions_section(cfg: DemoConfig, files: Path) -> Section:
    from mechscope.regions import RegionConfig, sweep
    from mechscope.regions.plot import sweep_figure

    key, title, question = REGIONS
    sec = Section(key, title, question, regions_commands(cfg))
    rcfg = RegionConfig(n_prompts=cfg.regions_prompts, n_steps=cfg.regions_steps, seed=cfg.seed)
    revs = list(cfg.regions_revisions) if cfg.regions_revisions else None
    result = sweep(list(cfg.regions_models), revs, rcfg, progress=False, placement=cfg.placement)
    sec.figures.append(sweep_figure(result))
    table = result.table()
    sec.numbers = {"rows": table}
    parts = []
    for m in result.models():
        rows = result.of(m)
        first, last = rows[0], rows[-1]
        parts.append(
            f"{m} {first.sharpness[1]:.2f} at {first.revision or 'main'} -> "
            f"{last.sharpness[1]:.2f} at {last.revision or 'main'} (isotropic "
            f"{last.iso_sharpness[1]:.2f})"
        )
    n_pairs = result.rows[0].n_pairs if result.rows else 0
    sec.finding = (
        f"Linear paths between {n_pairs} pairs of held-out prompts' activations after block 0, "
        f"{cfg.regions_steps} steps each, at {len(result.rows)} model checkpoints (sharpness s: 1 "
        f"= a straight line, {cfg.regions_steps - 1} = a jump inside one step). Median s: "
        + "; ".join(parts)
        + "."
    )
    return sec


# -- (7) interaction basis ---------------------------------------------------------------------
BASIS = (
    "basis",
    "Degeneracy and the interaction basis",
    "How many directions of each layer of the bundled digits MLP and modular-addition "
    "transformer actually matter (activation / gradient Gram ranks), and are the interactions "
    "between layers sparser in the interaction basis than in the PCA or neuron basis?",
)


def basis_commands(cfg: DemoConfig) -> list[str]:
    return [f"mechscope basis analyse {m} --out out/basis" for m in cfg.basis_models]


def basis_section(cfg: DemoConfig, files: Path) -> Section:
    from mechscope.basis import analyse, bundled_data, load_bundled

    key, title, question = BASIS
    sec = Section(key, title, question, basis_commands(cfg))
    parts = []
    for name in cfg.basis_models:
        x, _ = bundled_data(name, "train")
        result = analyse(load_bundled(name), x, meta={"model": name, "split": "train"})
        sec.figures.append(result.spectra_figure().update_layout(title=f"{name}: spectra"))
        sec.figures.append(
            result.sparsity_figure().update_layout(title=f"{name}: edge-strength sparsity")
        )
        s = result.summary()
        sec.numbers[name] = s
        dims = ", ".join(
            f"{row['layer']} {row.get('width', '?')}->{row.get('lib_dim', '?')}"
            for row in s["layers"]
            if "width" in row
        )
        edges = ", ".join(
            f"{k.removesuffix('_edges_99')} {v}"
            for k, v in s["pairs"][0].items()
            if k.endswith("_edges_99")
        )
        parts.append(
            f"{name}: width -> interaction-basis dimensions {dims}; edges holding 99% of the "
            f"strength of {s['pairs'][0]['pair']}: {edges}"
        )
    sec.finding = (
        f"Degeneracy and interaction / PCA / neuron bases of {', '.join(cfg.basis_models)} on "
        f"their training inputs. " + "; ".join(parts) + "."
    )
    return sec


STAGES: dict[str, tuple[tuple[str, str, str], Callable[[DemoConfig], list[str]], Stage]] = {
    "patching": (PATCHING, patching_commands, patching_section),
    "circuits": (CIRCUITS, circuits_commands, circuits_section),
    "saes": (SAES, saes_commands, saes_section),
    "directions": (DIRECTIONS, directions_commands, directions_section),
    "evolution": (EVOLUTION, evolution_commands, evolution_section),
    "regions": (REGIONS, regions_commands, regions_section),
    "basis": (BASIS, basis_commands, basis_section),
}

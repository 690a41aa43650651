"""The paper's comparisons (Lee & Heimersheim 2024), each one call.

    sweep_directions    KL against length L for direction families at one hook (the curves)
    error_vs_baselines  epsilon-substitution: KL of SAE(x) vs x + eps * (isotropic, cov-mixture,
                        real-mixture direction), eps = |SAE(x) - x| per token (finding a)
    features_by_l0      SAE feature directions of SAEs of different L0 at equal L (finding b)
    e2e_vs_local        e2e vs local SAE feature directions at equal L (finding c)
    paper_comparisons   all of the above on a zoo model's bundled SAEs

A model is a zoo name, a local HF folder or a hub name (`load_model`), or an already loaded
bridge / LeanModel. Token batches default to held-out batches of the corpus (a zoo model's own
training mixture). Statistics (mean, covariance, median norm, real-activation pool, SAE alive
latents and L0) come from the same batches, BOS excluded.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress
from torch import Tensor

from mechscope.directions.families import (
    BASELINES,
    BatchContext,
    directions,
    feature_pool,
    get_family,
)
from mechscope.directions.perturb import (
    CleanRun,
    check_hook,
    check_lengths,
    check_sae,
    clean_run,
    counted_positions,
    default_lengths,
    perturbed_kl,
    perturbed_positions,
)
from mechscope.directions.result import KLCurves, SubstitutionResult, summarise
from mechscope.directions.stats import (
    COV_JITTER,
    ActivationStats,
    SAEActivity,
    activation_stats,
    sae_activity,
)
from mechscope.errors import DirectionsError
from mechscope.models.lean import LeanModel, as_lean
from mechscope.progress import progress_bar
from mechscope.sae.model import SparseAutoencoder

FEATURE_POOLS = ("active", "inactive", "dead")


@dataclass(frozen=True)
class DirectionsConfig:
    """Settings shared by the experiments.

    n_batches x batch_size: held-out token batches (when no tokens are given); lengths: the L
    sweep (None: the paper's, scaled by the hook's median norm / 121); n_draws: directions per
    token and family (each a fresh draw, fixed across L); position: perturb only this position
    (None: every non-special one) and, with later_positions, count the KL there and after it
    (else only there); include_special: also perturb and count BOS positions; seed: every draw;
    max_rows: sequences per perturbed forward; pool_size: real activations kept for the "real"
    families; cov_jitter, cov_jitter_relative: the jitter on the covariance of the "cov" families
    (default 1e-4 x the mean variance; relative False: absolute, the paper's 0.01); progress:
    rich progress bars.
    """

    n_batches: int = 4
    batch_size: int = 16
    lengths: tuple[float, ...] | None = None
    n_draws: int = 1
    position: int | None = None
    later_positions: bool = True
    include_special: bool = False
    seed: int = 0
    max_rows: int = 32
    pool_size: int = 8192
    cov_jitter: float = COV_JITTER
    cov_jitter_relative: bool = True
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lengths"] = None if self.lengths is None else list(self.lengths)
        return d


@dataclass
class Prepared:
    """A model's clean runs at one hook and the activation statistics there."""

    lean: LeanModel
    model_name: str
    hook_name: str
    runs: list[CleanRun]
    stats: ActivationStats
    cfg: DirectionsConfig

    def activity(self, sae: SparseAutoencoder) -> SAEActivity:
        check_sae(self.lean, sae, self.hook_name)
        return sae_activity(sae, [r.x for r in self.runs], [r.keep for r in self.runs])

    def lengths(self) -> list[float]:
        if self.cfg.lengths is not None:
            return check_lengths(self.cfg.lengths).tolist()
        return default_lengths(self.stats.median_norm)

    def meta(self) -> dict[str, Any]:
        n_counted = sum(int(self.counted(r).sum()) for r in self.runs)
        return {
            "config": self.cfg.to_dict(),
            "n_sequences": sum(r.tokens.shape[0] for r in self.runs),
            "seq_len": int(self.runs[0].tokens.shape[1]),
            "n_counted_tokens": n_counted,
            "median_norm": self.stats.median_norm,
            "lengths_rule": "given"
            if self.cfg.lengths is not None
            else "paper sweep x median_norm / 121",
            "kl": "KL(P_orig || P_perturbed) per token, positions except the last, BOS excluded"
            if not self.cfg.include_special
            else "KL(P_orig || P_perturbed) per token, positions except the last",
        }

    def counted(self, run: CleanRun) -> Tensor:
        c = self.cfg
        return counted_positions(run, c.position, c.later_positions, c.include_special)

    def where(self, run: CleanRun) -> Tensor:
        return perturbed_positions(run, self.cfg.position, self.cfg.include_special)


def _model(model: Any) -> tuple[LeanModel, str]:
    """The loaded model as a LeanModel, and its short name (a zoo model's: "code-2l")."""
    if isinstance(model, str | Path):
        raise DirectionsError(
            f"pass the loaded model (mechscope.load_model({str(model)!r})), not its name"
        )
    lean = as_lean(model)
    return lean, Path(str(getattr(lean.cfg, "model_name", "model"))).name


def default_tokens(lean: LeanModel, model_name: str, cfg: DirectionsConfig) -> list[Tensor]:
    """Held-out token batches [batch_size, n_ctx]; a zoo model's own training mixture."""
    from mechscope.data.batches import eval_batches
    from mechscope.zoo.specs import SPECS

    mixture = dict(SPECS[model_name].mixture) if model_name in SPECS else None
    return eval_batches(lean, cfg.n_batches, cfg.batch_size, mixture=mixture)


def prepare(
    model: Any,
    hook_name: str,
    tokens: Sequence[Tensor] | None = None,
    cfg: DirectionsConfig | None = None,
) -> Prepared:
    """Clean runs of the token batches at `hook_name` and the statistics of its activations."""
    cfg = cfg or DirectionsConfig()
    lean, name = _model(model)
    check_hook(lean, hook_name)
    batches = list(tokens) if tokens is not None else default_tokens(lean, name, cfg)
    if not batches:
        raise DirectionsError("no token batches; pass tokens=[tensor [batch, pos], ...]")
    runs = [clean_run(lean, t, hook_name) for t in batches]
    stats = activation_stats(
        [r.x for r in runs],
        [r.keep for r in runs],
        hook_name,
        cfg.pool_size,
        cfg.seed,
        jitter=cfg.cov_jitter,
        relative_jitter=cfg.cov_jitter_relative,
    )
    return Prepared(lean, name, hook_name, runs, stats, cfg)


def _generator(seed: int, *parts: object) -> torch.Generator:
    """A generator seeded by (seed, parts): the same draws for the same family, batch and draw."""
    key = "/".join(str(p) for p in parts).encode()
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key))


def family_kl(
    prep: Prepared,
    family: str,
    lengths: Sequence[float],
    *,
    sae: SparseAutoencoder | None = None,
    activity: SAEActivity | None = None,
    scale: str = "absolute",
    label: str | None = None,
    bar: Progress | None = None,
    task: Any = None,
) -> Tensor:
    """Per-token KL [m, n_counted] of one family over every batch and draw (lengths [m]).

    scale: "absolute" (x + L d), "relative" (x + L |x| d) or "error" (x + L |SAE(x) - x| d).
    """
    fam = get_family(family)
    if (fam.needs_sae or scale == "error") and sae is None:
        raise DirectionsError(f"family {family!r} with scale {scale!r} needs an SAE")
    if scale not in ("absolute", "relative", "error"):
        raise DirectionsError(f"scale must be absolute, relative or error, got {scale!r}")
    cfg = prep.cfg
    chunks: list[Tensor] = []
    for b, run in enumerate(prep.runs):
        factor = None
        if scale == "relative":
            factor = run.x.norm(dim=-1)
        elif scale == "error":
            assert sae is not None
            with torch.no_grad():
                factor = (sae(run.x).to(run.x.dtype) - run.x).norm(dim=-1)
        counted = prep.counted(run)
        for draw in range(cfg.n_draws):
            ctx = BatchContext(
                x=run.x,
                keep=run.keep,
                generator=_generator(cfg.seed, label or family, b, draw),
                stats=prep.stats,
                sae=sae,
                activity=activity,
            )
            dirs = directions(family, ctx)
            kl = perturbed_kl(
                prep.lean,
                run,
                dirs[None],
                lengths,
                scale=factor,
                where=prep.where(run),
                max_rows=cfg.max_rows,
                on_chunk=(lambda k: bar.advance(task, k)) if bar is not None else None,
            )
            chunks.append(kl[0][:, counted.cpu()])  # [m, n_counted of this batch]
    return torch.cat(chunks, dim=1)


def _rows(label: str, lengths: Sequence[float], kl: Tensor) -> list[dict[str, Any]]:
    return [
        {"family": label, "length": float(x), **summarise(kl[j])} for j, x in enumerate(lengths)
    ]


def _n_variants(prep: Prepared, n_families: int, n_lengths: int) -> int:
    return n_families * n_lengths * prep.cfg.n_draws * len(prep.runs)


def sweep_directions(
    model: Any,
    hook_name: str,
    families: Sequence[str] = ("isotropic", "cov_mixture", "real_mixture", "toward_cov"),
    *,
    sae: SparseAutoencoder | None = None,
    sae_name: str = "",
    tokens: Sequence[Tensor] | None = None,
    cfg: DirectionsConfig | None = None,
    prep: Prepared | None = None,
) -> KLCurves:
    """KL against length L (absolute) for each family at `hook_name`; families needing an SAE
    (sae_error, feature_*) use `sae`."""
    for f in families:
        if get_family(f).needs_sae and sae is None:
            raise DirectionsError(f"family {f!r} needs an SAE; pass sae=...")
    if prep is None:
        lean, _ = _model(model)
        if sae is not None:
            check_sae(lean, sae, hook_name)
        prep = prepare(lean, hook_name, tokens, cfg)
    activity = prep.activity(sae) if sae is not None else None
    lengths = prep.lengths()
    rows: list[dict[str, Any]] = []
    info: dict[str, dict[str, Any]] = {}
    with progress_bar(prep.cfg.progress) as bar:
        task = bar.add_task("directions", total=_n_variants(prep, len(families), len(lengths)))
        for f in families:
            fam = get_family(f)
            use = sae if fam.needs_sae else None
            kl = family_kl(prep, f, lengths, sae=use, activity=activity, bar=bar, task=task)
            rows += _rows(f, lengths, kl)
            info[f] = {"family": f, "description": fam.description}
            if use is not None and activity is not None:
                info[f].update(sae=sae_name, l0=activity.l0, error_norm=activity.error_norm)
    return KLCurves(prep.model_name, hook_name, lengths, rows, info, prep.meta())


def _hook_of(name: str, sae: SparseAutoencoder) -> str:
    if not sae.cfg.hook_name:
        raise DirectionsError(
            f"SAE {name!r} does not name its hook (cfg.hook_name); set sae.cfg.hook_name or use "
            "sweep_directions(model, hook_name, sae=...)"
        )
    return sae.cfg.hook_name


def _loss(sae: SparseAutoencoder) -> str:
    """The SAE's training loss from its SAELens metadata (mechscope's training config)."""
    training = sae.cfg.extra.get("training") or {}
    return str(training.get("loss", "")) if isinstance(training, dict) else ""


def error_vs_baselines(
    model: Any,
    saes: Mapping[str, SparseAutoencoder],
    *,
    baselines: Sequence[str] = BASELINES,
    tokens: Sequence[Tensor] | None = None,
    cfg: DirectionsConfig | None = None,
    losses: Mapping[str, str] | None = None,
) -> SubstitutionResult:
    """Epsilon-substitution (finding a): per SAE, at its own hook, KL of SAE(x) and of
    x + eps * d for each baseline family, with eps = |SAE(x) - x| per token.

    losses: SAE name -> training loss label ("local", "e2e"), for the table.
    """
    if not saes:
        raise DirectionsError("no SAEs given; pass {name: sae}")
    cfg = cfg or DirectionsConfig()
    lean, name = _model(model)
    by_hook: dict[str, list[str]] = {}
    for n, s in saes.items():
        by_hook.setdefault(_hook_of(n, s), []).append(n)
    for s in saes.values():
        check_sae(lean, s, s.cfg.hook_name)
    rows: list[dict[str, Any]] = []
    preps = {h: prepare(lean, h, tokens, cfg) for h in by_hook}
    for p in preps.values():
        p.model_name = name
    total = sum(_n_variants(preps[h], 1 + len(baselines), 1) * len(ns) for h, ns in by_hook.items())
    with progress_bar(cfg.progress) as bar:
        task = bar.add_task("eps-substitution", total=total)
        for hook, names in by_hook.items():
            prep = preps[hook]
            for n in names:
                sae = saes[n]
                act = prep.activity(sae)
                eps_rel = []
                for run in prep.runs:
                    with torch.no_grad():
                        err = (sae(run.x).to(run.x.dtype) - run.x).norm(dim=-1)
                    c = prep.counted(run)
                    eps_rel.append((err / run.x.norm(dim=-1).clamp_min(1e-12))[c])
                common = {
                    "sae": n,
                    "hook_name": hook,
                    "loss": (losses or {}).get(n, _loss(sae)),
                    "l0": act.l0,
                    "eps_mean": act.error_norm,
                    "eps_rel": float(torch.cat(eps_rel).mean()),
                }
                for fam, label in [("sae_error", "sae"), *((b, b) for b in baselines)]:
                    kl = family_kl(
                        prep, fam, [1.0], sae=sae, activity=act, scale="error",
                        label=f"{n}/{label}", bar=bar, task=task,
                    )  # fmt: skip
                    rows.append({**common, "family": label, **summarise(kl[0])})
    meta = next(iter(preps.values())).meta()
    meta["hooks"] = {h: p.stats.median_norm for h, p in preps.items()}
    meta["eps"] = "|SAE(x) - x| per token; SAE(x) = x + eps * (SAE(x) - x) / eps"
    return SubstitutionResult(name, rows, meta)


def compare_features(
    model: Any,
    saes: Mapping[str, SparseAutoencoder],
    *,
    pools: Sequence[str] = FEATURE_POOLS,
    baselines: Sequence[str] = ("isotropic", "cov_mixture"),
    tokens: Sequence[Tensor] | None = None,
    cfg: DirectionsConfig | None = None,
    losses: Mapping[str, str] | None = None,
    prep: Prepared | None = None,
) -> KLCurves:
    """KL against L for feature directions of several SAEs at one hook (findings b and c), next
    to baseline families. Family labels: "<sae> / <pool>"; pools a SAE lacks (e.g. no dead
    latents) are skipped and listed in meta["skipped"]."""
    if not saes:
        raise DirectionsError("no SAEs given; pass {name: sae}")
    hooks = {_hook_of(n, s) for n, s in saes.items()}
    if len(hooks) != 1:
        raise DirectionsError(
            f"feature comparisons need SAEs at one hook (equal L means the same space); got "
            f"{sorted(hooks)}. Call once per hook."
        )
    for p in pools:
        if p not in FEATURE_POOLS:
            raise DirectionsError(f"unknown feature pool {p!r}; use one of {FEATURE_POOLS}")
    (hook,) = hooks
    if prep is not None and prep.hook_name != hook:
        raise DirectionsError(f"prep is for {prep.hook_name!r}, the SAEs read {hook!r}")
    if prep is None:
        lean, _ = _model(model)
        for s in saes.values():
            check_sae(lean, s, hook)
        prep = prepare(lean, hook, tokens, cfg)
    lengths = prep.lengths()
    activity = {n: prep.activity(s) for n, s in saes.items()}
    jobs: list[tuple[str, str, str | None]] = []  # (label, family, sae name)
    skipped: list[str] = []
    for n, s in saes.items():
        for p in pools:
            sizes = [
                feature_pool(
                    BatchContext(r.x, r.keep, torch.Generator(), sae=s, activity=activity[n]), p
                ).numel()
                for r in prep.runs
            ]
            if min(sizes) == 0:
                skipped.append(f"{n} / {p}")
            else:
                jobs.append((f"{n} / {p}", f"feature_{p}", n))
    jobs += [(b, b, None) for b in baselines]
    rows: list[dict[str, Any]] = []
    info: dict[str, dict[str, Any]] = {}
    with progress_bar(prep.cfg.progress) as bar:
        task = bar.add_task("features", total=_n_variants(prep, len(jobs), len(lengths)))
        for label, fam, sae_name in jobs:
            sae = saes[sae_name] if sae_name is not None else None
            act = activity[sae_name] if sae_name is not None else None
            kl = family_kl(
                prep, fam, lengths, sae=sae, activity=act, label=label, bar=bar, task=task
            )
            rows += _rows(label, lengths, kl)
            info[label] = {"family": fam}
            if sae_name is not None and act is not None and sae is not None:
                info[label].update(
                    sae=sae_name,
                    loss=(losses or {}).get(sae_name, _loss(sae)),
                    l0=act.l0,
                    n_alive=act.n_alive,
                    d_sae=sae.d_sae,
                    pool=fam.removeprefix("feature_"),
                )
    meta = prep.meta()
    meta["skipped"] = skipped
    return KLCurves(prep.model_name, hook, lengths, rows, info, meta)


def features_by_l0(model: Any, saes: Mapping[str, SparseAutoencoder], **kwargs: Any) -> KLCurves:
    """Finding (b): feature directions of SAEs of different L0 at one hook, at equal L."""
    return compare_features(model, saes, **kwargs)


def e2e_vs_local(
    model: Any,
    e2e: Mapping[str, SparseAutoencoder],
    local: Mapping[str, SparseAutoencoder],
    **kwargs: Any,
) -> KLCurves:
    """Finding (c): feature directions of e2e and local SAEs at one hook, at equal L."""
    losses = {**dict.fromkeys(local, "local"), **dict.fromkeys(e2e, "e2e")}
    return compare_features(model, {**local, **e2e}, losses=losses, **kwargs)


def feature_summary(result: KLCurves, length: float, pool: str = "active") -> list[dict[str, Any]]:
    """Per SAE (one pool): loss, L0 and mean KL at `length`, sorted by L0 (finding b, c)."""
    out = []
    for label, info in result.families.items():
        if info.get("pool") == pool:
            kl = result.kl_at(label, length)
            median = result.kl_at(label, length, "kl_median")
            row = {"sae": info["sae"], "loss": info.get("loss", ""), "l0": info["l0"]}
            out.append({**row, "kl_mean": kl, "kl_median": median})
    return sorted(out, key=lambda r: r["l0"])


# -- the bundled SAEs ------------------------------------------------------------------------


def bundled_saes(
    model: str = "code-2l",
    hook_name: str | None = None,
    loss: str | None = None,
    device: Any = None,
) -> dict[str, SparseAutoencoder]:
    """The bundled SAEs of a zoo model (by run name), optionally of one hook and loss, on
    `device` (default CPU; pass the model's)."""
    from mechscope.sae.bundled import list_bundled, load_bundled

    out = {}
    for entry in list_bundled(model):
        t = entry["training"]
        if (hook_name is None or t["hook_name"] == hook_name) and (
            loss is None or t["loss"] == loss
        ):
            out[entry["name"]] = load_bundled(model, entry["name"], device)
    if not out:
        raise DirectionsError(
            f"no bundled SAEs for {model!r} (hook {hook_name}, loss {loss}); see "
            "`mechscope sae list` or build them with `mechscope sae build-bundled`"
        )
    return out


@dataclass
class PaperResults:
    """The comparisons on one model's bundled SAEs.

    substitution: finding (a), every SAE at its own hook; features: per hook, the feature
    directions of every SAE there (local and e2e: findings b and c); baselines: per hook, KL
    against L for every baseline family and one local SAE's error direction.
    """

    substitution: SubstitutionResult
    features: dict[str, KLCurves]
    baselines: dict[str, KLCurves]

    def save(self, folder: str | Path) -> list[Path]:
        folder = Path(folder)
        paths = [self.substitution.save(folder / "substitution.json")]
        for hook, r in self.features.items():
            paths.append(r.save(folder / f"features_{hook}.json"))
        for hook, r in self.baselines.items():
            paths.append(r.save(folder / f"baselines_{hook}.json"))
        return paths

    @classmethod
    def load(cls, folder: str | Path) -> PaperResults:
        folder = Path(folder)
        prefix: dict[str, dict[str, KLCurves]] = {"features_": {}, "baselines_": {}}
        for f in sorted(folder.glob("*_blocks.*.json")):
            for p, into in prefix.items():
                if f.name.startswith(p):
                    into[f.stem[len(p) :]] = KLCurves.load(f)
        sub = SubstitutionResult.load(folder / "substitution.json")
        return cls(sub, prefix["features_"], prefix["baselines_"])


#: the families of the per-hook baseline curves in `paper_comparisons`
CURVE_FAMILIES = (
    "isotropic",
    "cov_mixture",
    "real_mixture",
    "toward_random",
    "toward_cov",
    "toward_real",
    "sae_error",
)


def paper_comparisons(
    model: Any,
    cfg: DirectionsConfig | None = None,
    pools: Sequence[str] = ("active", "inactive"),
    tokens: Sequence[Tensor] | None = None,
) -> PaperResults:
    """Findings (a), (b), (c) on a zoo model's bundled SAEs, on one set of token batches.

    model: the loaded zoo model (`mechscope.load_model("code-2l")`); its SAEs load on its device.

    (a) `error_vs_baselines` on every SAE; (b, c) `compare_features` on every hook's SAEs (local
    of several L0, and e2e where bundled); and per hook `sweep_directions` over CURVE_FAMILIES,
    the SAE error taken from the hook's middle local SAE.
    """
    cfg = cfg or DirectionsConfig()
    lean, name = _model(model)
    saes = bundled_saes(name, device=lean.device)
    losses = {n: _loss(s) for n, s in saes.items()}
    batches = list(tokens) if tokens is not None else default_tokens(lean, name, cfg)
    sub = error_vs_baselines(lean, saes, tokens=batches, cfg=cfg, losses=losses)
    features, curves = {}, {}
    for hook in sorted({s.cfg.hook_name for s in saes.values()}):
        here = {n: s for n, s in saes.items() if s.cfg.hook_name == hook}
        prep = prepare(lean, hook, batches, cfg)
        features[hook] = compare_features(
            lean, here, pools=pools, baselines=(), cfg=cfg, losses=losses, prep=prep
        )
        local = sorted(n for n in here if losses[n] == "local")
        mid = local[len(local) // 2] if local else sorted(here)[0]
        curves[hook] = sweep_directions(
            lean, hook, CURVE_FAMILIES, sae=here[mid], sae_name=mid, prep=prep
        )
    return PaperResults(sub, features, curves)

"""What a sweep can call: each kind's parameters (a dataclass with defaults and checks) and the
function that runs one trial, writing its artifacts into the trial's folder and returning its
scalar results. The functions wrap the methods' own APIs; models are loaded once per process,
placed by the sweep's `Placement` (`mechscope sweep --device/--device-map/--dtype`).

    acdc     `mechscope.circuits.acdc_task` (as `mechscope acdc`)           -> circuit.json
    sae      `mechscope.sae.hparam_grid.train_and_save` (train, save, evaluate)   -> SAELens folder
    regions  `mechscope.regions.analyse` on one checkpoint                  -> stats.json
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from mechscope.circuits.acdc import check_tau
from mechscope.circuits.patched import ABLATIONS
from mechscope.metrics import check_name
from mechscope.models.lean import LeanModel, as_lean
from mechscope.models.placement import Placement
from mechscope.regions.analysis import RegionConfig
from mechscope.sae.config import TrainConfig


@dataclass(frozen=True)
class Kind:
    """A method a sweep can call.

    params: dataclass of its parameters (defaults; `__post_init__` raises ValueError on bad
    values); run(params, folder, placement) -> scalar results; metrics: the headline results, the
    first one plotted by the summary figure.
    """

    params: type
    run: Callable[[Any, Path, Placement], dict[str, Any]]
    metrics: tuple[str, ...]


@functools.lru_cache(maxsize=4)
def cached_model(name: str, revision: str = "main", placement: Placement | None = None) -> Any:
    """`placement.load(name, revision)` (default: CPU, float32), loaded once per process
    ("main": the final weights)."""
    return (placement or Placement()).load(name, revision)


def cached_lean(name: str, revision: str = "main", placement: Placement | None = None) -> LeanModel:
    """The `LeanModel` of `cached_model(name, revision, placement)` (`as_lean`: built once)."""
    return as_lean(cached_model(name, revision, placement))


def _check_revision(model: str, revision: str) -> None:
    from mechscope.artefacts import revisions, zoo_names

    if model in zoo_names() and revision not in revisions(model):
        raise ValueError(
            f"{model} has no revision {revision!r}; available: {', '.join(revisions(model))}"
        )


def _one_of(name: str, value: str, choices: tuple[str, ...] | list[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} {value!r} is unknown; choose from {', '.join(choices)}")


@dataclass
class AcdcParams:
    """One ACDC search, as `mechscope acdc` runs it: on n prompts of `task` (from `seed`),
    measured on n_test held-out prompts (default n, from test_seed, default seed + 1); threshold
    tau, metric kl | logit_diff | logprob | prob, ablation resample | zero; batch_size: tentative
    removals evaluated together. revision: a checkpoint of the model ("main": final weights)."""

    model: str = "code-attn4"
    revision: str = "main"
    task: str = "docstring"
    tau: float = 0.01
    metric: str = "kl"
    ablation: str = "resample"
    n: int = 16
    seed: int = 0
    n_test: int | None = None
    test_seed: int | None = None
    batch_size: int = 8

    def __post_init__(self) -> None:
        from mechscope.tasks import TASKS

        _one_of("task", self.task, sorted(TASKS))
        check_name(self.metric)
        _one_of("ablation", self.ablation, ABLATIONS)
        check_tau(self.tau)
        if self.n < 1 or self.batch_size < 1 or (self.n_test is not None and self.n_test < 1):
            raise ValueError(
                f"n, n_test and batch_size must be >= 1, got {self.n}, {self.n_test}, "
                f"{self.batch_size}"
            )
        _check_revision(self.model, self.revision)


def run_acdc(p: AcdcParams, folder: Path, placement: Placement) -> dict[str, Any]:
    """ACDC on the search prompts, measured on the test prompts; writes circuit.json; returns
    its size and faithfulness (held out, and on the search prompts)."""
    from mechscope.circuits.heldout import acdc_task
    from mechscope.tasks import make_split

    model = cached_model(p.model, p.revision, placement)
    search, test = make_split(p.task, model.tokenizer, p.n, p.seed, p.n_test, p.test_seed)
    c = acdc_task(model, search, test, p.tau, p.metric, p.ablation, batch_size=p.batch_size)
    test_seed = p.seed + 1 if p.test_seed is None else p.test_seed
    c.meta.update(model=p.model, revision=p.revision, task=p.task, seed=p.seed, test_seed=test_seed)
    c.save(folder / "circuit.json")
    assert c.search is not None
    return {
        "n_edges": c.n_edges,
        "n_heads": len(c.heads),
        "faithfulness": c.faithfulness,
        "search_faithfulness": c.search.faithfulness,
        "value": c.value,
        "full": c.full,
        "ablated": c.ablated,
        "edge_tests": c.meta["edge_tests"],
        "graph_edges": len(c.graph.edges),
    }


@dataclass
class SaeParams(TrainConfig):
    """One SAE: every `TrainConfig` field, the hook as `hook_name` or as `layer` (+ `site`:
    blocks.{layer}.{site}), and the held-out evaluation (n_eval_batches of eval_batch_size
    sequences, the same for every trial)."""

    hook_name: str = ""
    layer: int | None = None
    site: str = "hook_resid_post"
    n_eval_batches: int = 4
    eval_batch_size: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if bool(self.hook_name) == (self.layer is not None):
            raise ValueError("an sae trial needs either hook_name or layer (not both)")
        if self.n_eval_batches < 1 or self.eval_batch_size < 1:
            raise ValueError("n_eval_batches and eval_batch_size must be >= 1")

    @property
    def hook(self) -> str:
        return self.hook_name or f"blocks.{self.layer}.{self.site}"

    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict({**asdict(self), "hook_name": self.hook})


def run_sae(p: SaeParams, folder: Path, placement: Placement) -> dict[str, Any]:
    """Train, save (SAELens format, in the folder) and evaluate one SAE; returns its evaluation
    (L0, MSE, explained variance, CE recovered, KL score, dead and dense fractions)."""
    from mechscope.data.batches import eval_batches
    from mechscope.sae.hparam_grid import train_and_save

    lean = cached_lean(p.model, placement=placement)
    cfg = p.train_config()
    tokens = eval_batches(lean, p.n_eval_batches, p.eval_batch_size, mixture=cfg.mixture)
    ev = train_and_save(cfg, lean, folder, tokens, progress=False).to_dict()
    ev.pop("name")
    return ev


@dataclass
class RegionsParams(RegionConfig):
    """One stable-regions analysis (`mechscope regions run`): every `RegionConfig` field, on one
    checkpoint (`revision`, e.g. step-500; "main": final weights) of `model`."""

    model: str = "code-4l"
    revision: str = "main"

    def __post_init__(self) -> None:
        _check_revision(self.model, self.revision)

    def region_config(self) -> RegionConfig:
        return RegionConfig(**{f.name: getattr(self, f.name) for f in fields(RegionConfig)})


def run_regions(p: RegionsParams, folder: Path, placement: Placement) -> dict[str, Any]:
    """Sharpness and boundary statistics of one checkpoint; writes stats.json."""
    from mechscope.regions.analysis import analyse
    from mechscope.regions.result import RegionStatsTable

    model = cached_model(p.model, p.revision, placement)
    stats, _, _ = analyse(model, p.revision, p.region_config(), progress=False, name=p.model)
    stats.save(folder / "stats.json")
    row = RegionStatsTable([stats]).table()[0]
    return {k: v for k, v in row.items() if k not in ("model", "revision")}


KINDS: dict[str, Kind] = {
    "acdc": Kind(AcdcParams, run_acdc, ("n_edges", "faithfulness")),
    "sae": Kind(SaeParams, run_sae, ("l0", "ce_recovered", "explained_variance")),
    "regions": Kind(RegionsParams, run_regions, ("s_median", "with_boundary", "output_ratio")),
}

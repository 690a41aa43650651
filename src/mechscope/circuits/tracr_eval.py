"""ACDC against a tracr truth: a tau sweep per ablation, ROC and AUC against the matching truth.

For each truth convention (tracr.TRUTHS) ACDC runs with the matching ablation on prompts drawn as
ACDC draws them (`acdc_prompts`): zero ablation; resample ablation with the corrupted prompts; and
resample ablation whose corrupted run also permutes the positional embeddings as ACDC's tracr runs
do (`tracr.shuffle_positions`). Each tau gives one circuit, hence one ROC point, against the
matching truth and, as the ACDC paper scores every ablation, against the zero-ablation truth.
Areas: ACDC's pessimistic staircase on the Pareto front and the trapezoid (auto-circuit's); edges
are the graph's (ACDC's count), nodes ACDC's (`evaluate.acdc_nodes`).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from rich.progress import Progress
from torch import Tensor

from mechscope.circuits.acdc import TAU_GRID, acdc
from mechscope.circuits.evaluate import node_mask, roc
from mechscope.circuits.tracr import TRUTHS, TracrTask, shuffle_positions, tracr_metric
from mechscope.errors import CircuitError

# auto-circuit's grid, ACDC's smallest plotted tau (1e-6) and taus that prune most of the graph
TRACR_TAUS: tuple[float, ...] = (1e-6, *TAU_GRID, 0.1, 0.3, 1.0)


def derangement(n: int, generator: torch.Generator) -> Tensor:
    """A random permutation [n] without fixed points (ACDC's get_perm: redraw until none)."""
    if n < 2:
        raise CircuitError("a permutation without fixed points needs at least 2 prompts")
    while True:
        perm = torch.randperm(n, generator=generator)
        if not bool((perm == torch.arange(n)).any()):
            return perm


def acdc_prompts(task: TracrTask, seed: int) -> tuple[Tensor, Tensor]:
    """(clean [n, pos], corrupted [n, pos]) as ACDC builds a tracr task's validation data:
    task.search["n"] inputs drawn without replacement (all when None), corrupted = those rows
    permuted (without fixed points if task.search["derangement"])."""
    g = torch.Generator().manual_seed(seed)
    n_all = task.tokens.shape[0]
    n = min(task.search["n"] or n_all, n_all)
    rows = torch.randperm(n_all, generator=g)[:n] if n < n_all else torch.arange(n_all)
    clean = task.tokens[rows]
    perm = derangement(n, g) if task.search["derangement"] else torch.randperm(n, generator=g)
    return clean, clean[perm]


def acdc_sweep(
    task: TracrTask, truth: str, seed: int, taus: Sequence[float] = TRACR_TAUS
) -> list[Tensor]:
    """ACDC's circuits [n_edges] at each tau, with the ablation of `truth` (one of TRUTHS) on
    `acdc_prompts(task, seed)`, L2 to the model's outputs (ACDC's tracr metric)."""
    if truth not in TRUTHS:
        raise CircuitError(f"Unknown truth {truth!r}; choose one of {TRUTHS}.")
    clean, corrupt = acdc_prompts(task, seed)
    metric = tracr_metric(task.model, clean)
    ablation = "zero" if truth == "zero" else "resample"
    hooks = shuffle_positions(clean.shape[1]) if truth == "resample_shuffled" else None
    return [
        acdc(
            task.model,
            clean,
            corrupt if ablation == "resample" else None,
            tau,
            metric,
            ablation,
            task.graph,
            ablation_hooks=hooks,
        ).present
        for tau in taus
    ]


@dataclass
class TracrAuc:
    """One sweep's AUCs (pessimistic = ACDC's staircase, trapezoid = auto-circuit's) against the
    matching truth, and against the zero-ablation truth (how the ACDC paper scores it)."""

    task: str
    truth: str
    seed: int
    n_true_edges: int
    n_true_nodes: int
    kept: list[int]  # edges per tau
    edge_pessimistic: float
    edge_trapezoid: float
    node_pessimistic: float
    node_trapezoid: float
    zero_truth_edge_pessimistic: float
    zero_truth_edge_trapezoid: float
    zero_truth_node_pessimistic: float
    zero_truth_node_trapezoid: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def evaluate_tracr(
    task: TracrTask,
    truths: Iterable[str] = TRUTHS,
    seeds: Iterable[int] = range(5),
    taus: Sequence[float] = TRACR_TAUS,
    progress: bool = False,
) -> list[TracrAuc]:
    """ACDC's sweep for each truth convention and seed, scored against the matching truth."""
    truths, seeds = list(truths), list(seeds)
    rows = []
    with Progress(disable=not progress, transient=True) as bar:
        job = bar.add_task(f"ACDC on tracr {task.name}", total=len(truths) * len(seeds))
        for truth in truths:
            for seed in seeds:
                circuits = acdc_sweep(task, truth, seed, taus)
                r = roc(task.graph, task.truths[truth], circuits=circuits)
                z = roc(task.graph, task.truths["zero"], circuits=circuits)
                rows.append(
                    TracrAuc(
                        task.name,
                        truth,
                        seed,
                        int(task.truths[truth].sum()),
                        int(node_mask(task.graph, task.truths[truth]).sum()),
                        [int(c.sum()) for c in circuits],
                        r.edge_auc_pessimistic,
                        r.edge_auc,
                        r.node_auc_pessimistic,
                        r.node_auc,
                        z.edge_auc_pessimistic,
                        z.edge_auc,
                        z.node_auc_pessimistic,
                        z.node_auc,
                    )
                )
                bar.advance(job)
    return rows


def _span(xs: list[float]) -> str:
    """mean (min-max) over seeds; one number when they agree."""
    lo, hi, mean = min(xs), max(xs), statistics.fmean(xs)
    return f"{mean:.2f}" if hi - lo < 5e-3 else f"{mean:.2f} ({lo:.2f}-{hi:.2f})"


def auc_table(
    rows: Sequence[TracrAuc], reference: Mapping[tuple[str, str], str] | None = None
) -> str:
    """Markdown: one line per (task, truth), AUCs "pessimistic / trapezoid" as mean (min-max)
    over seeds; `reference`: a last column per (task, truth), e.g. a paper's numbers."""

    def pair(rs: list[TracrAuc], a: str, b: str) -> str:
        return f"{_span([getattr(r, a) for r in rs])} / {_span([getattr(r, b) for r in rs])}"

    reference = reference or {}

    lines = [
        "| task | ablation (truth) | true edges / nodes | ACDC edges over tau | edge AUC "
        "| node AUC | vs zero truth: edge AUC | vs zero truth: node AUC |"
        + (" reference |" if reference else ""),
        "|---|---|---|---|---|---|---|---|" + ("---|" if reference else ""),
    ]
    for task, truth in dict.fromkeys((r.task, r.truth) for r in rows):
        rs = [r for r in rows if (r.task, r.truth) == (task, truth)]
        kept = sorted({k for r in rs for k in r.kept})
        lines.append(
            f"| {task} | {truth} | {rs[0].n_true_edges} / {rs[0].n_true_nodes} | "
            f"{kept[0]}-{kept[-1]} | {pair(rs, 'edge_pessimistic', 'edge_trapezoid')} | "
            f"{pair(rs, 'node_pessimistic', 'node_trapezoid')} | "
            f"{pair(rs, 'zero_truth_edge_pessimistic', 'zero_truth_edge_trapezoid')} | "
            f"{pair(rs, 'zero_truth_node_pessimistic', 'zero_truth_node_trapezoid')} |"
            + (f" {reference.get((task, truth), '')} |" if reference else "")
        )
    return "\n".join(lines)

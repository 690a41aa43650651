"""Circuits on a task: found on the search prompts, measured on held-out test prompts.

>>> from mechscope.circuits import acdc_task
>>> from mechscope.tasks import make_split
>>> search, test = make_split("docstring", tokenizer, n=16, seed=0)  # test: seed 1, disjoint
>>> c = acdc_task(model, search, test, tau=0.01)                     # KL by default
>>> c.faithfulness, c.search.faithfulness, c.test_metrics["logit_diff"].faithfulness

ACDC's reference implementation searches on one half of its prompts and reports on the other: a
circuit measured on the prompts it was pruned on is fitted to them, and looks more faithful than
it is on new prompts. `acdc_task` and `eap_task` build the set-up once (metric by name, ablation
run) for the CLI, the sweep and the report.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mechscope.circuits.acdc import acdc, acdc_reference
from mechscope.circuits.eap import eap
from mechscope.circuits.graph import Graph
from mechscope.circuits.metric import CircuitMetric, task_circuit_metric
from mechscope.circuits.patched import CircuitRunner
from mechscope.circuits.result import Circuit, MetricValues
from mechscope.errors import CircuitError
from mechscope.metrics import NAMES, check_name
from mechscope.models.lean import LeanModel, as_lean
from mechscope.tasks.base import Task


def _search_metric(lean: LeanModel, task: Task, name: str) -> CircuitMetric:
    """The task metric `name` as a circuit metric on `task`'s prompts ("kl": to the full model's
    last-position logits on them)."""
    kl = check_name(name) == "kl"
    return task_circuit_metric(task, name, lean(task.clean_tokens, logit_pos=(-1,)) if kl else None)


def measure(
    model: Any, graph: Graph, mask: Tensor, task: Task, ablation: str = "resample"
) -> dict[str, MetricValues]:
    """Every task metric (`metrics.NAMES`, lower is better) of the full model, of the circuit
    `mask` [n_edges] and of the fully ablated model on `task`'s prompts: one batched run."""
    lean = as_lean(model)
    corrupt = task.corrupt_tokens if ablation == "resample" else None
    runner = CircuitRunner(lean, graph, task.clean_tokens, corrupt, ablation, (-1,))
    masks = torch.stack([torch.ones_like(mask), mask, torch.zeros_like(mask)])
    logits = runner.logits(masks)  # [3, batch, 1, vocab]
    out = {}
    for name in NAMES:
        full, value, ablated = task_circuit_metric(task, name, runner.clean_logits)(logits)
        out[name] = MetricValues(float(full), float(value), float(ablated))
    return out


def _check_held_out(task: Task, test: Task) -> None:
    search = {tuple(row) for row in task.clean_tokens.tolist()}
    shared = sum(tuple(row) in search for row in test.clean_tokens.tolist())
    if shared:
        raise CircuitError(
            f"{shared} of the {len(test)} test prompts are also search prompts; the test prompts "
            "must be held out. Draw both with tasks.make_split (disjoint, from two seeds)."
        )


def _held_out(c: Circuit, lean: LeanModel, task: Task, test: Task, ablation: str) -> Circuit:
    """Move the search-prompt values to `c.search`; measure every metric on `test`."""
    assert c.full is not None and c.value is not None and c.ablated is not None
    c.search = MetricValues(c.full, c.value, c.ablated)
    c.test_metrics = measure(lean, c.graph, c.present, test, ablation)
    t = c.test_metrics[c.metric]
    c.full, c.value, c.ablated = t.full, t.value, t.ablated
    c.meta.update(task=task.name, n_test_prompts=len(test))
    return c


def acdc_task(
    model: Any,
    task: Task,
    test: Task,
    tau: float,
    metric: str = "kl",
    ablation: str = "resample",
    graph: Graph | None = None,
    reference: bool = False,
    batch_size: int = 8,
    progress: bool = False,
) -> Circuit:
    """ACDC on `task`'s prompts (the search prompts) with the task metric `metric` (kl,
    logit_diff, logprob, prob; last position), then measured on the held-out `test` prompts.

    The result's full / value / ablated / faithfulness are `metric` on `test`; `search` holds
    them on the search prompts and `test_metrics` every metric on `test`. ablation: resample
    (each prompt's corrupted prompt) or zero; reference: run `acdc_reference` instead of `acdc`
    (the same circuit, slower); other arguments as in `acdc`.
    """
    _check_held_out(task, test)
    lean = as_lean(model)
    graph = graph or Graph.from_model(lean)
    m = _search_metric(lean, task, metric)
    corrupt = task.corrupt_tokens if ablation == "resample" else None
    if reference:
        c = acdc_reference(
            lean, task.clean_tokens, corrupt, tau, m, ablation, graph, progress=progress
        )
    else:
        c = acdc(
            lean,
            task.clean_tokens,
            corrupt,
            tau,
            m,
            ablation,
            graph,
            batch_size=batch_size,
            progress=progress,
        )
    return _held_out(c, lean, task, test, ablation)


def eap_task(
    model: Any,
    task: Task,
    test: Task,
    k: int,
    metric: str = "logit_diff",
    ablation: str = "resample",
    graph: Graph | None = None,
    ig_steps: int = 1,
) -> Circuit:
    """EAP (EAP-IG with ig_steps > 1): edges scored with `metric` on `task`'s prompts, the k
    top-|score| edges kept, measured on the held-out `test` prompts as in `acdc_task`. Use a
    task metric: the gradient of KL at the full model is zero, so "kl" scores every edge 0."""
    _check_held_out(task, test)
    lean = as_lean(model)
    graph = graph or Graph.from_model(lean)
    m = _search_metric(lean, task, metric)
    corrupt = task.corrupt_tokens if ablation == "resample" else None
    c = eap(lean, task.clean_tokens, corrupt, m, k, ablation, graph, ig_steps)
    return _held_out(c, lean, task, test, ablation)

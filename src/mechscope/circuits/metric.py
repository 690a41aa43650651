"""Metrics for circuits: lower is better, one value per circuit.

A `CircuitMetric` maps logits [n_circuits, batch, len(positions), vocab] to [n_circuits]. ACDC
minimises it: an edge is removed when the metric rises by less than tau.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from mechscope import metrics
from mechscope.errors import CircuitError
from mechscope.tasks.base import Task


@dataclass(frozen=True)
class CircuitMetric:
    """fn(logits [n, batch, len(positions), vocab]) -> [n]; lower is better.

    positions: the logit positions fn reads (None = every position).
    """

    name: str
    fn: Callable[[Tensor], Tensor]
    positions: tuple[int, ...] | None = (-1,)

    def __call__(self, logits: Tensor) -> Tensor:
        out = self.fn(logits)
        if out.shape != (logits.shape[0],):
            raise CircuitError(
                f"metric {self.name!r} returned shape {tuple(out.shape)}; expected "
                f"({logits.shape[0]},): one value per circuit, averaged over prompts"
            )
        return out


def kl_metric(clean_logits: Tensor, positions: tuple[int, ...] | None = (-1,)) -> CircuitMetric:
    """KL(model || circuit) from log-softmax, mean over prompts and positions (ACDC's default).

    clean_logits: [batch, len(positions), vocab] of the full model on the clean prompts.
    """

    def fn(logits: Tensor) -> Tensor:
        ref = clean_logits.unsqueeze(0).expand_as(logits)
        kl = metrics.kl_div(ref.flatten(0, 1), logits.flatten(0, 1), pos=None)
        return kl.view(logits.shape[0], -1).mean(1)

    return CircuitMetric("kl", fn, positions)


def task_circuit_metric(
    task: Task, name: str | None = None, clean_logits: Tensor | None = None
) -> CircuitMetric:
    """A task metric (see `metrics.for_task`; default the task's) at the last position, mean over
    prompts, negated where higher is better so that lower is better: "logit_diff" is ACDC's
    docstring metric -(logit[answer] - max wrong logit), "logprob" -log P(answer), "kl"
    KL(model || circuit), which needs `clean_logits` [batch, vocab] of the full model."""
    m = metrics.for_task(task, name, clean_logits)
    sign = -1.0 if m.higher_is_better else 1.0
    batch = len(task)

    def fn(lg: Tensor) -> Tensor:
        n = lg.shape[0]
        prompt = torch.arange(batch).repeat(n)
        return sign * m(lg.flatten(0, 1), prompt).view(n, batch).mean(1)

    return CircuitMetric(m.name, fn)


def l2_metric(model_logits: Tensor, positions: tuple[int, ...] | None = None) -> CircuitMetric:
    """Mean squared difference to the full model's logits [batch, len(positions), vocab]
    (ACDC's tracr metric; tracr outputs are one-hot or a single number, so KL does not fit)."""

    def fn(logits: Tensor) -> Tensor:
        return (logits - model_logits.unsqueeze(0)).pow(2).flatten(1).mean(1)

    return CircuitMetric("l2", fn, positions)

"""Batched metrics on logits, as used throughout mechscope.

Shapes: `logits` is [batch, pos, vocab]; metrics read the position `pos` (default -1, the last) and
return one value per prompt, [batch]. Take `.mean()` for a scalar. KL divergences are computed from
log-softmax (never softmax-then-log) so small probabilities stay accurate. Logits of bf16/fp16
models are upcast first: every metric is computed and returned in float32 (or float64 if given).

`for_task(task, name)` is the one registry of task metrics by name (`NAMES`): `Task.score`, the
patching engine's `PatchMetric` and the circuits' `CircuitMetric` are adapters over it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from mechscope.errors import MetricError

if TYPE_CHECKING:
    from mechscope.tasks.base import Task


def _at(logits: Tensor, pos: int | Tensor) -> Tensor:
    """Logits [batch, vocab] at one position (an int, or a [batch] tensor of positions), in at
    least float32."""
    if logits.ndim != 3:
        raise ValueError(f"logits must be [batch, pos, vocab], got shape {tuple(logits.shape)}")
    if isinstance(pos, Tensor):
        picked = logits[torch.arange(logits.shape[0], device=logits.device), pos.to(logits.device)]
    else:
        picked = logits[:, pos]
    return _fp32(picked)


def _fp32(x: Tensor) -> Tensor:
    return x if x.dtype == torch.float64 else x.float()


def logit_diff(
    logits: Tensor, answers: Tensor, wrong_answers: Tensor, pos: int | Tensor = -1
) -> Tensor:
    """logit[answer] - max over wrong answers of logit[wrong]: [batch].

    answers: [batch]; wrong_answers: [batch] or [batch, n_wrong]. With several wrong answers the
    strongest one is used (ACDC's docstring metric); with one it is the usual logit difference.
    """
    lg = _at(logits, pos)
    answers, wrong_answers = answers.to(lg.device), wrong_answers.to(lg.device)
    correct = lg.gather(-1, answers.view(-1, 1)).squeeze(-1)
    wrong = wrong_answers.view(wrong_answers.shape[0], -1)
    return correct - lg.gather(-1, wrong).max(-1).values


def logprob(logits: Tensor, answers: Tensor, pos: int | Tensor = -1) -> Tensor:
    """log P(answer) at `pos`: [batch]."""
    lp = _at(logits, pos).log_softmax(-1)
    return lp.gather(-1, answers.to(lp.device).view(-1, 1)).squeeze(-1)


def prob(logits: Tensor, answers: Tensor, pos: int | Tensor = -1) -> Tensor:
    """P(answer) at `pos`: [batch]. Saturates near 0 and 1; prefer logit_diff for patching."""
    return logprob(logits, answers, pos).exp()


def kl_div(ref_logits: Tensor, logits: Tensor, pos: int | Tensor | None = -1) -> Tensor:
    """KL(P_ref || P) = sum_v p_ref (log p_ref - log p), from log-softmax.

    Returns [batch] at position `pos`, or [batch, pos] when `pos` is None (every position).
    """
    if ref_logits.shape != logits.shape:
        raise ValueError(
            f"ref_logits {tuple(ref_logits.shape)} and logits {tuple(logits.shape)} differ"
        )
    if pos is not None:
        ref_logits, logits = _at(ref_logits, pos), _at(logits, pos)
    ref_lp = _fp32(ref_logits).log_softmax(-1)
    lp = _fp32(logits.to(ref_logits.device)).log_softmax(-1)
    return (ref_lp.exp() * (ref_lp - lp)).sum(-1)


def normalise(value: Tensor, clean: Tensor | float, corrupt: Tensor | float) -> Tensor:
    """Map a metric so that 0 = corrupted baseline and 1 = clean baseline.

    (value - corrupt) / (clean - corrupt), elementwise with broadcasting. Raises when the baselines
    are (nearly) equal: the task does not separate clean from corrupted and the ratio is noise.
    """
    clean_t = torch.as_tensor(clean, dtype=value.dtype, device=value.device)
    corrupt_t = torch.as_tensor(corrupt, dtype=value.dtype, device=value.device)
    denom = clean_t - corrupt_t
    if bool((denom.abs() < 1e-6).any()):
        raise ValueError(
            "clean and corrupted baselines are equal (difference < 1e-6); a normalised metric "
            "would divide by ~0. Check that the corruption changes the model's answer."
        )
    return (value - corrupt_t) / denom


# -- the task metrics, by name: the one registry -------------------------------------------------
NAMES = ("logit_diff", "logprob", "prob", "kl")


@dataclass(frozen=True)
class TaskMetric:
    """A task's metric per prompt row: fn(logits [n, pos, vocab], prompt [n]) -> [n].

    Row i of `logits` belongs to prompt `prompt[i]` of the task (rows may repeat prompts: patch
    variants or circuits stacked along the batch); the metric reads the last position.
    higher_is_better: True for logit_diff / logprob / prob, False for KL(clean || run).
    """

    name: str
    fn: Callable[[Tensor, Tensor], Tensor]
    higher_is_better: bool = True

    def __call__(self, logits: Tensor, prompt: Tensor | None = None) -> Tensor:
        """[n] values; `prompt` [n] defaults to rows 0..n-1 being the task's prompts in order."""
        return self.fn(logits, torch.arange(logits.shape[0]) if prompt is None else prompt)


def check_name(name: str) -> str:
    """`name` if it is a task metric; MetricError listing the valid names otherwise."""
    if name not in NAMES:
        raise MetricError(f"Unknown metric {name!r}; choose one of {', '.join(NAMES)}.")
    return name


def for_task(task: Task, name: str | None = None, clean_logits: Tensor | None = None) -> TaskMetric:
    """The metric `name` (default: the task's own) on `task`'s answers, at the last position.

    logit_diff: logit[answer] - max wrong logit; logprob / prob: of the answer; kl: KL(clean ||
    run), which needs `clean_logits` [batch, vocab] or [batch, pos, vocab] of the clean prompts.
    """
    name = check_name(name or task.metric)
    answers, wrong = task.answers, task.wrong_answers
    if name == "logit_diff":
        return TaskMetric(name, lambda lg, i: logit_diff(lg, answers[i], wrong[i]))
    if name == "logprob":
        return TaskMetric(name, lambda lg, i: logprob(lg, answers[i]))
    if name == "prob":
        return TaskMetric(name, lambda lg, i: prob(lg, answers[i]))
    if clean_logits is None:
        raise MetricError(
            "the 'kl' metric needs the clean run's logits (clean_logits [batch, vocab]); pass "
            "model(task.clean_tokens) or choose logit_diff, logprob or prob"
        )
    ref = clean_logits[:, -1] if clean_logits.ndim == 3 else clean_logits
    return TaskMetric(
        name, lambda lg, i: kl_div(ref[i].unsqueeze(1), lg[:, -1:], pos=-1), higher_is_better=False
    )

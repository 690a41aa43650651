"""Metrics as the patching engine calls them: per prompt, on stacked patch variants.

The engine stacks patch variants along the batch, so a metric sees logits for `n` rows where
row `i` belongs to prompt `prompt[i]` of the task. Logits hold only the positions the metric
declares (`positions`; the task metrics read the last one), which lets sweeps skip the unembedding
elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from mechscope import metrics
from mechscope.patching.specs import PatchingError
from mechscope.tasks.base import Task


@dataclass(frozen=True)
class PatchMetric:
    """A per-prompt metric: fn(logits [n, len(positions), vocab], prompt [n]) -> [n].

    positions: the token positions whose logits the metric reads (None = every position).
    higher_is_better: True for logit_diff/logprob/prob, False for KL(clean || patched).
    """

    name: str
    fn: Callable[[Tensor, Tensor], Tensor]
    positions: tuple[int, ...] | None = (-1,)
    higher_is_better: bool = True

    def __call__(self, logits: Tensor, prompt: Tensor) -> Tensor:
        out = self.fn(logits, prompt)
        if not isinstance(out, Tensor) or out.shape != (logits.shape[0],):
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise PatchingError(
                f"metric {self.name!r} returned {shape}, expected shape ({logits.shape[0]},): one "
                "value per prompt row. Do not average over the batch; the engine does that."
            )
        return out


def task_metric(
    task: Task, name: str | None = None, clean_logits: Tensor | None = None
) -> PatchMetric:
    """The task metric `name` (default: the task's; see `metrics.for_task`) as the engine calls
    it, read at the last position. "kl" is KL(clean || patched) and needs `clean_logits`
    [batch, vocab] (or [batch, pos, vocab]) of the clean run."""
    m = metrics.for_task(task, name, clean_logits)
    return PatchMetric(m.name, m.fn, (-1,), m.higher_is_better)


def batch_metric(
    name: str, fn: Callable[[Tensor], Tensor], positions: tuple[int, ...] | None = None
) -> PatchMetric:
    """Wrap fn(logits [batch, pos, vocab] of the task's prompts, in order) -> [batch].

    The engine's rows come in blocks of whole batches (variant-major), so each block is passed
    to `fn` on its own; a metric that sees all prompts of one variant at once can use the batch.
    """

    def per_block(logits: Tensor, prompt: Tensor) -> Tensor:
        n_prompts = int(prompt.max()) + 1
        blocks = [fn(b) for b in logits.split(n_prompts)]
        for b in blocks:
            if b.shape != (min(n_prompts, logits.shape[0]),):
                raise PatchingError(
                    f"metric {name!r} returned shape {tuple(b.shape)} for a batch of "
                    f"{n_prompts} prompts; it must return one value per prompt ({n_prompts},)."
                )
        return torch.cat(blocks)

    return PatchMetric(name, per_block, positions)

"""Run a task on a model: the clean and corrupted baselines of its metric."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from mechscope.tasks.base import Task


@dataclass
class TaskEval:
    """Baselines of a task on a model (means over prompts)."""

    task: str
    metric: str
    n_prompts: int
    clean: float
    corrupt: float
    top1_accuracy: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def run_task(model: Any, task: Task, metric: str | None = None, batch_size: int = 64) -> TaskEval:
    """Evaluate `task` on `model` (anything mapping tokens [batch, pos] to logits); `metric`: a
    name of `metrics.NAMES` (default the task's; "kl" is KL(clean || run), 0 on the clean run)."""
    scores_clean, scores_corrupt, hits = [], [], 0
    for i in range(0, len(task), batch_size):
        sub = task[i : i + batch_size]
        clean_logits = model(sub.clean_tokens)
        scores_clean.append(sub.score(clean_logits, metric, clean_logits))
        scores_corrupt.append(sub.score(model(sub.corrupt_tokens), metric, clean_logits))
        hits += int((clean_logits[:, -1].argmax(-1) == sub.answers).sum())
    return TaskEval(
        task=task.name,
        metric=metric or task.metric,
        n_prompts=len(task),
        clean=float(torch.cat(scores_clean).mean()),
        corrupt=float(torch.cat(scores_corrupt).mean()),
        top1_accuracy=hits / len(task),
    )

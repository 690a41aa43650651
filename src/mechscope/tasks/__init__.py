"""Tasks: clean/corrupted prompt pairs with answers and a default metric.

>>> task = make_task("docstring", tokenizer, n=50, seed=0)
>>> task.clean_tokens.shape  # [batch, pos]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mechscope.tasks.base import Task, TaskError
from mechscope.tasks.docstring import make_docstring
from mechscope.tasks.induction import make_induction
from mechscope.tasks.ioi import make_ioi
from mechscope.tasks.run import TaskEval, run_task

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TASKS: dict[str, Callable[..., Task]] = {
    "docstring": make_docstring,
    "induction": make_induction,
    "ioi": make_ioi,
}


def make_task(name: str, tokenizer: PreTrainedTokenizerBase, n: int = 50, seed: int = 0) -> Task:
    """Build the task `name` with `n` prompts from `seed`."""
    if name not in TASKS:
        raise TaskError(f"Unknown task {name!r}. Available tasks: {', '.join(sorted(TASKS))}.")
    if n < 1:
        raise TaskError(f"n must be a positive number of prompts, got {n}")
    return TASKS[name](tokenizer, n=n, seed=seed)


__all__ = [
    "TASKS",
    "Task",
    "TaskError",
    "TaskEval",
    "make_docstring",
    "make_induction",
    "make_ioi",
    "make_task",
    "run_task",
]

"""Tasks: clean/corrupted prompt pairs with answers and a default metric.

>>> task = make_task("docstring", tokenizer, n=50, seed=0)
>>> task.clean_tokens.shape  # [batch, pos]
>>> search, test = make_split("docstring", tokenizer, n=16, seed=0)  # disjoint, seeds 0 and 1
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mechscope.errors import TaskError
from mechscope.tasks.base import Task
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


def make_split(
    name: str,
    tokenizer: PreTrainedTokenizerBase,
    n: int = 50,
    seed: int = 0,
    n_test: int | None = None,
    test_seed: int | None = None,
) -> tuple[Task, Task]:
    """Search prompts (`n` from `seed`) and held-out test prompts (`n_test`, default `n`, from
    `test_seed`, default seed + 1) with no clean prompt in both: a test prompt that repeats a
    search prompt is skipped and the next one of the test seed's draw taken instead."""
    search = make_task(name, tokenizer, n, seed)
    n_test = n if n_test is None else n_test
    test_seed = seed + 1 if test_seed is None else test_seed
    seen = {tuple(row) for row in search.clean_tokens.tolist()}
    draw = n_test
    while draw <= 4 * (n + n_test):  # a task's draws extend: the first m of m + j are the same
        test = make_task(name, tokenizer, draw, test_seed)
        keep = [i for i, row in enumerate(test.clean_tokens.tolist()) if tuple(row) not in seen]
        if len(keep) >= n_test:
            return search, test.select(keep[:n_test])
        draw += n_test - len(keep)
    raise TaskError(
        f"could not draw {n_test} {name} test prompts that differ from the {n} search prompts; "
        "the task has too few distinct prompts for this split (use smaller n or n_test)"
    )


__all__ = [
    "TASKS",
    "Task",
    "TaskError",
    "TaskEval",
    "make_docstring",
    "make_induction",
    "make_ioi",
    "make_split",
    "make_task",
    "run_task",
]

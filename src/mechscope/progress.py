"""The one progress bar of long work (training, collection, sweeps over paths and models)."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class _Stats(ProgressColumn):
    """A task's `stats` field (running losses and the like), empty when it has none."""

    def render(self, task: Task) -> Text:
        return Text(str(task.fields.get("stats", "")))


def progress_bar(enabled: bool) -> Progress:
    """A rich progress bar: description, bar, done/total, time left and the task's optional
    `stats` field (`bar.update(task, stats=...)`); no output unless `enabled`."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        _Stats(),
        disable=not enabled,
    )

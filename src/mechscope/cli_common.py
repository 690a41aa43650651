"""What every `mechscope` sub-command shares: the console, the one way to fail, and the
placement options every model-loading command takes (`--device`, `--device-map`, `--dtype`),
passed explicitly to `load(model, revision, placement)`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from typer.core import TyperGroup

from mechscope.models.placement import Placement

console = Console()

PANEL = "Model placement"
Device = Annotated[
    str | None,
    typer.Option(
        help="load the model on this device: cpu, cuda, cuda:1, ... (any model)",
        rich_help_panel=PANEL,
    ),
]
DeviceMap = Annotated[
    str | None,
    typer.Option(
        help="split an HF-architecture model over devices: auto, balanced, cpu or a JSON map "
        "(module -> device); exclusive with --device",
        rich_help_panel=PANEL,
    ),
]
Dtype = Annotated[
    str | None,
    typer.Option(
        help="model dtype, e.g. bfloat16 (metrics stay in float32)", rich_help_panel=PANEL
    ),
]


def load(model: str, revision: str | None = None, placement: Placement | None = None) -> Any:
    """The command's model: `load_model(model, revision)` placed by `placement` (the command's
    --device / --device-map / --dtype); ModelLoadError if it cannot be loaded there."""
    return (placement or Placement()).load(model, revision)


def check_hooks(model: Any, hooks: Sequence[str]) -> None:
    """Fail listing the model's hook names unless every name in `hooks` is one of them."""
    from mechscope.models.lean import as_lean

    names = as_lean(model).hook_names()
    unknown = [h for h in hooks if h not in names]
    if not unknown:
        return
    per_block = dict.fromkeys(n.split(".", 2)[2] for n in names if n.startswith("blocks."))
    first = next(i for i, n in enumerate(names) if n.startswith("blocks."))
    blocks = f"blocks.<0-{int(model.cfg.n_layers) - 1}>.{{{', '.join(per_block)}}}"
    listed = [*names[:first], blocks, *(n for n in names[first:] if not n.startswith("blocks."))]
    fail(
        f"unknown hook name(s) {', '.join(map(repr, unknown))}: this model has no such hook. "
        f"Its hooks: {'; '.join(listed)}"
    )


def fail(msg: object) -> NoReturn:
    """Print `Error: msg` in red, unwrapped on one line, and exit with status 2 (bad input,
    nothing written)."""
    console.print(f"[bold red]Error:[/] {msg}", soft_wrap=True)
    raise typer.Exit(code=2)


class ErrorsAsMessages(TyperGroup):
    """The root command group: a mechscope error raised anywhere in a sub-command (an output
    path that cannot be written, a full disk, a truncated or corrupt input file) ends the
    command with `fail`'s one-line message instead of a traceback; Ctrl-C with one line and
    status 130."""

    def invoke(self, ctx: Any) -> Any:
        from mechscope.errors import MechscopeError

        try:
            return super().invoke(ctx)
        except MechscopeError as e:
            fail(e)
        except KeyboardInterrupt:
            console.print(
                "[bold red]Error:[/] interrupted; every file written so far is whole (sae train, "
                "sweep and evolution run --checkpoint go on where they stopped when rerun)",
                soft_wrap=True,
            )
            raise typer.Exit(code=130) from None


@contextmanager
def option_checks() -> Iterator[None]:
    """Run `mechscope.validate` checks of a command's options: the first `OptionError` prints
    its one-line message and exits 2 (before any model loads)."""
    from mechscope.errors import OptionError

    try:
        yield
    except OptionError as e:
        fail(e)

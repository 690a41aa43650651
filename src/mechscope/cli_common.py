"""What every `mechscope` sub-command shares: the console and the one way to fail."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

console = Console()


def fail(msg: object) -> NoReturn:
    """Print `Error: msg` in red and exit with status 2 (bad input, nothing written)."""
    console.print(f"[bold red]Error:[/] {msg}")
    raise typer.Exit(code=2)

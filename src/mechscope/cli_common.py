"""What every `mechscope` sub-command shares: the console, the one way to fail, and model
loading with the placement given to the root command (`mechscope --device-map auto --dtype
bfloat16 patch ...`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NoReturn

import typer
from rich.console import Console

console = Console()


@dataclass
class Placement:
    """Where and in what dtype sub-commands load models (`mechscope --device-map/--dtype`)."""

    device_map: str | None = None  # "auto", "balanced", "cpu", or a JSON object
    dtype: str | None = None


placement = Placement()


def load(model: str, revision: str | None = None) -> Any:
    """`load_model(model, revision)` with the root command's placement (ModelLoadError if bad)."""
    from mechscope import load_model
    from mechscope.errors import ModelLoadError

    spec = placement.device_map
    device_map: Any = spec
    if spec and spec.lstrip().startswith("{"):
        try:
            device_map = json.loads(spec)
        except json.JSONDecodeError as e:
            raise ModelLoadError(f"--device-map is not valid JSON ({e}): {spec!r}") from e
    return load_model(model, revision=revision, device_map=device_map, dtype=placement.dtype)


def fail(msg: object) -> NoReturn:
    """Print `Error: msg` in red and exit with status 2 (bad input, nothing written)."""
    console.print(f"[bold red]Error:[/] {msg}")
    raise typer.Exit(code=2)

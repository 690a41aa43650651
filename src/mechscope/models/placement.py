"""`Placement`: where and in what dtype models load, passed explicitly from the command line
(`--device`, `--device-map`, `--dtype`) through sweeps and the demo to every `load_model` call.
Light to import (no torch): the CLI builds one before it loads anything."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mechscope.errors import ModelLoadError


@dataclass(frozen=True)
class Placement:
    """Where and in what dtype to load models: `load(model, revision)` passes it to `load_model`.

    device: one torch device ("cpu", "cuda", "cuda:1"); device_map: split an HF model over
    devices ("auto", "balanced", "cpu", or a JSON object of module name -> device, as text so
    the placement stays hashable); dtype: parameter dtype name ("bfloat16"). None: the loader's
    default. The CLI's `--device`, `--device-map` and `--dtype` build one; sweeps and the demo
    carry it to every model they load.
    """

    device: str | None = None
    device_map: str | None = None
    dtype: str | None = None

    def __post_init__(self) -> None:
        """Fail where the placement is made (before any model loads): an unknown dtype, a
        device this machine lacks (OptionError), a device map that is not valid JSON."""
        from mechscope import validate

        validate.dtype("--dtype", self.dtype)
        validate.device("--device", self.device)
        self.kwargs()

    def kwargs(self) -> dict[str, Any]:
        """`load_model` keyword arguments (a JSON device map parsed; ModelLoadError if bad)."""
        device_map: str | dict[str, str | int] | None = self.device_map
        if self.device_map and self.device_map.lstrip().startswith("{"):
            try:
                device_map = json.loads(self.device_map)
            except json.JSONDecodeError as e:
                raise ModelLoadError(
                    f"--device-map is not valid JSON ({e}): {self.device_map!r}"
                ) from e
        return {"device": self.device, "device_map": device_map, "dtype": self.dtype}

    def load(self, model: str | Path, revision: str | None = None) -> Any:
        """`load_model(model, revision)` placed here ("main" is the final weights); TransformerLens
        refusing an architecture becomes a ModelLoadError."""
        from mechscope.models.loading import load_model

        revision = None if revision == "main" else revision
        try:
            return load_model(model, revision=revision, **self.kwargs())
        except (RuntimeError, NotImplementedError) as e:
            raise ModelLoadError(f"TransformerLens cannot load {str(model)!r}: {e}") from e

"""The bundled model zoo: small models trained by mechscope's own deterministic scripts.

>>> from mechscope import zoo
>>> zoo.list_models()            # names with weights present
>>> zoo.card("code-attn4")       # how it was made, command to remake, metrics
"""

from __future__ import annotations

import json
from typing import Any

from mechscope.artefacts import TOKENIZER_DIR, WEIGHTS_DIR, model_dir, revisions, zoo_names
from mechscope.errors import ModelLoadError
from mechscope.zoo.specs import SPECS

BUILDABLE = ["tokenizer", *SPECS]


def list_models() -> list[str]:
    """Bundled models whose weights are present."""
    return zoo_names()


def card(name: str) -> dict[str, Any]:
    """The model card (`card.json`) of a bundled model or of the tokenizer."""
    folder = TOKENIZER_DIR if name == "tokenizer" else model_dir(name)
    file = folder / "card.json"
    if not file.exists():
        raise ModelLoadError(
            f"No bundled model {name!r}. Available: {', '.join(BUILDABLE)} "
            f"(build one with `mechscope zoo build NAME`)."
        )
    return json.loads(file.read_text())


def build(name: str, **kwargs: Any) -> Any:
    """Train bundled model `name` (or the tokenizer) from scratch; returns the output folder."""
    from mechscope.zoo.training import build_model, build_tokenizer

    if name == "tokenizer":
        return build_tokenizer(**kwargs)
    if name not in SPECS:
        raise ModelLoadError(f"Unknown zoo model {name!r}. Buildable: {', '.join(BUILDABLE)}.")
    return build_model(name, **kwargs)


__all__ = ["BUILDABLE", "SPECS", "WEIGHTS_DIR", "build", "card", "list_models", "revisions"]

"""Where bundled weights live (inside the installed package), and what is there."""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"
TOKENIZER_DIR = WEIGHTS_DIR / "tokenizer"


def model_dir(name: str) -> Path:
    return WEIGHTS_DIR / name


def zoo_names() -> list[str]:
    """Names of the bundled models whose weights are present."""
    if not WEIGHTS_DIR.exists():
        return []
    return sorted(
        p.name
        for p in WEIGHTS_DIR.iterdir()
        if (p / "config.json").exists() and p.name != "tokenizer"
    )


def revisions(name: str) -> list[str]:
    """Checkpoint revisions of a bundled model ("step-N", in training order), then "main"."""
    ckpts = model_dir(name) / "checkpoints"
    steps = sorted(int(p.stem.split("-")[1]) for p in ckpts.glob("step-*.safetensors"))
    return [f"step-{s}" for s in steps] + ["main"]

"""What ships with mechscope and where: the one registry of bundled artefacts.

    kind                      folder (inside the installed package)  made by
    zoo models, tokenizer     zoo/weights/<name>/                    mechscope zoo build NAME
    SAEs of the zoo models    sae/pretrained/<model>/<run name>/     mechscope sae build-bundled
    transcoders (per layer)   sae/transcoders/<model>/               mechscope sae build-transcoders
    basis models              basis/pretrained/<name>/               mechscope basis build NAME
    tracr programs' models    circuits/tracr_models/<name>/          circuits.tracr.build_tracr

`shipped()` lists what is present. The zoo, `sae.bundled`, `basis.pretrained` and
`circuits.tracr` read and write their artefacts through these folders, and model loading finds
bundled names here.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).parent
WEIGHTS_DIR = PACKAGE_DIR / "zoo" / "weights"
TOKENIZER_DIR = WEIGHTS_DIR / "tokenizer"
SAE_DIR = PACKAGE_DIR / "sae" / "pretrained"
TRANSCODER_DIR = PACKAGE_DIR / "sae" / "transcoders"
BASIS_DIR = PACKAGE_DIR / "basis" / "pretrained"
TRACR_DIR = PACKAGE_DIR / "circuits" / "tracr_models"
ARTEFACT_DIRS = (WEIGHTS_DIR, SAE_DIR, TRANSCODER_DIR, BASIS_DIR, TRACR_DIR)


def model_dir(name: str) -> Path:
    """Folder of bundled zoo model `name` (config, weights, card, checkpoints/)."""
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


def sae_dir(model: str) -> Path:
    """Folder of the bundled SAEs of zoo model `model` (one SAELens folder per run, card.json)."""
    return SAE_DIR / model


def transcoder_dir(model: str) -> Path:
    """Folder of the bundled transcoders of zoo model `model`: one SAELens folder per layer,
    circuit-tracer/ (the same set in circuit-tracer's format), card.json."""
    return TRANSCODER_DIR / model


def basis_dir(name: str) -> Path:
    """Folder of bundled basis model `name` (model.safetensors, card.json)."""
    return BASIS_DIR / name


def shipped() -> dict[str, list[str]]:
    """What is present: zoo models, SAEs as "<model>/<run name>", the models with bundled
    transcoders, basis models, tracr models (each sorted)."""
    saes = sorted(
        f"{p.parent.name}/{p.name}" for p in SAE_DIR.glob("*/*") if (p / "cfg.json").exists()
    )
    tcs = sorted(p.name for p in TRANSCODER_DIR.glob("*") if (p / "card.json").exists())
    basis = sorted(p.name for p in BASIS_DIR.glob("*") if (p / "card.json").exists())
    tracr = sorted(p.name for p in TRACR_DIR.glob("*") if (p / "truth.json").exists())
    return {
        "models": zoo_names(),
        "saes": saes,
        "transcoders": tcs,
        "basis": basis,
        "tracr": tracr,
    }

"""The two bundled models of the basis package: data, deterministic training, cards, loading.

`digits-mlp`: MLP 64-48-48-10 on scikit-learn's bundled 8x8 digits (stratified 75/25 split).
`modadd-1l`: 1-layer transformer on (a + b) mod 113, tokens [a, b, =] (all pairs, seeded split).

Files: `mechscope/basis/pretrained/<name>/model.safetensors` and `card.json` (how it was made, the
command to remake it, metrics, seed). `mechscope basis build NAME` retrains one from scratch.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mechscope.artefacts import basis_dir
from mechscope.basis.models import (
    MLP,
    MLPConfig,
    ModAddConfig,
    ModAddTransformer,
    NodeLayerModel,
    config_dict,
    model_from_config,
)
from mechscope.errors import BasisError
from mechscope.files import read_json, read_safetensors, write_json, write_safetensors
from mechscope.progress import progress_bar


@dataclass(frozen=True)
class Recipe:
    """How a bundled model is trained (full-batch AdamW unless batch_size is set)."""

    name: str
    steps: int
    lr: float
    weight_decay: float
    betas: tuple[float, float] = (0.9, 0.999)
    warmup: int = 0
    batch_size: int | None = None
    seed: int = 0
    data: dict[str, Any] = field(default_factory=dict)


RECIPES: dict[str, Recipe] = {
    "digits-mlp": Recipe(
        "digits-mlp",
        steps=3000,
        lr=1e-3,
        weight_decay=0.0,
        batch_size=64,
        data={"test_size": 0.25, "split_seed": 0},
    ),
    "modadd-1l": Recipe(
        "modadd-1l",
        steps=1200,
        lr=3e-3,
        weight_decay=1.0,
        betas=(0.9, 0.98),
        warmup=10,
        data={"p": 113, "frac_train": 0.4, "split_seed": 0},
    ),
}


def list_bundled() -> list[str]:
    """Names of the bundled models."""
    return sorted(RECIPES)


def _check_name(name: str, seed: int | None = None) -> Recipe:
    """The recipe of a bundled model, with its training seed replaced by `seed` if given."""
    if name not in RECIPES:
        raise BasisError(f"unknown bundled model {name!r}; available: {', '.join(list_bundled())}")
    return RECIPES[name] if seed is None else replace(RECIPES[name], seed=seed)


def digits_data(split: str, test_size: float = 0.25, seed: int = 0) -> tuple[Tensor, Tensor]:
    """scikit-learn's 8x8 digits, pixels / 16: (x [N, 64] float32, labels [N]); train|test|all."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as e:
        raise BasisError("the digits data needs scikit-learn: pip install scikit-learn") from e
    d = load_digits()
    x, y = torch.tensor(d.data / 16.0, dtype=torch.float32), torch.tensor(d.target)
    if split == "all":
        return x, y
    idx_tr, idx_te = train_test_split(
        range(len(y)), test_size=test_size, stratify=d.target, random_state=seed
    )
    if split not in ("train", "test"):
        raise BasisError(f"split must be 'train', 'test' or 'all', not {split!r}")
    idx = torch.tensor(idx_tr if split == "train" else idx_te)
    return x[idx], y[idx]


def modadd_data(
    split: str, p: int = 113, frac_train: float = 0.4, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """All pairs (a, b) as tokens [a, b, p] ([N, 3]) with labels (a + b) mod p; train|test|all."""
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    tokens = torch.stack([a.flatten(), b.flatten(), torch.full((p * p,), p)], dim=1)
    labels = (a.flatten() + b.flatten()) % p
    if split == "all":
        return tokens, labels
    perm = torch.randperm(p * p, generator=torch.Generator().manual_seed(seed))
    n_train = int(frac_train * p * p)
    if split not in ("train", "test"):
        raise BasisError(f"split must be 'train', 'test' or 'all', not {split!r}")
    idx = perm[:n_train] if split == "train" else perm[n_train:]
    return tokens[idx], labels[idx]


def bundled_data(name: str, split: str) -> tuple[Tensor, Tensor]:
    """(inputs, labels) of a bundled model's data set, split train|test|all."""
    d = _check_name(name).data
    if name == "digits-mlp":
        return digits_data(split, d["test_size"], d["split_seed"])
    return modadd_data(split, d["p"], d["frac_train"], d["split_seed"])


def new_model(name: str, seed: int | None = None) -> NodeLayerModel:
    """A freshly initialised model of a bundled architecture (the recipe's seed, or `seed`)."""
    recipe = _check_name(name, seed)
    torch.manual_seed(recipe.seed)
    if name == "digits-mlp":
        return MLP(MLPConfig())
    return ModAddTransformer(ModAddConfig(p=recipe.data["p"]))


@torch.no_grad()
def accuracy(model: NodeLayerModel, x: Tensor, y: Tensor) -> float:
    """Fraction of argmax(logits) == y."""
    return float((model(x).argmax(-1) == y).float().mean())


@torch.no_grad()
def loss(model: NodeLayerModel, x: Tensor, y: Tensor) -> float:
    """Mean cross-entropy of the logits against y."""
    return float(torch.nn.functional.cross_entropy(model(x).float(), y))


def train(
    name: str, progress: bool = True, seed: int | None = None
) -> tuple[NodeLayerModel, dict[str, Any]]:
    """Train a bundled model from scratch (deterministic on CPU); returns (model, metrics).
    seed: another initialisation and batch order than the recipe's (the data split is fixed)."""
    recipe = _check_name(name, seed)
    torch.use_deterministic_algorithms(True)
    model = new_model(name, seed)
    x, y = bundled_data(name, "train")
    xt, yt = bundled_data(name, "test")
    opt = torch.optim.AdamW(
        model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay, betas=recipe.betas
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / recipe.warmup, 1.0) if recipe.warmup else 1.0
    )
    g = torch.Generator().manual_seed(recipe.seed)
    order, pos = torch.randperm(len(y), generator=g), 0
    with progress_bar(progress) as bar:
        task = bar.add_task(f"training {name}", total=recipe.steps)
        for _ in range(recipe.steps):
            if recipe.batch_size is None:
                xb, yb = x, y
            else:
                if pos + recipe.batch_size > len(y):
                    order, pos = torch.randperm(len(y), generator=g), 0
                idx = order[pos : pos + recipe.batch_size]
                pos += recipe.batch_size
                xb, yb = x[idx], y[idx]
            loss_b = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss_b.backward()
            opt.step()
            sched.step()
            bar.update(task, advance=1, description=f"training {name} loss {loss_b.item():.4f}")
    model.eval()
    metrics = {
        "train_loss": round(loss(model, x, y), 5),
        "train_accuracy": round(accuracy(model, x, y), 5),
        "test_loss": round(loss(model, xt, yt), 5),
        "test_accuracy": round(accuracy(model, xt, yt), 5),
        "n_train": len(y),
        "n_test": len(yt),
    }
    return model, metrics


def build(
    name: str, out: str | Path | None = None, progress: bool = True, seed: int | None = None
) -> Path:
    """Train `name` (training seed: the recipe's, or `seed`) and write model.safetensors +
    card.json into `out` (default: the bundled folder)."""
    recipe = _check_name(name, seed)
    folder = Path(out) if out is not None else basis_dir(name)
    t0 = time.time()
    model, metrics = train(name, progress, seed)
    seconds = round(time.time() - t0, 1)
    store = torch.float16 if name == "modadd-1l" else torch.float32
    tensors = {k: v.detach().to(store).contiguous() for k, v in model.state_dict().items()}
    write_safetensors(folder / "model.safetensors", tensors)
    card = {
        "name": name,
        "architecture": config_dict(model),
        "node_layers": list(model.node_layers),
        "n_params": sum(v.numel() for v in tensors.values()),
        "storage_dtype": str(store).removeprefix("torch."),
        "data": _data_card(name),
        "training": {
            "optimizer": "AdamW",
            "steps": recipe.steps,
            "lr": recipe.lr,
            "weight_decay": recipe.weight_decay,
            "betas": list(recipe.betas),
            "warmup_steps": recipe.warmup,
            "batch_size": recipe.batch_size or "full batch",
            "seed": recipe.seed,
            "loss": "cross-entropy on the last position's logits",
            "deterministic": "torch.use_deterministic_algorithms(True), CPU",
        },
        "metrics": metrics,
        "metrics_note": "metrics are of the fp32 model before storage; loading the stored "
        "weights gives the values in `metrics_stored`",
        "build_seconds": seconds,
        "machine": f"{platform.machine()}, torch {torch.__version__} CPU",
        "command": f"mechscope basis build {name}"
        + ("" if seed is None else f" --seed {seed}")
        + ("" if out is None else f" --out {out}"),
    }
    stored = _from_tensors(config_dict(model), tensors, torch.float32)
    card["metrics_stored"] = {
        "test_accuracy": round(accuracy(stored, *bundled_data(name, "test")), 5),
        "train_accuracy": round(accuracy(stored, *bundled_data(name, "train")), 5),
    }
    write_json(folder / "card.json", card, indent=2)
    return folder


def _data_card(name: str) -> dict[str, Any]:
    d = RECIPES[name].data
    if name == "digits-mlp":
        return {
            "source": "sklearn.datasets.load_digits (1797 8x8 images, bundled with scikit-learn)",
            "preprocessing": "pixels / 16",
            "split": f"stratified, test_size={d['test_size']}, random_state={d['split_seed']}",
        }
    return {
        "source": f"all pairs (a, b) in [0, {d['p']})^2, tokens [a, b, {d['p']}]",
        "label": f"(a + b) mod {d['p']}",
        "split": f"torch.randperm(seed {d['split_seed']}): first {d['frac_train']} train",
    }


def card(name: str) -> dict[str, Any]:
    """The card.json of a bundled model."""
    _check_name(name)
    path = basis_dir(name) / "card.json"
    if not path.exists():
        raise BasisError(f"{name} has no card at {path}; run `mechscope basis build {name}`")
    return dict(json.loads(path.read_text()))


def load_bundled(
    name: str, folder: str | Path | None = None, dtype: torch.dtype = torch.float32
) -> NodeLayerModel:
    """Load a bundled model (eval mode, `dtype`) from its folder (default: the bundled one)."""
    _check_name(name)
    folder = Path(folder) if folder is not None else basis_dir(name)
    weights, card_path = folder / "model.safetensors", folder / "card.json"
    if not weights.exists() or not card_path.exists():
        raise BasisError(
            f"no weights for {name} in {folder}; run `mechscope basis build {name}` to train them"
        )
    remake = f"Rebuild it with `mechscope basis build {name}`"
    arch = read_json(card_path, BasisError, remake)["architecture"]
    return _from_tensors(arch, read_safetensors(weights, BasisError, remake, finite=True), dtype)


def _from_tensors(
    arch: dict[str, Any], tensors: dict[str, Tensor], dtype: torch.dtype
) -> NodeLayerModel:
    model = model_from_config(arch)
    model.load_state_dict({k: v.to(dtype) for k, v in tensors.items()})
    return model.to(dtype).eval()

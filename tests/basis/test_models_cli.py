"""Bundled models load and reach their card's accuracy; the CLI runs; the weights fit the budget."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from mechscope.artefacts import BASIS_DIR
from mechscope.basis.cli import basis_app
from mechscope.basis.pretrained import (
    bundled_data,
    card,
    list_bundled,
    load_bundled,
)
from mechscope.errors import BasisError


@pytest.mark.parametrize("name", ["digits-mlp", "modadd-1l"])
def test_bundled_model_matches_card(name: str) -> None:
    model = load_bundled(name)
    x, y = bundled_data(name, "test")
    acc = float((model(x).argmax(-1) == y).float().mean())
    assert acc == pytest.approx(card(name)["metrics_stored"]["test_accuracy"], abs=1e-4)
    assert acc > 0.95
    acts = model.node_acts(x[:16])
    assert len(acts) == len(model.node_layers)
    for a in acts[:-1]:  # every node layer but the logits carries the constant coordinate
        torch.testing.assert_close(a[..., -1], torch.ones_like(a[..., -1]))


def test_bundled_weights_fit_the_budget() -> None:
    total = sum(p.stat().st_size for p in BASIS_DIR.rglob("*") if p.is_file())
    assert total < 1024**2
    assert list_bundled() == ["digits-mlp", "modadd-1l"]


def test_unknown_model_says_what_exists() -> None:
    with pytest.raises(BasisError, match="available: digits-mlp, modadd-1l"):
        load_bundled("nope")


def test_cli_list_and_modular() -> None:
    runner = CliRunner()
    res = runner.invoke(basis_app, ["list"])
    assert res.exit_code == 0, res.output
    assert "modadd-1l" in res.output
    res = runner.invoke(basis_app, ["modular"])
    assert res.exit_code == 0, res.output
    assert "[[0], [1]]" in res.output or "[[1], [0]]" in res.output

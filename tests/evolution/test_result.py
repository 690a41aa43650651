"""Result files: per-feature active counts and the gates' support floor survive save / load."""

from __future__ import annotations

import json

import pytest
import torch

from mechscope.errors import EvolutionError
from mechscope.evolution.result import RESULT_FILE, EvolutionResult

from .conftest import synthetic_codes, synthetic_result


def test_active_counts_and_floor_round_trip(tmp_path) -> None:
    result = synthetic_result()
    x, y = synthetic_codes()
    for layer, codes in zip(result.layers, (x, y), strict=True):
        # the gates' activity: act > 0.2 x the feature's max
        want = (codes > 0.2 * codes.max(0).values).sum(0)
        assert torch.equal(layer.active, want)
    again = EvolutionResult.load(result.save(tmp_path / "r"))
    for a, b in zip(result.layers, again.layers, strict=True):
        assert a.active.dtype == b.active.dtype == torch.int64
        assert torch.equal(a.active, b.active)
    c, d = result.pairs[0].classification, again.pairs[0].classification
    assert d.min_support == c.min_support == 50
    assert torch.equal(c.or_gates, d.or_gates) and torch.equal(c.and_gates, d.and_gates)
    assert again.counts() == result.counts() and again.config["min_support"] == 50


def test_old_format_is_refused_with_a_fix(tmp_path) -> None:
    folder = synthetic_result().save(tmp_path / "r")
    doc = json.loads((folder / RESULT_FILE).read_text())
    doc["format"] = 1
    (folder / RESULT_FILE).write_text(json.dumps(doc))
    with pytest.raises(EvolutionError, match="evolution run"):
        EvolutionResult.load(folder)

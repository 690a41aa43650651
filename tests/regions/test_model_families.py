"""Stable-region interpolation on every declared family's toy model: the lean backend (LeanModel
started after the write site) equals the bridge backend (the bridge's hooks), for the final-norm
output and for the logits, including the MLP activation patterns (gated MLPs: the gate)."""

from __future__ import annotations

import pytest
import torch

from mechscope.models.declare import FAMILIES
from mechscope.regions.interpolate import PathRunner, interpolate_pairs
from mechscope.regions.prompts import consecutive_pairs


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize(("layer", "read"), [(0, "normalized"), (-1, "logits")])
def test_lean_backend_equals_bridge_backend(family, layer, read, toy_model, prompts8) -> None:
    bridge = toy_model(family)
    tokens = prompts8[:5]  # 10 tokens: longer than the toys' 8-token sliding windows
    lean = PathRunner(bridge, tokens, layer=layer, read=read, backend="lean")
    ref = PathRunner(bridge, tokens, layer=layer, read=read, backend="bridge")
    first, second = consecutive_pairs(5)
    cl = interpolate_pairs(lean, first, second, n_steps=5)
    cb = interpolate_pairs(ref, first, second, n_steps=5)
    scale = float(ref.clean_write.abs().max())
    torch.testing.assert_close(lean.clean_write, ref.clean_write, atol=1e-5 * scale, rtol=0)
    torch.testing.assert_close(cl.dist, cb.dist, atol=1e-4 * float(cb.dist.max()), rtol=1e-4)
    # the toys' next-token distributions are nearly flat: KLs are small, float32 error ~5e-7
    torch.testing.assert_close(cl.kl, cb.kl, atol=1e-3 * float(cb.kl.max()) + 1e-6, rtol=1e-3)
    # the paths whose ends differ move the output (two prompts end in the same token: at the
    # embedding output of a rotary model their activations are equal)
    moved = cb.input_dist > 0
    assert int(moved.sum()) >= 3 and bool((cb.dist[moved, -1] > 0).all())
    assert torch.equal(cl.top1, cb.top1)
    assert cl.gate_layers == cb.gate_layers == list(range(layer + 1, 2))
    assert cl.flips is not None and cb.flips is not None
    # a pre-activation within float error of 0 could flip; none does on these prompts
    assert torch.equal(cl.flips, cb.flips) and torch.equal(cl.mismatch, cb.mismatch)

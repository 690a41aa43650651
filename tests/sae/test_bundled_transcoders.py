"""The bundled transcoders of code-2l and code-llama-2l: they load in both formats, fit their
model, explain its MLPs, and the build that made them is deterministic."""

from __future__ import annotations

import json

import pytest
import torch

from mechscope.artefacts import transcoder_dir
from mechscope.data.batches import eval_batches
from mechscope.errors import SAEError
from mechscope.graphs import load_bundled_transcoders
from mechscope.models.lean import as_lean
from mechscope.sae.bundled import build_transcoders
from mechscope.sae.transcoder import (
    check_transcoder_fits,
    evaluate_transcoders,
    load_circuit_tracer,
    mlp_io,
)
from mechscope.zoo.specs import SPECS


@pytest.mark.parametrize("fixture", ["gpt2_2l", "llama_2l"])
def test_bundled_set_fits_and_explains_the_mlps(request, fixture: str) -> None:
    model = request.getfixturevalue(fixture)
    lean = as_lean(model)
    name = {"gpt2_2l": "code-2l", "llama_2l": "code-llama-2l"}[fixture]
    tcs = load_bundled_transcoders(name)
    d = SPECS[name].d_model
    assert [tc.layer for tc in tcs] == list(range(SPECS[name].n_layers)) == list(range(2))
    for l, tc in enumerate(tcs):
        check_transcoder_fits(lean, tc)
        assert (tc.d_in, tc.d_sae, tc.W_skip) == (d, 4 * d, None)
        assert tc.cfg.hook_name == f"blocks.{l}.ln2.hook_normalized"
        assert tc.output_hook == f"blocks.{l}.hook_mlp_out"
        assert tc.W_dec.dtype == torch.float32
        # the stored weights are fp16 values: rounding again changes nothing
        assert torch.equal(tc.W_enc, tc.W_enc.half().float())
    # circuit-tracer's copy holds the same values
    for a, b in zip(tcs, load_circuit_tracer(transcoder_dir(name) / "circuit-tracer"), strict=True):
        for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
            assert torch.equal(p, q), n
    # on held-out tokens of another seed than the card's, each reads its MLP's input and
    # predicts its output; replacing both MLPs keeps most of the CE
    toks = eval_batches(lean, 1, seed=7, mixture=SPECS[name].mixture)
    io = mlp_io(lean, toks[0], [0, 1])
    for l, tc in enumerate(tcs):
        x, y = io[l]
        y_hat = tc(x)
        ev = 1 - (y - y_hat).pow(2).sum() / (y - y.mean((0, 1))).pow(2).sum()
        assert ev > 0.5, (l, float(ev))
    res = evaluate_transcoders(lean, tcs, toks)
    assert res.ce_recovered > 0.7, res
    card = json.loads((transcoder_dir(name) / "card.json").read_text())
    assert card["command"] == f"mechscope sae build-transcoders --model {name} --steps 1500"
    assert card["eval"]["seeds"] == [0] and card["training"]["seed"] == 0
    assert card["eval"]["result"]["ce_recovered"] > 0.7


def test_no_bundled_set_names_how_to_train_one() -> None:
    with pytest.raises(SAEError, match="sae train --kind transcoder --model code-4l"):
        load_bundled_transcoders("code-4l")
    with pytest.raises(SAEError, match="zoo models"):
        build_transcoders(None, "not-a-zoo-model")


@pytest.mark.slow
def test_build_is_deterministic(gpt2_2l, tmp_path) -> None:
    # one layer, a few steps, twice: the same bytes and the same evaluation
    runs = [
        build_transcoders(gpt2_2l, "code-2l", tmp_path / s, steps=4, layers=[1], progress=False)
        for s in ("a", "b")
    ]
    name = "blocks.1.ln2.hook_normalized__transcoder"
    files = [(r / name / "sae_weights.safetensors").read_bytes() for r in runs]
    assert files[0] == files[1]
    evals = [json.loads((r / "card.json").read_text())["eval"]["result"] for r in runs]
    assert evals[0] == evals[1]
    assert not (runs[0] / "circuit-tracer").exists()  # only for sets of every layer
    other = build_transcoders(
        gpt2_2l, "code-2l", tmp_path / "c", steps=4, layers=[1], progress=False, seed=1
    )
    assert (other / name / "sae_weights.safetensors").read_bytes() != files[0]


@pytest.mark.slow
def test_build_command(tmp_path) -> None:
    from typer.testing import CliRunner

    from mechscope.cli import app

    out = tmp_path / "tc"
    r = CliRunner().invoke(
        app, ["sae", "build-transcoders", "--model", "code-2l", "--steps", "2", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    card = json.loads((out / "card.json").read_text())
    assert card["command"] == "mechscope sae build-transcoders --model code-2l --steps 2"
    assert [tc.layer for tc in load_circuit_tracer(out / "circuit-tracer")] == [0, 1]
    assert not (out / "eval.json").exists()

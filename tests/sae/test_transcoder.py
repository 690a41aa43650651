"""Transcoders: training learns the MLP, exact transcoders evaluate as exact, both file formats
round-trip (and load in sae-lens itself), bad inputs fail clearly."""

from __future__ import annotations

import pytest
import sae_lens  # a dev dependency: these tests must run, never skip
import torch

from mechscope.graphs.handbuilt import exact_model
from mechscope.sae import SAEConfig, SAEError, TrainConfig
from mechscope.sae.transcoder import (
    Transcoder,
    check_transcoder_fits,
    evaluate_transcoders,
    load_circuit_tracer,
    load_transcoder,
    save_circuit_tracer,
    save_transcoder,
    train_transcoder,
)

HOOK = "blocks.0.ln2.hook_normalized"


def batches(n: int, seed: int = 0, batch: int = 4, pos: int = 24, vocab: int = 4096):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        t = torch.randint(1, vocab, (batch, pos), generator=g)
        t[:, 0] = 0
        yield t


def _random(skip: bool, layer: int = 0, arch: str = "standard", seed: int = 0) -> Transcoder:
    cfg = SAEConfig(
        16,
        40,
        architecture=arch,  # type: ignore[arg-type]
        hook_name=f"blocks.{layer}.ln2.hook_normalized",
        model_name="code-2l",
        apply_b_dec_to_input=False,
    )
    tc = Transcoder(cfg, skip=skip, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in tc.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
        if arch == "jumprelu":
            tc.threshold.abs_()
    return tc


X = torch.randn(3, 7, 16, generator=torch.Generator().manual_seed(3))


def test_exact_transcoders_evaluate_as_exact() -> None:
    lean, tcs = exact_model()
    ev = evaluate_transcoders(lean, tcs, batches(2, vocab=12, pos=10))
    for row in ev.layers:
        assert row["explained_variance"] == pytest.approx(1.0, abs=1e-9)
        assert 0 < row["l0"] < 16
    assert ev.ce_replaced == pytest.approx(ev.ce_orig, abs=1e-9)
    assert ev.kl_replaced == pytest.approx(0.0, abs=1e-9)
    assert ev.ce_recovered == pytest.approx(1.0, abs=1e-6)
    # a perturbed transcoder is no longer exact, and the metrics see it
    with torch.no_grad():
        tcs[1].W_dec.mul_(0.5)
    ev2 = evaluate_transcoders(lean, tcs, batches(2, vocab=12, pos=10))
    assert ev2.layers[1]["explained_variance"] < 0.99 and ev2.kl_replaced > 1e-4


@pytest.mark.parametrize("skip", [False, True])
def test_training_learns_the_mlp(gpt2_2l, skip: bool) -> None:
    cfg = TrainConfig(
        model="code-2l",
        hook_name="blocks.1.ln2.hook_normalized",
        n_steps=40,
        expansion=2,
        warmup_steps=5,
        lr=3e-3,
        sparsity_coeff=0.3,
    )
    res = train_transcoder(cfg, gpt2_2l, skip=skip, tokens=batches(40), progress=False)
    tc = res.sae
    assert isinstance(tc, Transcoder) and (tc.W_skip is not None) == skip
    first = sum(h["mse"] for h in res.history[:5]) / 5
    last = sum(h["mse"] for h in res.history[-5:]) / 5
    assert last < 0.5 * first
    ev = evaluate_transcoders(gpt2_2l, [tc], batches(1, seed=99))
    assert ev.layers[0]["explained_variance"] > 0.3
    assert ev.ce_recovered > 0.3


@pytest.mark.parametrize(
    ("skip", "arch"), [(False, "standard"), (True, "standard"), (True, "jumprelu")]
)
def test_saelens_round_trip_both_ways(tmp_path, skip: bool, arch: str) -> None:
    tc = _random(skip, arch=arch)
    save_transcoder(tc, tmp_path / "tc")
    back = load_transcoder(tmp_path / "tc")
    assert torch.equal(back(X), tc(X)) and back.cfg.hook_name == HOOK
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "tc"))
    want = {"standard": "transcoder", "jumprelu": "jumprelu_transcoder"}[arch]
    want = want.replace("transcoder", "skip_transcoder") if skip else want
    assert theirs.cfg.architecture() == want
    assert theirs.cfg.metadata.hook_name_out == "blocks.0.hook_mlp_out"
    torch.testing.assert_close(theirs(X), tc(X), atol=1e-6, rtol=1e-6)
    # the reverse: sae-lens writes, mechscope reads
    theirs.save_model(str(tmp_path / "sl"))
    torch.testing.assert_close(load_transcoder(tmp_path / "sl")(X), tc(X), atol=1e-6, rtol=1e-6)


def test_circuit_tracer_round_trip(tmp_path) -> None:
    tcs = [_random(True, 0, seed=1), _random(True, 1, "jumprelu", seed=2)]
    save_circuit_tracer(tcs, tmp_path / "ct")
    text = (tmp_path / "ct" / "config.yaml").read_text()
    assert "feature_input_hook: ln2.hook_normalized" in text
    back = load_circuit_tracer(tmp_path / "ct")
    from safetensors.torch import load_file

    raw = load_file(str(tmp_path / "ct" / "layer_1.safetensors"))
    assert raw["W_enc"].shape == (40, 16) and "activation_function.threshold" in raw
    for a, b in zip(tcs, back, strict=True):
        assert a.layer == b.layer
        assert torch.equal(a(X), b(X))


def test_bad_inputs() -> None:
    with pytest.raises(SAEError, match=r"ln2\.hook_normalized"):
        Transcoder(SAEConfig(16, 32, hook_name="blocks.0.hook_mlp_out", apply_b_dec_to_input=False))
    with pytest.raises(SAEError, match="apply_b_dec_to_input"):
        Transcoder(SAEConfig(16, 32, hook_name=HOOK))
    lean, _ = exact_model(d_model=8)
    with pytest.raises(SAEError, match="d_model is 8"):
        check_transcoder_fits(lean, _random(False))
    with pytest.raises(SAEError, match="has 2 layers"):
        check_transcoder_fits(lean, _random(False, layer=5))
    with pytest.raises(SAEError, match="local"):
        train_transcoder(TrainConfig(model="code-2l", hook_name=HOOK, loss="e2e"), lean)

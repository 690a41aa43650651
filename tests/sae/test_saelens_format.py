"""SAELens on-disk format: round trip, and both directions against sae-lens itself."""

from __future__ import annotations

import json

import pytest
import sae_lens  # a dev dependency: these tests must run, never skip
import torch

from mechscope.sae import SAEConfig, SAEError, SparseAutoencoder, load_saelens, save_saelens


def _random(arch: str = "standard", k: int | None = None, seed: int = 0) -> SparseAutoencoder:
    cfg = SAEConfig(
        d_in=16,
        d_sae=48,
        architecture=arch,
        k=k,
        hook_name="blocks.0.hook_resid_post",  # type: ignore[arg-type]
        model_name="code-2l",
    )
    sae = SparseAutoencoder(cfg, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return sae


X = torch.randn(2, 9, 16, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize(("arch", "k"), [("standard", None), ("topk", 6), ("jumprelu", None)])
def test_round_trip_identical(tmp_path, arch: str, k: int | None) -> None:
    sae = _random(arch, k)
    save_saelens(sae, tmp_path / "sae")
    loaded = load_saelens(tmp_path / "sae")
    assert loaded.cfg.hook_name == "blocks.0.hook_resid_post" and loaded.cfg.k == k
    for name, p in sae.named_parameters():
        assert torch.equal(p, dict(loaded.named_parameters())[name]), name
    assert torch.equal(sae(X), loaded(X))


@pytest.mark.parametrize(("arch", "k"), [("standard", None), ("topk", 6), ("jumprelu", None)])
def test_mechscope_sae_loads_in_sae_lens(tmp_path, arch: str, k: int | None) -> None:
    sae = _random(arch, k)
    save_saelens(sae, tmp_path / "sae")
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "sae"))
    assert theirs.cfg.architecture() == arch
    assert theirs.cfg.metadata.hook_name == "blocks.0.hook_resid_post"
    with torch.no_grad():
        assert torch.allclose(theirs.encode(X), sae.encode(X), atol=1e-6)
        assert torch.allclose(theirs(X), sae(X), atol=1e-6)


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu"])
def test_sae_lens_sae_loads_in_mechscope(tmp_path, arch: str) -> None:
    from sae_lens import (
        JumpReLUSAE,
        JumpReLUSAEConfig,
        StandardSAE,
        StandardSAEConfig,
        TopKSAE,
        TopKSAEConfig,
    )

    torch.manual_seed(0)
    if arch == "standard":
        theirs = StandardSAE(StandardSAEConfig(d_in=16, d_sae=40))
    elif arch == "topk":
        theirs = TopKSAE(TopKSAEConfig(d_in=16, d_sae=40, k=5))
    else:
        theirs = JumpReLUSAE(JumpReLUSAEConfig(d_in=16, d_sae=40))
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(0.1 * torch.randn_like(p))  # not unit-norm, nonzero biases and thresholds
    theirs.cfg.metadata.hook_name = "blocks.1.hook_resid_pre"
    theirs.save_model(tmp_path / "theirs")
    ours = load_saelens(tmp_path / "theirs")
    assert ours.cfg.architecture == arch and ours.cfg.hook_name == "blocks.1.hook_resid_pre"
    with torch.no_grad():
        assert torch.allclose(ours(X), theirs(X), atol=1e-6)


def test_fp16_save(tmp_path) -> None:
    sae = _random()
    save_saelens(sae, tmp_path / "sae", dtype="float16")
    loaded = load_saelens(tmp_path / "sae")
    assert loaded.W_enc.dtype == torch.float32
    assert torch.allclose(loaded(X), sae(X), atol=2e-2)
    assert json.loads((tmp_path / "sae" / "cfg.json").read_text())["dtype"] == "float16"


def test_pre_v6_topk_config(tmp_path) -> None:
    sae = _random("topk", 6)
    save_saelens(sae, tmp_path / "sae")
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    old = {k: cfg[k] for k in ("d_in", "d_sae", "dtype", "apply_b_dec_to_input")}
    old |= {"hook_point": "blocks.0.hook_resid_post", "activation_fn_str": "topk"}
    old |= {
        "activation_fn": "topk",
        "activation_fn_kwargs": {"k": 6},
        "normalize_activations": False,
    }
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps(old))
    loaded = load_saelens(tmp_path / "sae")
    assert loaded.cfg.architecture == "topk" and loaded.cfg.k == 6
    assert loaded.cfg.hook_name == "blocks.0.hook_resid_post"
    assert torch.equal(loaded(X), sae(X))


def test_bad_folders(tmp_path) -> None:
    with pytest.raises(SAEError, match=r"no cfg.json"):
        load_saelens(tmp_path)
    save_saelens(_random(), tmp_path / "sae")
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps(cfg | {"d_in": 32}))
    with pytest.raises(SAEError, match="W_dec has shape"):
        load_saelens(tmp_path / "sae")
    (tmp_path / "sae" / "cfg.json").write_text(
        json.dumps(cfg | {"normalize_activations": "layer_norm"})
    )
    with pytest.raises(SAEError, match="normalize_activations='layer_norm' is not supported"):
        load_saelens(tmp_path / "sae")

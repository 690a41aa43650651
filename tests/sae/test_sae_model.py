"""SparseAutoencoder: shapes, SAELens's initialisation, decoder-norm folding, architectures,
dead-latent tracking, bad input."""

from __future__ import annotations

import pytest
import torch

from mechscope.sae import SAEConfig, SAEError, SparseAutoencoder, TrainConfig


def _sae(arch: str = "standard", k: int | None = None) -> SparseAutoencoder:
    return SparseAutoencoder(SAEConfig(d_in=16, d_sae=64, architecture=arch, k=k), seed=0)  # type: ignore[arg-type]


def test_shapes() -> None:
    sae = _sae()
    x = torch.randn(3, 5, 16)
    codes = sae.encode(x)
    assert codes.shape == (3, 5, 64) and bool((codes >= 0).all())
    assert sae.decode(codes).shape == x.shape
    assert torch.equal(sae(x), sae.decode(codes))


def test_init_is_saelens_and_seeded() -> None:
    """Decoder rows of norm 0.1 in seeded random directions, encoder = decoder transpose, zero
    biases (SAELens's `decoder_init_norm=0.1`)."""
    a, b, c = _sae(), _sae(), SparseAutoencoder(SAEConfig(d_in=16, d_sae=64), seed=1)
    assert torch.equal(a.W_dec, b.W_dec) and not torch.equal(a.W_dec, c.W_dec)
    torch.testing.assert_close(a.W_dec.norm(dim=-1), torch.full((64,), 0.1))
    assert torch.equal(a.W_enc, a.W_dec.T)
    assert not a.b_enc.any() and not a.b_dec.any()


@pytest.mark.parametrize("arch", ["standard", "jumprelu"])
def test_folding_decoder_norms_keeps_the_function(arch: str) -> None:
    sae = _sae(arch)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    x = torch.randn(20, 16, generator=g)
    before, norms = sae(x), sae.W_dec.norm(dim=-1).detach()
    codes = sae.encode(x)
    sae.fold_decoder_norms_()
    torch.testing.assert_close(sae(x), before, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(sae.encode(x), codes * norms)
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(64))
    torch.testing.assert_close(sae.feature_directions, sae.W_dec.detach())
    with pytest.raises(SAEError, match="TopK"):
        _sae("topk", k=3).fold_decoder_norms_()


def test_pre_encoder_bias_is_subtracted() -> None:
    sae = _sae()
    with torch.no_grad():
        sae.b_dec.fill_(0.5)
    x = torch.randn(4, 16)
    expected = torch.relu((x - 0.5) @ sae.W_enc + sae.b_enc)
    assert torch.allclose(sae.encode(x), expected)


def test_topk_keeps_exactly_k() -> None:
    sae = _sae("topk", k=5)
    with torch.no_grad():
        sae.b_enc.fill_(10.0)  # every pre-activation positive
    codes = sae.encode(torch.randn(7, 16))
    assert ((codes != 0).sum(-1) == 5).all()


def test_jumprelu_threshold_gates() -> None:
    sae = _sae("jumprelu")
    with torch.no_grad():
        sae.threshold.fill_(1e9)
    assert (sae.encode(torch.randn(4, 16)) == 0).all()


def test_dead_latent_tracking() -> None:
    sae = _sae()
    codes = torch.zeros(10, 64)
    codes[:, :3] = 1.0
    sae.update_firing_(codes)
    sae.update_firing_(codes)
    dead = sae.dead_mask(window=15)
    assert not dead[:3].any() and dead[3:].all()
    assert not sae.dead_mask(window=21).any()
    from_sums = _sae()  # the trainer passes the codes' column sums: the same record
    from_sums.update_firing_(codes, codes.sum(0))
    from_sums.update_firing_(codes, codes.sum(0))
    assert torch.equal(from_sums.tokens_since_fired, sae.tokens_since_fired)


def test_width_mismatch_is_a_clear_error() -> None:
    with pytest.raises(SAEError, match="width 12 but the SAE expects d_in=16"):
        _sae().encode(torch.randn(2, 12))


def test_bad_configs() -> None:
    with pytest.raises(ValueError, match="unknown SAE architecture"):
        SAEConfig(d_in=4, d_sae=8, architecture="gated")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="topk SAE needs"):
        SAEConfig(d_in=4, d_sae=8, architecture="topk")
    with pytest.raises(ValueError, match="unknown loss"):
        TrainConfig(model="m", hook_name="h", loss="mse")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not trained here"):
        TrainConfig(model="m", hook_name="h", architecture="jumprelu")


@pytest.mark.parametrize("use", ["both", "codes only", "reconstruction only"])
@pytest.mark.parametrize("layout", ["batch x pos", "column-major"])
def test_fused_forward_equals_autograd_bit_for_bit(use: str, layout: str) -> None:
    """forward_with_codes with gradients (one autograd function, the codes' gradient summed and
    masked in place) gives decode(encode(x))'s outputs and every gradient, of the weights and of
    x, bit for bit; the incoming gradients are left as they were."""
    sae = _sae()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    x = torch.randn(3, 40, 16, generator=g) if layout == "batch x pos" else torch.randn(16, 90).T
    x.requires_grad_(True)
    w_hat, w_codes = torch.randn(*x.shape, generator=g), torch.rand(*x.shape[:-1], 64)

    def grads(x_hat: torch.Tensor, codes: torch.Tensor) -> list[torch.Tensor | None]:
        """The .grad of x and of each parameter after a backward, as the trainer reads them."""
        for t in (x, *sae.parameters()):
            t.grad = None
        loss = (x_hat * w_hat).sum() if use != "codes only" else 0
        loss = loss + (codes * w_codes).sum() if use != "reconstruction only" else loss
        loss.backward()  # type: ignore[union-attr]
        return [t.grad for t in (x, *sae.parameters())]

    fused = sae.forward_with_codes(x)
    codes = sae.encode(x)
    plain = (sae.decode(codes), codes)
    assert all(torch.equal(a, b) for a, b in zip(fused, plain, strict=True))
    for a, b in zip(grads(*fused), grads(*plain), strict=True):
        assert (a is None and b is None) or torch.equal(a, b)
    seen: list[torch.Tensor] = []
    out = sae.forward_with_codes(x)
    out[1].register_hook(lambda grad: seen.append(grad.clone()) or None)
    out[1].register_hook(lambda grad: seen.append(grad) or None)
    (out[0].sum() + out[1].sum()).backward()
    assert torch.equal(seen[0], seen[1])  # the codes' incoming gradient was not masked in place

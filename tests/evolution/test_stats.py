"""Streaming statistics: equal to the dense computation, no NaN for dead features."""

from __future__ import annotations

import math

import pytest
import torch

from mechscope.errors import EvolutionError
from mechscope.evolution.stats import (
    MEASURES,
    PairStats,
    decoder_cosine,
    relative_thresholds,
    sparsify,
)


def _codes(n: int, f: int, density: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, f, generator=g) < density) * torch.rand(n, f, generator=g) * 3


@pytest.mark.parametrize("method", ["dense", "sparse", "auto"])
def test_streaming_equals_dense(method: str, dense_reference) -> None:
    x, y = _codes(1000, 24, 0.1, 0), _codes(1000, 18, 0.15, 1)
    x[:, 3] = 0.0  # dead
    y[:, 5] = 0.0
    y[:, 6] = 1.5  # constant: no variance
    tx = relative_thresholds(x.max(0).values, 0.2)
    ty = relative_thresholds(y.max(0).values, 0.2)
    st = PairStats(24, 18, thr_prev=tx, thr_next=ty, method=method, device="cpu")  # type: ignore[arg-type]
    for s in range(0, 1000, 137):  # uneven batches
        st.update(x[s : s + 137], y[s : s + 137])
    ref = dense_reference(x, y, tx, ty)
    for m in MEASURES:
        got = st.matrix(m)
        assert got.shape == (24, 18) and got.dtype == torch.float32
        torch.testing.assert_close(got.double(), ref[m], atol=1e-5, rtol=1e-5, msg=m)
    assert st.n == 1000
    if method == "sparse":
        assert st.n_sparse > 0 and st.n_dense == 0


def test_auto_picks_sparse_for_sparse_codes() -> None:
    st = PairStats(2000, 2000, device="cpu")
    st.update(_codes(64, 2000, 0.005, 0), _codes(64, 2000, 0.005, 1))
    assert st.n_sparse == 1
    st.update(_codes(64, 2000, 0.5, 0), _codes(64, 2000, 0.5, 1))
    assert st.n_dense == 1


def test_sparse_chunks_large_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    import mechscope.evolution.stats as stats

    monkeypatch.setattr(stats, "MAX_PAIRS_PER_CHUNK", 7)  # forces many chunks, single tokens
    x, y = _codes(300, 10, 0.4, 2), _codes(300, 9, 0.4, 3)
    a = PairStats(10, 9, method="sparse", device="cpu")
    b = PairStats(10, 9, method="dense", device="cpu")
    a.update(x, y)
    b.update(x, y)
    torch.testing.assert_close(a.xy, b.xy, rtol=1e-6, atol=1e-6)  # dense: fp32 GEMM
    torch.testing.assert_close(a.co, b.co)


def test_dead_features_give_zero_not_nan() -> None:
    st = PairStats(5, 4, device="cpu")
    x = torch.zeros(50, 5)
    x[:, 0] = torch.rand(50)
    st.update(x, torch.zeros(50, 4))  # every next feature dead
    for m in MEASURES:
        mat = st.matrix(m)
        assert not mat.isnan().any() and not mat.isinf().any(), m
        assert (mat == 0).all(), m
    dec = decoder_cosine(torch.zeros(3, 8), torch.randn(2, 8))
    assert (dec == 0).all()


def test_sparsify_threshold_and_top_k() -> None:
    m = torch.tensor([[0.9, 0.05, -0.5], [0.2, 0.3, 0.0]])
    s = sparsify(m, 0.1)
    assert sorted(zip(s.rows.tolist(), s.cols.tolist(), strict=True)) == [
        (0, 0), (0, 2), (1, 0), (1, 1),
    ]  # fmt: skip
    assert (s.dense() == torch.where(m.abs() >= 0.1, m, torch.zeros_like(m))).all()
    top = sparsify(m, 0.1, top_k=1)  # row or column best
    assert sorted(zip(top.rows.tolist(), top.cols.tolist(), strict=True)) == [
        (0, 0), (0, 2), (1, 1),
    ]  # fmt: skip


def test_decoder_cosine_matches_definition() -> None:
    a, b = torch.randn(6, 16), torch.randn(5, 16)
    ref = torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(b, dim=1).T
    torch.testing.assert_close(decoder_cosine(a, b), ref)
    with pytest.raises(EvolutionError, match="same d_model"):
        decoder_cosine(a, torch.randn(5, 8))


def test_errors() -> None:
    st = PairStats(3, 4, device="cpu")
    with pytest.raises(EvolutionError, match="no tokens"):
        st.matrix("pearson")
    with pytest.raises(EvolutionError, match="expected 3 and 4 features"):
        st.update(torch.zeros(2, 4), torch.zeros(2, 4))
    with pytest.raises(EvolutionError, match="unknown measure"):
        st.update(torch.zeros(2, 3), torch.zeros(2, 4))
        st.measure("spearman")
    with pytest.raises(EvolutionError, match="rel_threshold"):
        relative_thresholds(torch.ones(3), 1.5)
    assert not math.isnan(float(st.matrix("mutual_info").sum()))


def test_default_device_equals_cpu() -> None:
    """The default device (CUDA where present, else the CPU) gives the CPU's numbers."""
    x, y = _codes(700, 40, 0.05, 4), _codes(700, 30, 0.05, 5)
    for method in ("dense", "sparse"):
        a = PairStats(40, 30, method=method)  # type: ignore[arg-type]
        assert a.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
        b = PairStats(40, 30, method=method, device="cpu")  # type: ignore[arg-type]
        a.update(x, y)
        b.update(x, y)
        for m in MEASURES:
            torch.testing.assert_close(a.matrix(m).cpu(), b.matrix(m), atol=1e-5, rtol=1e-5)

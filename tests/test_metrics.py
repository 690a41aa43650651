import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mechscope import metrics


def _logits(seed: int = 0, b: int = 3, p: int = 4, v: int = 7) -> torch.Tensor:
    return torch.randn(b, p, v, generator=torch.Generator().manual_seed(seed))


def test_logit_diff_single_and_max_over_wrong():
    lg = _logits()
    ans, wrong = torch.tensor([0, 1, 2]), torch.tensor([[3, 4], [5, 6], [0, 1]])
    out = metrics.logit_diff(lg, ans, wrong)
    assert out.shape == (3,)
    for i in range(3):
        expect = lg[i, -1, ans[i]] - lg[i, -1, wrong[i]].max()
        assert torch.isclose(out[i], expect)
    single = metrics.logit_diff(lg, ans, wrong[:, 0])
    assert torch.allclose(
        single, lg[:, -1].gather(1, ans[:, None])[:, 0] - lg[:, -1].gather(1, wrong[:, :1])[:, 0]
    )


def test_logprob_prob_and_position():
    lg = _logits()
    ans = torch.tensor([1, 2, 3])
    lp = metrics.logprob(lg, ans, pos=1)
    assert torch.allclose(lp, lg[:, 1].log_softmax(-1).gather(1, ans[:, None])[:, 0])
    assert torch.allclose(metrics.prob(lg, ans, pos=1), lp.exp())
    per_prompt = metrics.logprob(lg, ans, pos=torch.tensor([0, 1, 2]))
    assert torch.isclose(per_prompt[2], lg[2, 2].log_softmax(-1)[3])


def test_kl_matches_torch_and_shapes():
    a, b = _logits(0), _logits(1)
    kl = metrics.kl_div(a, b)
    ref = F.kl_div(
        b[:, -1].log_softmax(-1), a[:, -1].log_softmax(-1), log_target=True, reduction="none"
    ).sum(-1)
    assert kl.shape == (3,)
    assert torch.allclose(kl, ref, atol=1e-6)
    assert metrics.kl_div(a, b, pos=None).shape == (3, 4)
    with pytest.raises(ValueError, match="differ"):
        metrics.kl_div(a, b[:, :2])


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.01, 30))
def test_kl_nonnegative_and_zero_on_self(seed, scale):
    a = _logits(seed) * scale
    assert torch.all(metrics.kl_div(a, a, pos=None).abs() < 1e-5)
    b = _logits(seed + 1) * scale
    assert torch.all(metrics.kl_div(a, b, pos=None) >= -1e-6)


def test_normalise_maps_baselines_to_0_and_1():
    clean, corrupt = torch.tensor(3.0), torch.tensor(-1.0)
    vals = torch.tensor([3.0, -1.0, 1.0])
    assert torch.allclose(metrics.normalise(vals, clean, corrupt), torch.tensor([1.0, 0.0, 0.5]))
    with pytest.raises(ValueError, match="baselines are equal"):
        metrics.normalise(vals, 1.0, 1.0)


def test_bad_logits_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\[batch, pos, vocab\]"):
        metrics.logprob(torch.zeros(3, 7), torch.tensor([0, 1, 2]))

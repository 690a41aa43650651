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


# -- the registry: for_task, against the three dispatchers it replaced ---------------------------
def _task(b: int = 3, v: int = 7):
    from mechscope.tasks import Task

    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, v, (b, 4), generator=g)
    return Task(
        "toy",
        tokens,
        tokens.flip(1),
        torch.tensor([1, 2, 3]),
        torch.tensor([[0, 4], [5, 6], [4, 0]]),
    )


def _old_task_score(task, logits, name):
    """tasks/base.py's Task.score before the registry."""
    if name == "logit_diff":
        return metrics.logit_diff(logits, task.answers, task.wrong_answers)
    if name == "logprob":
        return metrics.logprob(logits, task.answers)
    return metrics.prob(logits, task.answers)


def _old_patch_metric(task, name, clean_logits):
    """patching/metric.py's task_metric before the registry: fn(logits, prompt)."""
    answers, wrong = task.answers, task.wrong_answers
    if name == "logit_diff":
        return lambda lg, i: metrics.logit_diff(lg, answers[i], wrong[i])
    if name == "logprob":
        return lambda lg, i: metrics.logprob(lg, answers[i])
    if name == "prob":
        return lambda lg, i: metrics.prob(lg, answers[i])
    ref = clean_logits[:, -1] if clean_logits.ndim == 3 else clean_logits
    return lambda lg, i: metrics.kl_div(ref[i].unsqueeze(1), lg[:, -1:], pos=-1)


def _old_circuit_metric(task, name, clean_logits):
    """circuits/metric.py's task_circuit_metric (and kl_metric for "kl") before the registry:
    fn(logits [n, batch, pos, vocab]) -> [n], lower is better."""
    answers, wrong = task.answers, task.wrong_answers
    if name == "kl":

        def kl(lg):
            ref = clean_logits.unsqueeze(0).expand_as(lg)
            out = metrics.kl_div(ref.flatten(0, 1), lg.flatten(0, 1), pos=None)
            return out.view(lg.shape[0], -1).mean(1)

        return kl
    if name == "logit_diff":
        return lambda lg: (
            -metrics.logit_diff(
                lg.flatten(0, 1), answers.repeat(lg.shape[0]), wrong.repeat(lg.shape[0], 1)
            )
            .view(lg.shape[0], -1)
            .mean(1)
        )
    return lambda lg: (
        -metrics.logprob(lg.flatten(0, 1), answers.repeat(lg.shape[0]))
        .view(lg.shape[0], -1)
        .mean(1)
    )


@pytest.mark.parametrize("name", metrics.NAMES)
def test_for_task_equals_the_three_old_dispatchers(name):
    from mechscope.circuits import task_circuit_metric
    from mechscope.patching import task_metric

    task = _task()
    clean = _logits(0, b=3, p=1)  # [batch, 1, vocab]: the clean run at the last position
    m = metrics.for_task(task, name, clean)
    assert m.name == name and m.higher_is_better == (name != "kl")
    # Task.score: per prompt, logits [batch, pos, vocab] (the old one knew no "kl")
    lg = _logits(1)
    if name != "kl":
        assert torch.equal(task.score(lg, name), _old_task_score(task, lg, name))
    assert torch.equal(task.score(lg, name, clean), m(lg))
    # the patching engine: rows of stacked variants, row i belonging to prompt[i]
    rows, prompt = _logits(2, b=6, p=1), torch.tensor([0, 1, 2, 2, 0, 1])
    pm = task_metric(task, name, clean)
    assert pm.positions == (-1,) and pm.higher_is_better == m.higher_is_better
    assert torch.equal(pm(rows, prompt), _old_patch_metric(task, name, clean)(rows, prompt))
    # circuits: [n_circuits, batch, pos, vocab] -> [n], lower is better ("prob" is new)
    stacked = torch.randn(4, 3, 1, 7, generator=torch.Generator().manual_seed(3))
    got = task_circuit_metric(task, name, clean)(stacked)
    if name == "prob":
        want = -metrics.prob(stacked.flatten(0, 1), task.answers.repeat(4)).view(4, 3).mean(1)
    else:
        want = _old_circuit_metric(task, name, clean)(stacked)
    assert torch.equal(got, want)


def test_unknown_metric_is_one_error_listing_the_valid_names():
    from mechscope.circuits import task_circuit_metric
    from mechscope.errors import MetricError
    from mechscope.patching import task_metric
    from mechscope.sweep.kinds import AcdcParams
    from mechscope.tasks import Task

    task = _task()
    msg = r"Unknown metric 'accuracy'; choose one of logit_diff, logprob, prob, kl\."
    for make in (
        lambda: metrics.for_task(task, "accuracy"),
        lambda: task_metric(task, "accuracy"),
        lambda: task_circuit_metric(task, "accuracy"),
        lambda: task.score(_logits(), "accuracy"),
        lambda: Task(
            "t",
            task.clean_tokens,
            task.corrupt_tokens,
            task.answers,
            task.wrong_answers,
            metric="accuracy",
        ),
        lambda: AcdcParams(metric="accuracy"),
    ):
        with pytest.raises(MetricError, match=msg):
            make()
    with pytest.raises(MetricError, match="'kl' metric needs the clean run's logits"):
        metrics.for_task(task, "kl")

"""acdc_task / eap_task: found on the search prompts, measured on held-out test prompts."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from mechscope.circuits import (
    Circuit,
    CircuitRunner,
    Graph,
    acdc,
    acdc_task,
    eap,
    eap_task,
    kl_metric,
    task_circuit_metric,
)
from mechscope.errors import CircuitError
from mechscope.tasks.base import Task


def toy_task(seed: int, n: int = 4) -> Task:
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, 7, (n, 6), generator=g)
    corrupt = torch.randint(0, 7, (n, 6), generator=g)
    answers = torch.randint(0, 7, (n,), generator=g)
    return Task("toy", clean, corrupt, answers, ((answers + 1) % 7)[:, None])


@pytest.fixture(scope="module")
def split() -> tuple[Task, Task]:
    return toy_task(3), toy_task(11, n=5)


def _literal(model, graph, mask, task, ablation="resample"):
    """KL(model || circuit) and logit difference of the full model, the circuit and the empty
    circuit on `task`, written out: (full, value, ablated) per metric, higher-is-better as is."""
    corrupt = task.corrupt_tokens if ablation == "resample" else None
    runner = CircuitRunner(model, graph, task.clean_tokens, corrupt, ablation, logit_pos=(-1,))
    ref = model(task.clean_tokens)[:, -1].log_softmax(-1)  # [batch, vocab], plain forward
    kl, ld = [], []
    for m in (torch.ones_like(mask), mask, torch.zeros_like(mask)):
        lg = runner.logits(m[None])[0, :, -1]  # [batch, vocab]
        kl.append(F.kl_div(lg.log_softmax(-1), ref, log_target=True, reduction="none").sum(-1))
        right = lg[torch.arange(len(task)), task.answers]
        wrong = lg[torch.arange(len(task)), task.wrong_answers[:, 0]]
        ld.append(right - wrong)
    return [float(x.mean()) for x in kl], [float(x.mean()) for x in ld]


def _faith(full, value, ablated):
    return (ablated - value) / (ablated - full)


@pytest.mark.parametrize("ablation", ["resample", "zero"])
def test_faithfulness_is_measured_on_the_test_prompts(tiny, split, ablation):
    search, test = split
    c = acdc_task(tiny, search, test, 0.02, ablation=ablation)
    assert 0 < c.n_edges < len(c.graph.edges)
    kl, ld = _literal(tiny, c.graph, c.present, test, ablation)
    assert [c.full, c.value, c.ablated] == pytest.approx(kl, abs=1e-5)
    assert c.faithfulness == pytest.approx(_faith(*kl), abs=1e-4)
    t = c.test_metrics["logit_diff"]
    assert [t.full, t.value, t.ablated] == pytest.approx([-x for x in ld], abs=1e-5)
    assert t.faithfulness == pytest.approx(_faith(*ld), abs=1e-4)
    assert sorted(c.test_metrics) == ["kl", "logit_diff", "logprob", "prob"]
    # the search prompts' values are kept beside them, and they differ
    assert c.search is not None
    s_kl, _ = _literal(tiny, c.graph, c.present, search, ablation)
    assert [c.search.full, c.search.value, c.search.ablated] == pytest.approx(s_kl, abs=1e-5)
    assert abs(c.search.value - c.value) > 1e-3 and abs(c.search.ablated - c.ablated) > 1e-3
    assert c.meta["n_prompts"] == 4 and c.meta["n_test_prompts"] == 5


@pytest.mark.parametrize(("metric", "ablation"), [("kl", "resample"), ("logit_diff", "zero")])
def test_acdc_task_equals_the_hand_built_setup(tiny, split, metric, ablation):
    """What the CLI, the sweep and the demo each built by hand before acdc_task."""
    search, test = split
    graph = Graph.from_model(tiny)
    clean = search.clean_tokens
    corrupt = search.corrupt_tokens if ablation == "resample" else None
    if metric == "kl":
        m = kl_metric(tiny(clean, logit_pos=(-1,)))
    else:
        m = task_circuit_metric(search, metric)
    hand = acdc(tiny, clean, corrupt, 0.02, m, ablation, graph, batch_size=3)
    c = acdc_task(tiny, search, test, 0.02, metric, ablation, graph, batch_size=3)
    assert torch.equal(c.present, hand.present) and c.metric == hand.metric == metric
    assert c.search is not None
    assert (c.search.full, c.search.value, c.search.ablated) == (
        hand.full,
        hand.value,
        hand.ablated,
    )
    ref = acdc_task(tiny, search, test, 0.02, metric, ablation, graph, reference=True)
    assert torch.equal(ref.present, c.present) and ref.method == "acdc-reference"


def test_eap_task_scores_on_search_and_measures_on_test(tiny, split):
    search, test = split
    graph = Graph.from_model(tiny)
    hand = eap(
        tiny,
        search.clean_tokens,
        search.corrupt_tokens,
        task_circuit_metric(search, "logit_diff"),
        10,
        graph=graph,
    )
    c = eap_task(tiny, search, test, 10, graph=graph)
    assert c.scores is not None and hand.scores is not None
    assert torch.equal(c.scores, hand.scores) and torch.equal(c.present, hand.present)
    assert c.metric == "logit_diff" and c.n_edges == 10
    _, ld = _literal(tiny, graph, c.present, test)
    assert c.faithfulness == pytest.approx(_faith(*ld), abs=1e-4)
    assert c.search is not None and c.search.value == pytest.approx(hand.value)


def test_test_prompts_must_be_held_out(tiny, split):
    search = split[0]
    with pytest.raises(CircuitError, match="2 of the 2 test prompts are also search prompts"):
        acdc_task(tiny, search, search[1:3], 0.02)
    with pytest.raises(CircuitError, match="make_split"):
        eap_task(tiny, search, search, 5)


def test_search_and_test_values_survive_the_json_round_trip(tiny, split, tmp_path):
    c = acdc_task(tiny, *split, 0.02)
    back = Circuit.load(c.save(tmp_path / "c"))
    assert back.search == c.search and back.test_metrics == c.test_metrics
    assert back.faithfulness == pytest.approx(c.faithfulness)
    d = json.loads((tmp_path / "c.json").read_text())
    assert d["search"]["faithfulness"] == pytest.approx(c.search.faithfulness)
    assert d["test_metrics"]["logit_diff"]["value"] == c.test_metrics["logit_diff"].value
    assert "held-out kl" in c.summary() and "on the search prompts" in c.summary()
    plain = acdc(tiny, split[0].clean_tokens, split[0].corrupt_tokens, 0.02)
    assert Circuit.load(plain.save(tmp_path / "p")).search is None  # no test set: in-sample

"""Classification: copies pass through, ANDs and ORs of layer l features are found exactly; the
support floor keeps only gates whose features are active on enough tokens."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from mechscope.errors import EvolutionError
from mechscope.evolution.classify import (
    PairClassification,
    classify_pair,
    counts_table,
    gates,
    sankey_figure,
)
from mechscope.evolution.compute import EvolutionConfig, finalise_pair
from mechscope.evolution.stats import PairStats

from .conftest import EXPECTED_AND, EXPECTED_OR, EXPECTED_PASS, synthetic_stats


def classify(st: PairStats, **kwargs: Any) -> PairClassification:
    return classify_pair(
        st.matrix("pearson"),
        st.matrix("necessity"),
        st.matrix("sufficiency"),
        active_prev=st.cnt_x,
        active_next=st.cnt_y,
        **kwargs,
    )


@pytest.mark.parametrize("method", ["dense", "sparse"])
def test_synthetic_copies_ands_ors_classified_exactly(method: str) -> None:
    st = synthetic_stats(method)
    c = classify(st)
    assert c.passed_through.nonzero().flatten().tolist() == EXPECTED_PASS
    assert c.best_next_idx[:4].tolist() == [0, 1, 2, 3]
    assert c.appearing.nonzero().flatten().tolist() == [4, 5, 6, 7, 8, 9]
    assert c.and_gates.tolist() == EXPECTED_AND
    assert c.or_gates.tolist() == EXPECTED_OR
    assert c.counts() == {
        "pass_through": 4,
        "disappearing": 8,  # 4-9 and 11 (not copied), 10 (dead)
        "kept": 4,
        "appearing": 6,
        "and": 2,
        "or": 2,
        "new_other": 2,  # the independent feature and the dead one
    }


def test_tau_is_configurable() -> None:
    low = classify(synthetic_stats(), tau=0.5)
    assert low.counts()["pass_through"] > 4  # the ORs correlate ~0.7 with their parents


def test_gates_need_exactly_two_parents() -> None:
    nec = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert gates(nec).tolist() == [[2, 0, 1]]  # column 0 has three parents, column 1 one


def test_counts_table_and_sankey() -> None:
    c = classify(synthetic_stats())
    rows = counts_table([c], [12, 10])
    assert rows[0]["pass_through"] == 4 and rows[0]["kept"] is None
    assert rows[1]["and"] == 2 and rows[1]["disappearing"] is None
    fig = sankey_figure([c], [12, 10])
    assert fig.data[0].type == "sankey" and list(fig.data[0].link.value) == [8, 4, 6]


def test_shape_mismatch() -> None:
    with pytest.raises(EvolutionError, match="one shape"):
        classify_pair(torch.zeros(2, 3), torch.zeros(3, 2), torch.zeros(2, 3))


def support_codes() -> tuple[torch.Tensor, torch.Tensor]:
    """x [2000, 11], y [2000, 5] of 0 / 1 codes on token ranges, so every gate is known:
    y0 = OR(x0, x1) with parents active on 10 tokens each (the child on 320);
    y1 = OR(x2, x3), parents on 100 each; y2 = AND(x4, x5) on 100 tokens;
    y3 = AND(x6, x7) on 20 tokens; y4 = OR of x8, x9 (100 each) and x10 (5, inside x9's)."""
    x, y = torch.zeros(2000, 11), torch.zeros(2000, 5)
    spans = [(0, 10), (10, 20), (1000, 1100), (1100, 1200), (1200, 1400), (1300, 1500),
             (1500, 1600), (1550, 1650), (1700, 1800), (1800, 1900), (1850, 1855)]  # fmt: skip
    for f, (a, b) in enumerate(spans):
        x[a:b, f] = 1.0
    y[0:20, 0] = y[200:500, 0] = 1.0
    y[1000:1200, 1] = 1.0
    y[1300:1400, 2] = 1.0
    y[1560:1580, 3] = 1.0
    y[1700:1900, 4] = 1.0
    return x, y


def test_support_floor_drops_gates_of_rare_features_and_keeps_the_rest() -> None:
    x, y = support_codes()
    st = PairStats(11, 5, device="cpu")
    st.update(x, y)
    assert st.cnt_x.tolist() == [10, 10, 100, 100, 200, 200, 100, 100, 100, 100, 5]
    assert st.cnt_y.tolist() == [320, 200, 100, 20, 200]
    none = classify(st, min_support=0)  # the paper's rule
    assert none.or_gates.tolist() == [[0, 0, 1], [1, 2, 3]]  # y4 has 3 parents: no gate
    assert none.and_gates.tolist() == [[2, 4, 5], [3, 6, 7]]
    floor = classify(st, min_support=50)
    # y0's parents fire 10 times: dropped; y1 kept. x10 (5 tokens) no longer counts as a third
    # parent of y4, which becomes OR(x8, x9); the AND of 20 tokens is dropped, that of 100 kept
    assert floor.or_gates.tolist() == [[1, 2, 3], [4, 8, 9]]
    assert floor.and_gates.tolist() == [[2, 4, 5]]
    assert floor.min_support == 50 and floor.to_dict()["min_support"] == 50
    # the floor is inclusive: at 100, x2..x9 and y1, y2, y4 (>= 100) still qualify
    assert classify(st, min_support=100).and_gates.tolist() == [[2, 4, 5]]
    assert classify(st, min_support=101).or_gates.tolist() == []
    # EvolutionConfig's default floor (50) reaches the classification through finalise_pair
    cfg = EvolutionConfig(measures=("pearson",), algorithms=())
    res = finalise_pair(st, 0, cfg).classification
    assert res.or_gates.tolist() == floor.or_gates.tolist() and cfg.min_support == 50
    assert res.and_gates.tolist() == floor.and_gates.tolist()


def test_support_floor_needs_counts() -> None:
    st = synthetic_stats()
    mats = st.matrix("pearson"), st.matrix("necessity"), st.matrix("sufficiency")
    with pytest.raises(EvolutionError, match="active counts"):
        classify_pair(*mats)
    assert classify_pair(*mats, min_support=0).and_gates.tolist() == EXPECTED_AND
    with pytest.raises(EvolutionError, match="do not fit"):
        classify_pair(*mats, active_prev=st.cnt_y, active_next=st.cnt_y)
    with pytest.raises(EvolutionError, match="min_support"):
        EvolutionConfig(min_support=-1)

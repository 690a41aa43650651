"""Classification: copies pass through, ANDs and ORs of layer l features are found exactly."""

from __future__ import annotations

import pytest
import torch

from mechscope.errors import EvolutionError
from mechscope.evolution.classify import classify_pair, counts_table, gates, sankey_figure

from .conftest import EXPECTED_AND, EXPECTED_OR, EXPECTED_PASS, synthetic_stats


@pytest.mark.parametrize("method", ["dense", "sparse"])
def test_synthetic_copies_ands_ors_classified_exactly(method: str) -> None:
    st = synthetic_stats(method)
    c = classify_pair(st.matrix("pearson"), st.matrix("necessity"), st.matrix("sufficiency"))
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
    st = synthetic_stats()
    pear = st.matrix("pearson")
    low = classify_pair(pear, st.matrix("necessity"), st.matrix("sufficiency"), tau=0.5)
    assert low.counts()["pass_through"] > 4  # the ORs correlate ~0.7 with their parents


def test_gates_need_exactly_two_parents() -> None:
    nec = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert gates(nec).tolist() == [[2, 0, 1]]  # column 0 has three parents, column 1 one


def test_counts_table_and_sankey() -> None:
    st = synthetic_stats()
    c = classify_pair(st.matrix("pearson"), st.matrix("necessity"), st.matrix("sufficiency"))
    rows = counts_table([c], [12, 10])
    assert rows[0]["pass_through"] == 4 and rows[0]["kept"] is None
    assert rows[1]["and"] == 2 and rows[1]["disappearing"] is None
    fig = sankey_figure([c], [12, 10])
    assert fig.data[0].type == "sankey" and list(fig.data[0].link.value) == [8, 4, 6]


def test_shape_mismatch() -> None:
    with pytest.raises(EvolutionError, match="one shape"):
        classify_pair(torch.zeros(2, 3), torch.zeros(3, 2), torch.zeros(2, 3))

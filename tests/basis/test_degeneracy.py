"""Hand-built degeneracy is detected exactly: duplicated neurons drop the activation (and gradient)
rank by the number of copies, a direction no later layer reads drops the gradient rank by one, and
the interaction basis keeps exactly the non-degenerate dimensions."""

from __future__ import annotations

import pytest
import torch

from mechscope.basis.degeneracy import (
    FiringAccumulator,
    MomentAccumulator,
    measure_degeneracy,
    numerical_rank,
    participation_ratio,
)
from mechscope.basis.handbuilt import duplicate_neurons, remove_read_direction
from mechscope.basis.interaction import build_basis
from mechscope.basis.models import MLP, MLPConfig
from mechscope.errors import BasisError

TAU = 1e-10  # absolute truncation, well above float64 round-off of these O(1) Gram matrices
DUPS = [1, 4, 7]


@pytest.fixture(scope="module")
def base() -> tuple[MLP, torch.Tensor]:
    torch.manual_seed(0)
    mlp = MLP(MLPConfig(d_in=6, hidden=(10, 10), d_out=4)).double()
    with torch.no_grad():
        for lin in mlp.layers:
            lin.bias.fill_(0.3)  # every neuron fires on part of the data
    x = torch.randn(1500, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return mlp, x


def _lib_dims(mlp: MLP, x: torch.Tensor) -> list[int]:
    return [b.dim for b in build_basis(mlp, x, kind="lib", tau=TAU)]


def test_base_network_is_non_degenerate(base) -> None:
    mlp, x = base
    rep = measure_degeneracy(mlp, x)
    hidden0 = rep.layers[1]
    assert (hidden0.dim, hidden0.act_rank, hidden0.grad_rank) == (10, 10, 10)
    assert _lib_dims(mlp, x)[1] == 11  # 10 + the constant direction
    assert all(r.n_dead == 0 and r.extra_free_directions == 0 for r in rep.firing)


def test_duplicated_neurons_drop_rank_by_number_of_copies(base) -> None:
    mlp, x = base
    dup = duplicate_neurons(mlp, 0, DUPS)
    torch.testing.assert_close(dup(x), mlp(x))  # the function is unchanged
    hidden0 = measure_degeneracy(dup, x).layers[1]
    assert hidden0.dim == 13
    assert hidden0.act_rank == 13 - len(DUPS)
    assert hidden0.grad_rank == 13 - len(DUPS)  # copies also receive proportional gradients
    assert _lib_dims(dup, x) == _lib_dims(mlp, x)  # the interaction basis is invariant


def test_unread_direction_drops_gradient_rank_by_one(base) -> None:
    mlp, x = base
    cut, v = remove_read_direction(mlp, 0, seed=2)
    torch.testing.assert_close(cut.layers[1].weight @ v, torch.zeros(10, dtype=torch.float64))
    hidden0 = measure_degeneracy(cut, x).layers[1]
    assert hidden0.act_rank == 10
    assert hidden0.grad_rank == 10 - 1
    assert _lib_dims(cut, x)[1] == _lib_dims(mlp, x)[1] - 1


def test_both_constructions_add_up(base) -> None:
    mlp, x = base
    both, _ = remove_read_direction(duplicate_neurons(mlp, 0, DUPS), 0, seed=2)
    rep = measure_degeneracy(both, x)
    hidden0 = rep.layers[1]
    assert (hidden0.dim, hidden0.act_rank, hidden0.grad_rank) == (13, 10, 9)
    assert _lib_dims(both, x)[1] == _lib_dims(mlp, x)[1] - 1
    # co-firing: exactly the (original, copy) pairs fire together
    groups = [g for g in rep.firing[0].groups if len(g) > 1]
    assert sorted(groups) == [[n, 10 + k] for k, n in enumerate(DUPS)]
    assert rep.firing[0].extra_free_directions == len(DUPS) * 2
    assert rep.firing[1].extra_free_directions == 0


def test_dead_neurons_form_one_group(base) -> None:
    mlp, x = base
    with torch.no_grad():
        dead = duplicate_neurons(mlp, 1, [])
        dead.layers[1].bias[[2, 5]] = -1e3
    rep = measure_degeneracy(dead, x)
    assert rep.firing[1].n_dead == 2
    assert [2, 5] in rep.firing[1].groups
    assert rep.layers[2].act_rank == 8  # dead neurons have zero variance


def test_streaming_equals_one_batch(base) -> None:
    mlp, x = base
    one = build_basis(mlp, x, kind="lib", tau=TAU, batch_size=len(x))
    many = build_basis(mlp, x, kind="lib", tau=TAU, batch_size=37)
    for a, b in zip(one, many, strict=True):
        torch.testing.assert_close(a.importance, b.importance, rtol=1e-9, atol=1e-12)
    acc1, acc2, f1, f2 = (
        MomentAccumulator(7),
        MomentAccumulator(7),
        FiringAccumulator(10),
        FiringAccumulator(10),
    )
    a = mlp.node_acts(x)
    acc1.update(a[0])
    f1.update(mlp.neuron_preacts(x)["hidden.0"])
    for i in range(0, len(x), 100):
        acc2.update(a[0][i : i + 100])
        f2.update(mlp.neuron_preacts(x[i : i + 100])["hidden.0"])
    torch.testing.assert_close(acc1.gram(), acc2.gram())
    assert torch.equal(f1.co, f2.co)


def test_rank_helpers() -> None:
    ev = torch.tensor([4.0, 1.0, 1e-14, 0.0], dtype=torch.float64)
    assert numerical_rank(ev) == 2
    assert numerical_rank(torch.zeros(3)) == 0
    assert participation_ratio(torch.tensor([1.0, 1.0, 1.0, 0.0])) == pytest.approx(3.0)


def test_errors_say_what_to_do() -> None:
    with pytest.raises(BasisError, match="no activations"):
        MomentAccumulator(3).gram()
    with pytest.raises(BasisError, match="unknown basis kind"):
        build_basis(MLP(MLPConfig(2, (2,), 2)), torch.zeros(3, 2), kind="svd")  # type: ignore[arg-type]

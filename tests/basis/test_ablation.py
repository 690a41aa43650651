"""Edge ablation and edges needed: known answers (only the edges a network uses matter: keeping
them leaves the output exact, dropping one changes it), the whole curve and the edges needed
against a literal brute-force loop over every k, save/load, and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from mechscope.artefacts import basis_dir
from mechscope.basis.ablation import (
    ablate_edges,
    ablated_section,
    ablation_reference,
    edges_needed,
    keep_mask,
)
from mechscope.basis.analysis import analyse
from mechscope.basis.cli import basis_app
from mechscope.basis.edges import compute_edges
from mechscope.basis.interaction import LayerBasis, build_basis
from mechscope.basis.models import MLP, MLPConfig, ModAddConfig, ModAddTransformer, NodeLayerModel
from mechscope.basis.result import BasisAnalysis
from mechscope.errors import BasisError

# input -> hidden.0 weights of the known-answer MLP: 5 of the 12 edges exist
W0 = torch.tensor(
    [[1.5, 0.0, 0.0, -0.8], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, -1.2, 0.9]], dtype=torch.float64
)


def _gauss(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _sparse_mlp() -> MLP:
    torch.manual_seed(0)
    mlp = MLP(MLPConfig(d_in=4, hidden=(3,), d_out=2)).double().requires_grad_(False)
    with torch.no_grad():
        mlp.linear(0).weight.copy_(W0)
        mlp.linear(0).bias.fill_(0.5)  # every neuron fires on part of the data
    return mlp


@pytest.mark.parametrize("ablation", ["mean", "zero"])
def test_only_the_edges_the_weights_use_matter(ablation: str) -> None:
    mlp, x, x_eval = _sparse_mlp(), _gauss(400, 4, 1), _gauss(300, 4, 2)
    bases = build_basis(mlp, x, kind="neuron")  # feature 0 = constant, feature j + 1 = unit j
    E = compute_edges(mlp, bases, x)[0]
    ref = ablation_reference(mlp, bases, x, ablation)[0]  # type: ignore[arg-type]
    keep = keep_mask(E, 5, bases[0], bases[1])
    assert torch.equal(keep[1:, 1:], W0 != 0)  # the 5 strongest edges are the 5 weights
    assert keep[0].all() and keep[:, 0].all()  # constant directions are free
    a = mlp.node_acts(x_eval)[0]
    full = mlp.section(0, a)
    torch.testing.assert_close(
        ablated_section(mlp, 0, a, bases[0], bases[1], keep, ref), full, rtol=0, atol=1e-12
    )
    # dropping the weakest used edge (i, j) changes hidden unit i, and only it
    dropped = keep & ~keep_mask(E, 4, bases[0], bases[1])
    ((i, j),) = dropped.nonzero().tolist()
    assert W0[i - 1, j - 1] != 0
    out = ablated_section(mlp, 0, a, bases[0], bases[1], keep_mask(E, 4, *bases[:2]), ref)
    changed = (out - full).abs().amax(dim=(0, 1)) > 1e-6
    assert changed.nonzero().flatten().tolist() == [i - 1]


def test_interaction_basis_of_an_affine_network_needs_only_the_diagonal() -> None:
    """An MLP whose ReLUs are always on is affine; its interaction-basis edges are diagonal (rib's
    linear-network check), so the r - 1 diagonal edges carry the whole function."""
    torch.manual_seed(0)
    mlp = MLP(MLPConfig(d_in=5, hidden=(6,), d_out=4)).double().requires_grad_(False)
    mlp.linear(0).bias.fill_(10.0)
    x, x_eval = _gauss(500, 5, 3), _gauss(200, 5, 4)
    assert (mlp.neuron_preacts(x_eval)["hidden.0"] > 2).all()
    bases = build_basis(mlp, x, kind="lib", tau=1e-10)
    E = compute_edges(mlp, bases, x)[0]
    r = bases[0].dim - 1
    assert r == bases[1].dim - 1 == 4  # 4 logits read 4 directions of each layer
    off = E[1:, 1:] - torch.diag(E[1:, 1:].diag())
    assert float(off.max()) < 1e-12 * float(E[1:, 1:].max())
    ref = ablation_reference(mlp, bases, x, "mean")[0]
    keep = keep_mask(E, r, bases[0], bases[1])
    assert torch.equal(keep[1:, 1:], torch.eye(r, dtype=torch.bool))
    a = mlp.node_acts(x_eval)[0]
    torch.testing.assert_close(
        ablated_section(mlp, 0, a, bases[0], bases[1], keep, ref),
        mlp.section(0, a),
        rtol=0,
        atol=1e-10,
    )
    out = ablated_section(mlp, 0, a, bases[0], bases[1], keep_mask(E, r - 1, *bases[:2]), ref)
    assert float((out - mlp.section(0, a)).abs().max()) > 1e-3


def _literal_scores(
    m: NodeLayerModel,
    b_in: LayerBasis,
    b_out: LayerBasis,
    E: torch.Tensor,
    layer: int,
    x: torch.Tensor,
    y: torch.Tensor,
    ref: torch.Tensor,
) -> list[tuple[float, float]]:
    """(accuracy, loss) for every k: one output feature at a time, one input feature at a time."""
    c_in, c_out = int(b_in.has_const), int(b_out.has_const)
    counted = [
        (float(E[i, j]), i, j) for i in range(c_out, b_out.dim) for j in range(c_in, b_in.dim)
    ]
    counted.sort(key=lambda t: -t[0])  # stable: ties stay in row-major order
    a = m.node_acts(x)[layer]
    a_hat, out = a @ b_in.C, m.section(layer, a)
    h = out @ b_out.C
    scores = []
    for k in range(len(counted) + 1):
        kept = {(i, j) for _, i, j in counted[:k]}
        new = out.clone()
        for i in range(c_out, b_out.dim):
            a_i = a.clone()
            for j in range(c_in, b_in.dim):
                if (i, j) not in kept:  # move feature j of a to its reference value
                    a_i = a_i + (ref[:, j] - a_hat[..., j])[..., None] * b_in.C_pinv[j]
            h_i = m.section(layer, a_i) @ b_out.C[:, i]
            new = new + (h_i - h[..., i])[..., None] * b_out.C_pinv[i]
        logits = m.run_from(layer + 1, new)[:, -1]
        acc = float((logits.argmax(-1) == y).double().mean())
        loss = float(-logits.log_softmax(-1).gather(1, y[:, None]).mean())
        scores.append((acc, loss))
    return scores


def _tiny_mlp_task() -> tuple[NodeLayerModel, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random 3-4-4-3 MLP; fit inputs whose first pixel is constant (so the input bases drop
    it) and held-out inputs where it varies; labels a quarter wrong."""
    torch.manual_seed(5)
    mlp = MLP(MLPConfig(d_in=3, hidden=(4, 4), d_out=3)).double()
    with torch.no_grad():
        for lin in mlp.layers:
            lin.bias.uniform_(-0.3, 0.6)
    x, x_eval = _gauss(300, 3, 6), _gauss(200, 3, 7)
    x[:, 0] = 0.3
    with torch.no_grad():
        y = mlp(x_eval).argmax(-1)
    y[::4] = (y[::4] + 1) % 3  # the accuracy can go up and down as edges go
    return mlp, x, x_eval, y


def _tiny_modadd_task() -> tuple[NodeLayerModel, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random 1-layer mod-11 transformer (3 positions before attention); half the pairs fit."""
    torch.manual_seed(2)
    model = ModAddTransformer(ModAddConfig(p=11, d_model=6, n_heads=2, d_head=3, d_mlp=8))
    model = model.double()
    a, b = torch.meshgrid(torch.arange(11), torch.arange(11), indexing="ij")
    tokens = torch.stack([a.flatten(), b.flatten(), torch.full((121,), 11)], dim=1)
    perm = torch.randperm(121, generator=torch.Generator().manual_seed(0))
    y = (tokens[:, 0] + tokens[:, 1]) % 11
    return model, tokens[perm[:60]], tokens[perm[60:]], y[perm[60:]]


@pytest.mark.parametrize("ablation", ["mean", "zero"])
@pytest.mark.parametrize("kind", ["lib", "pca", "neuron"])
@pytest.mark.parametrize("task", [_tiny_mlp_task, _tiny_modadd_task])
def test_curves_and_edges_needed_match_a_brute_force_loop(task, kind: str, ablation: str) -> None:
    model, x, x_eval, y = task()
    bases = build_basis(model, x, kind=kind)  # type: ignore[arg-type]
    edges = compute_edges(model, bases, x)
    ref = ablation_reference(model, bases, x, ablation)  # type: ignore[arg-type]
    acc_bound, loss_bound = 0.02, 0.05
    results = ablate_edges(
        model, bases, edges, x_eval, y, ref, acc_bound, loss_bound, grid_points=2000
    )
    with torch.no_grad():
        for layer, res in enumerate(results):
            n = res.n_edges
            assert res.kept == list(range(n + 1))  # the grid is every k: nothing to bisect
            b_in, b_out = bases[layer], bases[layer + 1]
            lit = _literal_scores(model, b_in, b_out, edges[layer], layer, x_eval, y, ref[layer])
            assert res.accuracy == pytest.approx([s[0] for s in lit], abs=1e-12)
            assert res.loss == pytest.approx([s[1] for s in lit], abs=1e-9)
            ok_acc = [s[0] >= lit[-1][0] - acc_bound for s in lit]
            ok_loss = [s[1] <= lit[-1][1] + loss_bound for s in lit]
            for ok, needed in ((ok_acc, res.needed_accuracy), (ok_loss, res.needed_loss)):
                assert needed == min(k for k in range(n + 1) if all(ok[k:]))


def test_mean_reference_is_the_per_position_mean_on_the_fit_data() -> None:
    model, x, _, _ = _tiny_modadd_task()
    for kind in ("lib", "neuron"):
        bases = build_basis(model, x, kind=kind)  # type: ignore[arg-type]
        mean = ablation_reference(model, bases, x, "mean")
        zero = ablation_reference(model, bases, x, "zero")
        with torch.no_grad():
            acts = model.node_acts(x)
        for layer, b in enumerate(bases[:-1]):
            expected = (acts[layer] @ b.C).mean(dim=0)  # [pos, r]
            torch.testing.assert_close(mean[layer], expected, rtol=0, atol=1e-12)
            assert torch.equal(zero[layer], torch.zeros_like(expected))
        assert float(mean[0][:, 1:].abs().max()) > 0.01  # positions differ from their pool
        if kind == "lib":  # centred: each feature's mean over (data, position) is 0
            assert float(mean[0][:, 1:].mean(dim=0).abs().max()) < 1e-10


def test_edges_needed_against_brute_force_on_boolean_curves() -> None:
    g = torch.Generator().manual_seed(0)
    for trial in range(300):
        n = int(torch.randint(0, 60, (1,), generator=g))
        if trial % 2:  # monotone: fails below a threshold, holds from it on
            t = int(torch.randint(0, n + 1, (1,), generator=g))
            ok = [k >= t for k in range(n + 1)]
        else:
            ok = (torch.rand(n + 1, generator=g) < 0.7).tolist()
            ok[n] = True
        literal = min(k for k in range(n + 1) if all(ok[k:]))
        assert edges_needed(lambda k, ok=ok: ok[k], list(range(n + 1))) == literal
        grid = sorted({0, n, *torch.randint(0, n + 1, (5,), generator=g).tolist()})
        calls: list[int] = []

        def logged(k: int, ok: list[bool] = ok, calls: list[int] = calls) -> bool:
            calls.append(k)
            return ok[k]

        got = edges_needed(logged, grid)
        assert ok[got] and all(ok[k] for k in grid if k >= got)
        assert got == 0 or not ok[got - 1]
        if trial % 2:
            assert got == literal
            assert len(calls) <= len(grid) + max(n, 1).bit_length()


def _analysed() -> BasisAnalysis:
    torch.manual_seed(1)
    mlp = MLP(MLPConfig(d_in=4, hidden=(5,), d_out=3)).double()
    x, x_eval = _gauss(200, 4, 8), _gauss(100, 4, 9)
    with torch.no_grad():
        y = mlp(x_eval).argmax(-1)
    return analyse(mlp, x, kinds=("lib", "neuron"), eval_data=(x_eval, y), meta={"model": "t"})


def test_save_load_round_trip_keeps_the_ablation(tmp_path) -> None:
    result = _analysed()
    assert set(result.ablation) == {"lib", "neuron"}
    assert all(set(v) == {"mean", "zero"} for v in result.ablation.values())
    loaded = BasisAnalysis.load(result.save(tmp_path / "run"))
    assert loaded.ablation == result.ablation
    assert loaded.markdown() == result.markdown()
    assert "edges needed, mean ablation" in loaded.markdown()
    assert loaded.meta["n_eval"] == 100
    names = [p.name for p in loaded.write_figures(tmp_path / "fig", prefix="t")]
    assert "t_ablation.html" in names
    n_pairs, n_curves = 2, 2 * 2  # 2 bases x 2 ablations
    lines = [t for t in loaded.ablation_figure().data if t.mode == "lines"]
    assert len(lines) == n_pairs * n_curves * 2  # accuracy and loss
    plain = BasisAnalysis(**{**result.__dict__, "ablation": {}})
    with pytest.raises(BasisError, match="--ablate-on"):
        plain.ablation_figure()


def test_bad_ablation_inputs_say_what_to_do() -> None:
    mlp, x = _sparse_mlp(), _gauss(50, 4, 1)
    bases = build_basis(mlp, x, kind="neuron")
    with pytest.raises(BasisError, match="choose one of mean, zero"):
        ablation_reference(mlp, bases, x, "median")  # type: ignore[arg-type]
    with pytest.raises(BasisError, match=r"n_kept must be in \[0, 12\]"):
        keep_mask(compute_edges(mlp, bases, x)[0], 13, bases[0], bases[1])
    with pytest.raises(BasisError, match="as many labels as inputs"):
        ablate_edges(mlp, bases, compute_edges(mlp, bases, x), x, torch.zeros(3).long(), [])


@pytest.mark.slow
def test_cli_ablates_on_the_held_out_split(tmp_path) -> None:
    runner = CliRunner()
    res = runner.invoke(
        basis_app,
        [
            "analyse",
            "digits-mlp",
            "--ablate-on",
            "test",
            "--out",
            str(tmp_path),
            "--figures",
            str(tmp_path),
            "--weights",
            str(basis_dir("digits-mlp")),
        ],
    )
    assert res.exit_code == 0, res.output
    head = json.loads((tmp_path / "digits-mlp" / "analysis.json").read_text())
    assert head["meta"]["eval_split"] == "test" and head["meta"]["n_eval"] == 450
    assert head["meta"]["weights"] == str(basis_dir("digits-mlp"))
    assert {k: sorted(v) for k, v in head["ablation"].items()} == {
        k: ["mean", "zero"] for k in ("lib", "pca", "neuron")
    }
    assert (tmp_path / "basis_digits-mlp_ablation.html").exists()
    res = runner.invoke(basis_app, ["analyse", "digits-mlp", "--ablate-on", "train"])
    assert res.exit_code != 0
    assert "not held out" in res.output
    res = runner.invoke(basis_app, ["build", "digits-mlp", "--seed", "1"])
    assert res.exit_code != 0
    assert "--out" in res.output

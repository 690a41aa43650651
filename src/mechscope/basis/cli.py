"""`mechscope basis ...`: degeneracy and the interaction basis on the bundled models.

mechscope basis list                         # bundled models and their metrics
mechscope basis build digits-mlp             # retrain a bundled model (deterministic, CPU)
mechscope basis analyse modadd-1l --out runs/basis --figures docs/figures
mechscope basis analyse digits-mlp --ablate-on test   # + edges needed (edge ablation, held out)
mechscope basis modular                      # the hand-built block network: modules vs blocks
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markdown import Markdown
from rich.table import Table

from mechscope import validate as V
from mechscope.cli_common import console, fail, option_checks
from mechscope.errors import BasisError
from mechscope.files import check_writable_dir

basis_app = typer.Typer(
    help="Degeneracy and the interaction basis (Bushnaq et al. 2024): ranks, bases, edges, modules."
)

Name = Annotated[str, typer.Argument(help="bundled model: digits-mlp or modadd-1l")]


@basis_app.command("list")
def list_cmd() -> None:
    """List the bundled models of the basis package with their test accuracy."""
    from mechscope.basis.pretrained import card, list_bundled

    table = Table("name", "params", "node layers", "test accuracy", "remake")
    for name in list_bundled():
        try:
            c = card(name)
        except BasisError as e:
            table.add_row(name, "-", "-", "-", str(e))
            continue
        table.add_row(
            name,
            f"{c['n_params']:,}",
            ", ".join(c["node_layers"]),
            f"{c['metrics_stored']['test_accuracy']:.4f}",
            c["command"],
        )
    console.print(table)


@basis_app.command("build")
def build_cmd(
    name: Name,
    out: Annotated[Path | None, typer.Option(help="folder (default: the bundled one)")] = None,
    seed: Annotated[
        int | None, typer.Option(help="training seed instead of the recipe's (use with --out)")
    ] = None,
) -> None:
    """Retrain a bundled model from scratch (deterministic on CPU) and write its weights + card."""
    if out is not None:
        check_writable_dir(out)
    from mechscope.basis.pretrained import build, card, list_bundled

    with option_checks():
        V.choice("NAME", name, list_bundled())
        V.seed("--seed", seed)
    if seed is not None and out is None:
        fail("--seed trains another model than the bundled one: give it an --out folder")
    try:
        folder = build(name, out, seed=seed)
    except BasisError as e:
        fail(str(e))
    metrics = card(name)["metrics"] if out is None else {}
    console.print(f"wrote {folder} {metrics}")


@basis_app.command("analyse")
def analyse_cmd(
    name: Name,
    split: Annotated[str, typer.Option(help="data split: train, test or all")] = "train",
    weights: Annotated[
        Path | None,
        typer.Option(help="folder of weights from `basis build NAME --out` (default: bundled)"),
    ] = None,
    tau: Annotated[float, typer.Option(help="absolute truncation threshold (rib: 1e-15)")] = 1e-15,
    rtol: Annotated[float, typer.Option(help="relative truncation / rank tolerance")] = 1e-12,
    resolution: Annotated[float, typer.Option(help="Louvain resolution for modules")] = 1.0,
    ablate_on: Annotated[
        str | None,
        typer.Option(
            help="held-out split (test) on which to ablate edges and count the edges needed, "
            "with mean and zero ablation; not the --split the basis is fitted on"
        ),
    ] = None,
    acc_bound: Annotated[
        float, typer.Option(help="edges needed: accuracy may drop by at most this (rib: 0.001)")
    ] = 1e-3,
    loss_bound: Annotated[
        float, typer.Option(help="edges needed: loss may rise by at most this (nats)")
    ] = 1e-2,
    batch_size: Annotated[int, typer.Option(help="inputs per streamed batch")] = 2048,
    out: Annotated[Path, typer.Option(help="folder for analysis.json + tensors")] = Path(
        "runs/basis"
    ),
    figures: Annotated[Path | None, typer.Option(help="folder for the HTML figures")] = None,
) -> None:
    """Degeneracy, interaction / PCA / neuron bases, edge sparsity (edges needed with
    --ablate-on) and modules of a model."""
    check_writable_dir(out)
    if figures is not None:
        check_writable_dir(figures, "--figures")
    from mechscope.basis.analysis import analyse
    from mechscope.basis.pretrained import bundled_data, list_bundled, load_bundled

    with option_checks():
        V.choice("NAME", name, list_bundled())
        V.choice("--split", split, ("train", "test", "all"))
        V.choice("--ablate-on", ablate_on, ("train", "test", "all"))
        V.number("--tau", tau, lo=0)
        V.number("--rtol", rtol, lo=0)
        V.number("--resolution", resolution, lo=0, lo_open=True)
        V.number("--acc-bound", acc_bound, lo=0, hi=1)
        V.number("--loss-bound", loss_bound, lo=0)
        V.integer("--batch-size", batch_size, lo=1)
    if ablate_on is not None and ("all" in (split, ablate_on) or ablate_on == split):
        fail(
            f"--ablate-on {ablate_on} is not held out from --split {split}: fit on train and "
            "ablate on test"
        )
    try:
        model = load_bundled(name, weights)
        x, _ = bundled_data(name, split)
        meta = {"model": name, "split": split}
        if weights is not None:
            meta["weights"] = str(weights)
        if ablate_on is not None:
            meta["eval_split"] = ablate_on
        result = analyse(
            model,
            x,
            tau=tau,
            rtol=rtol,
            resolution=resolution,
            eval_data=None if ablate_on is None else bundled_data(name, ablate_on),
            acc_bound=acc_bound,
            loss_bound=loss_bound,
            batch_size=batch_size,
            progress=True,
            meta=meta,
        )
    except BasisError as e:
        fail(str(e))
    folder = result.save(out / name)
    console.print(Markdown(result.markdown()))
    console.print(f"saved {folder}")
    if figures is not None:
        for path in result.write_figures(figures, prefix=f"basis_{name}"):
            console.print(f"figure {path}")


@basis_app.command("modular")
def modular_cmd(
    seed: Annotated[int, typer.Option(help="seed of the weights and data")] = 0,
    resolution: Annotated[float, typer.Option(help="Louvain resolution")] = 0.1,
) -> None:
    """Run rib's hand-built block-diagonal MLP and show that the modules found are its blocks."""
    from mechscope.basis.edges import compute_edges, find_modules, interaction_graph
    from mechscope.basis.handbuilt import block_diagonal_mlp, block_product_inputs, feature_blocks
    from mechscope.basis.interaction import BASIS_KINDS, build_basis

    with option_checks():
        V.seed("--seed", seed)
        V.number("--resolution", resolution, lo=0, lo_open=True)
    mlp, x = block_diagonal_mlp(seed=seed), block_product_inputs(seed=seed)
    table = Table("basis", "modules", "blocks of each module's directions", "modularity Q")
    for kind in BASIS_KINDS:
        bases = build_basis(mlp, x, kind=kind)
        edges = compute_edges(mlp, bases, x)
        mods = find_modules(interaction_graph(bases, edges), resolution=resolution, seed=seed)
        blocks = [feature_blocks(b, 4) for b in bases]
        found = [sorted({blocks[li][k] for li, k in c}) for c in mods.communities]
        table.add_row(kind, str(len(mods.communities)), str(found), f"{mods.modularity:.3f}")
    console.print(table)

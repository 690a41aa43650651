"""The paper's comparisons as one call each, their results, figures and the hub code path."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from mechscope.directions import (
    DirectionsConfig,
    compare_features,
    e2e_vs_local,
    error_vs_baselines,
    feature_summary,
    sweep_directions,
)
from mechscope.directions.perturb import clean_run, counted_positions
from mechscope.directions.result import KLCurves, SubstitutionResult
from mechscope.metrics import kl_div
from mechscope.sae.activations import splice_hook

HOOK0 = "blocks.0.hook_resid_post"
CFG = DirectionsConfig(lengths=(0.5, 2.0), progress=False)


def test_substituted_sae_kl_equals_splicing_the_sae(lean2l, toks, sae0):
    """eps-substitution's "sae" row is x + |e| * e/|e| = SAE(x): the KL of splicing the SAE in."""
    res = error_vs_baselines(lean2l, {"s": sae0}, tokens=toks, cfg=CFG)
    kls = []
    for t in toks:
        run = clean_run(lean2l, t, HOOK0)
        with torch.no_grad():
            logits = lean2l.forward(run.tokens, hooks={HOOK0: splice_hook(sae0, run.keep)})
        kls.append(kl_div(run.logits, logits, pos=None)[counted_positions(run)])
    want = float(torch.cat(kls).mean())
    assert res.kl("s", "sae") == pytest.approx(want, rel=1e-4)
    (row,) = res.ratios()
    for b in ("isotropic", "cov_mixture", "real_mixture"):
        assert row[f"ratio_{b}"] == pytest.approx(row["kl_sae"] / row[f"kl_{b}"])
        assert math.isfinite(row[f"ratio_{b}"]) and row[f"kl_{b}"] > 0
    assert row["eps_mean"] > 0 and 0 < row["eps_rel"] < 2


def test_results_are_deterministic_and_round_trip(lean2l, toks, sae0, tmp_path):
    a = sweep_directions(lean2l, HOOK0, ["isotropic", "cov_mixture"], tokens=toks, cfg=CFG)
    b = sweep_directions(lean2l, HOOK0, ["isotropic", "cov_mixture"], tokens=toks, cfg=CFG)
    assert a.rows == b.rows
    c = sweep_directions(
        lean2l,
        HOOK0,
        ["isotropic"],
        tokens=toks,
        cfg=DirectionsConfig(lengths=(0.5, 2.0), seed=1, progress=False),
    )
    assert c.curve("isotropic") != a.curve("isotropic")
    assert a.curve("isotropic")[1] > a.curve("isotropic")[0]
    assert a.kl_at("isotropic", 1.25) == pytest.approx(sum(a.curve("isotropic")) / 2)
    assert KLCurves.load(a.save(tmp_path / "s.json")) == a
    sub = error_vs_baselines(lean2l, {"s": sae0}, tokens=toks, cfg=CFG)
    back = SubstitutionResult.load(sub.save(tmp_path / "sub.json"))
    assert back.rows == sub.rows and back.ratios() == sub.ratios()
    row = a.rows[0]
    assert set(row) >= {"family", "length", "kl_mean", "kl_median", "kl_q05", "kl_q95", "n"}
    assert row["kl_q05"] <= row["kl_median"] <= row["kl_q95"]


def test_feature_comparisons_label_each_sae_with_its_l0(lean2l, toks):
    from mechscope.directions import bundled_saes

    local = bundled_saes("code-2l", HOOK0, "local")
    e2e = bundled_saes("code-2l", HOOK0, "e2e")
    assert len(local) == 3 and len(e2e) == 2
    res = e2e_vs_local(lean2l, e2e, local, pools=("active", "dead"), tokens=toks, cfg=CFG)
    summary = feature_summary(res, 2.0)
    assert [r["l0"] for r in summary] == sorted(r["l0"] for r in summary)
    assert {r["loss"] for r in summary} == {"local", "e2e"} and len(summary) == 5
    assert all(r["kl_mean"] > 0 for r in summary)
    assert "isotropic" in res.labels() and "cov_mixture" in res.labels()
    # pools a SAE lacks on these tokens are skipped and reported, not an error
    assert all(s.endswith("/ dead") for s in res.meta["skipped"])


def test_figures_and_tables(lean2l, toks, sae0):
    from rich.console import Console

    from mechscope.directions.plot import curves_figure, paper_figure, substitution_figure

    sweep = sweep_directions(
        lean2l,
        HOOK0,
        ["isotropic", "toward_cov", "sae_error"],
        sae=sae0,
        sae_name="s",
        tokens=toks,
        cfg=CFG,
    )
    feats = compare_features(lean2l, {"s": sae0}, pools=("active",), tokens=toks, cfg=CFG)
    sub = error_vs_baselines(lean2l, {"s": sae0}, tokens=toks, cfg=CFG)
    assert len(curves_figure(sweep).data) == 3
    assert len(substitution_figure(sub).data) == 4
    assert len(paper_figure(sub, [sweep], [feats]).data) == 3 + 1 + 4
    console = Console(record=True, width=200)
    console.print(sweep.table(), sub.table(), feats.table())
    text = console.export_text()
    assert "ratio cov_mixture" in text and "sae_error (L0" in text


@pytest.mark.slow
def test_hub_path_local_hf_gpt2_and_saelens_folder(tmp_path, toks):
    """The code path of a hub model: a GPT-2 saved by transformers, loaded with load_model(path),
    and an SAE from a SAELens folder (as load_saelens_from_hub returns it)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    import mechscope
    from mechscope.artefacts import TOKENIZER_DIR
    from mechscope.sae.config import SAEConfig
    from mechscope.sae.model import SparseAutoencoder
    from mechscope.sae.saelens_format import load_saelens, save_saelens

    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=4096,
        n_positions=32,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
    )
    GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "gpt2-tiny")
    for f in TOKENIZER_DIR.glob("tokenizer*.json"):
        shutil.copy(f, tmp_path / "gpt2-tiny")
    model = mechscope.load_model(tmp_path / "gpt2-tiny")
    hook = "blocks.1.hook_resid_pre"
    sae = SparseAutoencoder(SAEConfig(d_in=32, d_sae=64, hook_name=hook, model_name="gpt2-tiny"))
    save_saelens(sae, tmp_path / "sae")
    sae = load_saelens(tmp_path / "sae")
    small = [t[:, :16] for t in toks]
    sub = error_vs_baselines(model, {"sae": sae}, tokens=small, cfg=CFG)
    assert sub.model == "gpt2-tiny"
    assert all(math.isfinite(v) for k, v in sub.ratios()[0].items() if k.startswith("ratio_"))
    res = sweep_directions(
        model,
        hook,
        ["isotropic", "cov_mixture", "sae_error"],
        sae=sae,
        tokens=small,
        cfg=DirectionsConfig(progress=False),
    )
    assert len(res.lengths) == 23 and all(r["kl_mean"] >= 0 for r in res.rows)

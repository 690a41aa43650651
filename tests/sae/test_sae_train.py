"""SAE training: each loss learns, resume is exact, bad hooks and NaNs fail clearly."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from mechscope.models.lean import LeanModel
from mechscope.sae import SAEConfig, SAEError, SparseAutoencoder, TrainConfig, train_sae
from mechscope.sae.activations import collect, downstream_hooks, keep_mask, special_ids
from mechscope.sae.train import lr_at

HOOK = "blocks.0.hook_resid_post"


def batches(n: int, seed: int = 0, batch: int = 4, pos: int = 24) -> Iterator[torch.Tensor]:
    """Random token batches [batch, pos] with BOS (0) first."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        t = torch.randint(1, 4096, (batch, pos), generator=g)
        t[:, 0] = 0
        yield t


def tiny(loss: str = "local", **kw) -> TrainConfig:
    base = {"n_steps": 8, "expansion": 2, "warmup_steps": 2, "lr": 3e-3, "sparsity_coeff": 0.1}
    return TrainConfig(model="code-2l", hook_name=HOOK, loss=loss, **(base | kw))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def lean(gpt2_2l) -> LeanModel:
    return LeanModel(gpt2_2l)


@pytest.mark.parametrize("loss", ["local", "e2e", "e2e_ds"])
def test_each_loss_decreases(lean: LeanModel, loss: str) -> None:
    cfg = tiny(loss)
    # the same batch every step, so the loss curve is not data noise
    fixed = next(batches(1))
    result = train_sae(cfg, lean, (fixed for _ in range(cfg.n_steps)), progress=False)
    h = result.history
    assert len(h) == 8 and h[-1]["loss"] < h[0]["loss"]
    assert {"l0", "dead_frac", "lr", "sparsity"} <= set(h[0])
    assert ("mse" in h[0]) == (loss == "local")
    assert ("downstream_mse" in h[0]) == (loss == "e2e_ds")
    assert torch.allclose(result.sae.W_dec.norm(dim=-1), torch.ones(result.sae.d_sae), atol=1e-5)


def test_topk_trains_at_fixed_l0(lean: LeanModel) -> None:
    result = train_sae(tiny(architecture="topk", k=4), lean, batches(8), progress=False)
    assert all(row["l0"] <= 4 for row in result.history if "l0" in row)


def test_downstream_hooks(lean: LeanModel) -> None:
    last = lean.n_layers - 1
    assert downstream_hooks(lean, "blocks.0.hook_resid_pre")[0] == "blocks.0.hook_resid_post"
    assert downstream_hooks(lean, f"blocks.{last}.hook_resid_post") == []
    assert len(downstream_hooks(lean, HOOK)) == lean.n_layers - 1


def test_lr_schedule_warmup_then_cosine() -> None:
    cfg = tiny(n_steps=100, warmup_steps=10, lr=1.0, min_lr_frac=0.1)
    assert lr_at(cfg, 0) == pytest.approx(0.1) and lr_at(cfg, 9) == pytest.approx(1.0)
    assert lr_at(cfg, 10) == pytest.approx(1.0) and lr_at(cfg, 100) == pytest.approx(0.1)
    assert lr_at(cfg, 55) == pytest.approx(0.55)


@pytest.mark.parametrize("loss", ["local", "e2e"])
def test_resume_reproduces_uninterrupted_run(lean: LeanModel, tmp_path, loss: str) -> None:
    cfg = tiny(loss, checkpoint_every=3, dead_window=40)
    full = train_sae(cfg, lean, batches(8), progress=False)
    first = train_sae(cfg, lean, batches(8), checkpoint_dir=tmp_path, stop_at=5, progress=False)
    assert len(first.history) == 5 and (tmp_path / "checkpoint.pt").exists()
    resumed = train_sae(cfg, lean, batches(8), checkpoint_dir=tmp_path, progress=False)
    for name, p in full.sae.state_dict().items():
        assert torch.equal(p, resumed.sae.state_dict()[name]), name
    assert resumed.history == full.history


def test_resume_refuses_another_config(lean: LeanModel, tmp_path) -> None:
    train_sae(tiny(n_steps=2), lean, batches(2), checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(SAEError, match="different config"):
        train_sae(tiny(n_steps=3), lean, batches(3), checkpoint_dir=tmp_path, progress=False)


def test_unknown_hook(lean: LeanModel) -> None:
    with pytest.raises(SAEError, match=r"unknown hook 'blocks.0.hook_resid_postt'"):
        train_sae(replace(tiny(), hook_name="blocks.0.hook_resid_postt"), lean, batches(1))
    with pytest.raises(SAEError, match=r"unknown hook 'blocks.9.hook_resid_post'"):
        train_sae(replace(tiny(), hook_name="blocks.9.hook_resid_post"), lean, batches(1))


def test_per_head_hook_refused(lean: LeanModel) -> None:
    with pytest.raises(SAEError, match=r"\[batch, pos, d\] hooks"):
        train_sae(replace(tiny(), hook_name="blocks.0.attn.hook_z"), lean, batches(1))


@pytest.mark.parametrize("loss", ["local", "e2e"])
def test_nan_activations_are_a_clear_error(gpt2_2l, loss: str) -> None:
    broken = LeanModel(gpt2_2l)
    broken.W_E = broken.W_E.clone()
    broken.W_E[7] = float("nan")
    toks = next(batches(1))
    toks[1, 5] = 7
    with pytest.raises(SAEError, match=r"non-finite values \(NaN/inf\).*blocks.0.hook_resid_post"):
        train_sae(tiny(loss), broken, iter([toks]), progress=False)


def _literal_training(
    cfg: TrainConfig, xs: list[torch.Tensor], literal: bool
) -> tuple[SparseAutoencoder, list[float], list[float]]:
    """The local-loss training loop written out, with the per-step bookkeeping of the old trainer
    (L0 over a boolean tensor and a host read every step, the firing record through a full
    comparison): the SAE, the per-step losses and L0s. literal: the SAE and its L1 term as their
    definitions read (`relu((x - b_dec) @ W_enc + b_enc)`, `abs()` of the weighted codes summed
    per token); else the trainer's arithmetic written out straightforwardly (`b_dec` in the
    encoder bias, the L1 term as a column sum), without its speed-ups (a ReLU in place, the
    firing record from the L1 term's column sums)."""
    d_in = xs[0].shape[-1]
    sae = SparseAutoencoder(SAEConfig(d_in=d_in, d_sae=cfg.expansion * d_in), seed=cfg.seed)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr)
    since = torch.zeros(sae.d_sae, dtype=torch.long)
    warm = max(1, round(cfg.sparsity_warmup_frac * cfg.n_steps))
    losses, l0s = [], []
    for step, x in enumerate(xs):
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step)
        if literal:
            codes = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)
            x_hat = codes @ sae.W_dec + sae.b_dec
            sp = (codes * sae.W_dec.norm(dim=-1)).abs().sum(-1).mean() / d_in
        else:
            codes = torch.relu(torch.addmm(sae.b_enc - sae.b_dec @ sae.W_enc, x, sae.W_enc))
            x_hat = torch.addmm(sae.b_dec, codes, sae.W_dec)
            sp = codes.sum(0) @ sae.W_dec.norm(dim=-1) / (x.shape[0] * d_in)
        coeff = cfg.sparsity_coeff * min(1.0, (step + 1) / warm)
        loss = F.mse_loss(x_hat, x) + coeff * sp
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), cfg.grad_clip / d_in)
        opt.step()
        fired = (codes != 0).any(0)
        since += x.shape[0]
        since[fired] = 0
        losses.append(float(loss.detach()))
        l0s.append(float((codes != 0).sum(-1).float().mean()))
    with torch.no_grad():
        norms = sae.W_dec.norm(dim=-1)
        sae.W_dec /= norms[:, None]
        sae.W_enc *= norms
        sae.b_enc *= norms
    sae.tokens_since_fired.copy_(since)
    return sae, losses, l0s


def test_training_equals_the_literal_loop() -> None:
    """train_sae on activations = the loop with the old per-step bookkeeping, bit for bit (the
    bookkeeping changes nothing), and = the definitions written out to float rounding (the
    encoder's b_dec folded into its bias, the L1 term as a column sum: other rounding)."""
    g = torch.Generator().manual_seed(0)
    # batches of 200 and 3 tokens: latents miss the small ones, so the firing record counts
    xs = [torch.randn(3 if i % 2 else 200, 16, generator=g) * 2 + 0.5 for i in range(12)]
    cfg = tiny(
        n_steps=12, warmup_steps=3, sparsity_coeff=0.5, log_every=5, sparsity_warmup_frac=0.3
    )
    result = train_sae(cfg, activations=xs, progress=False)
    same, losses, l0s = _literal_training(cfg, xs, literal=False)
    for name, p in same.state_dict().items():
        assert torch.equal(p, result.sae.state_dict()[name]), name
    assert result.sae.tokens_since_fired.any()
    assert [row["loss"] for row in result.history] == pytest.approx(losses, rel=1e-6)
    logged = [row["step"] for row in result.history if "l0" in row]
    assert logged == [0, 5, 10, 11]  # every log_every steps and the last
    assert [result.history[s]["l0"] for s in logged] == pytest.approx([l0s[s] for s in logged])
    old, _, _ = _literal_training(cfg, xs, literal=True)
    torch.testing.assert_close(old.W_dec, result.sae.W_dec, rtol=1e-5, atol=1e-6)


def test_activations_train_as_the_live_model(lean: LeanModel) -> None:
    """Activations held in memory give the SAE the live model's tokens give."""
    toks = list(batches(4))
    xs = [collect(lean, t, HOOK)[keep_mask(t, special_ids(lean))] for t in toks]
    cfg = tiny(n_steps=4)
    live = train_sae(cfg, lean, toks, progress=False)
    held = train_sae(cfg, activations=xs, progress=False)
    for name, p in live.sae.state_dict().items():
        assert torch.equal(p, held.sae.state_dict()[name]), name
    assert live.history == held.history
    with pytest.raises(SAEError, match="at most one"):
        train_sae(cfg, lean, toks, activations=xs)
    with pytest.raises(SAEError, match="local loss"):
        train_sae(tiny("e2e"), activations=xs)

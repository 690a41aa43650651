"""Patching on every declared family (toy models): each component, both directions, equals a
literal loop of hooked bridge runs (one TransformerLens forward per patch)."""

from __future__ import annotations

import pytest
import torch

import mechscope
from mechscope.models.declare import FAMILIES
from mechscope.models.lean import as_lean
from mechscope.patching import attribution_patch, patch_sweep, path_patch, task_metric
from mechscope.patching.specs import COMPONENTS, PatchingError
from mechscope.tasks import make_task

# (component, positions): "each" sweeps (layer, pos), "all" sweeps (layer, head)
CASES = [("resid_pre", "each"), ("resid_mid", "each"), ("attn_out", "each"), ("mlp_out", "each")]
CASES += [(c, "all") for c in ("z", "q", "k", "v")]

_bridges: dict[str, object] = {}


def _bridge(family, toy_dir):
    if family not in _bridges:
        _bridges[family] = mechscope.load_model(toy_dir(family))
    return _bridges[family]


def _checked(n: int) -> list[int]:
    """The indices the literal loop checks: every head, and for positions the first, two inner
    and the last one (the bridge loop costs one forward each)."""
    return list(range(n)) if n <= 4 else [0, n // 3, 2 * n // 3, n - 1]


def _literal(bridge, base, src, task, hook_tmpl, positions):
    """The metric of each patched run, one hooked bridge forward per patch: [layer, checked
    pos|head]."""
    with torch.no_grad():
        _, cache = bridge.run_with_cache(src)
        _, base_cache = bridge.run_with_cache(base)
    out = []
    for l in range(bridge.cfg.n_layers):
        hook = hook_tmpl.format(l=l)
        n = cache[hook].shape[1] if positions == "each" else cache[hook].shape[2]
        row = []
        for i in _checked(n):

            def patch(act, hook=None, i=i, name=hook):
                act = act.clone()
                if positions == "each":
                    act[:, i] = cache[name][:, i]
                else:
                    act[:, :, i] = cache[name][:, :, i]
                return act

            hooks = [(hook, patch)]
            if hook.endswith("resid_mid"):
                # TransformerLens 3.9's bridge feeds its hook_resid_mid to the MLP only; as in
                # HookedTransformer (and mechscope) the residual stream carries it on too
                delta = cache[hook][:, i] - base_cache[hook][:, i]

                def carry(act, hook=None, i=i, delta=delta):
                    act = act.clone()
                    act[:, i] += delta
                    return act

                hooks.append((hook.replace("resid_mid", "resid_post"), carry))
            with torch.no_grad():
                logits = bridge.run_with_hooks(base, fwd_hooks=hooks)
            row.append(float(task.score(logits).mean()))
        out.append(row)
    return torch.tensor(out)


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_patch_sweeps_equal_a_literal_loop_on_every_family(family, toy_dir, tokenizer):
    bridge = _bridge(family, toy_dir)
    lean = as_lean(bridge)
    task = make_task("ioi", tokenizer, n=2, seed=0)
    for direction in ("denoising", "noising"):
        base, src = (
            (task.corrupt_tokens, task.clean_tokens)
            if direction == "denoising"
            else (task.clean_tokens, task.corrupt_tokens)
        )
        for component, positions in CASES:
            hook_tmpl = COMPONENTS[component][0]
            if hook_tmpl.format(l=0) not in lean.hook_names():
                assert component == "resid_mid" and lean.arch.parallel
                continue
            ours = patch_sweep(
                bridge,
                task.clean_tokens,
                task.corrupt_tokens,
                task_metric(task),
                component,
                direction,
                positions,
            )
            ref = _literal(bridge, base, src, task, hook_tmpl, positions)
            assert ours.values.shape[0] == ref.shape[0], (component, ours.axes)
            mine = ours.values[:, _checked(ours.values.shape[1])]
            torch.testing.assert_close(mine, ref, rtol=0, atol=1e-5)
        # the sweeps are not vacuous: some patch moves the metric
        assert (ref - ref.flatten()[0]).abs().max() > 1e-4


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_path_patching_into_the_output_equals_patching_the_sender(family, toy_dir, tokenizer):
    """A last-layer sender reaches the output only directly, so its path patch into
    resid_final equals patching the sender itself (heads and MLP; GQA, parallel blocks). Where
    head outputs are not residual terms (post-norms), head senders are refused."""
    bridge = _bridge(family, toy_dir)
    lean = as_lean(bridge)
    task = make_task("ioi", tokenizer, n=2, seed=0)
    metric = task_metric(task)
    clean, corrupt = task.clean_tokens, task.corrupt_tokens
    last = lean.n_layers - 1
    mlp = patch_sweep(bridge, clean, corrupt, metric, "mlp_out", "noising", "all").values[last]
    if lean.head_decomposition is not None:
        with pytest.raises(PatchingError, match="not a term of the residual stream"):
            path_patch(bridge, clean, corrupt, metric, [f"{last}.1"], ["resid_final"])
        path = path_patch(bridge, clean, corrupt, metric, [f"mlp{last}"], ["resid_final"])
        torch.testing.assert_close(path.values[0, 0], mlp, atol=1e-5, rtol=0)
        return
    senders = [f"{last}.0", f"{last}.3", f"mlp{last}"]
    path = path_patch(bridge, clean, corrupt, metric, senders, ["resid_final"])
    # the reference: the head's z from the corrupted run, the last MLP frozen at its clean value
    # (a head's direct path skips the MLP after it), one hooked bridge run per head
    with torch.no_grad():
        _, src = bridge.run_with_cache(corrupt)
        _, base = bridge.run_with_cache(clean)
    z, mlp_out = f"blocks.{last}.attn.hook_z", f"blocks.{last}.hook_mlp_out"
    ref = []
    for h in (0, 3):

        def patch_z(act, hook=None, h=h):
            act = act.clone()
            act[:, :, h] = src[z][:, :, h]
            return act

        with torch.no_grad():
            logits = bridge.run_with_hooks(
                clean, fwd_hooks=[(z, patch_z), (mlp_out, lambda act, hook=None: base[mlp_out])]
            )
        ref.append(float(task.score(logits).mean()))
    ref = torch.cat([torch.tensor(ref), mlp.view(1)])
    torch.testing.assert_close(path.values[:, 0], ref, atol=1e-5, rtol=0)
    # key inputs of a GQA model are addressed by key/value head
    receiver = f"{last}.{lean.n_kv_heads - 1}.k"
    k_in = path_patch(bridge, clean, corrupt, metric, ["0.0"], [receiver])
    assert torch.isfinite(k_in.values).all()
    with pytest.raises(PatchingError, match="out of range"):
        path_patch(bridge, clean, corrupt, metric, ["0.0"], [f"{last}.{lean.n_kv_heads}.k"])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_attribution_patching_has_the_sweeps_shape(family, toy_dir, tokenizer):
    """Estimates for keys of GQA models are per key/value head, as the exact sweep is."""
    bridge = _bridge(family, toy_dir)
    task = make_task("ioi", tokenizer, n=2, seed=0)
    metric = task_metric(task)
    attr = attribution_patch(
        bridge, task.clean_tokens, task.corrupt_tokens, metric, ["k", "z"], positions="all"
    )
    for c in ("k", "z"):
        exact = patch_sweep(
            bridge, task.clean_tokens, task.corrupt_tokens, metric, c, positions="all"
        )
        assert attr[c].values.shape == exact.values.shape
        assert torch.isfinite(attr[c].values).all()

"""Numeric cross-check against ApolloResearch/rib's algorithm (commit 7a6199f), re-implemented
here step by step in plain numpy for a small ReLU MLP with folded biases: centred Gram matrices
(`collect_gram_matrices` with shift = -mean), `eigendecompose` (float64, |.|, descending),
`move_const_dir_first`, truncation, R = Y U D^-1/2, M' from analytic Jacobians
(`calc_basis_jacobian` + `M_dash_and_Lambda_dash_pre_forward_hook_fn`, basis_formula="jacobian"),
`masked_eigendecompose`, `build_sorted_lambda_matrices`, C = R V L, and `calc_edge_squared`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechscope.basis.edges import compute_edges
from mechscope.basis.interaction import build_basis
from mechscope.basis.models import MLP, MLPConfig

TAU = 1e-15


def _mlp() -> tuple[MLP, np.ndarray]:
    torch.manual_seed(3)
    mlp = MLP(MLPConfig(d_in=4, hidden=(5, 5), d_out=3)).double()
    with torch.no_grad():
        for lin in mlp.layers:
            lin.bias.uniform_(-0.5, 0.5)
    x = torch.randn(300, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return mlp, x.numpy()


def _rib_reference(mlp: MLP, x: np.ndarray, kind: str):
    """rib's pipeline in numpy; returns per node layer (C, C_pinv, Lambda) and the edges."""
    W_ext = [
        np.vstack([lin.weight.detach().numpy().T, lin.bias.detach().numpy()[None]])
        for lin in mlp.layers
    ]  # [d_in + 1, d_out] each: folded bias
    n_sections = len(W_ext)
    acts = [np.hstack([x, np.ones((len(x), 1))])]
    for i, W in enumerate(W_ext):
        pre = acts[-1] @ W
        acts.append(
            pre if i == n_sections - 1 else np.hstack([np.maximum(pre, 0), np.ones((len(x), 1))])
        )

    def jac(i: int, a: np.ndarray) -> np.ndarray:
        """d section_i(a) / d a per sample: [N, d_out(+1), d_in + 1] (analytic for ReLU)."""
        W = W_ext[i]
        if i == n_sections - 1:
            return np.broadcast_to(W.T, (len(a), *W.T.shape)).copy()
        mask = (a @ W > 0).astype(float)  # [N, d_out]
        J = mask[:, :, None] * W.T[None]  # [N, d_out, d_in + 1]
        const_row = np.zeros((len(a), 1, W.shape[0]))
        const_row[:, 0, -1] = 1.0
        return np.concatenate([J, const_row], axis=1)

    N = len(x)
    out: list = [None] * (n_sections + 1)
    out[-1] = (np.eye(acts[-1].shape[1]), np.eye(acts[-1].shape[1]), None)  # unrotated logits
    for layer in range(n_sections - 1, -1, -1):
        a = acts[layer]
        mean = a.mean(0)
        shift = -mean.copy()
        shift[-1] = 0.0
        gram = (a + shift).T @ (a + shift) / N
        D_dash, U_dash = np.linalg.eigh(gram)
        D_dash = np.abs(D_dash)
        order = np.argsort(-D_dash, kind="stable")
        D_dash, U_dash = D_dash[order], U_dash[:, order]
        is_const = (np.abs(U_dash[-1]) > 1e-6) & (np.abs(D_dash) > 1e-6)
        assert is_const.sum() == 1
        k = int(np.nonzero(is_const)[0][0])
        perm = [k] + [i for i in range(len(D_dash)) if i != k]
        D_dash, U_dash = D_dash[perm], U_dash[:, perm]
        mask = D_dash > TAU
        D, U = np.diag(D_dash[mask]), U_dash[:, mask]
        Y, Y_inv = np.eye(len(mean)), np.eye(len(mean))
        Y[-1, :-1], Y_inv[-1, :-1] = -mean[:-1], mean[:-1]
        W, W_pinv = Y @ U, U.T @ Y_inv
        if kind == "pca":
            out[layer] = (W, W_pinv, None)
            continue
        R = W @ np.diag(1 / np.sqrt(np.diag(D)))
        R_pinv = np.sqrt(D) @ W_pinv
        C_next = out[layer + 1][0]
        J_hat = np.einsum("oi,noj->nij", C_next, jac(layer, a))  # d(out @ C_next)_i / d a_j
        M_dash = np.einsum("nij,nik->jk", J_hat, J_hat) / N
        M = R_pinv @ M_dash @ R_pinv.T
        sub_vals, sub_vecs = np.linalg.eigh(M[1:, 1:])
        sub_vals = np.abs(sub_vals)
        o = np.argsort(-sub_vals, kind="stable")
        V = np.zeros_like(M)
        V[0, 0] = 1.0
        V[1:, 1:] = sub_vecs[:, o]
        Lam = np.concatenate([[M[0, 0]], sub_vals[o]])
        idxs = np.concatenate([[0], np.argsort(-Lam[1:], kind="stable") + 1])
        n_small = int((Lam < TAU).sum())
        idxs = idxs[: len(idxs) - n_small] if n_small else idxs
        L, L_inv = np.diag(np.sqrt(Lam))[:, idxs], np.diag(1 / np.sqrt(Lam))[idxs, :]
        out[layer] = (R @ V @ L, L_inv @ V.T @ R_pinv, Lam[idxs])

    edges = []
    for layer in range(n_sections):
        C, C_pinv, _ = out[layer]
        C_next = out[layer + 1][0]
        a_hat = acts[layer] @ C
        a_in = a_hat @ C_pinv  # the section runs on the reconstruction, as in rib's module_hat
        grad = np.einsum("oi,noj,kj->nik", C_next, jac(layer, a_in), C_pinv)  # dh_i/da_hat_k
        A = grad * a_hat[:, None, :]
        edges.append((A**2).sum(0) / N)
    return out, edges


def _align_signs(C_ref: np.ndarray, C: np.ndarray) -> np.ndarray:
    signs = np.sign(np.sum(C_ref * C, axis=0))
    return C * signs


@pytest.mark.parametrize("kind", ["lib", "pca"])
def test_bases_and_edges_match_rib_formulas(kind: str) -> None:
    mlp, x = _mlp()
    ref, ref_edges = _rib_reference(mlp, x, kind)
    bases = build_basis(mlp, torch.from_numpy(x), kind=kind, tau=TAU, rtol=0.0, batch_size=128)
    edges = compute_edges(mlp, bases, torch.from_numpy(x), batch_size=128)
    for b, (C_ref, C_pinv_ref, lam_ref) in zip(bases, ref, strict=True):
        C = b.C.numpy()
        assert C.shape == C_ref.shape, b.name
        np.testing.assert_allclose(_align_signs(C_ref, C), C_ref, atol=1e-9, rtol=1e-7)
        np.testing.assert_allclose(
            _align_signs(C_pinv_ref.T, b.C_pinv.numpy().T), C_pinv_ref.T, atol=1e-9, rtol=1e-7
        )
        if lam_ref is not None:
            np.testing.assert_allclose(b.importance.numpy(), lam_ref, rtol=1e-8, atol=1e-12)
    for E, E_ref in zip(edges, ref_edges, strict=True):
        np.testing.assert_allclose(E.numpy(), E_ref, rtol=1e-7, atol=1e-12)


def test_lib_features_have_second_moment_lambda() -> None:
    """rib's scale check: E[a_hat_k^2] = Lambda_k (and the constant feature is 1)."""
    mlp, x = _mlp()
    xt = torch.from_numpy(x)
    bases = build_basis(mlp, xt, kind="lib", tau=TAU)
    acts = mlp.node_acts(xt)
    for b, a in zip(bases[:-1], acts[:-1], strict=True):
        a_hat = a.reshape(-1, a.shape[-1]).detach() @ b.C
        torch.testing.assert_close((a_hat**2).mean(0), b.importance, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(a_hat[:, 0], torch.full_like(a_hat[:, 0], a_hat[0, 0].item()))

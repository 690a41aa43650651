"""Streaming statistics between the SAE features of two adjacent layers (Balcells et al. 2024).

`PairStats` keeps running sums over tokens, never the activations: n, sum x, sum y, sum x², sum y²,
the active counts, and two [F_prev, F_next] matrices, sum x yᵀ and the co-firing counts. They are
finalised in closed form into the paper's measures (`MEASURES`); `decoder_cosine` is the data-free
alternative. Shapes: x [tokens, F_prev] holds layer l's codes, y [tokens, F_next] layer l+1's.

A feature is *active* where act > thr, thr = 0 or `rel_threshold` x the feature's max activation
(the paper's "relative activation" variant, 0.2 for the AND/OR gates). A measure whose denominator
is zero (a dead feature, or one that never varies) is 0, never NaN.

Each batch updates the two matrices either densely (two GEMMs, xᵀy and the activity masks) or
sparsely (one scatter-add per pair of non-zero codes at the same token), whichever costs less for
that batch: SAE codes are sparse (L0 ~ 50 of 16k), where the sparse path is ~100x cheaper than a
dense matmul of the same shapes. Sums are fp64 (per-batch GEMMs in fp32), on the stats' device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from mechscope.errors import EvolutionError

Measure = Literal["pearson", "cosine", "jaccard", "sufficiency", "necessity", "mutual_info"]
MEASURES: tuple[str, ...] = (
    "pearson",
    "cosine",
    "jaccard",
    "sufficiency",
    "necessity",
    "mutual_info",
)
DATA_FREE: tuple[str, ...] = ("decoder_cosine",)
Method = Literal["auto", "dense", "sparse"]

# Cost of one scattered pair (two fp64 scatter-adds) in units of one dense fp32 multiply-add,
# measured: ~15 M scattered adds/s vs ~25 G multiply-adds/s per CPU core; GPUs scatter relatively
# faster than CPUs do.
SPARSE_PAIR_COST = {"cpu": 1000.0, "cuda": 200.0}
MAX_PAIRS_PER_CHUNK = 4_000_000  # pairs materialised at once by the sparse path (~100 MB)


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """num / den, 0 where den <= 0 (dead or constant features)."""
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


class PairStats:
    """Running sums between the features of layer l (x) and layer l+1 (y).

    thr_prev, thr_next: activity thresholds [F] (act > thr is active); None = 0.
    method: "dense" (GEMMs), "sparse" (scatter-adds of co-active pairs) or "auto" (per batch,
        the cheaper one by pair count).
    device: where the sums live and the updates run (CUDA if available by default).
    Memory: 2 x F_prev x F_next x 8 bytes (two fp64 matrices), plus one fp32 GEMM output per
        dense batch.
    """

    def __init__(
        self,
        n_prev: int,
        n_next: int,
        *,
        thr_prev: Tensor | None = None,
        thr_next: Tensor | None = None,
        method: Method = "auto",
        device: str | torch.device | None = None,
    ) -> None:
        if n_prev <= 0 or n_next <= 0:
            raise EvolutionError(f"feature counts must be positive, got {n_prev}, {n_next}")
        if method not in ("auto", "dense", "sparse"):
            raise EvolutionError(f"method must be 'auto', 'dense' or 'sparse', got {method!r}")
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.device = dev
        self.n_prev, self.n_next, self.method = n_prev, n_next, method
        self.thr_prev = _thr(thr_prev, n_prev, dev)
        self.thr_next = _thr(thr_next, n_next, dev)
        self.n = 0

        def z(n: int) -> Tensor:
            return torch.zeros(n, dtype=torch.float64, device=dev)

        self.sum_x, self.sum_y = z(n_prev), z(n_next)
        self.sq_x, self.sq_y = z(n_prev), z(n_next)
        self.cnt_x, self.cnt_y = z(n_prev), z(n_next)
        self.xy = z(n_prev * n_next)  # flat [F_prev * F_next]
        self.co = z(n_prev * n_next)
        self.n_dense = 0  # batches per path (for benchmarks and tests)
        self.n_sparse = 0

    # -- accumulation ---------------------------------------------------------------------------
    @torch.no_grad()
    def update(self, x: Tensor, y: Tensor) -> None:
        """Add tokens: x [tokens, F_prev], y [tokens, F_next] (same tokens, same order)."""
        if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
            raise EvolutionError(
                f"need x [tokens, F_prev] and y [tokens, F_next] over the same tokens, got "
                f"{tuple(x.shape)} and {tuple(y.shape)}"
            )
        if x.shape[1] != self.n_prev or y.shape[1] != self.n_next:
            raise EvolutionError(
                f"expected {self.n_prev} and {self.n_next} features, got {x.shape[1]} and "
                f"{y.shape[1]}"
            )
        x = x.to(self.device, torch.float32)
        y = y.to(self.device, torch.float32)
        ax, ay = x > self.thr_prev, y > self.thr_next
        self.n += x.shape[0]
        # per-batch sums in fp32 (no fp64 copy of the batch), accumulated in fp64
        self.sum_x += x.sum(0).double()
        self.sum_y += y.sum(0).double()
        self.sq_x += x.square().sum(0).double()
        self.sq_y += y.square().sum(0).double()
        self.cnt_x += ax.sum(0).double()
        self.cnt_y += ay.sum(0).double()
        nz_x, nz_y = (x != 0).sum(1), (y != 0).sum(1)
        n_pairs = int((nz_x * nz_y).sum())
        if self._use_sparse(x.shape[0], n_pairs):
            self.n_sparse += 1
            self._sparse_update(x, y, ax, ay, nz_x * nz_y)
        else:
            self.n_dense += 1
            self.xy += (x.T @ y).flatten()
            self.co += (ax.float().T @ ay.float()).flatten()

    def _use_sparse(self, n_tokens: int, n_pairs: int) -> bool:
        if self.method != "auto":
            return self.method == "sparse"
        cost = SPARSE_PAIR_COST.get(self.device.type, 1000.0)
        return n_pairs * cost < 2.0 * n_tokens * self.n_prev * self.n_next

    def _sparse_update(self, x: Tensor, y: Tensor, ax: Tensor, ay: Tensor, pairs: Tensor) -> None:
        """Scatter-add x_i y_j (and the co-activity) for every pair of non-zeros at a token."""
        ends = pairs.cumsum(0)
        start = 0
        while start < x.shape[0]:
            base = int(ends[start - 1]) if start else 0
            stop = int(torch.searchsorted(ends, base + MAX_PAIRS_PER_CHUNK, right=True))
            stop = max(stop, start + 1)  # a single token may exceed the budget
            sl = slice(start, stop)
            self._scatter(x[sl], y[sl], ax[sl], ay[sl])
            start = stop

    def _scatter(self, x: Tensor, y: Tensor, ax: Tensor, ay: Tensor) -> None:
        tx, fx = x.nonzero(as_tuple=True)  # row-major: sorted by token
        ty, fy = y.nonzero(as_tuple=True)
        if tx.numel() == 0 or ty.numel() == 0:
            return
        ny = torch.bincount(ty, minlength=x.shape[0])
        start_y = ny.cumsum(0) - ny
        reps = ny[tx]  # pairs made by each non-zero of x
        total = int(reps.sum())
        if total == 0:
            return
        ex = torch.repeat_interleave(torch.arange(tx.numel(), device=x.device), reps)
        first = torch.repeat_interleave(reps.cumsum(0) - reps, reps)
        ey = start_y[tx[ex]] + (torch.arange(total, device=x.device) - first)
        flat = fx[ex] * self.n_next + fy[ey]
        self.xy.index_add_(0, flat, (x[tx, fx][ex] * y[ty, fy][ey]).to(torch.float64))
        both = ax[tx, fx][ex] & ay[ty, fy][ey]
        idx = flat[both]
        self.co.index_add_(0, idx, torch.ones(idx.numel(), dtype=torch.float64, device=x.device))

    # -- finalisation ---------------------------------------------------------------------------
    def measure(self, name: str, rows: slice | None = None) -> Tensor:
        """The measure `name` [rows of F_prev, F_next] (fp32), in closed form from the sums."""
        if name not in MEASURES:
            raise EvolutionError(f"unknown measure {name!r}; choose from {MEASURES}")
        if self.n == 0:
            raise EvolutionError("no tokens were added; call update() first")
        rows = rows or slice(0, self.n_prev)
        n = float(self.n)
        xy = self.xy.view(self.n_prev, self.n_next)[rows]
        co = self.co.view(self.n_prev, self.n_next)[rows]
        if name == "pearson":
            mx, my = self.sum_x[rows] / n, self.sum_y / n
            vx = _variance(self.sq_x[rows] / n, mx)
            vy = _variance(self.sq_y / n, my)
            cov = xy / n - mx[:, None] * my[None, :]
            out = _safe_div(cov, (vx[:, None] * vy[None, :]).sqrt()).clamp(-1.0, 1.0)
        elif name == "cosine":
            den = (self.sq_x[rows][:, None] * self.sq_y[None, :]).sqrt()
            out = _safe_div(xy, den).clamp(-1.0, 1.0)
        elif name == "jaccard":
            out = _safe_div(co, self.cnt_x[rows][:, None] + self.cnt_y[None, :] - co)
        elif name == "sufficiency":
            out = _safe_div(co, self.cnt_x[rows][:, None].expand_as(co))
        elif name == "necessity":
            out = _safe_div(co, self.cnt_y[None, :].expand_as(co))
        else:
            out = _binary_mi(co / n, self.cnt_x[rows][:, None] / n, self.cnt_y[None, :] / n)
        return torch.nan_to_num(out.float(), nan=0.0, posinf=0.0, neginf=0.0)

    def matrix(self, name: str, block_bytes: int = 256 << 20) -> Tensor:
        """The full measure [F_prev, F_next] (fp32), finalised in row blocks of ~block_bytes."""
        rows = max(1, block_bytes // (8 * 4 * self.n_next))
        out = torch.empty(self.n_prev, self.n_next, dtype=torch.float32, device=self.device)
        for s in range(0, self.n_prev, rows):
            out[s : s + rows] = self.measure(name, slice(s, s + rows))
        return out

    def state_dict(self) -> dict[str, Tensor]:
        """The sums (to resume, merge runs or check them); `n` as a 0-d tensor."""
        d = {k: getattr(self, k) for k in _SUMS}
        d["n"] = torch.tensor(self.n)
        return d

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Continue from the sums of `state_dict()` (same feature counts)."""
        for k in _SUMS:
            cur, new = getattr(self, k), state[k]
            if new.shape != cur.shape:
                raise EvolutionError(
                    f"saved sum {k} has shape {tuple(new.shape)}, expected {tuple(cur.shape)} "
                    f"({self.n_prev} x {self.n_next} features)"
                )
            setattr(self, k, new.to(self.device, torch.float64).clone())
        self.n = int(state["n"])


_SUMS = ("sum_x", "sum_y", "sq_x", "sq_y", "cnt_x", "cnt_y", "xy", "co")


def _thr(thr: Tensor | None, n: int, dev: torch.device) -> Tensor:
    if thr is None:
        return torch.zeros(n, device=dev)
    if thr.shape != (n,):
        raise EvolutionError(f"activity thresholds must have shape ({n},), got {tuple(thr.shape)}")
    return thr.to(dev, torch.float32).clamp_min(0.0)


def _variance(mean_sq: Tensor, mean: Tensor) -> Tensor:
    """E[x²] - E[x]², set to 0 where it is rounding noise (constant or dead features)."""
    var = mean_sq - mean.square()
    return torch.where(var > 1e-12 * mean_sq, var, torch.zeros_like(var))


def _binary_mi(p11: Tensor, px: Tensor, py: Tensor) -> Tensor:
    """Mutual information (nats) of two binary variables from P(both), P(x), P(y)."""
    p10, p01 = px - p11, py - p11
    p00 = 1.0 - px - py + p11
    total = torch.zeros_like(p11)
    for p, a, b in ((p11, px, py), (p10, px, 1 - py), (p01, 1 - px, py), (p00, 1 - px, 1 - py)):
        p = p.clamp_min(0.0)
        den = a * b
        ok = (p > 0) & (den > 0)
        ratio = torch.where(ok, p / torch.where(ok, den, torch.ones_like(den)), torch.ones_like(p))
        total = total + p * ratio.log()
    return total.clamp_min(0.0)


def decoder_cosine(w_dec_prev: Tensor, w_dec_next: Tensor) -> Tensor:
    """Cosine of decoder directions [F_prev, F_next] from W_dec [F, d_model] of each SAE: the
    data-free measure (no tokens needed). Zero-norm rows give 0."""
    if w_dec_prev.shape[1] != w_dec_next.shape[1]:
        raise EvolutionError(
            f"decoder widths differ ({w_dec_prev.shape[1]} vs {w_dec_next.shape[1]}): the two SAEs "
            "must write to residual streams of the same d_model"
        )
    a = w_dec_prev.detach().float()
    b = w_dec_next.detach().to(a.device, torch.float32)
    na = a.norm(dim=1, keepdim=True)
    nb = b.norm(dim=1, keepdim=True)
    a = torch.where(na > 0, a / na.clamp_min(1e-30), torch.zeros_like(a))
    b = torch.where(nb > 0, b / nb.clamp_min(1e-30), torch.zeros_like(b))
    return (a @ b.T).clamp(-1.0, 1.0)


@dataclass
class SparseSimilarity:
    """A sparsified [F_prev, F_next] similarity: the kept entries as (row, col, value) triplets."""

    rows: Tensor  # int32 [n]
    cols: Tensor  # int32 [n]
    values: Tensor  # float32 [n]
    shape: tuple[int, int]

    def __len__(self) -> int:
        return int(self.values.numel())

    def dense(self) -> Tensor:
        """The matrix with the dropped entries as 0."""
        out = torch.zeros(self.shape, dtype=torch.float32)
        out[self.rows.long(), self.cols.long()] = self.values.float()
        return out


def sparsify(mat: Tensor, min_abs: float = 0.1, top_k: int | None = None) -> SparseSimilarity:
    """Keep entries with |s| >= min_abs (the paper zeroes |s| < 0.1) and, if top_k is given, only
    those among the k largest |s| of their row (layer l feature) or of their column (layer l+1)."""
    keep = mat.abs() >= min_abs
    if top_k is not None and top_k > 0:
        a = mat.abs()
        k_r, k_c = min(top_k, mat.shape[1]), min(top_k, mat.shape[0])
        top = torch.zeros_like(keep)
        top.scatter_(1, a.topk(k_r, dim=1).indices, True)
        top.scatter_(0, a.topk(k_c, dim=0).indices, True)
        keep &= top
    r, c = keep.nonzero(as_tuple=True)
    return SparseSimilarity(
        r.to(torch.int32).cpu(),
        c.to(torch.int32).cpu(),
        mat[r, c].float().cpu(),
        (int(mat.shape[0]), int(mat.shape[1])),
    )


def relative_thresholds(max_acts: Tensor, rel: float) -> Tensor:
    """Per-feature activity thresholds rel x max activation (0 for dead features)."""
    if not 0.0 <= rel < 1.0 or math.isnan(rel):
        raise EvolutionError(f"rel_threshold must be in [0, 1), got {rel}")
    return (max_acts.float() * rel).clamp_min(0.0)

"""Benchmark: streaming cross-layer feature statistics (`PairStats`) on random sparse SAE codes.

Random codes with exactly L0 active features per token (uniform positions, values in (0, 1]) for
two layers of F features each are streamed through `PairStats` in batches, as
`compute_evolution` does; the limit it is compared with is a plain dense fp32 matmul xᵀy of the
same shapes (the one GEMM the running sums would need at the least), timed on a few batches and
extrapolated. Code generation is not timed. Then every measure is finalised and sparsified.

    python benchmarks/evolution.py                                 # CPU: 16k x 16k, 200k tokens
    python benchmarks/evolution.py --device cuda --tokens 1000000  # GPU: 16k x 16k, 1M tokens

Prints a table: path, tokens/s of the streaming update and of the dense matmul, the speed-up,
finalisation time and peak memory (process RSS on CPU, allocated memory on CUDA).
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from mechscope.evolution.stats import MEASURES, PairStats, sparsify


def codes(n: int, f: int, l0: int, g: torch.Generator, device: torch.device) -> torch.Tensor:
    idx = torch.randint(0, f, (n, l0), generator=g).to(device)
    val = torch.rand(n, l0, generator=g).to(device) + 1e-3
    return torch.zeros(n, f, device=device).scatter_(1, idx, val)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def check(device: torch.device) -> float:
    """Largest difference between the device's and the CPU's measures on a small case."""
    g = torch.Generator().manual_seed(1)
    x, y = (
        codes(3000, 300, 20, g, torch.device("cpu")),
        codes(3000, 200, 20, g, torch.device("cpu")),
    )
    worst = 0.0
    for method in ("dense", "sparse"):
        a = PairStats(300, 200, method=method, device=device)  # type: ignore[arg-type]
        b = PairStats(300, 200, method="dense", device="cpu")
        for s in range(0, 3000, 700):
            a.update(x[s : s + 700], y[s : s + 700])
            b.update(x[s : s + 700], y[s : s + 700])
        for m in MEASURES:
            worst = max(worst, float((a.matrix(m).cpu() - b.matrix(m)).abs().max()))
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--features", type=int, default=16384)
    ap.add_argument("--tokens", type=int, default=200_000)
    ap.add_argument("--l0", type=int, default=50, help="active features per token")
    ap.add_argument("--batch", type=int, default=4096, help="tokens per update")
    ap.add_argument("--dense-batches", type=int, default=1, help="batches to time the matmul")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--skip-finalise", action="store_true")
    a = ap.parse_args()
    dev = torch.device(a.device)
    f, n_batches = a.features, a.tokens // a.batch
    print(f"device check (max |device - cpu| over all measures): {check(dev):.2e}")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    g = torch.Generator().manual_seed(0)
    rss0 = peak_mb(dev)
    st = PairStats(f, f, method="auto", device=dev)
    t_upd = 0.0
    for _ in range(n_batches):
        x, y = codes(a.batch, f, a.l0, g, dev), codes(a.batch, f, a.l0, g, dev)
        sync(dev)
        t0 = time.perf_counter()
        st.update(x, y)
        sync(dev)
        t_upd += time.perf_counter() - t0
    n_tok = n_batches * a.batch
    peak_stream = peak_mb(dev)
    t_dense = 0.0
    for _ in range(a.dense_batches):
        x, y = codes(a.batch, f, a.l0, g, dev), codes(a.batch, f, a.l0, g, dev)
        sync(dev)
        t0 = time.perf_counter()
        out = x.T @ y
        sync(dev)
        t_dense += time.perf_counter() - t0
        del out
    dense_tps = a.dense_batches * a.batch / t_dense
    t_fin = 0.0
    kept = 0
    if not a.skip_finalise:
        t0 = time.perf_counter()
        for m in MEASURES:
            kept += len(sparsify(st.matrix(m), 0.1, top_k=10))
        sync(dev)
        t_fin = time.perf_counter() - t0
    path = f"sparse {st.n_sparse}/dense {st.n_dense}"
    print()
    print(
        "| device | F x F | tokens | L0 | batches (path) | stream tok/s | dense matmul tok/s "
        "| speed-up | stream s | dense s (extrap.) | finalise s | peak MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {dev.type} | {f} x {f} | {n_tok:,} | {a.l0} | {path} | {n_tok / t_upd:,.0f} "
        f"| {dense_tps:,.0f} | {n_tok / t_upd / dense_tps:.1f}x | {t_upd:.1f} "
        f"| {n_tok / dense_tps:.1f} | {t_fin:.1f} | {max(peak_stream, peak_mb(dev)):,.0f} |"
    )
    print(f"(peak MB before the run: {rss0:,.0f}; entries kept after sparsifying: {kept:,})")


if __name__ == "__main__":
    main()

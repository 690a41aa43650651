"""SAE training: mechscope's `train_sae` against SAELens's own `SAETrainer`, the same SAE.

    OMP_NUM_THREADS=1 python benchmarks/sae_train.py            # 600k tokens, 3 repetitions
    OMP_NUM_THREADS=1 python benchmarks/sae_train.py --quick    # 90k tokens, 2 repetitions
    OMP_NUM_THREADS=1 python benchmarks/sae_train.py --mode opt # or e2e: one mode only

The SAE on both sides: code-2l `blocks.0.hook_resid_post` (d_in 128), ReLU + L1, d_sae 2048,
batches of 3072 tokens, Adam (betas 0.9, 0.999) at lr 2e-3 with 50 warm-up steps then cosine decay
to lr/10, L1 coefficient --l1 on both sides (mechscope's loss is SAELens's divided by d_in, which
Adam does not see), the same number of steps. Each side keeps its own initialisation, decoder
handling and gradient clipping (docs/sae.md says which differ).

Two modes, interleaved (the order alternates between repetitions; repetition r uses seed r):
- optimisation alone: one in-memory tensor of training activations (non-BOS positions, cut into
  3072-token batches) is fed to both (`train_sae(activations=...)`, `SAETrainer` with an
  iterator over the same batches);
- end to end from token ids: the same token batches [32, 96] (3072 tokens with their BOS) go to
  `train_sae(tokens=...)` and to SAELens's `ActivationsStore` (pretokenized dataset, the
  TransformerBridge running the model up to the hook, BOS left out, its mixing buffer).
Each side is timed by the wall clock and by the process's CPU time (`time.process_time`): on a
shared machine the wall clock also counts the time other jobs take the core, which changes within
a run; the CPU time counts only the work (one thread each with OMP_NUM_THREADS=1). The load
average is printed with each repetition.
Both sides' SAEs from the optimisation mode are evaluated on the same held-out activations
(`eval_batches`: held-out stdlib files, tokens neither side trained on): L0, explained variance
(1 - E||x - x_hat||^2 / Var_total) and the fraction of latents that never fire there.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

import mechscope
from mechscope.data.batches import eval_batches, token_batches
from mechscope.models.lean import as_lean
from mechscope.sae import TrainConfig, train_sae
from mechscope.sae.activations import collect, keep_mask, special_ids

HOOK = "blocks.0.hook_resid_post"
BATCH_SEQ, N_CTX = 32, 96
BATCH = BATCH_SEQ * N_CTX
LR, WARMUP, EXPANSION = 2e-3, 50, 16


def held_out_metrics(
    encode: Callable[[Tensor], Tensor], decode: Callable[[Tensor], Tensor], x: Tensor
) -> tuple[float, float, float]:
    """(L0, explained variance, dead fraction) of an SAE on activations x [n, d_in]."""
    with torch.no_grad():
        codes = encode(x)
        x_hat = decode(codes)
        var = (x - x.mean(0)).pow(2).sum(-1).mean()
        ev = 1 - float((x - x_hat).pow(2).sum(-1).mean() / var)
        return (
            float((codes > 0).sum(-1).float().mean()),
            ev,
            float((codes.amax(0) <= 0).float().mean()),
        )


def mech_config(steps: int, l1: float, seed: int) -> TrainConfig:
    return TrainConfig(
        model="code-2l",
        hook_name=HOOK,
        expansion=EXPANSION,
        sparsity_coeff=l1,
        n_steps=steps,
        batch_size=BATCH_SEQ,
        lr=LR,
        warmup_steps=WARMUP,
        min_lr_frac=0.1,
        seed=seed,
    )


def saelens_trainer(steps: int, l1: float, seed: int, data: Iterator[Tensor]):  # type: ignore[no-untyped-def]
    from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    torch.manual_seed(seed)
    sae = StandardTrainingSAE(
        StandardTrainingSAEConfig(
            d_in=128, d_sae=EXPANSION * 128, l1_coefficient=l1, dtype="float32", device="cpu"
        )
    )
    cfg = SAETrainerConfig(
        total_training_samples=steps * BATCH,
        train_batch_size_samples=BATCH,
        lr=LR,
        lr_end=LR / 10,
        lr_scheduler_name="cosineannealing",
        lr_warm_up_steps=WARMUP,
        device="cpu",
    )
    return SAETrainer(cfg, sae, data), sae


def saelens_store(bridge, tokens: list[Tensor], steps: int, specials: list[int]):  # type: ignore[no-untyped-def]
    from datasets import Dataset
    from sae_lens.training.activations_store import ActivationsStore

    ids = torch.cat(tokens).tolist()
    return ActivationsStore(
        model=bridge,
        dataset=Dataset.from_dict({"input_ids": ids}),
        streaming=False,
        hook_name=HOOK,
        hook_head_index=None,
        context_size=N_CTX,
        d_in=128,
        n_batches_in_buffer=64,  # its buffer (n_batches x context tokens) must hold a batch
        total_training_tokens=steps * BATCH,
        store_batch_size_prompts=BATCH_SEQ,
        train_batch_size_tokens=BATCH,
        prepend_bos=False,
        normalize_activations="none",
        device=torch.device("cpu"),
        dtype="float32",
        exclude_special_tokens=torch.tensor(specials),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tokens", type=int, default=600_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--l1", type=float, default=2.0, help="L1 coefficient (both sides)")
    ap.add_argument("--quick", action="store_true", help="90k tokens, 2 repetitions")
    ap.add_argument("--mode", choices=("both", "opt", "e2e"), default="both")
    a = ap.parse_args()
    if a.quick:
        a.tokens, a.reps = 90_000, 2
    warnings.filterwarnings("ignore")
    steps = a.tokens // BATCH
    bridge = mechscope.load_model("code-2l")
    lean = as_lean(bridge)
    specials = special_ids(lean)
    stream = token_batches(lean.tokenizer, BATCH_SEQ, N_CTX, seed=0)
    token_list: list[Tensor] = []
    parts: list[Tensor] = []
    with torch.no_grad():
        while sum(len(p) for p in parts) < steps * BATCH:  # BOS positions are left out
            token_list.append(next(stream))
            parts.append(collect(lean, token_list[-1], HOOK)[keep_mask(token_list[-1], specials)])
        acts = torch.cat(parts)
        held = torch.cat(
            [collect(lean, t, HOOK)[keep_mask(t, specials)] for t in eval_batches(bridge, 16)]
        )
    batches = [acts[i * BATCH : (i + 1) * BATCH] for i in range(steps)]
    print(
        f"code-2l {HOOK}: {steps} steps x {BATCH} tokens, d_sae {EXPANSION * 128}, l1 {a.l1}, "
        f"{a.reps} repetitions, {torch.get_num_threads()} threads; held-out {len(held)} tokens"
    )
    times: dict[str, list[float]] = {k: [] for k in ("m_opt", "s_opt", "m_e2e", "s_e2e")}
    cpu: dict[str, list[float]] = {k: [] for k in times}  # tokens per CPU second
    quality: dict[str, list[tuple[float, float, float]]] = {"m": [], "s": []}
    for rep in range(a.reps):
        order = ("m", "s") if rep % 2 == 0 else ("s", "m")
        for side in order if a.mode != "e2e" else ():
            t0, c0 = time.perf_counter(), time.process_time()
            if side == "m":
                res = train_sae(mech_config(steps, a.l1, rep), activations=batches, progress=False)
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
                quality["m"].append(held_out_metrics(res.sae.encode, res.sae.decode, held))
            else:
                trainer, sae = saelens_trainer(steps, a.l1, rep, iter(batches))
                t0, c0 = time.perf_counter(), time.process_time()
                trainer.fit()
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
                quality["s"].append(held_out_metrics(sae.encode, sae.decode, held))
            times[f"{side}_opt"].append(steps * BATCH / dt)
            cpu[f"{side}_opt"].append(steps * BATCH / dc)
        for side in order if a.mode != "opt" else ():
            t0, c0 = time.perf_counter(), time.process_time()
            if side == "m":
                train_sae(mech_config(steps, a.l1, rep), bridge, tokens=token_list, progress=False)
            else:
                store = saelens_store(bridge, token_list, steps, specials)
                trainer, _ = saelens_trainer(steps, a.l1, rep, store)
                trainer.fit()
            times[f"{side}_e2e"].append(steps * BATCH / (time.perf_counter() - t0))
            cpu[f"{side}_e2e"].append(steps * BATCH / (time.process_time() - c0))
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"\nafter {rep + 1} of {a.reps} repetitions (load average {load}):")
        print_table(times, cpu, quality)


def _ms(v: list[float], fmt: str) -> str:
    if not v:
        return "-"
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{format(statistics.mean(v), fmt)} ± {format(sd, fmt)}"


def _ratio(m: list[float], s: list[float]) -> str:
    """Ratio of the means, then each repetition's ratio."""
    each = ", ".join(f"{x / y:.2f}" for x, y in zip(m, s, strict=True))
    return f"{statistics.mean(m) / statistics.mean(s):.2f}x ({each})"


def print_table(
    times: dict[str, list[float]],
    cpu: dict[str, list[float]],
    quality: dict[str, list[tuple[float, float, float]]],
) -> None:
    print(
        "| mode | mechscope tokens/s | SAELens tokens/s | ratio (per repetition) "
        "| mechscope tokens/CPU-s | SAELens tokens/CPU-s | CPU-time ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for mode, label in (("opt", "optimisation alone"), ("e2e", "end to end from token ids")):
        m, s, mc, sc = times[f"m_{mode}"], times[f"s_{mode}"], cpu[f"m_{mode}"], cpu[f"s_{mode}"]
        if not m:
            continue
        print(
            f"| {label} | {_ms(m, ',.0f')} | {_ms(s, ',.0f')} | {_ratio(m, s)} "
            f"| {_ms(mc, ',.0f')} | {_ms(sc, ',.0f')} | {_ratio(mc, sc)} |"
        )
    print("\n| held-out (seeds 0..n-1) | L0 | explained variance | dead latents |")
    print("|---|---|---|---|")
    for side, label in (("m", "mechscope"), ("s", "SAELens")):
        q = quality[side]
        cols = [_ms([r[i] for r in q], f) for i, f in ((0, ".1f"), (1, ".4f"), (2, ".4f"))]
        print(f"| {label} | " + " | ".join(cols) + " |")


if __name__ == "__main__":
    main()

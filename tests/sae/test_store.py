"""The on-disk activation store: write, reopen, manifest, order, one forward per batch, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from mechscope.errors import SAEError, StoreError
from mechscope.models.lean import LeanModel
from mechscope.sae.activations import collect
from mechscope.sae.store import ActivationStore, store_bytes, write_store

HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"]
N_CTX = 24


def batches(n: int, batch: int = 4, seed: int = 0) -> Iterator[torch.Tensor]:
    """Random token batches [batch, N_CTX] with BOS (0) first."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        t = torch.randint(1, 4096, (batch, N_CTX), generator=g)
        t[:, 0] = 0
        yield t


@pytest.fixture(scope="module")
def lean(gpt2_2l) -> LeanModel:
    return LeanModel(gpt2_2l)


def write(lean: LeanModel, out: Path, **kw) -> ActivationStore:
    args = {"n_batches": 5, "shard_tokens": 3 * N_CTX, "model_name": "code-2l", "progress": False}
    return write_store(lean, HOOKS, batches(10), out, **(args | kw))


def test_write_and_reopen(lean: LeanModel, tmp_path: Path) -> None:
    write(lean, tmp_path / "s", source={"seed": 0})
    store = ActivationStore(tmp_path / "s")
    m = store.manifest
    assert m["model"] == "code-2l" and m["hooks"] == {h: 128 for h in HOOKS}
    assert m["dtype"] == "float32" and m["n_ctx"] == N_CTX and m["source"] == {"seed": 0}
    assert len(store) == m["n_seq"] == 20 and store.n_tokens == 20 * N_CTX
    assert store.special_ids == [0]
    assert [s["n_seq"] for s in m["shards"]] == [3] * 6 + [2]
    for shard in m["shards"]:
        file = tmp_path / "s" / shard["file"]
        assert file.stat().st_size == shard["bytes"] and len(shard["sha256"]) == 64
        with safe_open(str(file), "pt") as f:
            assert set(f.keys()) == {"tokens", *HOOKS}
    names = {p.name for p in (tmp_path / "s").iterdir()}  # no temporary files left
    assert names == {"manifest.json", *(f"shard-{i:05d}.safetensors" for i in range(7))}
    store.verify()


def test_batches_in_stored_order_equal_the_live_model(lean: LeanModel, tmp_path: Path) -> None:
    store = write(lean, tmp_path / "s")
    toks = torch.cat(list(batches(5)))
    for hook in HOOKS:
        live = torch.cat([collect(lean, t, hook) for t in batches(5)])
        got = list(store.batches(hook, 4))
        assert [t.shape for t, _ in got] == [(4, N_CTX)] * 5 and got[0][0].dtype == torch.long
        assert torch.equal(torch.cat([t for t, _ in got]), toks)
        assert torch.equal(torch.cat([a for _, a in got]), live)  # bit for bit
        # batch sizes and starts that cut across shards read the same sequences
        parts = list(store.batches(hook, 5, start=2))
        assert [len(t) for t, _ in parts] == [5, 5, 5, 3]
        assert torch.equal(torch.cat([a for _, a in parts]), live[2:])


def test_one_forward_per_batch_for_all_hooks(lean: LeanModel, tmp_path: Path, monkeypatch) -> None:
    shapes: list[tuple[int, ...]] = []
    forward = LeanModel.forward

    def counting(self, tokens, *args, **kw):
        shapes.append(tuple(tokens.shape))
        return forward(self, tokens, *args, **kw)

    monkeypatch.setattr(LeanModel, "forward", counting)
    write(lean, tmp_path / "s", n_batches=3)
    assert [s for s in shapes if s == (4, N_CTX)] == [(4, N_CTX)] * 3


def test_n_tokens_rounds_up_to_whole_batches(lean: LeanModel, tmp_path: Path) -> None:
    store = write(lean, tmp_path / "s", n_batches=None, n_tokens=5 * N_CTX)
    assert len(store) == 8
    with pytest.warns(UserWarning, match="ended after 2 batches"):
        short = write_store(
            lean, HOOKS[:1], batches(2), tmp_path / "t", n_batches=4, progress=False
        )
    assert len(short) == 8


def test_float16_store(lean: LeanModel, tmp_path: Path) -> None:
    store = write(lean, tmp_path / "s", dtype="float16", n_batches=1)
    _, acts = next(store.batches(HOOKS[0], 4))
    live = collect(lean, next(batches(1)), HOOKS[0])
    assert acts.dtype == torch.float16 and torch.equal(acts, live.half())


def test_truncated_shard_names_the_file(lean: LeanModel, tmp_path: Path) -> None:
    store = write(lean, tmp_path / "s")
    shard = tmp_path / "s" / "shard-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(StoreError, match=r"shard-00002\.safetensors has \d+ bytes.*rewrite"):
        ActivationStore(tmp_path / "s")
    # truncated after the store was opened: reading stops with the error, not a short batch
    it = store.batches(HOOKS[0], 4)
    next(it)
    with pytest.raises(StoreError, match=r"shard-00002\.safetensors.*truncated"):
        list(it)


def test_corrupt_shard_fails_verify(lean: LeanModel, tmp_path: Path) -> None:
    store = write(lean, tmp_path / "s")
    shard = tmp_path / "s" / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"shard-00001\.safetensors does not match its sha256"):
        store.verify()


def test_missing_manifest_or_shard(lean: LeanModel, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"no manifest\.json"):
        ActivationStore(tmp_path)
    write(lean, tmp_path / "s")
    (tmp_path / "s" / "shard-00003.safetensors").unlink()
    with pytest.raises(StoreError, match=r"shard-00003\.safetensors is missing"):
        ActivationStore(tmp_path / "s")
    (tmp_path / "s" / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(StoreError, match="not a mechscope-activation-store manifest"):
        ActivationStore(tmp_path / "s")


def test_refuses_to_overwrite(lean: LeanModel, tmp_path: Path) -> None:
    write(lean, tmp_path / "s", n_batches=2)
    with pytest.raises(StoreError, match="already holds an activation store"):
        write(lean, tmp_path / "s", n_batches=1)
    store = write(lean, tmp_path / "s", n_batches=1, overwrite=True)
    assert len(store) == 4 and len(list((tmp_path / "s").glob("shard-*"))) == 2


def test_bad_requests(lean: LeanModel, tmp_path: Path) -> None:
    with pytest.raises(SAEError, match="unknown hook"):
        write_store(lean, ["blocks.7.hook_resid_post"], batches(1), tmp_path / "a")
    with pytest.raises(SAEError, match=r"\[batch, pos, d\] hooks"):
        write_store(lean, ["blocks.0.attn.hook_z"], batches(1), tmp_path / "a")
    with pytest.raises(StoreError, match="no token batches"):
        write_store(lean, HOOKS, iter([]), tmp_path / "b", progress=False)
    store = write(lean, tmp_path / "c", n_batches=1)
    with pytest.raises(StoreError, match=r"'blocks.0.hook_resid_pre' is not in the store"):
        next(store.batches("blocks.0.hook_resid_pre", 4))


def test_store_bytes_is_what_the_store_writes(lean: LeanModel, tmp_path: Path) -> None:
    """n_tokens rounds up to whole batches: 150 tokens of [4, 24] batches are 8 sequences."""
    store = write(lean, tmp_path / "s", n_batches=None, n_tokens=150)
    widths = {h: lean.W_E.shape[1] for h in HOOKS}
    est = store_bytes(8, N_CTX, widths, "float32")
    assert est == 8 * N_CTX * (4 + 4 * 2 * 128)
    files = list((tmp_path / "s").iterdir())
    written = sum(f.stat().st_size for f in files)
    assert len(store) == 8 and est <= written <= est + 1024 * len(files)


def test_refuses_a_store_bigger_than_the_free_space(lean, tmp_path, monkeypatch) -> None:
    import shutil

    from mechscope.sae import store as store_module

    need = store_bytes(20, N_CTX, {h: 128 for h in HOOKS}, "float16")  # 5 batches of 4
    free = shutil.disk_usage(tmp_path)._replace(free=need - 1)
    monkeypatch.setattr(store_module.shutil, "disk_usage", lambda _: free)
    with pytest.raises(StoreError, match=r"the store would write about 0\.2 MB to .* is free"):
        write(lean, tmp_path / "s", dtype="float16")
    assert not (tmp_path / "s").exists()  # refused before anything was made
    write(lean, tmp_path / "s", n_batches=4, dtype="float16")  # 16 sequences fit
    # overwriting counts the old store's files as free
    monkeypatch.setattr(store_module.shutil, "disk_usage", lambda _: free._replace(free=0))
    write(lean, tmp_path / "s", n_batches=1, dtype="float16", overwrite=True)

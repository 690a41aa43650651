"""Result files keep the whole name they are given: hook names hold dots
(`blocks.1.hook_resid_post`), which `Path.with_suffix` would cut at the last one."""

from __future__ import annotations

from pathlib import Path

import torch

from mechscope.files import suffixed


def test_suffixed_keeps_dotted_names() -> None:
    stem = Path("out/sweep_code-2l_blocks.1.hook_resid_post")
    assert suffixed(stem, ".json") == Path("out/sweep_code-2l_blocks.1.hook_resid_post.json")
    assert stem.with_suffix(".json") == Path("out/sweep_code-2l_blocks.1.json")  # the old bug


def test_two_hooks_of_one_block_get_two_files(tmp_path, mechscope_cli) -> None:
    """`directions sweep` on resid_pre and resid_post of block 1: two results, at the paths
    it prints."""
    args = ["directions", "sweep", "--family", "isotropic", "--batches", "1"]
    args += ["--batch-size", "2", "--lengths", "1,4", "--out", str(tmp_path)]
    for hook in ("blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"):
        result = mechscope_cli([*args, "--hook", hook])
        assert result.exit_code == 0, result.output
        text = "".join(result.output.split())  # rich wraps long paths at the console width
        printed = text.split("results:")[1].split(",")[0]
        assert Path(printed) == tmp_path / f"sweep_code-2l_{hook}.json"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        f"sweep_code-2l_blocks.1.hook_resid_{s}.{ext}"
        for s in ("post", "pre")
        for ext in ("html", "json")
    ]


def test_patch_result_with_a_dotted_stem(tmp_path) -> None:
    from mechscope.patching.result import PatchResult

    r = PatchResult(
        torch.randn(2, 3), ("layer", "pos"), {}, 1.0, 0.0, "logit_diff", "denoising", "z"
    )
    js, st = r.save(tmp_path / "z_blocks.1.attn")
    assert (js.name, st.name) == ("z_blocks.1.attn.json", "z_blocks.1.attn.safetensors")
    assert torch.equal(PatchResult.load(tmp_path / "z_blocks.1.attn").values, r.values)

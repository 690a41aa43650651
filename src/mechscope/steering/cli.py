"""`mechscope steer`: generate with and without interventions, side by side.

mechscope steer --model code-2l --prompt "def foo(" --sae blocks.0.hook_resid_post__local__l1-2 \\
    --clamp 12=8 --max-new-tokens 20
mechscope steer --model code-2l --prompt "import " --add-direction dir.pt:4@blocks.1.hook_resid_post
mechscope steer --model code-2l --prompt "def foo(" --tc-edit '1:468*3'   # bundled transcoders
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, cast

import typer
from rich.table import Table

from mechscope import validate as V
from mechscope.cli_common import (
    Device,
    DeviceMap,
    Dtype,
    check_hooks,
    console,
    fail,
    load,
    option_checks,
)
from mechscope.errors import MechscopeError, SteeringError

Op = Literal["clamp", "scale", "zero"]
FEATURE_HELP = "FEATURE=VALUE[@HOOK] (repeat; HOOK defaults to the --sae's hook)"


def _split_hook(spec: str, what: str, default: str | None) -> tuple[str, str]:
    """(body, hook) of 'BODY@HOOK', the hook defaulting to `default`."""
    body, _, hook = spec.partition("@")
    hook = hook or default or ""
    if not hook:
        raise SteeringError(f"{what} {spec!r} names no hook: write it as ...@HOOK")
    return body, hook


def _feature(
    spec: str, what: str, sae_hook: str | None, with_value: bool
) -> tuple[int, float, str]:
    """(feature, value, hook) of 'F=V@HOOK' (or 'F@HOOK' for --zero)."""
    body, hook = _split_hook(spec, what, sae_hook)
    f, eq, v = body.partition("=")
    try:
        if with_value != bool(eq):
            raise ValueError
        return int(f), float(v) if with_value else 0.0, hook
    except ValueError:
        form = "FEATURE=VALUE[@HOOK]" if with_value else "FEATURE[@HOOK]"
        raise SteeringError(
            f"{what} {spec!r} is not {form}, e.g. 12{'=8' if with_value else ''}"
        ) from None


def _direction(spec: str, what: str, with_scale: bool) -> tuple[Any, float, str]:
    """(direction [d], scale, hook) of 'FILE.pt:SCALE@HOOK' (or 'FILE.pt@HOOK' for ablation)."""
    import torch

    from mechscope.files import read_torch

    body, hook = _split_hook(spec, what, None)
    path, scale = body, 1.0
    if with_scale:
        path, _, s = body.rpartition(":")
        try:
            scale = float(s)
        except ValueError:
            raise SteeringError(f"{what} {spec!r} is not FILE.pt:SCALE@HOOK") from None
    vec = read_torch(Path(path), SteeringError, f"{what} takes a .pt file holding one vector [d]")
    if not isinstance(vec, torch.Tensor) or vec.ndim != 1:
        raise SteeringError(f"{what}: {path!r} must hold one vector [d] (a 1-D tensor)")
    return vec.float(), scale, hook


def _tc_edit(spec: str) -> tuple[int, int, Op, float]:
    """(layer, feature, op, value) of 'LAYER:FEATURE=VALUE' or 'LAYER:FEATURE*FACTOR'."""
    from mechscope.steering.spec import parse_feature_op

    layer, _, rest = spec.partition(":")
    try:
        return int(layer), *parse_feature_op(rest)
    except ValueError:
        raise SteeringError(
            f"--tc-edit {spec!r} is not LAYER:FEATURE=VALUE (clamp; =0 zeroes) or "
            "LAYER:FEATURE*FACTOR (scale), e.g. 1:468=0"
        ) from None


def _positions(spec: str) -> Any:
    if spec in ("all", "new"):
        return spec
    try:
        return tuple(int(p) for p in spec.split(","))
    except ValueError:
        raise SteeringError(f"--positions {spec!r} is not 'all', 'new' or e.g. 3,4,5") from None


def steer_command(
    prompt: Annotated[str, typer.Option(help="the prompt (a BOS token is put before it)")],
    model: Annotated[str, typer.Option(help="zoo name, local HF folder or hub name")] = "code-2l",
    sae: Annotated[
        str | None, typer.Option(help="SAE for the feature edits: bundled name or SAELens folder")
    ] = None,
    clamp: Annotated[
        list[str] | None, typer.Option(help=f"clamp a feature: {FEATURE_HELP}")
    ] = None,
    scale: Annotated[
        list[str] | None, typer.Option(help=f"scale a feature: {FEATURE_HELP}")
    ] = None,
    zero: Annotated[
        list[str] | None, typer.Option(help="zero a feature: FEATURE[@HOOK] (repeat)")
    ] = None,
    add_direction: Annotated[
        list[str] | None,
        typer.Option(help="activation addition: FILE.pt:SCALE@HOOK (a vector [d]; repeat)"),
    ] = None,
    tc_edit: Annotated[
        list[str] | None,
        typer.Option(
            help="edit a transcoder feature at its MLP's output: LAYER:FEATURE=VALUE (clamp; "
            "=0 zeroes) or LAYER:FEATURE*FACTOR (scale) (repeat)"
        ),
    ] = None,
    transcoders: Annotated[
        Path | None,
        typer.Option(
            help="transcoders for --tc-edit: `sae train --kind transcoder` output or a "
            "circuit-tracer set; default: the model's bundled set"
        ),
    ] = None,
    ablate_direction: Annotated[
        list[str] | None, typer.Option(help="project a direction out: FILE.pt@HOOK (repeat)")
    ] = None,
    positions: Annotated[
        str, typer.Option(help="where edits apply: all, new (generated tokens) or e.g. 3,4")
    ] = "all",
    max_new_tokens: Annotated[int, typer.Option(help="tokens to generate")] = 20,
    temperature: Annotated[float, typer.Option(help="0 = greedy, else sampled")] = 0.0,
    seed: Annotated[int, typer.Option(help="sampling seed (both runs)")] = 0,
    top_k: Annotated[int | None, typer.Option(help="sample from the top k tokens")] = None,
    top_p: Annotated[float | None, typer.Option(help="nucleus sampling mass")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write both runs here")] = None,
    device: Device = None,
    device_map: DeviceMap = None,
    dtype: Dtype = None,
) -> None:
    """Generate after PROMPT with feature edits and direction additions / ablations applied at
    every new token (KV-cached), next to the unsteered generation."""
    import torch

    from mechscope.files import check_writable_file, write_json
    from mechscope.models.lean import as_lean
    from mechscope.models.placement import Placement
    from mechscope.sae.bundled import load_bundled_transcoders
    from mechscope.sae.sources import resolve
    from mechscope.sae.transcoder import load_transcoder_set
    from mechscope.steering import (
        AblateDirection,
        AddDirection,
        FeatureEdit,
        Intervention,
        TranscoderEdit,
        check_interventions,
        generate,
        intervene,
    )
    from mechscope.steering.generate import check_request, context_length

    with option_checks():
        V.integer("--max-new-tokens", max_new_tokens, 0)
        V.number("--temperature", temperature, 0)
        V.seed("--seed", seed)
        V.integer("--top-k", top_k, 1)
        V.number("--top-p", top_p, 0, 1, lo_open=True)
        if json_out is not None:
            check_writable_file(json_out, "--json")
    try:
        where = _positions(positions)
        adds = [_direction(s, "--add-direction", True) for s in add_direction or []]
        ablates = [_direction(s, "--ablate-direction", False) for s in ablate_direction or []]
        edits_wanted = [("clamp", s) for s in clamp or []] + [("scale", s) for s in scale or []]
        edits_wanted += [("zero", s) for s in zero or []]
        tc_edits = [_tc_edit(s) for s in tc_edit or []]
        if edits_wanted and sae is None:
            raise SteeringError("--clamp / --scale / --zero edit SAE features: give --sae")
        if not (edits_wanted or tc_edits or adds or ablates):
            raise SteeringError(
                "nothing to steer with: give --clamp/--scale/--zero (with --sae), --tc-edit, "
                "--add-direction or --ablate-direction"
            )
        bridge = load(model, None, Placement(device, device_map, dtype))
        lean = as_lean(bridge)
        sae_name, sae_model = (
            resolve(sae, Path(model).name, lean.device) if sae is not None else ("", None)
        )
        sae_hook = sae_model.cfg.hook_name if sae_model is not None else None
        ivs: list[Intervention] = []
        for op, s in edits_wanted:
            f, v, hook = _feature(s, f"--{op}", sae_hook, op != "zero")
            assert sae_model is not None
            ivs.append(FeatureEdit(hook, sae_model, f, cast(Op, op), v, where))
        if tc_edits:
            tc_set = (
                load_bundled_transcoders(model)
                if transcoders is None
                else load_transcoder_set(transcoders)
            )
            by_layer = {tc.layer: tc for tc in tc_set}
            for (l, f, op, v), s in zip(tc_edits, tc_edit or [], strict=True):
                if l not in by_layer:
                    raise SteeringError(
                        f"--tc-edit {s!r}: no transcoder for layer {l} (the set has layers "
                        f"{sorted(by_layer)})"
                    )
                ivs.append(TranscoderEdit(by_layer[l], f, op, v, where))
        ivs += [AddDirection(h, d, k, where) for d, k, h in adds]
        ivs += [AblateDirection(h, d, where) for d, _, h in ablates]
    except MechscopeError as e:
        fail(e)
    check_hooks(bridge, [iv.hook for iv in ivs])
    tok = bridge.tokenizer
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    ids = torch.tensor([[*bos, *tok.encode(prompt, add_special_tokens=False)]])
    try:
        check_request(lean, ids.shape[1], max_new_tokens)
        check_interventions(lean, ivs, context_length(lean))
        run = dict(temperature=temperature, seed=seed, top_k=top_k, top_p=top_p)
        plain = generate(lean, ids, [], max_new_tokens, **run)  # type: ignore[arg-type]
        steered = generate(lean, ids, ivs, max_new_tokens, **run)  # type: ignore[arg-type]
        effect = intervene(lean, ids, ivs) if where != "new" else None
    except MechscopeError as e:
        fail(e)
    for iv in ivs:
        console.print(
            f"[bold]intervention:[/] {iv.describe()}"
            + (f" ({sae_name})" if isinstance(iv, FeatureEdit) else "")
        )
    table = Table("prompt", "unsteered", "steered", show_lines=True)
    table.add_row(prompt, plain.texts(tok)[0], steered.texts(tok)[0])
    console.print(table)
    if effect is not None:
        changes = Table(
            "token",
            "clean log-prob",
            "steered log-prob",
            title=f"next token after the prompt (KL {float(effect.kl[0]):.3f} nats)",
        )
        for t, c, n in effect.top_changes(8):
            changes.add_row(repr(tok.decode([t])), f"{c:.2f}", f"{n:.2f}")
        console.print(changes)
    if json_out is not None:
        write_json(
            json_out,
            {
                "model": model,
                "prompt": prompt,
                "interventions": [iv.describe() for iv in ivs],
                "sampling": run,
                "unsteered": plain.to_dict() | {"text": plain.texts(tok)[0]},
                "steered": steered.to_dict() | {"text": steered.texts(tok)[0]},
                "effect": effect.to_dict(tok) if effect is not None else None,
            },
        )

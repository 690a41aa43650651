"""`SweepConfig`: a grid of method calls, read from YAML or TOML and expanded into `Trial`s.

    kind: acdc                # which method every trial calls (`mechscope.sweep.KINDS`)
    out: runs/sweeps/acdc     # output folder (the command's --out wins)
    threads: 1                # torch threads per trial
    retries: 0                # times Ray reruns a trial whose worker died
    placement: {device: cuda, dtype: bfloat16}   # where every trial loads its model (optional)
    fixed: {model: code-attn4, n: 8}
    grid: {task: [docstring, ioi], tau: [0.01, 0.03], ablation: [resample, zero]}

The trials are the cartesian product of the grid lists (the last key varies fastest), each
merged with `fixed`. A trial's key is readable and names its grid values, plus a short hash of
all its parameters, so results are stored by what was run.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import re
import tomllib
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from mechscope.errors import ModelLoadError, SweepError
from mechscope.models.placement import Placement
from mechscope.sweep.kinds import KINDS

TOP_KEYS = ("kind", "fixed", "grid", "out", "threads", "retries", "placement")


@dataclass(frozen=True)
class Trial:
    """One method call of a sweep: its parameters (fixed + grid values) and its folder key."""

    key: str
    params: dict[str, Any]


@dataclass
class SweepConfig:
    """A sweep: `kind` called on every combination of `grid` (name -> values), with `fixed`.

    out: default output folder; threads: torch threads per trial (the same in every backend, so
    results do not depend on it); retries: Ray reruns of a trial whose worker died (0 = off);
    placement: where every trial loads its model (device, device_map, dtype; the command's
    --device / --device-map / --dtype replace it).
    source: the file it was read from (for messages).
    """

    kind: str
    fixed: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    out: Path | None = None
    threads: int = 1
    retries: int = 0
    placement: Placement = field(default_factory=Placement)
    source: str = "<config>"

    @classmethod
    def from_dict(cls, d: Any, source: str = "<config>") -> SweepConfig:
        """Validate and normalise a parsed config; SweepError names `source` and the bad key."""
        if not isinstance(d, dict):
            raise SweepError(f"{source}: expected a mapping with `kind` and `grid`, got {d!r}")
        unknown = [k for k in d if k not in TOP_KEYS]
        if unknown:
            raise SweepError(f"{source}: unknown key {unknown[0]!r}{_hint(unknown[0], TOP_KEYS)}")
        kind = d.get("kind")
        if kind not in KINDS:
            raise SweepError(
                f"{source}: kind: {kind!r} is not a sweep kind; choose from {', '.join(KINDS)}"
            )
        hints = typing.get_type_hints(KINDS[kind].params)
        fixed = _mapping(d.get("fixed"), "fixed", source)
        grid = _mapping(d.get("grid"), "grid", source)
        for name in [*fixed, *grid]:
            if name not in hints:
                raise SweepError(
                    f"{source}: {kind} has no parameter {name!r}{_hint(name, hints)}; its "
                    f"parameters: {', '.join(hints)}"
                )
        missing = [n for n in _required(KINDS[kind].params) if n not in fixed and n not in grid]
        if missing:
            raise SweepError(f"{source}: {kind} needs {missing[0]!r} in `fixed` or in `grid`")
        both = set(fixed) & set(grid)
        if both:
            raise SweepError(f"{source}: {sorted(both)[0]!r} is both in `fixed` and in `grid`")
        fixed = {k: _check(v, hints[k], f"fixed.{k}", source) for k, v in fixed.items()}
        for k, values in grid.items():
            if not isinstance(values, list) or not values:
                raise SweepError(f"{source}: grid.{k}: expected a non-empty list, got {values!r}")
            grid[k] = [_check(v, hints[k], f"grid.{k}[{i}]", source) for i, v in enumerate(values)]
            if len({_canonical(v) for v in grid[k]}) < len(values):
                raise SweepError(f"{source}: grid.{k}: a value is listed twice in {values!r}")
        out = d.get("out")
        if out is not None and not isinstance(out, str):
            raise SweepError(f"{source}: out: expected a folder path, got {out!r}")
        cfg = cls(
            kind=kind,
            fixed=fixed,
            grid=grid,
            out=Path(out) if out else None,
            threads=_count(d.get("threads", 1), "threads", source, minimum=1),
            retries=_count(d.get("retries", 0), "retries", source, minimum=0),
            placement=_placement(d.get("placement"), source),
            source=source,
        )
        for trial in cfg.trials():  # each kind's own checks (task names, revisions, ...)
            try:
                KINDS[kind].params(**trial.params)
            except (TypeError, ValueError) as e:
                raise SweepError(f"{source}: trial {trial.key}: {e}") from e
        return cfg

    def trials(self) -> list[Trial]:
        """Every combination of the grid, in order (the last grid key varies fastest)."""
        names = list(self.grid)
        out = []
        for values in itertools.product(*(self.grid[n] for n in names)):
            varied = dict(zip(names, values, strict=True))
            params = {**self.fixed, **varied}
            out.append(Trial(trial_key(self.kind, params, varied), params))
        return out

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain mapping (what `from_dict` reads back)."""
        d: dict[str, Any] = {"kind": self.kind, "fixed": self.fixed, "grid": self.grid}
        if self.out is not None:
            d["out"] = str(self.out)
        if self.placement != Placement():
            d["placement"] = {k: v for k, v in asdict(self.placement).items() if v is not None}
        return {**d, "threads": self.threads, "retries": self.retries}


def load_config(path: str | Path) -> SweepConfig:
    """Read a sweep config from a .yaml/.yml or .toml file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SweepError(f"cannot read sweep config {path}: {e.strerror or e}") from e
    if path.suffix in (".yaml", ".yml"):
        try:
            d = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise SweepError(f"{path}: not valid YAML: {e}") from e
    elif path.suffix == ".toml":
        try:
            d = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise SweepError(f"{path}: not valid TOML: {e}") from e
    else:
        raise SweepError(f"{path}: a sweep config is a .yaml, .yml or .toml file")
    return SweepConfig.from_dict(d, source=str(path))


def trial_key(kind: str, params: dict[str, Any], varied: dict[str, Any]) -> str:
    """Folder name of a trial: its grid values (readable) and a hash of all its parameters,
    e.g. `task-ioi__tau-0.01__3f2a9c1b`."""
    digest = hashlib.sha256(_canonical({"kind": kind, "params": params}).encode()).hexdigest()
    parts = [f"{k}-{_label(v)}" for k, v in varied.items()]
    readable = re.sub(r"[^A-Za-z0-9._=-]+", "_", "__".join(parts))[:100]
    return f"{readable}__{digest[:8]}" if readable else digest[:8]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _label(value: Any) -> str:
    return value if isinstance(value, str) else _canonical(value)


def _hint(name: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _mapping(value: Any, key: str, source: str) -> dict[str, Any]:
    if value is None:  # absent, or `fixed:` with nothing under it in YAML
        return {}
    if not isinstance(value, dict):
        raise SweepError(f"{source}: {key}: expected a mapping of parameter names, got {value!r}")
    return dict(value)


def _placement(value: Any, source: str) -> Placement:
    """`placement: {device: ..., device_map: ..., dtype: ...}` (each optional) as a Placement."""
    d = _mapping(value, "placement", source)
    names = [f.name for f in fields(Placement)]
    for k, v in d.items():
        if k not in names:
            raise SweepError(f"{source}: placement has no {k!r}{_hint(k, names)}; use {names}")
        if not isinstance(v, str):
            raise SweepError(f"{source}: placement.{k}: expected a string, got {v!r}")
    try:
        return Placement(**d)
    except ModelLoadError as e:
        raise SweepError(f"{source}: placement: {e}") from e


def _count(value: Any, key: str, source: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SweepError(f"{source}: {key}: expected a whole number >= {minimum}, got {value!r}")
    return value


def _check(value: Any, hint: Any, where: str, source: str) -> Any:
    """`value` as the type `hint` asks for (ints and numeric strings as floats, since YAML reads
    1e-3 as a string); SweepError otherwise."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check(value, arg, where, source)
            except SweepError:
                pass
        raise SweepError(f"{source}: {where}: expected {_name(hint)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise SweepError(f"{source}: {where}: expected one of {list(args)}, got {value!r}")
        return value
    if hint is float and not isinstance(value, bool):
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif (
        (hint is int and isinstance(value, int) and not isinstance(value, bool))
        or (hint in (str, bool) and isinstance(value, hint))
        or (origin is dict and isinstance(value, dict))
    ):
        return value
    raise SweepError(f"{source}: {where}: expected {_name(hint)}, got {value!r}")


def _name(hint: Any) -> str:
    names = {float: "a number", int: "a whole number", str: "a string", bool: "true or false"}
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is dict:
        return "a mapping"
    return names.get(hint, str(hint))


def _required(params: type) -> list[str]:
    """Parameters of a kind without a default (the config must set them)."""
    return [
        f.name
        for f in fields(params)
        if f.default is MISSING and f.default_factory is MISSING and f.init
    ]

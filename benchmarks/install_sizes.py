"""Disk size of mechscope's core install and of each extra, from the installed packages' RECORDs.

    python benchmarks/install_sizes.py   # in a venv with every extra installed

Core: every package the core requirements pull (transitively). An extra: the packages its
requirements pull beyond the core. Sizes are the files pip installed (no `__pycache__`, which
Python writes later: the venv on disk is ~25% larger).
"""

from __future__ import annotations

import re
from importlib.metadata import Distribution, distribution, distributions

from packaging.requirements import Requirement

EXTRAS = ("dev", "tracr", "distributed")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


INSTALLED: dict[str, Distribution] = {_norm(d.metadata["Name"]): d for d in distributions()}


def closure(requirements: list[str], extras: tuple[str, ...] = ()) -> set[str]:
    """Names of the installed packages that `requirements` pull, transitively."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = _norm(req.name)
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
            continue
        if name in seen or name not in INSTALLED:
            continue
        seen.add(name)
        todo += [Requirement(r) for r in INSTALLED[name].requires or [] if "extra ==" not in r]
    return seen


def size(names: set[str]) -> int:
    """Bytes of the files pip installed for `names`."""
    return sum(f.size or 0 for n in names for f in INSTALLED[n].files or [])


def main() -> None:
    reqs = distribution("mechscope").requires or []
    core = closure([r for r in reqs if "extra ==" not in r])
    print(f"core: {len(core)} packages, {size(core) / 2**30:.2f} GiB "
          f"(torch {size({'torch'}) / 2**30:.2f} GiB)")  # fmt: skip
    for extra in EXTRAS:
        added = closure([r for r in reqs if f'extra == "{extra}"' in r], (extra,)) - core
        largest = sorted(added, key=lambda n: -size({n}))[:4]
        sizes = ", ".join(f"{n} {size({n}) / 2**20:.0f} MB" for n in largest)
        print(f"[{extra}]: +{len(added)} packages, {size(added) / 2**30:.2f} GiB ({sizes})")
    every = closure(reqs, EXTRAS)
    print(f"all extras: {len(every)} packages, {size(every) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()

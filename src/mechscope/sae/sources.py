"""Where an SAE comes from: one resolution of a `--sae` specification.

Precedence (first match wins): an existing folder (SAELens format: what is on disk is what the
user pointed at, even when it shares a bundled SAE's name), then a bundled SAE of the model by
run name (`mechscope.sae.bundled.list_bundled`), then a SAELens release as `release:sae_id`
(the SAELens directory gives its hub repo and folder; needs sae-lens installed, and the network
or the HF cache).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mechscope.errors import SAEError
from mechscope.sae.bundled import list_bundled, load_bundled
from mechscope.sae.model import SparseAutoencoder
from mechscope.sae.saelens_format import load_saelens, load_saelens_from_hub


def resolve(spec: str, model: str, device: Any = None) -> tuple[str, SparseAutoencoder]:
    """(name, SAE on `device`) of a specification: a SAELens folder, a bundled run name of zoo
    model `model`, or `release:sae_id` of the SAELens directory; SAEError naming all three
    otherwise. The name is the folder's name, the bundled run name or the specification."""
    folder = Path(spec)
    if folder.is_dir():
        return folder.name, load_saelens(folder, device=device)
    bundled = [e["name"] for e in list_bundled(model)]
    if spec in bundled:
        return spec, load_bundled(model, spec, device)
    if ":" in spec:
        return spec, _from_release(*spec.split(":", 1)).to(device)
    raise SAEError(
        f"SAE {spec!r} is neither a SAELens folder, nor a bundled SAE of {model!r} "
        f"({', '.join(bundled) or 'none'}), nor a SAELens release 'release:sae_id'"
    )


def _from_release(release: str, sae_id: str) -> SparseAutoencoder:
    """The SAE `sae_id` of SAELens release `release`, from its hub repo."""
    try:
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
    except ImportError as e:
        raise SAEError(
            f"SAELens release {release!r} needs sae-lens to look it up: pip install sae-lens"
        ) from e
    entry = get_pretrained_saes_directory().get(release)
    if entry is None or sae_id not in entry.saes_map:
        known = ", ".join(list(entry.saes_map)[:6]) if entry is not None else ""
        raise SAEError(
            f"no SAE {sae_id!r} in SAELens release {release!r}"
            + (f"; it has {known}, ..." if known else "; see SAELens's pretrained_saes.yaml")
        )
    return load_saelens_from_hub(entry.repo_id, entry.saes_map[sae_id])

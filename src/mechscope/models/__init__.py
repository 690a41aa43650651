"""Model loading (TransformerBridge) and the bundled model zoo's configs."""

from mechscope.models.loading import (
    ModelLoadError,
    load_model,
    revisions,
    supported_architectures,
    zoo_names,
)
from mechscope.models.placement import Placement

__all__ = [
    "ModelLoadError",
    "Placement",
    "load_model",
    "revisions",
    "supported_architectures",
    "zoo_names",
]

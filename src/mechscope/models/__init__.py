"""Model loading (TransformerBridge) and the bundled model zoo's configs."""

from mechscope.models.loading import (
    ModelLoadError,
    load_model,
    revisions,
    supported_architectures,
    zoo_names,
)

__all__ = ["ModelLoadError", "load_model", "revisions", "supported_architectures", "zoo_names"]

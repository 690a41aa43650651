"""Exceptions shared across mechscope."""


class ModelLoadError(ValueError):
    """A model name, path, revision or architecture that mechscope cannot load."""

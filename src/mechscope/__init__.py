"""mechscope: mechanistic interpretability of transformer language models.

>>> import mechscope
>>> model = mechscope.load_model("code-attn4")   # a TransformerBridge, compatibility mode
"""

from mechscope.models import ModelLoadError, load_model

__version__ = "0.1.0"
__all__ = ["ModelLoadError", "__version__", "load_model"]

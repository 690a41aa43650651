"""Offline corpus (the Python standard library's own source), the project tokenizer and token
batches (the corpus stream, HF datasets sources, held-out batches)."""

from mechscope.data.batches import eval_batches, source_batches, token_batches
from mechscope.data.corpus import stdlib_files, stdlib_texts
from mechscope.data.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

__all__ = [
    "eval_batches",
    "load_tokenizer",
    "save_tokenizer",
    "source_batches",
    "stdlib_files",
    "stdlib_texts",
    "token_batches",
    "train_tokenizer",
]

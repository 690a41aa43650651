"""Offline corpus (the Python standard library's own source) and the project tokenizer."""

from mechscope.data.corpus import stdlib_files, stdlib_texts
from mechscope.data.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

__all__ = ["load_tokenizer", "save_tokenizer", "stdlib_files", "stdlib_texts", "train_tokenizer"]

"""The project's byte-level BPE tokenizer (HF `tokenizers`), trained on the offline corpus."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from mechscope.files import write_files

BOS = "<|endoftext|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096) -> Tokenizer:
    """Train a GPT-2-style byte-level BPE with one special token (BOS = EOS = PAD, id 0)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def save_tokenizer(tok: Tokenizer, folder: Path) -> PreTrainedTokenizerFast:
    """Write `tok` as a transformers tokenizer folder (tokenizer.json + tokenizer_config.json)."""
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=BOS, pad_token=BOS, unk_token=BOS
    )
    write_files(folder, fast.save_pretrained)
    return fast


def load_tokenizer(folder: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer folder written by `save_tokenizer` (or any HF fast-tokenizer folder)."""
    folder = Path(folder)
    if not (folder / "tokenizer.json").exists():
        raise FileNotFoundError(
            f"No tokenizer.json in {folder}. Build the bundled one with `mechscope zoo build "
            "tokenizer`, or save an HF tokenizer there with `save_pretrained`."
        )
    return PreTrainedTokenizerFast.from_pretrained(str(folder))

from mechscope.data.corpus import is_heldout, stdlib_files, stdlib_texts


def test_stdlib_corpus_found_without_tests():
    files = stdlib_files()
    assert len(files) > 300
    assert not any("/test/" in f.as_posix() or "/tests/" in f.as_posix() for f in files)
    assert files == sorted(files, key=lambda p: p.as_posix())


def test_heldout_split_is_disjoint_and_small():
    files = stdlib_files()
    held = [f for f in files if is_heldout(f)]
    assert 0 < len(held) < 0.15 * len(files)
    assert len(stdlib_texts("heldout")) == len(held)
    assert len(stdlib_texts("train")) == len(files) - len(held)


def test_encoded_stdlib_is_the_tokenizers_encoding_once_per_tokenizer(tokenizer):
    from mechscope.artefacts import TOKENIZER_DIR
    from mechscope.data import load_tokenizer
    from mechscope.data.corpus import encoded_stdlib, stdlib_texts

    ids = encoded_stdlib(tokenizer, "heldout")
    texts = [t for t in stdlib_texts("heldout") if t][:5]
    assert ids[:5] == [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    again = load_tokenizer(TOKENIZER_DIR)  # another object, the same tokenizer: shared
    assert encoded_stdlib(again, "heldout") is ids
    assert encoded_stdlib(tokenizer, "train") is not ids

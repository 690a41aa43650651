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

import pytest
import torch

from mechscope.errors import MetricError
from mechscope.tasks import TASKS, Task, TaskError, make_split, make_task
from mechscope.tasks.docstring import N_WRONG


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_shapes_and_alignment(tokenizer, name):
    t = make_task(name, tokenizer, n=16, seed=3)
    assert len(t) == 16
    assert t.clean_tokens.shape == t.corrupt_tokens.shape
    assert (t.clean_tokens[:, 0] == tokenizer.bos_token_id).all()
    assert t.answers.shape == (16,)
    assert t.wrong_answers.shape[0] == 16
    assert not (t.wrong_answers == t.answers[:, None]).any()
    assert (t.clean_tokens != t.corrupt_tokens).any(dim=1).all()  # every pair is corrupted


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_is_deterministic_in_seed(tokenizer, name):
    a, b = make_task(name, tokenizer, n=8, seed=1), make_task(name, tokenizer, n=8, seed=1)
    c = make_task(name, tokenizer, n=8, seed=2)
    assert torch.equal(a.clean_tokens, b.clean_tokens)
    assert not torch.equal(a.clean_tokens, c.clean_tokens)


def test_docstring_follows_acdc_template(tokenizer):
    t = make_task("docstring", tokenizer, n=4, seed=0)
    p = t.clean_prompts[0]
    assert p.startswith("\ndef ") and p.endswith("\n    :param")
    args = p.split("(self, ")[1].split(")")[0].split(", ")
    assert len(args) == 6
    documented = [line.split(":param ")[1].split(":")[0] for line in p.splitlines()[4:6]]
    assert documented == args[2:4]
    assert tokenizer.decode(t.answers[:1]) == " " + args[4]
    assert t.wrong_answers.shape[1] == N_WRONG
    k = t.corrupt_prompts[0]
    kargs = k.split("(self, ")[1].split(")")[0].split(", ")
    assert kargs[:2] == args[:2] and kargs[5] == args[5]
    assert set(kargs[2:5]).isdisjoint(args)


def test_ioi_answer_is_indirect_object(tokenizer):
    t = make_task("ioi", tokenizer, n=4, seed=0)
    p = t.clean_prompts[0]
    io = p.split("Then, ")[1].split(" and ")[0]
    s = p.split(" and ")[1].split(" went")[0]
    assert tokenizer.decode(t.answers[:1]) == " " + io
    assert tokenizer.decode(t.wrong_answers[0]) == " " + s
    assert p.split(". ")[1].startswith(s)


def test_induction_repeats(tokenizer):
    t = make_task("induction", tokenizer, n=4, seed=0)
    half = (t.seq_len) // 2
    seq = t.clean_tokens[:, 1 : half + 1]
    assert torch.equal(t.clean_tokens[:, half + 1 :], seq[:, :-1])
    assert torch.equal(t.answers, seq[:, -1])


def test_unequal_pair_lengths_are_a_clear_error(tokenizer):
    with pytest.raises(TaskError, match="prompt pair 0 tokenizes to different lengths"):
        Task.from_prompts(
            "x", tokenizer, ["a b c"], ["a bbbbbbbbbbbbbbbbbbbb c d e"], [" a"], [[" b"]]
        )


def test_unequal_prompt_lengths_are_a_clear_error(tokenizer):
    with pytest.raises(TaskError, match="different token lengths"):
        Task.from_prompts(
            "x",
            tokenizer,
            ["def f", "def f(a, b)"],
            ["def g", "def g(a, b)"],
            [" a", " a"],
            [[" b"], [" b"]],
        )


def test_multi_token_answer_is_a_clear_error(tokenizer):
    with pytest.raises(TaskError, match="answers must be one token"):
        Task.from_prompts("x", tokenizer, ["def f"], ["def g"], [" supercalifragilistic"], [[" b"]])


def test_unknown_task_and_metric(tokenizer):
    with pytest.raises(TaskError, match="Available tasks: docstring, induction, ioi"):
        make_task("greaterthan", tokenizer)
    t = make_task("ioi", tokenizer, n=2)
    with pytest.raises(MetricError, match="Unknown metric 'accuracy'; choose one of logit_diff"):
        t.score(torch.zeros(2, t.seq_len, len(tokenizer)), "accuracy")
    with pytest.raises(TaskError, match="positive"):
        make_task("ioi", tokenizer, n=0)


def test_slicing_keeps_alignment(tokenizer):
    t = make_task("docstring", tokenizer, n=10)
    s = t[2:5]
    assert len(s) == 3 and s.clean_prompts == t.clean_prompts[2:5]
    assert torch.equal(s.answers, t.answers[2:5])


def _rows(t: Task) -> set[tuple[int, ...]]:
    return {tuple(r) for r in t.clean_tokens.tolist()}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_split_is_disjoint_and_draws_from_two_seeds(tokenizer, name):
    search, test = make_split(name, tokenizer, n=6, seed=4, n_test=5)
    assert torch.equal(search.clean_tokens, make_task(name, tokenizer, 6, 4).clean_tokens)
    assert torch.equal(test.clean_tokens, make_task(name, tokenizer, 5, 5).clean_tokens)
    assert len(test) == 5 and not _rows(search) & _rows(test)
    # a draw of more prompts starts with the smaller draw (so skipping a repeat keeps the rest)
    assert torch.equal(make_task(name, tokenizer, 9, 5)[:5].clean_tokens, test.clean_tokens)


def test_split_skips_test_prompts_that_repeat_search_prompts(tokenizer):
    # the same seed: the first 4 test draws are the search prompts, the next 3 are taken instead
    search, test = make_split("docstring", tokenizer, n=4, seed=2, n_test=3, test_seed=2)
    assert not _rows(search) & _rows(test)
    ref = make_task("docstring", tokenizer, 7, 2)
    assert torch.equal(test.clean_tokens, ref.clean_tokens[4:])
    assert test.clean_prompts == ref.clean_prompts[4:]
    assert torch.equal(test.answers, ref.answers[4:])


def test_select_keeps_alignment(tokenizer):
    t = make_task("ioi", tokenizer, n=6)
    s = t.select([4, 1])
    assert s.clean_prompts == [t.clean_prompts[4], t.clean_prompts[1]]
    assert torch.equal(s.corrupt_tokens, t.corrupt_tokens[[4, 1]])
    assert torch.equal(s.wrong_answers, t.wrong_answers[[4, 1]])

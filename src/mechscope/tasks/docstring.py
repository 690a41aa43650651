"""ACDC's docstring task: predict the next parameter name in a reST docstring.

Prompt (ACDC's "rest" template, 2 prefix args, 3 matching, 1 suffix, 3-word method description,
2-word argument descriptions):

    def old(self, first, files, page, names, size, read):
        \"\"\"sector gap population

        :param page: message tree
        :param names: detail mine
        :param

The answer is " size" (the third matching argument). The corruption is ACDC's `random_random`: the
matching def arguments and the docstring's argument names are replaced by fresh random names.
Wrong answers are the other def arguments plus random names not in the prompt (13 in all).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from mechscope.tasks.base import Task
from mechscope.tasks.words import DESC_WORDS, FUNCTION_NAMES, PARAM_NAMES, single_token_words

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

N_WRONG = 13


def _prompt(fn: str, args: list[str], doc_args: list[str], desc: list[str], arg_desc: list[str]):
    lines = [f"\ndef {fn}(self, {', '.join(args)}):", f'    """{" ".join(desc)}', ""]
    for i, a in enumerate(doc_args):
        lines.append(f"    :param {a}: {arg_desc[2 * i]} {arg_desc[2 * i + 1]}")
    return "\n".join(lines) + "\n    :param"


def make_docstring(tokenizer: PreTrainedTokenizerBase, n: int = 50, seed: int = 0) -> Task:
    """`n` docstring prompts (clean, random_random corrupt), answers and 13 wrong answers each."""
    names = single_token_words(tokenizer, PARAM_NAMES)
    words = single_token_words(tokenizer, DESC_WORDS)
    first_words = single_token_words(tokenizer, DESC_WORDS, bare=True)  # directly after """
    fns = single_token_words(tokenizer, FUNCTION_NAMES)
    rng = random.Random(seed)
    clean, corrupt, answers, wrong = [], [], [], []
    for _ in range(n):
        pick = rng.sample(names, 6 + 5 + N_WRONG)
        args, fresh, extra = pick[:6], pick[6:11], pick[11:]
        fn = rng.choice(fns)
        desc = [rng.choice(first_words), *rng.sample(words, 2)]
        arg_desc = [rng.choice(words) for _ in range(4)]
        clean.append(_prompt(fn, args, args[2:4], desc, arg_desc))
        corrupt_args = args[:2] + fresh[:3] + args[5:]
        corrupt.append(_prompt(fn, corrupt_args, fresh[3:5], desc, arg_desc))
        answers.append(" " + args[4])
        others = args[:4] + args[5:] + extra
        wrong.append([" " + w for w in others[:N_WRONG]])
    return Task.from_prompts("docstring", tokenizer, clean, corrupt, answers, wrong, "logit_diff")


def training_text(rng: random.Random, names: list[str], words: list[str], fns: list[str]) -> str:
    """One synthetic function with a reST docstring, varied in shape, for LM training."""
    n_args = rng.randint(2, 7)
    args = rng.sample(names, n_args)
    start = rng.randint(0, n_args - 2)
    desc = " ".join(rng.choice(words) for _ in range(rng.randint(1, 4)))
    sig = ", ".join(args)
    if rng.random() < 0.8:
        sig = "self, " + sig
    lines = [f"def {rng.choice(fns)}({sig}):", f'    """{desc}', ""]
    for a in args[start:]:
        d = " ".join(rng.choice(words) for _ in range(rng.randint(1, 3)))
        lines.append(f"    :param {a}: {d}")
    lines += ['    """', f"    return {rng.choice(args)}", ""]
    return "\n".join(lines)

"""An IOI-style name task (Wang et al. 2022; ACDC's single ABBA template).

"Then, Mary and John went to the store. John gave a book to" -> " Mary" (indirect object),
wrong answer " John" (subject). Corruption "ABC": all three names replaced by fresh random names.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from mechscope.tasks.base import Task
from mechscope.tasks.words import OBJECTS, PERSON_NAMES, PLACES, single_token_words

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TEMPLATE = "Then, {A} and {B} went to the {place}. {C} gave a {obj} to"
TRAIN_TEMPLATES = [
    "Then, {A} and {B} went to the {place}. {B} gave a {obj} to {A}.",
    "When {A} and {B} got a {obj} at the {place}, {B} decided to give it to {A}.",
    "After {A} and {B} went to the {place}, {B} gave a {obj} to {A}.",
    "Then, {B} and {A} had a long day at the {place}. {B} gave a {obj} to {A}.",
]


def make_ioi(tokenizer: PreTrainedTokenizerBase, n: int = 50, seed: int = 0) -> Task:
    """`n` ABBA prompts with ABC corruptions; answer = indirect object, wrong = subject."""
    names = single_token_words(tokenizer, PERSON_NAMES)
    places = single_token_words(tokenizer, PLACES)
    objs = single_token_words(tokenizer, OBJECTS)
    rng = random.Random(seed)
    clean, corrupt, answers, wrong = [], [], [], []
    for _ in range(n):
        a, b, x, y, z = rng.sample(names, 5)
        place, obj = rng.choice(places), rng.choice(objs)
        clean.append(TEMPLATE.format(A=a, B=b, C=b, place=place, obj=obj))
        corrupt.append(TEMPLATE.format(A=x, B=y, C=z, place=place, obj=obj))
        answers.append(" " + a)
        wrong.append([" " + b])
    return Task.from_prompts("ioi", tokenizer, clean, corrupt, answers, wrong, "logit_diff")


def training_text(rng: random.Random, names: list[str], places: list[str], objs: list[str]) -> str:
    """A few IOI-style sentences for language-model training."""
    out = []
    for _ in range(rng.randint(1, 3)):
        a, b = rng.sample(names, 2)
        t = rng.choice(TRAIN_TEMPLATES)
        out.append(t.format(A=a, B=b, place=rng.choice(places), obj=rng.choice(objs)))
    return " ".join(out) + "\n"

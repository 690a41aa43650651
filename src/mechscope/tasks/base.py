"""The `Task`: clean and corrupted prompts of equal token length, answers, and a default metric."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from mechscope import metrics
from mechscope.errors import TaskError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class Task:
    """A batch of prompt pairs for patching-style experiments.

    Attributes:
        name: task name, e.g. "docstring".
        clean_tokens: [batch, pos] token ids of the clean prompts (BOS first).
        corrupt_tokens: [batch, pos] token ids of the corrupted prompts, same shape.
        answers: [batch] id of the correct next token after each clean prompt.
        wrong_answers: [batch, n_wrong] ids of incorrect answers (logit difference uses the max).
        metric: name of the default metric (one of `metrics.NAMES`: "logit_diff", "logprob",
            "prob", or "kl", which needs the clean logits when scoring).
        clean_prompts / corrupt_prompts: the prompt texts (without BOS).
    """

    name: str
    clean_tokens: Tensor
    corrupt_tokens: Tensor
    answers: Tensor
    wrong_answers: Tensor
    metric: str = "logit_diff"
    clean_prompts: list[str] = field(default_factory=list)
    corrupt_prompts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        metrics.check_name(self.metric)
        if self.clean_tokens.shape != self.corrupt_tokens.shape:
            raise TaskError(
                f"clean tokens {tuple(self.clean_tokens.shape)} and corrupted tokens "
                f"{tuple(self.corrupt_tokens.shape)} differ in shape; every pair must have the "
                "same token length."
            )
        b = self.clean_tokens.shape[0]
        if self.answers.shape != (b,) or self.wrong_answers.ndim != 2:
            raise TaskError("answers must be [batch] and wrong_answers [batch, n_wrong]")
        if self.wrong_answers.shape[0] != b:
            raise TaskError("wrong_answers must have one row per prompt")

    def __len__(self) -> int:
        return int(self.clean_tokens.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.clean_tokens.shape[1])

    def __getitem__(self, idx: slice) -> Task:
        """A sub-task of the prompts `idx` (a slice)."""
        return Task(
            name=self.name,
            clean_tokens=self.clean_tokens[idx],
            corrupt_tokens=self.corrupt_tokens[idx],
            answers=self.answers[idx],
            wrong_answers=self.wrong_answers[idx],
            metric=self.metric,
            clean_prompts=self.clean_prompts[idx],
            corrupt_prompts=self.corrupt_prompts[idx],
        )

    def score(
        self, logits: Tensor, metric: str | None = None, clean_logits: Tensor | None = None
    ) -> Tensor:
        """Per-prompt [batch] of `metric` (default: the task's; see `metrics.for_task`) on
        logits [batch, pos, vocab]; "kl" needs `clean_logits` of the clean prompts."""
        return metrics.for_task(self, metric, clean_logits)(logits)

    def select(self, rows: Sequence[int]) -> Task:
        """A sub-task of the prompts `rows` (indices, in that order)."""
        idx = torch.tensor(list(rows), dtype=torch.long)
        return Task(
            name=self.name,
            clean_tokens=self.clean_tokens[idx],
            corrupt_tokens=self.corrupt_tokens[idx],
            answers=self.answers[idx],
            wrong_answers=self.wrong_answers[idx],
            metric=self.metric,
            clean_prompts=[self.clean_prompts[i] for i in rows] if self.clean_prompts else [],
            corrupt_prompts=[self.corrupt_prompts[i] for i in rows] if self.corrupt_prompts else [],
        )

    def accuracy(self, logits: Tensor) -> float:
        """Fraction of prompts whose top-1 next token (over the whole vocabulary) is the answer."""
        return float((logits[:, -1].argmax(-1) == self.answers).float().mean())

    @classmethod
    def from_prompts(
        cls,
        name: str,
        tokenizer: PreTrainedTokenizerBase,
        clean: Sequence[str],
        corrupt: Sequence[str],
        answers: Sequence[str],
        wrong_answers: Sequence[Sequence[str]],
        metric: str = "logit_diff",
    ) -> Task:
        """Tokenize prompt pairs (BOS prepended) and check that they line up.

        Raises `TaskError` naming the first pair whose clean and corrupted prompts tokenize to
        different lengths, prompts of unequal length within the task, or multi-token answers.
        """
        if not (len(clean) == len(corrupt) == len(answers) == len(wrong_answers)):
            raise TaskError("clean, corrupt, answers and wrong_answers must have the same length")
        if len(clean) == 0:
            raise TaskError("a task needs at least one prompt")
        bos = tokenizer.bos_token_id
        if bos is None:
            raise TaskError("the tokenizer has no BOS token")

        def enc(text: str) -> list[int]:
            return [bos, *tokenizer.encode(text, add_special_tokens=False)]

        def one(word: str) -> int:
            ids = tokenizer.encode(word, add_special_tokens=False)
            if len(ids) != 1:
                raise TaskError(
                    f"answer {word!r} is {len(ids)} tokens ({ids}); answers must be one token. "
                    "Choose words from the tokenizer's vocabulary (see tasks.words)."
                )
            return ids[0]

        c_ids, k_ids = [], []
        for i, (c, k) in enumerate(zip(clean, corrupt, strict=True)):
            a, b = enc(c), enc(k)
            if len(a) != len(b):
                raise TaskError(
                    f"prompt pair {i} tokenizes to different lengths (clean {len(a)}, corrupted "
                    f"{len(b)}): clean={c!r} corrupted={k!r}. Patching needs aligned positions: "
                    "use corruptions whose words are single tokens."
                )
            c_ids.append(a)
            k_ids.append(b)
        lengths = {len(a) for a in c_ids}
        if len(lengths) != 1:
            raise TaskError(
                f"prompts have different token lengths {sorted(lengths)}; a task's prompts must "
                "share one length (build them from one template with single-token fillers)."
            )
        return cls(
            name=name,
            clean_tokens=torch.tensor(c_ids),
            corrupt_tokens=torch.tensor(k_ids),
            answers=torch.tensor([one(a) for a in answers]),
            wrong_answers=torch.tensor([[one(w) for w in ws] for ws in wrong_answers]),
            metric=metric,
            clean_prompts=list(clean),
            corrupt_prompts=list(corrupt),
        )

"""Evaluation runners for tasks: generative (sample and check) and
categorical (pick the most likely answer letter).

Both take a ``tokenizer`` with nanochat's ``render_for_completion(conversation)
-> list[int]`` (the conversation without its reference answer, ending with
``<|assistant_start|>``), run this rank's share of the problems
(``rank, rank + world_size, ...``) and return an :class:`EvalResult` with the
accuracy and one :class:`ProblemOutcome` per problem. Combine the results of
all ranks with :func:`merge_results` (after gathering them, e.g. with
``torch.distributed.all_gather_object``).

This module imports nothing else from convpack, so it works with any
tokenizer that has the two methods used here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "EvalResult",
    "ProblemOutcome",
    "merge_results",
    "run_categorical_eval",
    "run_generative_eval",
]


class _CompletionTokenizer(Protocol):
    def render_for_completion(self, conversation: dict[str, Any]) -> list[int]: ...


class _LetterTokenizer(_CompletionTokenizer, Protocol):
    def encode(self, text: str) -> list[int]: ...


@dataclass
class ProblemOutcome:
    """One problem's result.

    ``index`` is the problem's index in the task. Generative runs fill
    ``completions`` and ``sample_outcomes`` (one score per completion);
    categorical runs fill ``prediction`` and ``scores`` (letter -> logit).
    """

    index: int
    correct: bool
    completions: list[str] = field(default_factory=list)
    sample_outcomes: list[Any] = field(default_factory=list)
    prediction: str | None = None
    scores: dict[str, float] = field(default_factory=dict)


@dataclass
class EvalResult:
    """Accuracy over the problems this result covers."""

    num_correct: int
    num_problems: int
    outcomes: list[ProblemOutcome]

    @property
    def accuracy(self) -> float:
        """``num_correct / num_problems`` (0.0 when there are no problems)."""
        return self.num_correct / self.num_problems if self.num_problems else 0.0


def merge_results(results: Iterable[EvalResult]) -> EvalResult:
    """Combine per-rank results into one, outcomes sorted by problem index."""
    outcomes: list[ProblemOutcome] = []
    for result in results:
        outcomes.extend(result.outcomes)
    outcomes.sort(key=lambda o: o.index)
    return EvalResult(sum(o.correct for o in outcomes), len(outcomes), outcomes)


def _problem_indices(task: Sequence[Any], max_problems: int | None, rank: int, world_size: int) -> range:
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    if max_problems is not None and max_problems < 0:
        raise ValueError(f"max_problems must be >= 0, got {max_problems}")
    n = len(task) if max_problems is None else min(max_problems, len(task))
    return range(rank, n, world_size)


def run_generative_eval(
    task: Any,
    tokenizer: _CompletionTokenizer,
    generate: Callable[[list[int]], Sequence[str]],
    num_samples: int = 1,
    max_problems: int | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> EvalResult:
    """Sample completions and check them with ``task.evaluate``.

    Args:
        task: a Task (``len``, ``[i]`` and ``evaluate(conversation, text)``).
        tokenizer: renders a conversation for completion.
        generate: ``generate(prompt_ids)`` returns one or more completion
            strings; it is called until ``num_samples`` completions have been
            collected (a generator that samples in batches can return them
            all at once) and the first ``num_samples`` are scored.
        num_samples: completions per problem; a problem counts as solved if
            any of them is correct (pass@num_samples).
        max_problems: evaluate only the first ``max_problems`` problems.
        rank, world_size: this process evaluates problems
            ``rank, rank + world_size, ...``.

    Returns:
        This rank's :class:`EvalResult`.

    Raises:
        ValueError: for bad arguments, or if ``generate`` returns nothing.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    outcomes = []
    for index in _problem_indices(task, max_problems, rank, world_size):
        conversation = task[index]
        prompt_ids = tokenizer.render_for_completion(conversation)
        completions: list[str] = []
        while len(completions) < num_samples:
            batch = list(generate(list(prompt_ids)))
            if not batch:
                raise ValueError(f"generate returned no completion for problem {index}")
            completions.extend(batch)
        completions = completions[:num_samples]
        scores = [task.evaluate(conversation, completion) for completion in completions]
        outcomes.append(
            ProblemOutcome(
                index=index,
                correct=any(bool(s) for s in scores),
                completions=completions,
                sample_outcomes=scores,
            )
        )
    return EvalResult(sum(o.correct for o in outcomes), len(outcomes), outcomes)


def _letter_token_ids(tokenizer: _LetterTokenizer, letters: Sequence[str], cache: dict[str, int]) -> list[int]:
    ids = []
    for letter in letters:
        if letter not in cache:
            encoded = list(tokenizer.encode(letter))
            if len(encoded) != 1:
                raise ValueError(f"answer letter {letter!r} is {len(encoded)} tokens {encoded}, expected exactly one")
            cache[letter] = encoded[0]
        ids.append(cache[letter])
    return ids


def run_categorical_eval(
    task: Any,
    tokenizer: _LetterTokenizer,
    logits_at_answer: Callable[[list[int]], Any],
    max_problems: int | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> EvalResult:
    """Answer multiple-choice problems by the most likely letter.

    Each conversation carries its answer letters (``conversation["letters"]``,
    e.g. ``("A", "B", "C", "D")``). The runner renders the prompt, calls
    ``logits_at_answer(prompt_ids)``, which returns the model's logits for
    the next token as anything indexable by token id (a list, a numpy array
    or a 1-D torch tensor over the vocabulary), keeps only the letters'
    token ids (``tokenizer.encode(letter)``, which must be one token each),
    and predicts the letter with the highest logit (the first on ties).
    ``task.evaluate(conversation, letter)`` decides if it is right.

    Returns:
        This rank's :class:`EvalResult`; each outcome has the prediction and
        the letter -> logit scores.

    Raises:
        ValueError: for bad arguments, a conversation without ``letters``,
            or a letter that is not a single token.
    """
    cache: dict[str, int] = {}
    outcomes = []
    for index in _problem_indices(task, max_problems, rank, world_size):
        conversation = task[index]
        letters = conversation.get("letters")
        if not letters:
            raise ValueError(f"problem {index} has no 'letters' to choose from")
        token_ids = _letter_token_ids(tokenizer, letters, cache)
        prompt_ids = tokenizer.render_for_completion(conversation)
        logits = logits_at_answer(list(prompt_ids))
        scores = {letter: float(logits[token_id]) for letter, token_id in zip(letters, token_ids)}
        best = max(range(len(letters)), key=lambda k: (scores[letters[k]], -k))
        prediction = letters[best]
        correct = bool(task.evaluate(conversation, prediction))
        outcomes.append(ProblemOutcome(index=index, correct=correct, prediction=prediction, scores=scores))
    return EvalResult(sum(o.correct for o in outcomes), len(outcomes), outcomes)

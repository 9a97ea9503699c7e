"""The Task base class, mixtures and sequences of tasks, and shared helpers.

Also where nanochat's ``tasks.common`` keeps its data loading:
``HubDataset`` and ``load_hub_dataset`` (defined in ``convpack.tasks.data``)
are importable from here, so ``from tasks.common import HubDataset,
load_hub_dataset`` works as in nanochat.
"""

from __future__ import annotations

import bisect
import operator
import random
import reprlib
from array import array
from collections.abc import Iterator, Sequence
from typing import Any

from convpack.tasks.data import HubDataset, load_hub_dataset, sequence_index

Conversation = dict[str, Any]
"""A conversation: a dict with a ``"messages"`` list, plus any task keys."""

__all__ = [
    "Conversation",
    "ConversationFormatError",
    "HubDataset",
    "Task",
    "TaskMixture",
    "TaskSequence",
    "load_hub_dataset",
    "render_mc",
    "validate_messages",
]


class ConversationFormatError(ValueError):
    """A conversation in a dataset breaks the message rules (roles, types), or
    a conversation file is not readable as such (encoding, JSON); the message
    names the file or example, the line or message, and the rule."""


class Task:
    """A lazy view over a dataset of conversations.

    ``start``, ``stop`` and ``step`` select physical examples
    ``start, start + step, ...`` below ``stop`` (default: all of them), the
    same way a Python slice would, without copying anything. ``task[i]``
    returns the i-th selected conversation.

    Subclasses implement ``num_examples()``, ``get_example(physical_index)``,
    ``eval_type`` and, for evaluation, ``evaluate(conversation, response)``.

    Args:
        start: the first physical example (>= 0).
        stop: one past the last physical example, or None for all; a stop
            past the dataset's end is clamped to it.
        step: the stride (>= 1).

    Raises:
        TypeError: if an argument is not an integer.
        ValueError: if ``start < 0``, ``stop < start`` or ``step < 1``.
    """

    def __init__(self, start: int = 0, stop: int | None = None, step: int = 1) -> None:
        start = operator.index(start)
        step = operator.index(step)
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        if stop is not None:
            stop = operator.index(stop)
            if stop < start:
                raise ValueError(f"stop must be >= start ({start}), got {stop}")
        if step < 1:
            raise ValueError(f"step must be >= 1, got {step}")
        self.start = start
        self.stop = stop
        self.step = step

    @property
    def eval_type(self) -> str:
        """``"generative"`` or ``"categorical"``."""
        raise NotImplementedError

    def num_examples(self) -> int:
        """Number of physical examples in the underlying dataset (ignores the slice).

        Returns:
            int: the count.
        """
        raise NotImplementedError

    def get_example(self, index: int) -> Conversation:
        """The conversation at physical ``index`` (ignores the slice).

        Args:
            index: a physical example index, ``0 <= index < num_examples()``.

        Returns:
            Conversation: a dict with a ``"messages"`` list.
        """
        raise NotImplementedError

    def evaluate(self, conversation: Conversation, response: str) -> Any:
        """Score ``response`` as an answer to ``conversation``.

        Args:
            conversation: an example of this task.
            response: the model's answer.

        Returns:
            The task's score (an int, bool or float).
        """
        raise NotImplementedError

    def _bounds(self) -> tuple[int, int]:
        total = self.num_examples()
        stop = total if self.stop is None else min(self.stop, total)
        return self.start, max(stop, self.start)

    def __len__(self) -> int:
        """The number of examples in the view (``stop`` clamped to the data)."""
        start, stop = self._bounds()
        return (stop - start + self.step - 1) // self.step

    def __getitem__(self, index: int) -> Conversation:
        """The ``index``-th example of the view (negative counts from the end).

        Raises:
            TypeError: if ``index`` is not an integer (slices included).
            IndexError: if ``index`` is out of range.
        """
        index = sequence_index(type(self).__name__, index, len(self))
        return self.get_example(self.start + index * self.step)

    def __iter__(self) -> Iterator[Conversation]:
        """The examples of the view in order."""
        for i in range(len(self)):
            yield self[i]


class _TaskCollection(Task):
    """Tasks laid end to end: ``_offsets[k]`` is where task ``k`` starts."""

    def __init__(self, tasks: Sequence[Task], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tasks = list(tasks)
        self.lengths = [len(task) for task in self.tasks]
        self.num_conversations = sum(self.lengths)
        self._offsets = [0]
        for length in self.lengths:
            self._offsets.append(self._offsets[-1] + length)

    @property
    def eval_type(self) -> str:
        """The tasks' common eval type.

        Raises:
            NotImplementedError: if the tasks have different eval types.
        """
        kinds = {task.eval_type for task in self.tasks}
        if len(kinds) == 1:
            return kinds.pop()
        raise NotImplementedError(
            f"a {type(self).__name__} of different eval types has no single eval_type"
        )

    def num_examples(self) -> int:
        """The total number of examples of all tasks."""
        return self.num_conversations

    def _check(self, index: int) -> None:
        if not 0 <= index < self.num_conversations:
            raise IndexError(
                f"{type(self).__name__} index out of range: {index} (size {self.num_conversations})"
            )

    def _split(self, flat: int) -> tuple[int, int]:
        """``(task_index, local_index)`` of position ``flat`` end to end."""
        task_index = bisect.bisect_right(self._offsets, flat) - 1
        return task_index, flat - self._offsets[task_index]


class TaskMixture(_TaskCollection):
    """All examples of several tasks in one deterministic shuffled order.

    The order is the one nanochat uses: the pairs ``(task_index,
    local_index)`` listed task by task, shuffled with ``random.Random(42)``.
    Pass a task twice to oversample it. The order is stored as one 4-byte
    (or, past 2**32 examples, 8-byte) integer per example rather than a list
    of tuples; shuffling those integers consumes the random stream exactly as
    shuffling the pairs would, so the order is the same.

    Args:
        tasks: the tasks (each a ``Task`` or anything with ``len`` and ``[]``).
        **kwargs: ``start``, ``stop``, ``step`` of the view (see ``Task``).

    Raises:
        TypeError: if a task has no length.
    """

    def __init__(self, tasks: Sequence[Task], **kwargs: Any) -> None:
        super().__init__(tasks, **kwargs)
        typecode = "I" if array("I").itemsize >= 4 and self.num_conversations <= 2**32 else "Q"
        order = array(typecode, range(self.num_conversations))
        random.Random(42).shuffle(order)
        self._order = order

    def locate(self, index: int) -> tuple[int, int]:
        """``(task_index, local_index)`` of physical example ``index``.

        Raises:
            IndexError: if ``index`` is out of range.
        """
        self._check(index)
        return self._split(self._order[index])

    def get_example(self, index: int) -> Conversation:
        """Physical example ``index`` of the mixture (see ``locate``)."""
        task_index, local_index = self.locate(index)
        return self.tasks[task_index][local_index]


class TaskSequence(_TaskCollection):
    """Tasks one after another, in the order given (a curriculum).

    Args:
        tasks: the tasks, in order.
        **kwargs: ``start``, ``stop``, ``step`` of the view (see ``Task``).
    """

    def get_example(self, index: int) -> Conversation:
        """Physical example ``index``: task by task, in order.

        Raises:
            IndexError: if ``index`` is out of range.
        """
        self._check(index)
        task_index, local_index = self._split(index)
        return self.tasks[task_index][local_index]


def render_mc(question: str, letters: Sequence[str], choices: Sequence[str]) -> str:
    """The user prompt of a multiple-choice question.

    The letter comes after its choice (``- choice=A``) so that a small model
    reads the choice before the letter it has to predict, and there is no
    space after ``=`` because the tokenizer would otherwise fold the space
    into the letter's token (`` A`` rather than ``A``), which is not the
    token the model is asked to answer with.

    Args:
        question: the question text.
        letters: the answer labels (``"A"``, ``"B"``, ... or the dataset's).
        choices: the choice texts, one per letter.

    Returns:
        ``Multiple Choice question: Q\n- choice=A\n...\n\nRespond only with
        the letter of the correct answer.``

    Raises:
        ValueError: if ``letters`` and ``choices`` differ in length.
    """
    if len(letters) != len(choices):
        raise ValueError(f"{len(letters)} letters for {len(choices)} choices")
    lines = [f"Multiple Choice question: {question}\n"]
    lines.extend(f"- {choice}={letter}\n" for letter, choice in zip(letters, choices))
    lines.append("\nRespond only with the letter of the correct answer.")
    return "".join(lines)


_PART_TYPES = ("text", "python", "python_output")


def validate_messages(messages: Any) -> None:
    """Check a message list against the conversation rules.

    An optional first ``system`` message, then ``user``, ``assistant``,
    ``user``, ... strictly alternating, at least one user and one assistant
    message. ``system`` and ``user`` content is a string; ``assistant``
    content is a string or a list of ``{"type", "text"}`` parts.

    Args:
        messages: the conversation's ``"messages"`` value.

    Returns:
        None when the messages follow the rules.

    Raises:
        ConversationFormatError: naming the message index and the rule.
    """
    if not isinstance(messages, list):
        raise ConversationFormatError(f"expected a list of messages, got {type(messages).__name__}")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ConversationFormatError(f"message {i}: expected an object, got {type(message).__name__}")
        for key in ("role", "content"):
            if key not in message:
                raise ConversationFormatError(f"message {i}: missing key {key!r}")
    offset = 1 if messages and messages[0]["role"] == "system" else 0
    if len(messages) - offset < 2:
        raise ConversationFormatError(
            f"expected at least a user and an assistant message, got {len(messages)} message(s)"
        )
    for i, message in enumerate(messages):
        role, content = message["role"], message["content"]
        if i < offset:
            expected = "system"
        else:
            expected = "user" if (i - offset) % 2 == 0 else "assistant"
        if role != expected:
            raise ConversationFormatError(f"message {i}: expected role {expected!r}, got {role!r}")
        if isinstance(content, str):
            continue
        if role != "assistant":
            raise ConversationFormatError(f"message {i}: {role} content must be a string, got {type(content).__name__}")
        if not isinstance(content, list):
            raise ConversationFormatError(
                f"message {i}: assistant content must be a string or a list of parts, got {type(content).__name__}"
            )
        for j, part in enumerate(content):
            if (
                not isinstance(part, dict)
                or part.get("type") not in _PART_TYPES
                or not isinstance(part.get("text"), str)
            ):
                raise ConversationFormatError(
                    f"message {i}, part {j}: expected {{'type': 'text'|'python'|'python_output', 'text': str}}, got {reprlib.repr(part)}"
                )

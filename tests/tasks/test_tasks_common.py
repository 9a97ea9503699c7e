import random
import tracemalloc

import pytest

from tasks.common import (
    ConversationFormatError,
    Task,
    TaskMixture,
    TaskSequence,
    render_mc,
    validate_messages,
)


class Numbers(Task):
    """A task whose example i is the conversation naming (name, i)."""

    def __init__(self, name, size, **kwargs):
        super().__init__(**kwargs)
        self.name = name
        self.size = size

    @property
    def eval_type(self):
        return "generative"

    def num_examples(self):
        return self.size

    def get_example(self, index):
        if not 0 <= index < self.size:
            raise IndexError(index)
        return {"messages": [{"role": "user", "content": self.name}, {"role": "assistant", "content": str(index)}]}


def ids(task):
    return [(c["messages"][0]["content"], int(c["messages"][1]["content"])) for c in task]


@pytest.mark.parametrize(
    "start,stop,step", [(0, None, 1), (2, None, 1), (0, 7, 1), (1, 9, 3), (3, 3, 1), (4, 100, 2), (0, None, 4)]
)
def test_slicing_matches_python_slices(start, stop, step):
    task = Numbers("n", 10, start=start, stop=stop, step=step)
    expected = [("n", i) for i in range(10)[start:stop:step]]
    assert len(task) == len(expected)
    assert ids(task) == expected
    if expected:
        assert task[-1] == task[len(task) - 1]


def test_getitem_rejects_out_of_range_and_non_ints():
    task = Numbers("n", 5, start=1, step=2)  # physical 1, 3
    assert len(task) == 2
    with pytest.raises(IndexError):
        task[2]
    with pytest.raises(IndexError):
        task[-3]
    with pytest.raises(TypeError):
        task[0:1]
    with pytest.raises(TypeError):
        task["0"]


@pytest.mark.parametrize("kwargs", [{"start": -1}, {"start": 5, "stop": 4}, {"step": 0}])
def test_bad_slice_arguments(kwargs):
    with pytest.raises(ValueError):
        Numbers("n", 5, **kwargs)


def nanochat_order(lengths):
    # The rule written out independently: every (task, local) pair in task
    # order, shuffled by random.Random(42).
    pairs = [(t, i) for t, n in enumerate(lengths) for i in range(n)]
    random.Random(42).shuffle(pairs)
    return pairs


@pytest.mark.parametrize("lengths", [[3], [5, 2, 7], [0, 4, 0, 3], [100, 1, 50, 20]])
def test_mixture_order_equals_nanochat_rule(lengths):
    tasks = [Numbers(f"t{k}", n) for k, n in enumerate(lengths)]
    mixture = TaskMixture(tasks)
    expected = nanochat_order(lengths)
    assert len(mixture) == sum(lengths)
    assert [mixture.locate(i) for i in range(len(mixture))] == expected
    assert ids(mixture) == [(f"t{t}", i) for t, i in expected]


def test_mixture_oversamples_a_task_passed_twice_and_respects_slices():
    a = Numbers("a", 4)
    b = Numbers("b", 6, start=1, stop=5)  # physical 1..4
    mixture = TaskMixture([a, b, a])
    got = ids(mixture)
    assert sorted(got) == sorted([("a", i) for i in range(4)] * 2 + [("b", i) for i in range(1, 5)])
    expected = nanochat_order([4, 4, 4])
    assert got == [("a" if t != 1 else "b", i if t != 1 else i + 1) for t, i in expected]
    # The mixture is itself a sliceable task.
    part = TaskMixture([a, b, a], start=2, stop=9, step=3)
    assert ids(part) == got[2:9:3]


def test_mixture_stores_at_most_16_bytes_per_example():
    n = 1_000_000
    task = Numbers("big", n)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        mixture = TaskMixture([task])
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (after - before) / n <= 16
    assert len(mixture) == n
    # Spot-check the order against the rule on the first and last positions
    # without building a million tuples: shuffle plain ints the same way.
    order = list(range(n))
    random.Random(42).shuffle(order)
    for i in (0, 1, 2, n // 2, n - 1):
        assert mixture.locate(i) == (0, order[i])


def test_sequence_concatenates_in_order():
    seq = TaskSequence([Numbers("a", 2), Numbers("b", 0), Numbers("c", 3, step=2)])
    assert ids(seq) == [("a", 0), ("a", 1), ("c", 0), ("c", 2)]
    assert ids(TaskSequence([Numbers("a", 2), Numbers("c", 3)], start=1, stop=4)) == [("a", 1), ("c", 0), ("c", 1)]
    with pytest.raises(IndexError):
        seq.get_example(4)


def test_render_mc_exact_text():
    text = render_mc("What is 2+2?", ["A", "B", "C"], ["3", "4", "5"])
    assert text == (
        "Multiple Choice question: What is 2+2?\n"
        "- 3=A\n"
        "- 4=B\n"
        "- 5=C\n"
        "\n"
        "Respond only with the letter of the correct answer."
    )
    with pytest.raises(ValueError):
        render_mc("q", ["A"], ["x", "y"])


@pytest.mark.parametrize(
    "messages,fragment",
    [
        ({"role": "user"}, "expected a list"),
        ([{"role": "user", "content": "hi"}], "at least a user and an assistant"),
        ([{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}], "at least a user and an assistant"),
        (
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
            "message 1: expected role 'assistant', got 'user'",
        ),
        (
            [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}],
            "message 0: expected role 'user', got 'assistant'",
        ),
        ([{"role": "user", "content": "a"}, {"role": "assistant"}], "message 1: missing key 'content'"),
        (
            [{"role": "user", "content": 3}, {"role": "assistant", "content": "b"}],
            "message 0: user content must be a string",
        ),
        (
            [{"role": "user", "content": "a"}, {"role": "assistant", "content": [{"type": "image", "text": "x"}]}],
            "message 1, part 0",
        ),
        (
            [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}],
            "message 1: expected role 'assistant', got 'system'",
        ),
        (["hello", {"role": "assistant", "content": "b"}], "message 0: expected an object"),
    ],
)
def test_validate_messages_names_the_rule(messages, fragment):
    with pytest.raises(ConversationFormatError) as info:
        validate_messages(messages)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def test_validate_messages_accepts_valid_conversations():
    validate_messages([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    validate_messages(
        [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "a"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "x"},
                    {"type": "python", "text": "1+1"},
                    {"type": "python_output", "text": "2"},
                ],
            },
            {"role": "user", "content": "c"},
        ]
    )

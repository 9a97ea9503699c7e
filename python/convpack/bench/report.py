"""Runs the benchmark sections and writes the report: ``benchmarks.md`` (a
markdown table per section), ``results.json`` (every row), ``ratios.png``
and ``packing_efficiency.png``."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Optional

from . import SECTIONS, find_section
from .common import cpu_count

__all__ = [
    "BUFFER_SIZES",
    "SMOKE_NOTE",
    "markdown",
    "packing_sweep",
    "peers_tables",
    "run_label",
    "run_suite",
    "table",
    "write_report",
]

#: The best-fit ``buffer_size`` values of the packing-efficiency sweep.
BUFFER_SIZES = (1, 2, 4, 8, 16, 32, 64, 100, 256)
#: Rows of the packing-efficiency sweep: (seq_len, batch_size).
SWEEP_SEQ_LEN, SWEEP_BATCH_SIZE = 1024, 4
#: Printed with every table and plot of a ``--quick`` run.
SMOKE_NOTE = "smoke run (--quick): numbers not representative"


def _sweep_conversations(quick: bool) -> int:
    return 300 if quick else 3000


def packing_sweep(quick: bool = False) -> tuple:
    """Best-fit packing efficiency against ``buffer_size`` on an SFT-like
    mixture (short SpellingBee/MMLU-sized and long SmolTalk-like
    conversations), rows of 1024 tokens with padding.

    Uses ``convpack.DataGenerator`` when this build has it, else the
    pure-Python best-fit of ``convpack.bench.baseline``.

    Args:
        quick: 300 conversations and 8 batches per point instead of 3000
            and 64.

    Returns:
        ``(rows, packer_name)``: one row per ``BUFFER_SIZES`` value with
        ``buffer_size``, ``efficiency`` (0..1), ``seq_len`` and
        ``conversations``.
    """
    import random

    import convpack

    from .baseline import PythonRenderer, bestfit_batches
    from .common import cl100k_path
    from .texts import (
        mmlu_like_conversations,
        smoltalk_like_conversations,
        spellingbee_conversations,
    )

    n = _sweep_conversations(quick)
    convs = (
        spellingbee_conversations(n // 3)
        + mmlu_like_conversations(n // 3)
        + smoltalk_like_conversations(n // 3)
    )
    random.Random(0).shuffle(convs)
    tokenizer = convpack.Tokenizer.from_tiktoken_file(
        cl100k_path(), pattern=convpack.SPLIT_PATTERN, special_tokens=convpack.CHAT_SPECIAL_TOKENS
    )
    seq_len, batch_size = SWEEP_SEQ_LEN, SWEEP_BATCH_SIZE
    n_batches = 8 if quick else 64
    generator_cls = getattr(convpack, "DataGenerator", None)
    rows = []
    for buffer_size in BUFFER_SIZES:
        if generator_cls is not None:
            packer = "convpack.DataGenerator(mode='bestfit')"
            gen = generator_cls(
                convs,
                tokenizer,
                batch_size=batch_size,
                seq_len=seq_len,
                mode="bestfit",
                buffer_size=buffer_size,
                device="cpu",
                rank=0,
                world_size=1,
            )
            try:
                for _, _batch in zip(range(n_batches), gen):
                    pass
                efficiency = 1.0 - _pad_fraction(gen.stats)
            finally:
                gen.close()
        else:
            packer = "pure-Python best-fit (DataGenerator not in this build)"
            counts: dict = {}
            render = PythonRenderer.from_tokenizer(tokenizer).render_conversation
            batches = bestfit_batches(
                convs,
                render,
                batch_size,
                seq_len,
                tokenizer.get_bos_token_id(),
                buffer_size=buffer_size,
                counts=counts,
            )
            for _, _batch in zip(range(n_batches), batches):
                pass
            efficiency = 1.0 - counts.get("pad", 0) / counts["tokens"]
        rows.append(
            {
                "section": "packing",
                "case": f"bestfit, buffer_size={buffer_size}",
                "buffer_size": buffer_size,
                "efficiency": efficiency,
                "packer": packer,
                "seq_len": seq_len,
                "batch_size": batch_size,
                "conversations": len(convs),
            }
        )
    return rows, packer


def _pad_fraction(stats) -> float:
    if isinstance(stats, dict):
        for key in ("pad_fraction", "pad"):
            if key in stats:
                return float(stats[key])
    for attr in ("pad_fraction", "pad"):
        if hasattr(stats, attr):
            return float(getattr(stats, attr))
    raise KeyError(f"DataGenerator.stats has no pad fraction: {stats!r}")


def run_suite(quick: bool, log: Callable[[str], None] = print) -> tuple:
    """Run every benchmark section that is available, then the packing sweep.

    Args:
        quick: small inputs and one round (a smoke run, seconds).
        log: receives one progress line per step.

    Returns:
        ``(rows, notes)``: the rows of every section; notes say which
        sections were skipped and why, and which packer the sweep used.

    Raises:
        BenchmarkMismatch: a section's outputs differ from its baseline's.
        ModuleNotFoundError: a section needs a package that is missing (see
            ``convpack.bench.missing_requirements``).
    """
    rows: list = []
    notes: list = []
    for name in SECTIONS:
        run, reason = find_section(name)
        if run is None:
            note = f"{name}: skipped ({reason})"
            log(f"note: {note}")
            notes.append(note)
            continue
        log(f"running {name} benchmark{' (quick: a smoke run)' if quick else ''} ...")
        start = time.perf_counter()
        section_rows = run(quick)
        for r in section_rows:
            if "note" in r:
                log(f"note: {name}: {r['note']}")
                notes.append(f"{name}: {r['note']}")
        section_rows = [r for r in section_rows if "note" not in r]
        log(f"  {len(section_rows)} cases in {time.perf_counter() - start:.1f} s")
        rows.extend(section_rows)
    if any(r.get("corpus") == "multilingual" for r in rows):
        from .texts import multilingual_source

        notes.append(f"multilingual text: {multilingual_source()}")
    notes.append(
        "timing: every side once per round, one after the other; "
        f"the best of {1 if quick else 5} round{'' if quick else 's'} counts"
    )
    if not any("efficiency" in r for r in rows):
        log("running packing efficiency sweep ...")
        sweep, packer = packing_sweep(quick)
        rows.extend(sweep)
        notes.append(f"packing efficiency measured with {packer}")
    return rows, notes


def _fmt(x: float) -> str:
    if x != x:  # NaN
        return "-"
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def table(rows: list, quick: bool = False) -> str:
    """A markdown table of the rows that have a ratio, and of those timed
    alone (``ours`` without a baseline), which show ``-`` for the baseline.

    Args:
        rows: benchmark rows (see ``convpack.bench``); packing-efficiency
            points are left out.
        quick: the rows come from a smoke run: the table's first line says so.

    Returns:
        The markdown table, without a trailing newline.
    """
    lines = [f"*{SMOKE_NOTE}*", ""] if quick else []
    lines += ["| case | convpack | baseline | unit | ratio |", "|---|---:|---:|---|---:|"]
    for r in rows:
        if "ratio" in r:
            lines.append(
                f"| {r['case']} | {_fmt(r['ours'])} | {_fmt(r['baseline'])} ({r['baseline_name']}) "
                f"| {r['unit']} | **{_fmt(r['ratio'])}x** |"
            )
        elif "ours" in r and "efficiency" not in r:
            lines.append(f"| {r['case']} | {_fmt(r['ours'])} | - | {r['unit']} | - |")
    return "\n".join(lines)


def _peer_cell(r: dict, best: bool) -> str:
    if "error" in r:
        return f"not timed: {r['error'][:60]}"
    cell = f"{_fmt(r['vs_tiktoken'])}x"
    if best:
        cell = f"**{cell}**"
    if r.get("differs"):
        cell += f" (ids differ on {r['differs']} of {r['docs']} docs)"
    return cell


def peers_tables(rows: list, quick: bool = False) -> str:
    """The peers section as one markdown matrix per form and thread count:
    an encoder per line, a text per column, each cell the encoder's speed
    over tiktoken's in the same form and round (tiktoken's MB/s on the
    first line); the fastest exact encoder of each column in bold.

    Args:
        rows: rows with ``kind="peer"`` (others are ignored).
        quick: the rows come from a smoke run: every table says so.

    Returns:
        The markdown, without a trailing newline ("" without peer rows).
    """
    peer_rows = [r for r in rows if r.get("kind") == "peer"]
    groups: dict = {}
    for r in peer_rows:
        groups.setdefault((r["form"], r["threads"]), []).append(r)
    out: list = []
    for (form, threads), group in groups.items():
        corpora = list(dict.fromkeys(r["corpus"] for r in group))
        encoders = list(dict.fromkeys(r["encoder"] for r in group))
        cells = {(r["encoder"], r["corpus"]): r for r in group}
        fastest = {}
        for c in corpora:
            exact = [
                r for r in group if r["corpus"] == c and not r.get("differs") and "error" not in r
            ]
            if exact:
                fastest[c] = max(exact, key=lambda r: r["vs_tiktoken"])["encoder"]
        pooled = any(r.get("pooled") for r in group)
        title = form if form.startswith("1 thread") else f"{form}, {threads} thread"
        title += "s" if threads > 1 and not form.startswith("1 thread") else ""
        out += [f"### {title}", ""]
        if quick:
            out += [f"*{SMOKE_NOTE}*", ""]
        out += [
            "| encoder | " + " | ".join(corpora) + " |",
            "|---|" + "---:|" * len(corpora),
            "| tiktoken, MB/s | "
            + " | ".join(
                _fmt(next(r["tiktoken"] for r in group if r["corpus"] == c)) for c in corpora
            )
            + " |",
        ]
        for e in encoders:
            if e == "tiktoken":
                continue
            mark = (
                " (own pool)"
                if any(cells[e, c].get("pooled") for c in corpora if (e, c) in cells)
                else ""
            )
            line = [
                _peer_cell(cells[e, c], fastest.get(c) == e) if (e, c) in cells else "-"
                for c in corpora
            ]
            out.append(f"| {e}{mark} | " + " | ".join(line) + " |")
        if pooled:
            out += [
                "",
                "(own pool): the encoder takes no thread count; its thread pool has "
                + (
                    "every core"
                    if threads > 1
                    else "one thread (RAYON_NUM_THREADS=1, the process pinned to one CPU)"
                )
                + ".",
            ]
        out.append("")
    return "\n".join(out).rstrip("\n")


def run_label(quick: bool) -> str:
    """How tables and plots name a run.

    Args:
        quick: whether the run was ``--quick``.

    Returns:
        ``"full run"``, or ``SMOKE_NOTE`` for a quick run.
    """
    return SMOKE_NOTE if quick else "full run"


def markdown(rows: list, notes: list, command: str, quick: bool = False) -> str:
    """The report as markdown: one table per section, then packing efficiency.

    Args:
        rows, notes: as ``run_suite`` returns them.
        command: the command line that made them, quoted in the report.
        quick: a smoke run: the title and every table say so.

    Returns:
        The markdown text.
    """
    import convpack

    lines = [
        "# convpack benchmarks" + (f": {SMOKE_NOTE}" if quick else ""),
        "",
        f"Command: `{command}` ({run_label(quick)})",
        "",
        f"convpack {convpack.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()} with {cpu_count()} CPU threads available. "
        "Outputs were checked identical before timing; ratio = convpack / baseline "
        "(higher is better for convpack).",
        "",
    ]
    sections = [s for s in dict.fromkeys(r["section"] for r in rows) if s != "packing"]
    for section in sections:
        section_rows = [r for r in rows if r["section"] == section]
        lines += [f"## {section}", ""]
        if any(r.get("kind") == "peer" for r in section_rows):
            lines += [
                "Speed over tiktoken's in the same form, thread count and rounds "
                "(cl100k_base); ids checked against tiktoken on every document first.",
                "",
                peers_tables(section_rows, quick),
                "",
            ]
        else:
            lines += [table(section_rows, quick), ""]
    packing = [r for r in rows if "efficiency" in r]
    if packing:
        lines += [
            "## packing efficiency (best-fit)",
            "",
            *([f"*{SMOKE_NOTE}*", ""] if quick else []),
            "| buffer_size | efficiency |",
            "|---:|---:|",
        ]
        lines += [f"| {r['buffer_size']} | {100 * r['efficiency']:.1f}% |" for r in packing]
        lines.append("")
    if notes:
        lines += ["## notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def _datagen_rows_label(rows: list) -> str:
    """``"rows 8 x 2048"`` from the datagen rows (batch_size x seq_len)."""
    shapes = sorted(
        {(r["batch_size"], r["seq_len"]) for r in rows if r.get("seq_len") and r.get("batch_size")}
    )
    return ", ".join(f"{b} x {t}" for b, t in shapes) or "-"


def _plot_title(first_line: str, quick: bool, details: str, width: int) -> str:
    """The plot's title: what it shows, then the run (full or smoke, CPU
    threads) and the data and row length, wrapped to ``width`` characters."""
    import textwrap

    run = f"{run_label(quick)}; {cpu_count()} CPU threads"
    return "\n".join([first_line, run, *textwrap.wrap(details, width, break_on_hyphens=False)])


def _plots(rows: list, out_dir: str, quick: bool = False) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    # Speed ratios only: thread-scaling rows compare speed-ups and share rows
    # a fraction of our own speed, not convpack against a baseline; they stay
    # in the table.
    ratio_rows = [r for r in rows if "ratio" in r and r.get("kind") not in ("scaling", "share")]
    if ratio_rows:
        labels = [f"{r['section']}: {r['case']}" for r in ratio_rows]
        ratios = [r["ratio"] for r in ratio_rows]
        fig, ax = plt.subplots(figsize=(12, 0.32 * len(ratio_rows) + 2.2))
        colors = ["tab:green" if x >= 1 else "tab:red" for x in ratios]
        bars = ax.barh(range(len(ratios)), ratios, color=colors)
        ax.bar_label(bars, labels=[f"{x:.2f}x" for x in ratios], padding=3, fontsize=7)
        ax.set_yticks(range(len(ratios)))
        ax.set_yticklabels(labels, fontsize=7)
        ax.invert_yaxis()
        ax.axvline(1.0, color="black", linewidth=1)
        if max(ratios) > 20:  # the packer-alone ratios would flatten the rest
            ax.set_xscale("log")
        ax.set_xlim(right=ax.get_xlim()[1] * (1.6 if ax.get_xscale() == "log" else 1.12))
        ax.set_xlabel("convpack / baseline (higher is better)")
        datagen = [r for r in ratio_rows if r["section"] == "datagen"]
        details = (
            "text: synthetic prose, stdlib code, translation catalogs, chat messages; "
            "conversations: SmolTalk-like, "
            f"SpellingBee, MMLU-sized; DataGenerator rows {_datagen_rows_label(datagen)}"
        )
        ax.set_title(
            _plot_title(
                "convpack speed relative to tiktoken, HF tokenizers, transformers' "
                "apply_chat_template and the pure-Python path",
                quick,
                details,
                70,
            ),
            fontsize=9,
        )
        fig.tight_layout()
        path = os.path.join(out_dir, "ratios.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    packing = [r for r in rows if "efficiency" in r]
    if packing:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        xs = [r["buffer_size"] for r in packing]
        ys = [100 * r["efficiency"] for r in packing]
        ax.plot(xs, ys, marker="o")
        for x, y in zip(xs, ys):
            ax.annotate(
                f"{y:.1f}%",
                (x, y),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=7,
            )
        ax.set_xscale("log")
        ax.set_ylim(min(ys) - 5, 103)
        ax.set_xlabel("buffer_size (conversations)")
        ax.set_ylabel("row positions holding tokens (%)")
        first = packing[0]
        details = (
            f"rows of {first.get('seq_len', SWEEP_SEQ_LEN)}; SFT-like mixture of "
            f"{first.get('conversations', '?')} conversations (SpellingBee, MMLU-sized, SmolTalk-like)"
        )
        ax.set_title(_plot_title("best-fit packing efficiency", quick, details, 80), fontsize=8)
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        path = os.path.join(out_dir, "packing_efficiency.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def write_report(
    rows: list, notes: list, out_dir: str, command: Optional[str] = None, quick: bool = False
) -> list:
    """Write ``benchmarks.md``, ``results.json`` and the PNG plots.

    Args:
        rows, notes: as ``run_suite`` returns them.
        out_dir: the directory to write into (created if missing).
        command: the command line quoted in the report (default: this
            process's arguments).
        quick: a smoke run: the markdown, the JSON (``"run"``) and every
            plot's title say so.

    Returns:
        The paths written.

    Raises:
        OSError: ``out_dir`` cannot be written.
        ModuleNotFoundError: matplotlib is missing (the text files are
            written first).
    """
    os.makedirs(out_dir, exist_ok=True)
    command = command or " ".join(["convpack", *sys.argv[1:]])
    md_path = os.path.join(out_dir, "benchmarks.md")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(markdown(rows, notes, command, quick))
    json_path = os.path.join(out_dir, "results.json")
    with open(json_path, "w", encoding="utf-8") as f:
        meta = {"command": command, "run": "quick" if quick else "full", "threads": cpu_count()}
        json.dump({**meta, "notes": notes, "rows": rows}, f, indent=1)
    return [md_path, json_path, *_plots(rows, out_dir, quick)]

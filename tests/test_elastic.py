"""Per-epoch reshuffle: each epoch its own permutation, the same on every
rank, every conversation once per epoch across ranks, and resumable mid-epoch
bit for bit. (The packers see the conversations of a permuted epoch in order;
which conversation a batch holds is checked through a dataset that records
the indices read.)"""

from __future__ import annotations

import json

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

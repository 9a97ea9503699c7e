"""A MosaicML ``streaming.StreamingDataset`` as a stream: MDS shards written
here with ``streaming.MDSWriter`` (no network), read in the dataset's own
order, resumed bit for bit through its ``state_dict(num_samples,
from_beginning)``. Skipped where ``mosaicml-streaming`` is not installed
(it is not in the test extra: it pins numpy<2.2 and pulls cloud SDKs)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from test_datagen import make_dataset

from convpack.datagen import DataGenerator

streaming = pytest.importorskip("streaming")
DATA = [c for c in make_dataset(40, seed=9)
        if all(isinstance(m["content"], str) for m in c["messages"])]
MODES = {
    "padded": dict(mode="padded", batch_size=3),
    "bestfit": dict(mode="bestfit", batch_size=2, seq_len=48, buffer_size=5),
}


@pytest.fixture(scope="module")
def mds(tmp_path_factory):
    out = tmp_path_factory.mktemp("mds")
    with streaming.MDSWriter(out=str(out), columns={"messages": "json"},
                             size_limit=4096) as w:
        for c in DATA:
            w.write({"messages": c["messages"]})
    return str(out)


def dataset(mds):
    streaming.base.util.clean_stale_shared_memory()
    return streaming.StreamingDataset(local=mds, shuffle=False, batch_size=1)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_streaming_dataset_resumes_bit_for_bit(tokenizer, mds, mode, monkeypatch):
    monkeypatch.setattr("convpack.sources.SNAPSHOT_EVERY", 5)
    kw = dict(MODES[mode], output="numpy")
    # In its own order: the batches of the same conversations as a list.
    full = DataGenerator(dataset(mds), tokenizer, **kw)
    expected = [[np.asarray(t).copy() for t in next(full)] for _ in range(12)]
    mapped = DataGenerator(DATA, tokenizer, **kw)
    for want in expected:
        for u, v in zip(want, next(mapped)):
            np.testing.assert_array_equal(u, v)
    del full
    rng = random.Random(len(mode))
    for cut in sorted(rng.sample(range(1, 11), 3)):
        first = DataGenerator(dataset(mds), tokenizer, **kw)
        for _ in range(cut):
            next(first)
        state = json.loads(json.dumps(first.state_dict()))
        del first
        snap = state["source"]["snapshot"]
        assert state["source"]["kind"] == "mosaic"
        if snap["ordinal"] > 0:
            assert snap["state"]["sample_in_epoch"] == snap["raw"]
        resumed = DataGenerator(dataset(mds), tokenizer, **kw)
        resumed.load_state_dict(state)
        for want in expected[cut:]:
            for u, v in zip(want, next(resumed)):
                np.testing.assert_array_equal(u, v)
        del resumed

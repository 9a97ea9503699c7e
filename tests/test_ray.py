"""The README's Ray Data render, run with Ray itself on a local cluster: one
Ray task per shard over a shared directory writes the bytes one
``render_shards`` call writes, and the last plain call only marks the render
complete."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("pyarrow")
ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from convpack import RenderedDataset, Tokenizer, render_shards  # noqa: E402

# Ray's own modules warn about its own deprecated settings.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")

TESTS = os.path.dirname(os.path.abspath(__file__))
ROWS = 10


def _dataset():
    import sys

    if TESTS not in sys.path:  # a Ray worker starts with its own sys.path
        sys.path.insert(0, TESTS)
    from test_datagen import make_dataset

    return make_dataset(57, seed=11)


@pytest.fixture(scope="module")
def local_cluster():
    try:
        # A small object store: the rows are a few ints, and /dev/shm may be small.
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 object_store_memory=128 * 2**20,
                 runtime_env={"env_vars": {"PYTHONPATH": TESTS}})
    except Exception as e:  # the machine, not convpack: say so rather than fail
        pytest.skip(f"Ray could not start a local cluster here: {type(e).__name__}: {e}")
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_data_render_writes_the_shards_of_one_call(tokenizer, local_cluster, tmp_path):
    tokdir, out, single = str(tmp_path / "tok"), str(tmp_path / "out"), str(tmp_path / "one")
    tokenizer.save(tokdir)
    data = _dataset()
    n_shards = -(-len(data) // ROWS)

    def render(row):
        tok = Tokenizer.from_directory(tokdir)
        left = render_shards(_dataset(), tok, out, max_tokens=200, rows_per_shard=ROWS,
                             progress=False, only=[int(row["id"])])
        return {"id": row["id"], "pid": os.getpid(), "completed": left is not None}

    rows = ray.data.range(n_shards).map(render).take_all()
    assert sorted(int(r["id"]) for r in rows) == list(range(n_shards))
    # Ray ran the tasks outside this process.
    assert os.getpid() not in {int(r["pid"]) for r in rows}
    # Exactly one task found every shard written and completed the render.
    assert sum(bool(r["completed"]) for r in rows) <= 1
    done = render_shards(data, tokenizer, out, max_tokens=200, rows_per_shard=ROWS,
                         progress=False)
    assert isinstance(done, RenderedDataset) and len(done) == len(data)

    reference = render_shards(data, tokenizer, single, max_tokens=200, rows_per_shard=ROWS,
                              progress=False)
    names = sorted(f for f in os.listdir(single) if f.startswith("shard-"))
    assert names == sorted(f for f in os.listdir(out) if f.startswith("shard-"))
    assert len(names) == n_shards
    for name in names:
        with open(os.path.join(out, name), "rb") as f, open(os.path.join(single, name), "rb") as g:
            assert f.read() == g.read(), name
    for i in (0, 23, len(data) - 1):
        ids, mask = tokenizer.render_conversation(data[i], max_tokens=200)
        assert done[i][0].tolist() == list(ids) and done[i][1].tolist() == list(mask)
        assert reference[i][0].tolist() == list(ids)

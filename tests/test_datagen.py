"""DataGenerator against the independent reference generators
(tests/reference_generators.py, rendering over tiktoken): every mode, world
sizes 1-3, several shapes; resume, prefetch, errors, devices and a
nanochat-shaped training loop."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
import threading

import pytest
import reference_generators as ref
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convpack import ConversationError, Tokenizer, datagen
from convpack.datagen import (
    DataGenerator,
    NoSupervisedTokensWarning,
    PinnedRing,
    resolve_distributed,
)

WORDS = ("the cat sat on a mat while seven dogs ran far away from home and then "
         "came back to eat 42 apples with 3.14 spoons quickly").split()


def make_conversation(rng: random.Random, long: bool = False) -> dict:
    def text(lo, hi):
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    messages = []
    if rng.random() < 0.2:
        messages.append({"role": "system", "content": text(2, 8)})
    turns = rng.randint(1, 3)
    for _ in range(turns):
        messages.append({"role": "user", "content": text(1, 12)})
        if rng.random() < 0.2:
            content = [
                {"type": "text", "text": text(1, 6)},
                {"type": "python", "text": "1+2"},
                {"type": "python_output", "text": "3"},
                {"type": "text", "text": text(1, 4)},
            ]
        else:
            content = text(3, 120 if long else 30)
        messages.append({"role": "assistant", "content": content})
    return {"messages": messages}


def make_dataset(n: int, seed: int, bad=()) -> list:
    rng = random.Random(seed)
    data = [make_conversation(rng, long=i % 5 == 0) for i in range(n)]
    for i in bad:
        data[i] = {"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}]}
    return data


DATASET = make_dataset(41, seed=7)


@pytest.fixture(scope="module")
def reference_render(tt_nano):
    return ref.ReferenceRender(tt_nano)


def reference(mode, overflow, dataset, render, b, t, rank, world, buffer_size, max_seqs=None, skip=False):
    if mode == "padded":
        return ref.padded(dataset, render, b, rank, world, seq_len=t, skip=skip)
    if mode == "stream":
        return ref.stream(dataset, render, b, t, rank, world, skip=skip)
    if mode == "bestfit":
        return ref.bestfit(dataset, render, b, t, buffer_size, overflow, rank, world, skip=skip)
    return ref.varlen(dataset, render, b, t, max_seqs, rank, world, skip=skip)


def assert_same(got, want, where):
    assert len(got) == len(want), where
    for g, w in zip(got, want):
        assert g.dtype == w.dtype, f"{where}: dtype {g.dtype} != {w.dtype}"
        assert g.shape == w.shape, f"{where}: shape {tuple(g.shape)} != {tuple(w.shape)}"
        assert torch.equal(g, w), f"{where}: values differ"


MODES = [("padded", "pad"), ("stream", "pad"), ("bestfit", "pad"), ("bestfit", "crop"), ("varlen", "pad")]
# (batch_size, seq_len, buffer_size): rows of 24 tokens are shorter than
# many conversations here; 200 fits most.
SHAPES = [(1, 24, 3), (3, 64, 8), (4, 200, 100)]


# Rows of 24 tokens cut some conversations before their reply: batches of one
# such row have no supervised target, which is what the warning is for.
@pytest.mark.filterwarnings("ignore::convpack.datagen.NoSupervisedTokensWarning")
@pytest.mark.parametrize("mode,overflow", MODES)
@pytest.mark.parametrize("b,t,buffer_size", SHAPES)
def test_first_50_batches_match_reference(tokenizer, reference_render, mode, overflow, b, t, buffer_size):
    # padded also runs without seq_len (nanochat's exact collate) on the widest shape.
    seq_len = None if (mode == "padded" and t == 200) else t
    for world in (1, 2, 3):
        for rank in range(world):
            gen = DataGenerator(DATASET, tokenizer, batch_size=b, seq_len=seq_len, mode=mode,
                                overflow=overflow, buffer_size=buffer_size, rank=rank,
                                world_size=world, prefetch=2 * (rank % 2))
            want = reference(mode, overflow, DATASET, reference_render, b, seq_len, rank, world,
                             buffer_size, max_seqs=gen.max_seqs)
            for k in range(50):
                got = next(gen)
                batch, info = next(want)
                where = f"{mode}/{overflow} b={b} t={seq_len} rank {rank}/{world} batch {k}"
                assert_same(got, batch, where)
                assert gen.last_step == (info["consumed"] >= len(DATASET)), where
            gen.close()


def test_varlen_with_a_tight_segment_budget(tokenizer, reference_render):
    gen = DataGenerator(DATASET, tokenizer, batch_size=3, seq_len=48, mode="varlen", max_seqs=5)
    want = ref.varlen(DATASET, reference_render, 3, 48, 5)
    saw_filler = False
    for k in range(40):
        got = next(gen)
        batch, _ = next(want)
        assert_same(got, batch, f"batch {k}")
        saw_filler |= gen.stats["pad"] > 0
    assert saw_filler, "the budget should have forced filler segments"


# max_tokens=3 leaves some conversations without a supervised token.
@pytest.mark.filterwarnings("ignore::convpack.datagen.NoSupervisedTokensWarning")
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 12),
    b=st.integers(1, 3),
    t=st.integers(2, 40),
    max_tokens=st.sampled_from([3, 16, 2048]),
)
def test_varlen_every_supervised_token_once_per_epoch(tokenizer, tt_nano, seed, n, b, t, max_tokens):
    data = make_dataset(n, seed)
    render = ref.ReferenceRender(tt_nano, max_tokens=max_tokens)
    expected = []
    for i in range(n):
        ids, mask = render(data[i])
        expected += [(ids[j], ids[j + 1]) for j in range(len(ids) - 1) if mask[j + 1]]
    gen = DataGenerator(data, tokenizer, batch_size=b, seq_len=t, mode="varlen",
                        max_tokens=max_tokens, prefetch=0)
    seen = []
    for _ in range(10_000):
        inputs, targets, cu, positions = next(gen)
        rows_cols = b * t
        assert cu[0] == 0 and int(cu[-1]) == rows_cols
        assert bool((cu[1:] >= cu[:-1]).all())
        flat_pos = positions.reshape(-1)
        for lo, hi in zip(cu[:-1].tolist(), cu[1:].tolist()):
            if hi > lo:
                assert lo // t == (hi - 1) // t, "a segment crosses a row"
                assert flat_pos[lo:hi].tolist() == list(range(hi - lo))
        flat_in, flat_tg = inputs.reshape(-1).tolist(), targets.reshape(-1).tolist()
        seen += [(x, y) for x, y in zip(flat_in, flat_tg) if y != -1]
        if gen.last_step:
            break
        assert len(seen) <= len(expected), "more supervised tokens than an epoch has"
    assert gen.last_step
    assert seen[: len(expected)] == expected


@pytest.mark.parametrize("mode,overflow", MODES)
def test_resume_through_json_is_exact(tokenizer, mode, overflow):
    data = make_dataset(37, seed=3, bad=(4, 20))
    kwargs = dict(batch_size=2, seq_len=40, mode=mode, overflow=overflow, buffer_size=6,
                  rank=1, world_size=2, on_error="skip")
    rng = random.Random(hash(mode + overflow) % 1000)
    for k in sorted(rng.sample(range(1, 16), 3)) + [0]:
        a = DataGenerator(data, tokenizer, **kwargs)
        for _ in range(k):
            next(a)
        saved = json.loads(json.dumps(a.state_dict()))
        continued = [next(a) for _ in range(20)]
        b = DataGenerator(data, tokenizer, **{**kwargs, "prefetch": 0})
        b.load_state_dict(saved)
        assert b.skipped == saved["packer"]["skipped"]
        for j in range(20):
            assert_same(next(b), continued[j], f"{mode}/{overflow} k={k} batch {j}")
        assert (a.epoch, a.progress, a.last_step, a.skipped, a.stats) == (
            b.epoch, b.progress, b.last_step, b.skipped, b.stats)
        a.close()


def test_state_dict_rejects_a_different_configuration(tokenizer):
    a = DataGenerator(DATASET, tokenizer, batch_size=2, seq_len=32)
    next(a)
    b = DataGenerator(DATASET, tokenizer, batch_size=3, seq_len=32)
    with pytest.raises(ValueError, match="batch_size"):
        b.load_state_dict(a.state_dict())
    with pytest.raises(ValueError):
        b.load_state_dict({"format": "something else"})
    a.close()


class FailingDataset:
    def __init__(self, data, fail_at):
        self.data, self.fail_at = data, fail_at

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        if i == self.fail_at:
            raise RuntimeError(f"cannot read {i}")
        return self.data[i]


def test_background_exception_surfaces_at_next(tokenizer):
    # Reads run ahead in chunks, so the failing read is far from the start.
    gen = DataGenerator(FailingDataset(make_dataset(300, seed=2), 250), tokenizer, batch_size=1,
                        seq_len=16, mode="stream", prefetch=3)
    produced = 0
    with pytest.raises(RuntimeError, match="cannot read 250"):
        for _ in range(100_000):
            next(gen)
            produced += 1
    assert produced > 0
    with pytest.raises(RuntimeError, match="cannot read 250"):
        next(gen)


class CountingDataset:
    def __init__(self, data):
        self.data, self.reads = data, 0

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        self.reads += 1
        return self.data[i]


@pytest.mark.parametrize("mode", ["padded", "stream", "bestfit", "varlen"])
def test_prefetch_reads_ahead_without_a_thread_and_changes_no_batch(tokenizer, mode):
    data = make_dataset(400, seed=5)
    kwargs = dict(batch_size=8, seq_len=32, mode=mode, buffer_size=4)
    threads_before = threading.active_count()
    gens, reads = {}, {}
    for prefetch in (0, 2, 8):
        counting = CountingDataset(data)
        gens[prefetch] = DataGenerator(counting, tokenizer, prefetch=prefetch, **kwargs)
        next(gens[prefetch])
        reads[prefetch] = counting.reads
        # Rendering runs on Rust threads; no Python thread is started.
        assert threading.active_count() == threads_before
    # Deeper prefetch, more conversations read (and rendering) ahead.
    assert reads[0] < reads[2] < reads[8] <= len(data)
    for k in range(30):
        want = next(gens[0])
        for prefetch in (2, 8):
            assert_same(next(gens[prefetch]), want, f"prefetch={prefetch}, batch {k + 1}")


def test_close_drops_the_read_ahead_and_iteration_continues(tokenizer):
    kwargs = dict(batch_size=2, seq_len=32, mode="bestfit", buffer_size=4)
    want = DataGenerator(DATASET, tokenizer, prefetch=0, **kwargs)
    gen = DataGenerator(DATASET, tokenizer, prefetch=2, **kwargs)
    for k in range(12):
        assert_same(next(gen), next(want), f"batch {k}")
        if k % 5 == 2:
            assert gen._producer.packer.in_flight() > 0
            gen.close()
            assert gen._producer.packer.in_flight() == 0
            assert gen.stats["batches"] == k + 1
    gen.close()
    gen.close()  # closing twice is fine


def test_no_hang_at_interpreter_exit(cl100k_path):
    code = textwrap.dedent(f"""
        import convpack
        from convpack.datagen import DataGenerator
        tok = convpack.Tokenizer.from_tiktoken_file({cl100k_path!r}, pattern=convpack.SPLIT_PATTERN,
                                              special_tokens=convpack.CHAT_SPECIAL_TOKENS)
        data = [{{"messages": [{{"role": "user", "content": "hi"}},
                               {{"role": "assistant", "content": "hello " * i}}]}} for i in range(50)]
        gen = DataGenerator(data, tok, batch_size=2, seq_len=32, prefetch=4)
        next(gen)
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize("mode", ["padded", "stream", "bestfit", "varlen"])
def test_bad_conversation_raises_with_its_dataset_index(tokenizer, mode):
    data = make_dataset(30, seed=1, bad=(9,))
    gen = DataGenerator(data, tokenizer, batch_size=2, seq_len=32, mode=mode, buffer_size=4)
    with pytest.raises(ConversationError) as info:
        for _ in range(200):
            next(gen)
    assert info.value.conversation_index == 9
    assert info.value.message_index == 1
    gen.close()


@pytest.mark.parametrize("mode,overflow", MODES)
def test_skip_drops_only_the_bad_ones(tokenizer, reference_render, mode, overflow):
    bad = (5, 11)
    data = make_dataset(40, seed=11, bad=bad)
    render = ref.ReferenceRender(reference_render.enc)
    gen = DataGenerator(data, tokenizer, batch_size=2, seq_len=32, mode=mode, overflow=overflow,
                        buffer_size=4, on_error="skip", prefetch=1)
    want = reference(mode, overflow, data, render, 2, 32, 0, 1, 4, max_seqs=gen.max_seqs, skip=True)
    for k in range(30):
        batch, _ = next(want)
        assert_same(next(gen), batch, f"{mode} batch {k}")
        if gen.last_step:
            break
    assert gen.skipped >= 1
    if mode == "padded":
        while not gen.last_step:
            next(gen)
        assert gen.skipped == len(bad)
    gen.close()


def test_progress_epoch_and_num_iterations(tokenizer):
    gen = DataGenerator(DATASET, tokenizer, batch_size=4, mode="padded", prefetch=0)
    seen = []
    while not gen.last_step:
        next(gen)
        seen.append(gen.progress)
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert len(seen) == -(-len(DATASET) // 4)
    assert gen.epoch == 1
    next(gen)
    assert gen.epoch == 2 and gen.last_step
    gen = DataGenerator(DATASET, tokenizer, batch_size=1, seq_len=8, mode="stream",
                        num_iterations=3, prefetch=0)
    flags = [(next(gen), gen.last_step, gen.progress)[1:] for _ in range(3)]
    assert flags == [(False, 1 / 3), (False, 2 / 3), (True, 1.0)]
    assert 0.0 <= gen.stats["pad"] <= 1.0 and gen.stats["supervised"] == 1.0


def test_distributed_resolution(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert resolve_distributed() == (0, 1)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert resolve_distributed() == (2, 4)
    assert resolve_distributed(1, None) == (1, 4)
    assert resolve_distributed(0, 1) == (0, 1)
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK"):
        resolve_distributed()
    with pytest.raises(ValueError):
        resolve_distributed(3, 3)


def test_ranks_are_disjoint_and_cover_an_epoch(tokenizer):
    # padded rows hold one conversation each: the row's first input after BOS
    # identifies nothing, so compare full rows against each conversation's render.
    world = 3
    rows = []
    for rank in range(world):
        gen = DataGenerator(DATASET, tokenizer, batch_size=1, mode="padded", rank=rank,
                            world_size=world, prefetch=0)
        while not gen.last_step:
            inputs, _ = next(gen)
            rows.append(tuple(inputs[0].tolist()))
    expected = []
    for conv in DATASET:
        ids, _ = tokenizer.render_conversation(conv)
        expected.append(tuple(ids[:-1]))
    assert sorted(rows) == sorted(expected)


class FakeEvent:
    """A copy 'in flight' until synchronize(): it checks that the source was
    not overwritten meanwhile, which is what reusing a slot early would do."""

    def __init__(self, sources):
        self.sources = sources
        self.snapshot = [s.clone() for s in sources]
        self.done = False

    def synchronize(self):
        for s, snap in zip(self.sources, self.snapshot):
            assert torch.equal(s, snap), "a pinned slot was overwritten before its copy finished"
        self.done = True


class FakeTransfer:
    pin_memory = False

    def __init__(self, device):
        self.device = device
        self.events = []

    def send(self, tensors):
        event = FakeEvent(list(tensors))
        self.events.append(event)
        return tuple(t.clone() for t in tensors), event


@pytest.mark.parametrize("mode", ["padded", "bestfit", "varlen"])
def test_pinned_ring_path_with_a_fake_device(tokenizer, monkeypatch, mode):
    transfers = []

    def make(device):
        transfers.append(FakeTransfer(device))
        return transfers[-1]

    monkeypatch.setattr(datagen, "_make_transfer", make)
    kwargs = dict(batch_size=2, seq_len=24, mode=mode, prefetch=2)
    fake = DataGenerator(DATASET, tokenizer, device="cuda", **kwargs)
    cpu = DataGenerator(DATASET, tokenizer, device="cpu", **kwargs)
    ring = fake._producer.ring
    assert ring is not None and len(ring.slots) == 4
    original_acquire = ring.acquire
    last_event = {}

    def acquire(stop=None):
        i = original_acquire(stop)
        if i >= 0 and i in last_event:
            assert last_event[i].done, "slot reused before its copy completed"
        return i

    original_release = ring.release

    def release(i, event=None):
        if event is not None:
            last_event[i] = event
        original_release(i, event)

    ring.acquire = acquire
    ring.release = release
    for k in range(25):
        got = next(fake)
        assert_same(got, next(cpu), f"batch {k}")
    assert sum(e.done for e in transfers[0].events) >= 25 - len(ring.slots)
    fake.close()
    cpu.close()


def test_pinned_ring_blocks_until_release():
    ring = PinnedRing(1, lambda: [torch.zeros(4)])
    assert ring.acquire() == 0
    got = []
    t = threading.Thread(target=lambda: got.append(ring.acquire()))
    t.start()
    t.join(timeout=0.3)
    assert got == [], "acquired a slot that was not released"
    event = FakeEvent([ring.slots[0][0]])
    ring.release(0, event)
    t.join(timeout=30)
    assert got == [0] and event.done
    stop = threading.Event()
    stop.set()
    assert ring.acquire(stop) == -1


def test_invalid_arguments(tokenizer):
    for bad in (dict(mode="nope"), dict(overflow="wrap"), dict(on_error="ignore"), dict(batch_size=0),
                dict(seq_len=None), dict(prefetch=-1), dict(rank=3, world_size=2)):
        kwargs = {"batch_size": 2, "seq_len": 16, **bad}
        with pytest.raises(ValueError):
            DataGenerator(DATASET, tokenizer, **kwargs)
    with pytest.raises(ValueError):
        DataGenerator(DATASET[:2], tokenizer, batch_size=1, seq_len=8, rank=2, world_size=3)
    with pytest.raises(TypeError):
        DataGenerator(DATASET, object(), batch_size=1, seq_len=8)


def test_nanochat_shaped_training_loop_learns():
    torch.manual_seed(0)
    data = make_dataset(6, seed=5) * 30
    # A small trained vocabulary keeps the model tiny.
    tokenizer = Tokenizer.train_from_iterator(
        [m["content"] for c in data[:6] for m in c["messages"] if isinstance(m["content"], str)], 320)
    vocab = tokenizer.get_vocab_size()
    model = torch.nn.Sequential(torch.nn.Embedding(vocab, 16), torch.nn.Linear(16, vocab))
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    loader = DataGenerator(data, tokenizer, batch_size=4, seq_len=48, mode="bestfit",
                           num_iterations=25, prefetch=2)
    x, y = next(loader)
    losses = []
    while True:
        if loader.last_step:
            break
        loss = torch.nn.functional.cross_entropy(model(x.long()).view(-1, vocab), y.view(-1),
                                                 ignore_index=-1)
        loss.backward()
        x, y = next(loader)
        lrm = 1.0 - 0.5 * loader.progress
        for group in opt.param_groups:
            group["lr"] = 3e-2 * lrm
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert len(losses) == 24
    assert sum(losses[-4:]) / 4 < 0.7 * sum(losses[:4]) / 4
    loader.close()


# ---------------------------------------------------------------- torch optional


def test_numpy_output_needs_no_torch(cl100k_path, tokenizer, reference_render, tmp_path):
    """In a process where ``import torch`` fails: convpack.datagen imports,
    output="numpy" yields the reference's batches as numpy arrays, and
    output="torch" raises an ImportError that says what to install."""
    data_path = tmp_path / "data.json"
    data_path.write_text(json.dumps(DATASET))
    out_path = tmp_path / "batches.npz"
    code = textwrap.dedent(f"""
        import json, sys
        sys.modules["torch"] = None  # any import of torch now raises ImportError
        import numpy as np
        import convpack
        from convpack.datagen import DataGenerator
        tok = convpack.Tokenizer.from_tiktoken_file(
            {cl100k_path!r}, pattern=convpack.SPLIT_PATTERN,
            special_tokens=convpack.CHAT_SPECIAL_TOKENS)
        data = json.load(open({str(data_path)!r}))
        arrays = {{}}
        for mode, overflow in [("padded", "pad"), ("stream", "pad"), ("bestfit", "crop"),
                               ("varlen", "pad")]:
            gen = DataGenerator(data, tok, batch_size=3, seq_len=40, mode=mode,
                                overflow=overflow, buffer_size=8, output="numpy", prefetch=1)
            for k in range(6):
                for j, a in enumerate(next(gen)):
                    assert isinstance(a, np.ndarray), type(a)
                    arrays[f"{{mode}}_{{overflow}}_{{k}}_{{j}}"] = a
            gen.close()
        np.savez({str(out_path)!r}, **arrays)
        try:
            DataGenerator(data, tok, batch_size=2, seq_len=16)
        except ImportError as e:
            assert "pip install torch" in str(e), e
            print("import error ok")
        assert sys.modules["torch"] is None
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "import error ok"
    import numpy as np

    got = np.load(out_path)
    for mode, overflow in [("padded", "pad"), ("stream", "pad"), ("bestfit", "crop"), ("varlen", "pad")]:
        max_seqs = 3 * max(4, 40 // 16) if mode == "varlen" else None
        want = reference(mode, overflow, DATASET, reference_render, 3, 40, 0, 1, 8, max_seqs=max_seqs)
        for k in range(6):
            batch, _ = next(want)
            mine = tuple(torch.from_numpy(got[f"{mode}_{overflow}_{k}_{j}"]) for j in range(len(batch)))
            assert_same(mine, batch, f"numpy {mode}/{overflow} batch {k}")


def test_devices_work_through_torch_or_raise(tokenizer):
    gen = DataGenerator(DATASET, tokenizer, batch_size=2, seq_len=16, device="meta", prefetch=0)
    inputs, targets = next(gen)
    assert inputs.device.type == "meta" and targets.device.type == "meta"
    assert (inputs.dtype, targets.dtype, tuple(inputs.shape)) == (torch.int32, torch.int64, (2, 16))
    for name in ("mps", "xpu", "nonsense"):
        with pytest.raises(ValueError, match=name):
            DataGenerator(DATASET, tokenizer, batch_size=2, seq_len=16, device=name)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            DataGenerator(DATASET, tokenizer, batch_size=2, seq_len=16, device="cuda")
    with pytest.raises(ValueError, match="device"):
        DataGenerator(DATASET, tokenizer, batch_size=2, seq_len=16, device="cuda", output="numpy")
    with pytest.raises(ValueError, match="output"):
        DataGenerator(DATASET, tokenizer, batch_size=2, seq_len=16, output="jax")


# ---------------------------------------------------------------- hardening


def test_oversized_arguments_raise_before_allocating(cl100k_path):
    # In a child under a 4 GiB address-space limit: an allocation attempt
    # would abort it instead of raising.
    code = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
        import convpack
        from convpack.datagen import DataGenerator
        tok = convpack.Tokenizer.from_tiktoken_file(
            {cl100k_path!r}, pattern=convpack.SPLIT_PATTERN,
            special_tokens=convpack.CHAT_SPECIAL_TOKENS)
        data = [{{"messages": [{{"role": "user", "content": "hi"}},
                               {{"role": "assistant", "content": "hello there"}}]}}] * 50
        cases = [
            (dict(seq_len=2**40), ValueError, "seq_len"),
            (dict(batch_size=10**9), ValueError, "batch_size"),
            (dict(buffer_size=10**7), ValueError, "buffer_size"),
            (dict(batch_size=2**16, seq_len=2**16, mode="varlen"), ValueError, "batch_size"),
            (dict(batch_size=2**16, seq_len=2**16, mode="stream"), ValueError, "batch_size"),
            (dict(batch_size=2**15, seq_len=2**16, mode="padded", max_tokens=2**17), ValueError,
             "batch_size"),
            (dict(batch_size=2**14, seq_len=2**16, prefetch=8), (ValueError, MemoryError),
             "batch_size"),
            (dict(max_tokens=2**64), ValueError, "max_tokens"),
            (dict(rank=1.5, world_size=2), TypeError, "rank"),
            (dict(num_iterations=2.5), TypeError, "num_iterations"),
            (dict(batch_size=True), TypeError, "batch_size"),
            (dict(prefetch=10**6), ValueError, "prefetch"),
        ]
        for extra, kind, name in cases:
            kwargs = {{"batch_size": 2, "seq_len": 16, "prefetch": 0, **extra}}
            try:
                next(DataGenerator(data, tok, **kwargs))
            except kind as e:
                assert name in str(e), (extra, e)
            else:
                raise AssertionError(f"{{extra}} was accepted")
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "ok"


def test_batches_larger_than_memory_raise_memory_error(tokenizer, monkeypatch):
    monkeypatch.setattr(datagen, "_physical_memory", lambda: 1 << 30)
    with pytest.raises(MemoryError, match="batch_size=4096"):
        DataGenerator(DATASET, tokenizer, batch_size=4096, seq_len=8192)
    with pytest.raises(MemoryError, match="buffer_size"):
        DataGenerator(DATASET, tokenizer, batch_size=1, seq_len=8192, buffer_size=2**20,
                      max_tokens=8192)
    DataGenerator(DATASET, tokenizer, batch_size=8, seq_len=1024).close()


def test_crop_with_a_mode_other_than_bestfit_is_an_error(tokenizer):
    for mode in ("padded", "stream", "varlen"):
        with pytest.raises(ValueError, match="crop"):
            DataGenerator(DATASET, tokenizer, batch_size=2, seq_len=16, mode=mode, overflow="crop")


@pytest.mark.parametrize("prefetch", [0, 2])
def test_two_threads_share_one_generator(tokenizer, prefetch):
    kwargs = dict(batch_size=2, seq_len=24, mode="bestfit", buffer_size=4)
    serial = DataGenerator(DATASET, tokenizer, prefetch=0, **kwargs)
    want = sorted(tuple(next(serial)[0].reshape(-1).tolist()) for _ in range(60))
    shared = DataGenerator(DATASET, tokenizer, prefetch=prefetch, **kwargs)
    got, errors = [], []
    start = threading.Barrier(2)

    def consume():
        start.wait()
        try:
            for _ in range(30):
                got.append(tuple(next(shared)[0].reshape(-1).tolist()))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=consume) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert sorted(got) == want
    assert shared.stats["batches"] == 60
    shared.close()


def test_conversations_without_supervised_tokens_are_counted_and_warned_once(tokenizer):
    prompts = [{"messages": [{"role": "user", "content": f"question {i}"}]} for i in range(6)]
    data = DATASET[:6] + prompts
    gen = DataGenerator(data, tokenizer, batch_size=2, seq_len=32, mode="padded", prefetch=0)
    with pytest.warns(NoSupervisedTokensWarning, match="no supervised target") as record:
        while not gen.last_step:
            next(gen)
        next(gen)
    assert len([w for w in record if w.category is NoSupervisedTokensWarning]) == 1
    # One epoch, then a batch of the next epoch's first (supervised) two.
    assert gen.stats["unsupervised"] == 6
    # Every batch holds a supervised conversation: counted, no warning.
    mixed = [c for pair in zip(DATASET[:6], prompts) for c in pair]
    gen = DataGenerator(mixed, tokenizer, batch_size=2, mode="padded", prefetch=0)
    while not gen.last_step:
        next(gen)
    assert gen.stats["unsupervised"] == 6
    for mode in ("bestfit", "varlen"):
        gen = DataGenerator(prompts, tokenizer, batch_size=1, seq_len=32, mode=mode, prefetch=0)
        with pytest.warns(NoSupervisedTokensWarning):
            _, targets = next(gen)[:2]
        assert bool((targets == -1).all()) and gen.stats["unsupervised"] >= 1


# ---------------------------------------------------------------- load_state_dict


def _saved(tokenizer, mode="bestfit", overflow="pad", batches=5, **extra):
    kwargs = dict(batch_size=2, seq_len=40, mode=mode, overflow=overflow, buffer_size=6,
                  prefetch=0, **extra)
    gen = DataGenerator(DATASET, tokenizer, **kwargs)
    for _ in range(batches):
        next(gen)
    return kwargs, json.loads(json.dumps(gen.state_dict())), [next(gen) for _ in range(3)]


def test_load_state_dict_names_the_bad_field(tokenizer):
    kwargs, good, _ = _saved(tokenizer)
    fresh = DataGenerator(DATASET, tokenizer, **kwargs)

    def expect(kind, field, edit):
        state = json.loads(json.dumps(good))
        edit(state)
        with pytest.raises(kind, match=field):
            fresh.load_state_dict(state)

    expect(ValueError, "consumed", lambda s: s["packer"].update(consumed=2**62))
    expect(ValueError, "consumed", lambda s: s["packer"].update(consumed=2**63 - 1))
    expect(ValueError, "batches", lambda s: s["packer"].update(batches=2**64 - 1))
    expect(ValueError, "held", lambda s: s["packer"].update(held=[-1]))
    expect(ValueError, "held", lambda s: s["packer"].update(held=[10**6]))
    expect(ValueError, "held", lambda s: s["packer"].update(held=s["packer"]["held"] * 5))
    expect(ValueError, "next", lambda s: s["packer"].update(next=s["packer"]["next"] + 1))
    expect(ValueError, "tokens", lambda s: s["packer"].update(tokens=7))
    expect(TypeError, "skipped", lambda s: s["packer"].update(skipped=True))
    expect(TypeError, "offset", lambda s: s["packer"].update(offset=0.0))
    expect(ValueError, "supervised", lambda s: s["packer"].pop("supervised"))
    expect(ValueError, "surprise", lambda s: s["packer"].update(surprise=1))
    expect(ValueError, "packer", lambda s: s.pop("packer"))
    expect(ValueError, "mode", lambda s: s.update(mode="stream"))
    expect(ValueError, "seq_len", lambda s: s.pop("seq_len"))
    with pytest.raises(TypeError):
        fresh.load_state_dict([("format", "convpack.DataGenerator")])
    # Another mode's state, loaded into this one.
    _, stream_state, _ = _saved(tokenizer, mode="stream")
    stream_state["mode"] = "bestfit"
    stream_state["overflow"], stream_state["buffer_size"] = "pad", 6
    with pytest.raises(ValueError):
        fresh.load_state_dict(stream_state)
    # Nothing was changed by the refused states: the good one still resumes exactly.
    fresh.load_state_dict(good)


_FUZZ_VALUES = st.one_of(
    st.integers(-(2**70), 2**70), st.integers(0, 60), st.booleans(), st.none(),
    st.floats(allow_nan=True), st.text(max_size=3),
    st.lists(st.integers(-3, 2**40), max_size=8), st.lists(st.integers(0, 40), max_size=8),
)


@pytest.mark.parametrize("mode,overflow", MODES)
def test_load_state_dict_fuzz(tokenizer, mode, overflow):
    kwargs, good, continued = _saved(tokenizer, mode, overflow, batches=4)
    top = [k for k in good if k != "packer"]
    inner = list(good["packer"])
    batch_fields = ("next", "consumed", "held", "offset")

    @settings(max_examples=60, deadline=None, derandomize=True)
    @given(edits=st.lists(st.tuples(st.sampled_from(top + inner + ["-" + k for k in inner]),
                                    _FUZZ_VALUES), min_size=1, max_size=3))
    def check(edits):
        state = json.loads(json.dumps(good))
        for key, value in edits:
            target = state if key in top else state["packer"]
            if key.startswith("-"):
                target.pop(key[1:], None)
            else:
                target[key] = value
        gen = DataGenerator(DATASET, tokenizer, **kwargs)
        try:
            gen.load_state_dict(state)
            batches = [next(gen) for _ in range(3)]
        except (ValueError, TypeError):
            return
        same_point = all(state["packer"].get(k) == good["packer"][k] for k in batch_fields)
        for got, want in zip(batches, continued):
            if same_point:
                assert_same(got, want, f"accepted {edits}")
            else:  # another valid point: batches of the same kind
                assert [(g.dtype, g.shape[0]) for g in got] == [(w.dtype, w.shape[0]) for w in want]
                assert bool((got[1] >= -1).all())

    check()


# ---------------------------------------------------------------- truncate="turns"


def make_long_conversation(rng: random.Random, giant: bool = False) -> dict:
    conv = make_conversation(rng)
    messages = conv["messages"]
    for _ in range(rng.randint(2, 9)):
        messages.append({"role": "user", "content": " ".join(rng.choice(WORDS) for _ in range(8))})
        messages.append({"role": "assistant",
                         "content": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 40)))})
    if giant:
        messages.insert(len(messages) - 2, {"role": "user", "content": "tell me everything"})
        messages.insert(len(messages) - 2, {"role": "assistant", "content": " ".join(WORDS * 12)})
    if rng.random() < 0.3:
        messages.pop()  # ends with a user message
    return conv


@pytest.mark.parametrize("seq_len", [63, 150])
def test_turns_pieces_match_the_reference_and_keep_every_supervised_token(
        tokenizer, reference_render, seq_len):
    rng = random.Random(seq_len)
    data = [make_long_conversation(rng, giant=i == 3) for i in range(14)]
    limit = seq_len + 1
    expected, cuts, dropped = [], 0, 0
    for conv in data:
        pieces, c, d = ref.split_turns(conv, reference_render, limit)
        expected += pieces
        cuts, dropped = cuts + c, dropped + d
        original, mask = reference_render.render(conv, 10**12)
        kept = [t for ids, m in pieces for t, k in zip(ids, m) if k]
        if not c:  # every supervised token of the original, once, in order
            assert kept == [t for t, k in zip(original, mask) if k]
    assert cuts >= 1 and dropped > 0
    # padded rows hold one piece each, in order: compare row by row.
    gen = DataGenerator(data, tokenizer, batch_size=1, seq_len=seq_len, mode="padded",
                        truncate="turns", prefetch=0)
    for k, (ids, mask) in enumerate(expected):
        inputs, targets = next(gen)
        n = len(ids)
        assert inputs.shape == (1, n - 1), k
        assert inputs[0].tolist() == ids[:-1], f"piece {k}"
        assert targets[0].tolist() == [t if m else -1 for t, m in zip(ids[1:], mask[1:])], k
    assert gen.last_step
    split = sum(len(ref.split_turns(c, reference_render, limit)[0]) > 1 for c in data)
    assert (gen.stats["split"], gen.stats["exchanges_cut"], gen.stats["supervised_dropped"]) == (
        split, cuts, dropped)


@pytest.mark.parametrize("mode", ["bestfit", "varlen", "stream"])
def test_turns_every_supervised_target_once_per_epoch(tokenizer, reference_render, mode):
    rng = random.Random(5)
    data = [make_long_conversation(rng) for _ in range(12)]
    seq_len = 80
    # Rows cut bestfit's pieces; max_tokens the others'.
    max_tokens = 2048 if mode == "bestfit" else 96
    limit = min(max_tokens, seq_len + 1) if mode == "bestfit" else max_tokens
    want = []
    for conv in data:
        for ids, mask in ref.split_turns(conv, reference_render, limit)[0]:
            want += [t for t, m in zip(ids[1:], mask[1:]) if m]
    # A best-fit buffer of one keeps the pieces in order (each fits a row).
    gen = DataGenerator(data, tokenizer, batch_size=2, seq_len=seq_len, mode=mode,
                        truncate="turns", buffer_size=1, max_tokens=max_tokens, prefetch=1)
    got = []
    while not gen.last_step:
        got += [t for t in next(gen)[1].reshape(-1).tolist() if t != -1]
    gen.close()
    if mode != "stream":  # stream ignores the mask: every token is a target
        # The epoch's last batch may go on with the next epoch's first ones.
        assert got[: len(want)] == want
    # Counted as conversations enter; the next epoch's first may be in already.
    split = sum(len(ref.split_turns(c, reference_render, limit)[0]) > 1 for c in data)
    assert split > 0 and gen.stats["split"] - split in (0, 1)


@pytest.mark.parametrize("mode", ["padded", "bestfit", "varlen", "stream"])
def test_turns_resume_is_exact(tokenizer, mode):
    rng = random.Random(9)
    data = [make_long_conversation(rng, giant=i == 2) for i in range(15)]
    kwargs = dict(batch_size=2, seq_len=48, mode=mode, truncate="turns", buffer_size=4,
                  rank=1, world_size=2, prefetch=0)
    for k in (1, 3, 7, 12):
        a = DataGenerator(data, tokenizer, **kwargs)
        for _ in range(k):
            next(a)
        saved = json.loads(json.dumps(a.state_dict()))
        continued = [next(a) for _ in range(12)]
        b = DataGenerator(data, tokenizer, **kwargs)
        b.load_state_dict(saved)
        for j in range(12):
            assert_same(next(b), continued[j], f"{mode} k={k} batch {j}")
        assert a.stats == b.stats and a.progress == b.progress
    tail = DataGenerator(data, tokenizer, **{**kwargs, "truncate": "tail"})
    with pytest.raises(ValueError, match="truncate"):
        tail.load_state_dict(saved)


# ---------------------------------------------------------------- render cache


@pytest.mark.parametrize("mode,overflow", MODES)
@pytest.mark.parametrize("truncate", ["tail", "turns"])
def test_cache_gives_identical_batches_and_skips_reads(tokenizer, mode, overflow, truncate):
    data = make_dataset(30, seed=21, bad=(6,)) + [make_long_conversation(random.Random(i))
                                                   for i in range(6)]
    kwargs = dict(batch_size=2, seq_len=56, mode=mode, overflow=overflow, buffer_size=5,
                  truncate=truncate, on_error="skip", prefetch=0)
    plain = DataGenerator(data, tokenizer, **kwargs)
    counting = CountingDataset(data)
    cached = DataGenerator(counting, tokenizer, cache=True, **kwargs)
    for k in range(200):
        assert_same(next(cached), next(plain), f"{mode} {truncate} batch {k}")
        if cached.epoch == 2 and "reads" not in locals():
            reads = counting.reads
        if cached.epoch == 4:
            break
    assert cached.epoch == 4
    # After the first epoch only the bad conversation (never cached) is read.
    assert counting.reads - reads <= 3 * 2
    stats = cached.stats["cache"]
    assert stats["conversations"] == len(data) - 1 and stats["hits"] > 0 and not stats["full"]
    assert {k: v for k, v in cached.stats.items() if k != "cache"} == plain.stats


@pytest.mark.parametrize("mode", ["stream", "bestfit", "varlen"])
def test_cache_resume_is_exact_and_a_full_cache_changes_nothing(tokenizer, mode):
    data = make_dataset(40, seed=4)
    kwargs = dict(batch_size=2, seq_len=40, mode=mode, buffer_size=6, prefetch=0)
    a = DataGenerator(data, tokenizer, cache=True, **kwargs)
    for _ in range(25):
        next(a)
    saved = json.loads(json.dumps(a.state_dict()))
    continued = [next(a) for _ in range(25)]
    for cache, cache_bytes in ((False, 2**31), (True, 2**31), (True, 1000)):
        b = DataGenerator(data, tokenizer, cache=cache, cache_bytes=cache_bytes, **kwargs)
        b.load_state_dict(saved)
        for j in range(25):
            assert_same(next(b), continued[j], f"{mode} cache={cache} {cache_bytes} batch {j}")
        if cache:
            assert b.stats["cache"]["bytes"] <= cache_bytes
            assert b.stats["cache"]["full"] == (cache_bytes == 1000)


def test_help_documents_attributes_dtypes_and_the_epoch_end():
    doc = DataGenerator.__doc__
    for attribute in ("last_step", "progress", "epoch", "stats", "skipped"):
        assert f"{attribute} (" in doc, attribute
    assert "num_iterations=-1" in doc and "after one epoch" in doc
    padded_row = next(line for line in doc.splitlines() if line.strip().startswith("padded "))
    assert "int64" in padded_row
    for mode in ("stream", "bestfit", "varlen"):
        row = next(line for line in doc.splitlines() if line.strip().startswith(mode + " "))
        assert "int32" in row, mode


@pytest.mark.parametrize("prefetch", [0, 2])
def test_a_forked_child_goes_on_with_chunks_read_ahead(cl100k_path, prefetch):
    # The parent's generator has chunks rendering, or waiting for their turn
    # to render, on threads the child does not have: the child renders those
    # itself, and the chunks it reads ahead take turns of their own (turns
    # left from the parent would never end there). Long conversations keep
    # the parent's chunks rendering when the fork comes, and the child goes
    # on long enough to need chunks it read ahead itself.
    code = textwrap.dedent(f"""
        import os, sys, time
        import convpack
        from convpack.datagen import DataGenerator
        tok = convpack.Tokenizer.from_tiktoken_file(
            {cl100k_path!r}, pattern=convpack.SPLIT_PATTERN,
            special_tokens=convpack.CHAT_SPECIAL_TOKENS)
        data = [{{"messages": [{{"role": "user", "content": "hi " * (i % 7)}},
                               {{"role": "assistant",
                                 "content": "hello there " * (1000 * (i % 5 + 1))}}]}}
                for i in range(400)]
        kwargs = dict(batch_size=2, seq_len=256, num_threads=1, prefetch={prefetch},
                      output="numpy")
        twin = DataGenerator(data, tok, **kwargs)
        want = [next(twin) for _ in range(61)][1:]
        gen = DataGenerator(data, tok, **kwargs)
        next(gen)
        pid = os.fork()
        if pid == 0:
            if gen._producer.packer.in_flight() == 0:
                os._exit(4)
            got = [next(gen) for _ in range(60)]
            same = all((a == b).all() for g, w in zip(got, want) for a, b in zip(g, w))
            os._exit(0 if same else 3)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                print(os.waitstatus_to_exitcode(status))
                break
            time.sleep(0.05)
        else:
            os.kill(pid, 9)
            print("the child hung")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"

"""DataGenerator against the independent reference generators
(tests/reference_generators.py, rendering over tiktoken): every mode, world
sizes 1-3, several shapes; resume, prefetch, errors, devices and a
nanochat-shaped training loop."""

from __future__ import annotations

import gc
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
from convpack.datagen import DataGenerator, PinnedRing, resolve_distributed

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


def test_close_and_garbage_collection_stop_the_thread(tokenizer):
    gen = DataGenerator(DATASET, tokenizer, batch_size=2, seq_len=32, prefetch=2)
    next(gen)
    thread = gen._thread
    assert thread is not None and thread.is_alive()
    gen.close()
    assert not thread.is_alive()
    next(gen)  # iterating again restarts it
    thread = gen._thread
    assert thread.is_alive()
    del gen
    gc.collect()
    thread.join(timeout=30)
    assert not thread.is_alive()


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

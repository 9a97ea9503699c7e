"""render_conversation against an independent reference (tiktoken for BPE,
the SPEC table for structure), validation of bad conversations, and batch
rendering."""

from __future__ import annotations

import copy
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from corpus import CODE, EMOJI, MULTILINGUAL, PROSE
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_render import ReferenceRenderer

from convpack import ConversationError


def _text(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.08:
        return ""
    if r < 0.12:
        return rng.choice(PROSE) * rng.randint(30, 120)  # very long
    pool = rng.choice([PROSE, CODE, MULTILINGUAL, EMOJI])
    return " ".join(rng.choice(pool) for _ in range(rng.randint(1, 3)))


def _assistant(rng: random.Random):
    if rng.random() < 0.5:
        return _text(rng)
    kinds = ["text", "python", "python_output"]
    return [{"type": rng.choice(kinds), "text": _text(rng)} for _ in range(rng.randint(0, 5))]


def make_conversations(n: int, seed: int = 7) -> list:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        messages = []
        if rng.random() < 0.3:
            messages.append({"role": "system", "content": _text(rng)})
        for _ in range(rng.randint(1, 4)):
            messages.append({"role": "user", "content": _text(rng)})
            messages.append({"role": "assistant", "content": _assistant(rng)})
        if rng.random() < 0.1:
            messages.pop()  # ends with a user message
        out.append({"messages": messages, "extra": rng.random()})
    return out


CONVERSATIONS = make_conversations(3000)


@pytest.fixture(scope="module")
def reference(tt_nano):
    return ReferenceRenderer(tt_nano)


def test_generated_conversations_are_varied():
    flat = [m for c in CONVERSATIONS for m in c["messages"]]
    parts = [p for m in flat if isinstance(m["content"], list) for p in m["content"]]
    assert {p["type"] for p in parts} == {"text", "python", "python_output"}
    assert any(c["messages"][0]["role"] == "system" for c in CONVERSATIONS)
    assert any(m["content"] == "" for m in flat)
    assert max(len(m["content"]) for m in flat if isinstance(m["content"], str)) > 3000


@pytest.mark.parametrize("max_tokens", [1, 7, 64, 2048, 1_000_000])
def test_render_matches_reference(tokenizer, reference, max_tokens):
    snapshot = copy.deepcopy(CONVERSATIONS)
    for i, conv in enumerate(CONVERSATIONS):
        ids, mask = tokenizer.render_conversation(conv, max_tokens=max_tokens)
        assert (ids, mask) == reference.render(conv, max_tokens), f"conversation {i}"
    assert CONVERSATIONS == snapshot  # the caller's dicts are never mutated


def test_default_max_tokens_is_2048(tokenizer, reference):
    long = {"messages": [{"role": "user", "content": "word " * 5000}, {"role": "assistant", "content": "ok"}]}
    ids, mask = tokenizer.render_conversation(long)
    assert len(ids) == 2048 and (ids, mask) == reference.render(long)


def test_render_for_completion_matches_reference(tokenizer, reference):
    count = 0
    for conv in CONVERSATIONS:
        if conv["messages"][-1]["role"] != "assistant":
            with pytest.raises(ConversationError, match="last message must be from the assistant"):
                tokenizer.render_for_completion(conv)
            continue
        assert tokenizer.render_for_completion(conv) == reference.render_for_completion(conv)
        count += 1
    assert count > 2000


@pytest.mark.parametrize("num_threads", [1, 2, None])
def test_batch_render_equals_one_by_one(tokenizer, num_threads):
    ids, mask, offsets = tokenizer.render_conversations(CONVERSATIONS[:800], max_tokens=300, num_threads=num_threads)
    assert ids.dtype == np.uint32 and mask.dtype == np.uint8 and offsets.dtype == np.int64
    assert len(offsets) == 801 and offsets[0] == 0 and offsets[-1] == len(ids) == len(mask)
    for i, conv in enumerate(CONVERSATIONS[:800]):
        want_ids, want_mask = tokenizer.render_conversation(conv, max_tokens=300)
        a, b = offsets[i], offsets[i + 1]
        assert ids[a:b].tolist() == want_ids
        assert mask[a:b].tolist() == want_mask


def _m(role, content):
    return {"role": role, "content": content}


U, A = _m("user", "hi"), _m("assistant", "hello")

# (conversation, message_index or None, fragment of the reason)
INVALID = [
    ({}, None, "no 'messages'"),
    ({"msgs": [U, A]}, None, "no 'messages'"),
    ({"messages": []}, None, "no messages"),
    ({"messages": "hi"}, None, "must be a list"),
    ([U, A], None, "must be a dict"),
    ("hello", None, "must be a dict"),
    ({"messages": [A]}, 0, "expected role 'user', got 'assistant'"),
    ({"messages": [U, U]}, 1, "expected role 'assistant', got 'user'"),
    ({"messages": [U, A, A]}, 2, "expected role 'user', got 'assistant'"),
    ({"messages": [_m("system", "s")]}, 0, "followed by a user message"),
    ({"messages": [_m("system", "s"), A]}, 1, "followed by a user message"),
    ({"messages": [U, A, _m("system", "s"), U]}, 2, "only allowed as the first"),
    ({"messages": [U, _m("tool", "x")]}, 1, "unknown role 'tool'"),
    ({"messages": [U, {"content": "x"}]}, 1, "no 'role'"),
    ({"messages": [U, {"role": "assistant"}]}, 1, "no 'content'"),
    ({"messages": [{"role": 3, "content": "x"}]}, 0, "'role' must be a string"),
    ({"messages": [_m("user", ["a"]), A]}, 0, "user content must be a string"),
    ({"messages": [_m("user", 5), A]}, 0, "user content must be a string, got int"),
    ({"messages": [_m("user", None), A]}, 0, "got NoneType"),
    ({"messages": [U, _m("assistant", 7)]}, 1, "assistant content must be a string or a list"),
    ({"messages": [U, _m("assistant", [{"type": "image", "text": "x"}])]}, 1, "unknown type 'image'"),
    ({"messages": [U, _m("assistant", [{"text": "x"}])]}, 1, "part 0 has no 'type'"),
    ({"messages": [U, _m("assistant", [{"type": "text"}])]}, 1, "'text' of part 0 is missing"),
    ({"messages": [U, _m("assistant", [{"type": "text", "text": 1}])]}, 1, "'text' of part 0 must be a string"),
    ({"messages": [U, _m("assistant", ["just text"])]}, 1, "part 0 must be a dict"),
    ({"messages": [U, "not a message"]}, 1, "a message must be a dict"),
    ({"messages": [_m("system", 1), U]}, 0, "system content must be a string"),
    ({"messages": [U, _m("assistant", [{"type": "text", "text": "a"}, {"type": "python", "text": None}])]}, 1, "part 1"),
]


def test_invalid_table_is_large():
    assert len(INVALID) >= 20


@pytest.mark.parametrize("conv, message_index, fragment", INVALID)
def test_invalid_conversations_raise(tokenizer, conv, message_index, fragment):
    snapshot = copy.deepcopy(conv)
    with pytest.raises(ConversationError) as info:
        tokenizer.render_conversation(conv)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.message_index == message_index
    assert fragment in err.reason
    if message_index is not None:
        assert f"message {message_index}" in str(err)
    assert conv == snapshot


def test_batch_error_names_the_conversation(tokenizer):
    convs = [CONVERSATIONS[0], CONVERSATIONS[1], {"messages": [U, U]}, CONVERSATIONS[2]]
    with pytest.raises(ConversationError) as info:
        tokenizer.render_conversations(convs)
    assert info.value.conversation_index == 2
    assert info.value.message_index == 1
    assert str(info.value) == "conversation 2, message 1: expected role 'assistant', got 'user'"


def test_validation_holds_under_python_O(cl100k_path):
    script = textwrap.dedent(
        f"""
        import convpack
        assert False, "asserts must be off"
        tok = convpack.Tokenizer.from_tiktoken_file({cl100k_path!r}, pattern=convpack.SPLIT_PATTERN,
                                              special_tokens=convpack.CHAT_SPECIAL_TOKENS)
        bad = {[(c, i) for c, i, _ in INVALID]!r}
        for conv, index in bad:
            try:
                tok.render_conversation(conv)
            except convpack.ConversationError as e:
                assert e.message_index == index
            else:
                raise SystemExit(f"accepted {{conv!r}}")
        print("all refused")
        """
    ).replace('assert False, "asserts must be off"', "")
    out = subprocess.run([sys.executable, "-O", "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "all refused"


def test_lone_surrogates_render_like_tiktoken(tokenizer, reference):
    conv = {"messages": [_m("user", "bad \ud800 text"), _m("assistant", [{"type": "text", "text": "\udfffz"}])]}
    assert tokenizer.render_conversation(conv) == reference.render(conv)


def test_custom_mapping_and_tuple_messages(tokenizer, reference):
    from types import MappingProxyType

    conv = {"messages": (U, A)}
    assert tokenizer.render_conversation(conv) == reference.render({"messages": [U, A]})
    proxied = MappingProxyType({"messages": [MappingProxyType(U), A]})
    assert tokenizer.render_conversation(proxied) == reference.render({"messages": [U, A]})


def test_max_tokens_must_be_positive(tokenizer):
    with pytest.raises(ValueError, match="max_tokens"):
        tokenizer.render_conversation({"messages": [U, A]}, max_tokens=0)


def test_visualize_tokenization(tokenizer, tt_nano):
    conv = {"messages": [U, _m("assistant", [{"type": "python", "text": "1+1"}, {"type": "python_output", "text": "2"}])]}
    ids, mask = tokenizer.render_conversation(conv)
    text = tokenizer.visualize_tokenization(ids, mask, with_token_id=True)
    # every token appears in order, green (92) where trained on, red (91) not,
    # followed by its id in grey
    pos = 0
    for token, m in zip(ids, mask):
        colour = "\033[92m" if m else "\033[91m"
        piece = f"{colour}{tt_nano.decode([token])}\033[0m\033[90m({token})\033[0m"
        at = text.find(piece, pos)
        assert at == pos, (token, text[pos : pos + 40])
        pos = at + len(piece) + 1  # the "|" separator
    assert pos == len(text) + 1
    assert "(" not in tokenizer.visualize_tokenization(ids, mask)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8)
    | st.sampled_from(["user", "assistant", "system", "text", "python", "python_output"]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["role", "content", "type", "text", "messages", "x"]), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(_json, st.builds(lambda m: {"messages": m}, st.lists(_json, max_size=5))))
def test_arbitrary_input_renders_or_raises_conversation_error(tokenizer, reference, obj):
    # Whatever the structure, the result is a rendering identical to the
    # reference or a ConversationError: never a crash or another exception.
    try:
        got = tokenizer.render_conversation(obj, max_tokens=64)
    except ConversationError as e:
        assert e.reason
        return
    assert got == reference.render(obj, 64)


def test_batch_work_releases_the_gil(tokenizer):
    # With a huge switch interval nothing preempts the main thread, so the
    # counting thread (which hands the GIL back after every step) can only
    # count while the batch runs if the batch itself released the GIL.
    import threading
    import time

    convs = CONVERSATIONS * 4
    texts = [m["content"] for c in convs for m in c["messages"] if isinstance(m["content"], str)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(30.0)
    try:
        for work in (
            lambda: tokenizer.render_conversations(convs, num_threads=1),
            lambda: tokenizer.encode(texts, num_threads=1),
        ):
            counter = [0]
            running = threading.Event()
            stop = threading.Event()

            def count(counter=counter, running=running, stop=stop):
                running.set()
                while not stop.is_set():
                    counter[0] += 1
                    time.sleep(0)  # releases the GIL

            t = threading.Thread(target=count)
            t.start()
            running.wait()
            before = counter[0]
            work()
            during = counter[0] - before
            stop.set()
            t.join()
            assert during > 0
    finally:
        sys.setswitchinterval(interval)


def test_conversation_texts_are_the_texts_rendering_encodes():
    from convpack import conversation_texts

    convs = [
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                      {"role": "assistant", "content": [
                          {"type": "text", "text": "a"}, {"type": "python", "text": "1+1"},
                          {"type": "python_output", "text": "2"}]}]},
        {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "b"}]},
    ]
    # Written out by hand from the conversations above.
    assert list(conversation_texts(convs)) == ["s", "u", "a", "1+1", "2", "", "b"]
    with pytest.raises(TypeError, match="conversation 1, message 0"):
        list(conversation_texts([convs[0], {"messages": [{"role": "user", "content": 3}]}]))
    with pytest.raises(TypeError, match="conversation 0: expected"):
        list(conversation_texts([["not a dict"]]))

"""Fuzzing the tokenizer's public calls with arbitrary arguments: each call
either returns what the oracle (tiktoken, or the reference renderer over
tiktoken) returns, or raises a ValueError/TypeError subclass. Nothing else:
no OverflowError, KeyError-only, SystemError, crash or hang."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_render import ReferenceRenderer

CLEAR = (ValueError, TypeError)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

ints = st.one_of(
    st.integers(min_value=-5, max_value=100_300),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63, 2**64, 100_256, 100_264, 100_265]),
)
scalars = st.one_of(ints, st.floats(allow_nan=True), st.booleans(), st.none(), st.text(max_size=20),
                    st.binary(max_size=8))
token_like = st.one_of(st.none(), ints, st.sampled_from(["<|bos|>", "<|user_end|>", "<|nope|>", ""]), scalars)


@pytest.fixture(scope="module")
def reference(tt_nano):
    return ReferenceRenderer(tt_nano)


@FUZZ
@given(
    text=st.one_of(st.text(max_size=60), st.lists(st.text(max_size=30), max_size=5), scalars,
                   st.lists(scalars, max_size=3)),
    prepend=token_like,
    append=token_like,
    num_threads=st.one_of(st.none(), ints, scalars),
    allowed=st.one_of(st.none(), st.just("all"), st.sets(st.sampled_from(["<|bos|>", "<|user_start|>", "x"])),
                      scalars),
)
def test_encode(tokenizer, tt_nano, text, prepend, append, num_threads, allowed):
    try:
        got = tokenizer.encode(text, prepend=prepend, append=append, num_threads=num_threads,
                               allowed_special=allowed)
    except CLEAR:
        return
    pre = [] if prepend is None else [prepend if isinstance(prepend, int) else tt_nano.encode_single_token(prepend)]
    post = [] if append is None else [append if isinstance(append, int) else tt_nano.encode_single_token(append)]
    for p in pre + post:
        assert 0 <= p < tt_nano.n_vocab

    def oracle(t):
        if allowed is None:
            return pre + tt_nano.encode_ordinary(t) + post
        return pre + tt_nano.encode(t, allowed_special=allowed, disallowed_special="all") + post

    if isinstance(text, str):
        assert got == oracle(text)
    else:
        assert got == [oracle(t) for t in text]


@FUZZ
@given(ids=st.one_of(st.lists(ints, max_size=8), st.lists(scalars, max_size=4), scalars))
def test_decode(tokenizer, tt_nano, ids):
    for call, oracle in ((tokenizer.decode, tt_nano.decode), (tokenizer.decode_bytes, tt_nano.decode_bytes)):
        try:
            got = call(ids)
        except CLEAR:
            continue
        assert got == oracle(list(ids))


@FUZZ
@given(token=scalars)
def test_token_lookups(tokenizer, tt_nano, token):
    try:
        assert tokenizer.token_bytes(token) == tt_nano.decode_single_token_bytes(token)
    except CLEAR:
        pass
    try:
        assert tokenizer.id_to_token(token) == tt_nano.decode_single_token_bytes(token).decode("utf-8", "replace")
    except CLEAR:
        pass
    try:
        got = tokenizer.encode_special(token)
    except CLEAR:
        return
    assert got == tt_nano._special_tokens[token]


contents = st.one_of(st.text(max_size=30), scalars,
                     st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "python", "python_output", "x"]),
                                                     "text": st.one_of(st.text(max_size=20), scalars)}), max_size=3))
messages = st.lists(
    st.one_of(
        st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool", "us\ud800er"]),
                               "content": contents}),
        scalars,
    ),
    max_size=6,
)
conversations = st.one_of(st.fixed_dictionaries({"messages": messages}), scalars, st.dictionaries(st.text(max_size=5), scalars, max_size=2))


@FUZZ
@given(conv=conversations, max_tokens=st.one_of(st.integers(min_value=-3, max_value=64), scalars))
def test_render(tokenizer, reference, conv, max_tokens):
    try:
        got = tokenizer.render_conversation(conv, max_tokens=max_tokens)
    except CLEAR:
        got = None
    try:
        batch = tokenizer.render_conversations([conv, conv], max_tokens=max_tokens)
    except CLEAR:
        batch = None
    assert (got is None) == (batch is None)
    if got is None:
        return
    ids, mask = got
    want_ids, want_mask = reference.render(conv, max_tokens=max_tokens)
    assert (ids, mask) == (want_ids, want_mask)
    flat_ids, flat_mask, offsets = batch
    assert flat_ids.tolist() == ids * 2 and flat_mask.tolist() == mask * 2
    assert offsets.tolist() == [0, len(ids), 2 * len(ids)]

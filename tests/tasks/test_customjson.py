import json

import pytest

from tasks.common import ConversationFormatError
from tasks.customjson import CustomJSON

GOOD = [
    [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am a small chat model."}],
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Bye"},
        ]
    },
]


def test_reads_conversations_in_file_order(tmp_path):
    path = tmp_path / "identity.jsonl"
    path.write_text(json.dumps(GOOD[0]) + "\n\n   \n" + json.dumps(GOOD[1]) + "\n", encoding="utf-8")
    task = CustomJSON(filepath=str(path))
    assert len(task) == 2
    assert task[0] == {"messages": GOOD[0]}
    assert task[1] == GOOD[1]
    assert list(CustomJSON(filepath=path, start=1)) == [GOOD[1]]


BAD_LINES = [
    ("{not json", "not valid JSON"),
    ('"just a string"', "expected a JSON array of messages, got str"),
    ('{"conversation": []}', "'messages'"),
    ('[{"role": "user", "content": "a"}]', "at least a user and an assistant"),
    (
        '[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]',
        "message 1: expected role 'assistant', got 'user'",
    ),
    ('[{"role": "user", "content": "a"}, {"role": "assistant"}]', "message 1: missing key 'content'"),
    (
        '[{"role": "user", "content": ["a"]}, {"role": "assistant", "content": "b"}]',
        "message 0: user content must be a string",
    ),
    (
        '[{"role": "user", "content": "a"}, {"role": "assistant", "content": 5}]',
        "message 1: assistant content must be a string or a list of parts",
    ),
]


@pytest.mark.parametrize("bad,rule", BAD_LINES)
def test_malformed_line_names_file_line_and_rule(tmp_path, bad, rule):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(GOOD[0]) + "\n\n" + bad + "\n" + json.dumps(GOOD[0]) + "\n", encoding="utf-8")
    with pytest.raises(ConversationFormatError) as info:
        CustomJSON(filepath=str(path))
    message = str(info.value)
    assert message.startswith(f"{path}, line 3: ")
    assert rule in message


def test_missing_file(tmp_path):
    path = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError) as info:
        CustomJSON(filepath=str(path))
    assert str(path) in str(info.value)


# ------------------------------------------------------ files and encodings

import os  # noqa: E402
import threading  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tasks.customjson import SpecialFileError  # noqa: E402

LINE = json.dumps(GOOD[0])


def test_invalid_utf8_names_file_line_and_byte(tmp_path):
    path = tmp_path / "bad.jsonl"
    content = (LINE + "\n" + LINE[:20]).encode() + b"\xff\xfe" + LINE[20:].encode() + b"\n"
    path.write_bytes(content)
    with pytest.raises(ConversationFormatError) as info:
        CustomJSON(filepath=path)
    assert str(info.value).startswith(f"{path}, line 2 (byte {len(LINE) + 1 + 20}): not valid UTF-8")
    assert not isinstance(info.value, UnicodeDecodeError)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_utf16_or_32_with_a_bom_is_named(tmp_path, encoding):
    path = tmp_path / "wide.jsonl"
    path.write_bytes((LINE + "\n").encode(encoding))
    with pytest.raises(ConversationFormatError) as info:
        CustomJSON(filepath=path)
    assert str(info.value).startswith(f"{path}: the file is {encoding.upper()}")


def test_utf16_without_a_bom_is_caught_by_its_nul_bytes(tmp_path):
    path = tmp_path / "wide.jsonl"
    path.write_bytes((LINE + "\n").encode("utf-16-le"))
    with pytest.raises(ConversationFormatError) as info:
        CustomJSON(filepath=path)
    assert str(info.value).startswith(f"{path}, line 1 (byte 1): a NUL byte")
    assert "UTF-16" in str(info.value)


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (LINE + "\r\n" + json.dumps(GOOD[1]) + "\r\n").encode())
    assert list(CustomJSON(filepath=path)) == [{"messages": GOOD[0]}, GOOD[1]]


def test_a_directory_is_reported_as_one(tmp_path):
    with pytest.raises(IsADirectoryError) as info:
        CustomJSON(filepath=tmp_path)
    assert "is a directory" in str(info.value) and str(tmp_path) in str(info.value)
    assert not isinstance(info.value, FileNotFoundError)


def _in_a_thread(fn):
    """Run fn in a daemon thread so a regression that blocks fails instead of hanging the suite."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001  (handed back to the test)
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "CustomJSON blocked"
    return box


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "conversations.jsonl"
    os.mkfifo(fifo)
    box = _in_a_thread(lambda: CustomJSON(filepath=fifo))
    error = box.get("error")
    assert isinstance(error, SpecialFileError) and isinstance(error, ValueError)
    assert "FIFO" in str(error) and str(fifo) in str(error)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero here")
def test_a_device_is_refused_without_reading(tmp_path):
    link = tmp_path / "zero.jsonl"
    link.symlink_to("/dev/zero")  # reading it would never end
    box = _in_a_thread(lambda: CustomJSON(filepath=link))
    assert isinstance(box.get("error"), SpecialFileError)
    assert "character device" in str(box["error"])


def test_a_symlink_to_a_file_is_followed(tmp_path):
    target = tmp_path / "real.jsonl"
    target.write_text(LINE + "\n", encoding="utf-8")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    assert list(CustomJSON(filepath=link)) == [{"messages": GOOD[0]}]


def test_deep_nesting_is_a_format_error(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text("[" * 100_000 + "]" * 100_000 + "\n", encoding="utf-8")
    with pytest.raises(ConversationFormatError) as info:
        CustomJSON(filepath=path)
    assert str(info.value).startswith(f"{path}, line 1: ")


def test_bad_filepath_type():
    with pytest.raises(TypeError):
        CustomJSON(filepath=12)


# ------------------------------------------------------------------ fuzz


def reference_is_valid(messages) -> bool:
    """The conversation rules, written out independently of the package."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
        return False
    rest = messages[1:] if messages and messages[0]["role"] == "system" else messages
    if messages and messages[0]["role"] == "system" and not isinstance(messages[0]["content"], str):
        return False
    if len(rest) < 2:
        return False
    for i, m in enumerate(rest):
        if m["role"] != ("user" if i % 2 == 0 else "assistant"):
            return False
        content = m["content"]
        if isinstance(content, str):
            continue
        if m["role"] != "assistant" or not isinstance(content, list):
            return False
        for part in content:
            if not (
                isinstance(part, dict)
                and isinstance(part.get("type"), str)
                and part.get("type") in ("text", "python", "python_output")
                and isinstance(part.get("text"), str)
            ):
                return False
    return True


texts = st.text(max_size=12)
roles = st.sampled_from(["system", "user", "assistant", "tool", "User", ""])
parts = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "python", "python_output", "image"]) | st.integers(), "text": texts | st.none()}
)
contents = texts | st.lists(parts, max_size=3) | st.integers() | st.none()
messages = st.lists(st.fixed_dictionaries({"role": roles, "content": contents}), max_size=5)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
    max_leaves=8,
)
line_values = messages | st.fixed_dictionaries({"messages": messages}) | json_values


@st.composite
def files(draw):
    """Bytes of a would-be JSONL file: JSON lines (of conversations or not),
    sometimes damaged, re-encoded or prefixed with a byte-order mark."""
    lines = draw(st.lists(line_values, max_size=4))
    sep = draw(st.sampled_from(["\n", "\r\n", "\n\n"]))
    text = sep.join(json.dumps(value, ensure_ascii=draw(st.booleans())) for value in lines)
    data = text.encode("utf-8")
    damage = draw(st.sampled_from(["none", "none", "bom", "utf16", "flip", "truncate", "raw"]))
    if damage == "bom":
        data = b"\xef\xbb\xbf" + data
    elif damage == "utf16":
        data = text.encode(draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32"])))
    elif damage == "flip" and data:
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1 :]
    elif damage == "truncate" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "raw":
        data = draw(st.binary(max_size=64))
    return data, lines, damage


@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=files())
def test_fuzz_clear_error_or_correct_result(tmp_path, case):
    data, lines, damage = case
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(data)
    try:
        task = CustomJSON(filepath=path)
    except (ValueError, TypeError) as exc:
        assert str(path) in str(exc)
        assert not isinstance(exc, UnicodeError)  # a named error, not a bare codec one
        if damage in ("none", "bom"):
            # Undamaged: only a line that breaks the rules may be refused.
            assert not all(
                reference_is_valid(v["messages"] if isinstance(v, dict) and "messages" in v else v) for v in lines
            )
        return
    got = [c["messages"] for c in task]
    for conversation in got:
        assert reference_is_valid(conversation)
    if damage in ("none", "bom"):
        expected = [v["messages"] if isinstance(v, dict) and "messages" in v else v for v in lines]
        assert got == expected

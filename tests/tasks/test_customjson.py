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

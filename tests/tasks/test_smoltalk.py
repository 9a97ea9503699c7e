import pytest
from task_fixtures import SMOLTALK_ROWS, hub_order

from tasks.common import ConversationFormatError
from tasks.smoltalk import SmolTalk


def test_messages_pass_through_unchanged(data_dir):
    task = SmolTalk(split="train", data_dir=str(data_dir))
    assert len(task) == 3
    assert list(task) == [{"messages": row["messages"]} for row in hub_order(SMOLTALK_ROWS)]
    with_system = [c for c in task if c["messages"][0]["role"] == "system"]
    assert len(with_system) == 1
    assert with_system[0]["messages"][0]["content"] == "You're an AI assistant for text re-writing."


def test_slicing(data_dir):
    full = list(SmolTalk(split="train", data_dir=str(data_dir)))
    assert list(SmolTalk(split="train", data_dir=str(data_dir), start=1)) == full[1:]
    assert list(SmolTalk(split="train", data_dir=str(data_dir), stop=10_000)) == full


def test_invalid_conversation_is_reported(data_dir):
    task = SmolTalk(split="test", data_dir=str(data_dir))
    order = [row["source"] for row in hub_order([{"source": "ok"}, {"source": "bad"}])]
    bad = order.index("bad")
    good = order.index("ok")
    assert task[good]["messages"][1]["content"] == "Hi"
    with pytest.raises(ConversationFormatError) as info:
        task[bad]
    message = str(info.value)
    assert f"example {bad}" in message
    assert "message 1: expected role 'assistant', got 'user'" in message


def test_bad_split(data_dir):
    with pytest.raises(ValueError):
        SmolTalk(split="validation", data_dir=str(data_dir))

import pytest
from task_fixtures import ARC_ROWS, hub_order

from tasks.arc import ARC


def test_conversations_use_dataset_labels(data_dir):
    task = ARC(subset="ARC-Easy", split="train", data_dir=str(data_dir))
    assert task.eval_type == "categorical"
    got = list(task)
    assert [c["messages"][1]["content"] for c in got] == [row["answerKey"] for row in hub_order(ARC_ROWS)]
    conductor = next(c for c in got if "conductor" in c["messages"][0]["content"])
    assert conductor == {
        "messages": [
            {
                "role": "user",
                "content": "Multiple Choice question: Which object is the best conductor of electricity?\n"
                "- a wax crayon=1\n- a plastic spoon=2\n- a rubber eraser=3\n- an iron nail=4\n\n"
                "Respond only with the letter of the correct answer.",
            },
            {"role": "assistant", "content": "4"},
        ],
        "letters": ["1", "2", "3", "4"],
    }
    renewable = next(c for c in got if "renewable" in c["messages"][0]["content"])
    assert renewable["letters"] == ["A", "B", "C", "D", "E"]
    assert "- uranium=E\n" in renewable["messages"][0]["content"]


def test_json_array_file_and_evaluate(data_dir):
    task = ARC(subset="ARC-Challenge", split="test", data_dir=str(data_dir))
    assert len(task) == 2
    for conversation in task:
        right = conversation["messages"][1]["content"]
        assert task.evaluate(conversation, right) is True
        wrong = next(letter for letter in conversation["letters"] if letter != right)
        assert task.evaluate(conversation, wrong) is False


def test_bad_arguments(data_dir):
    with pytest.raises(ValueError):
        ARC(subset="ARC-Medium", split="train", data_dir=str(data_dir))
    with pytest.raises(ValueError):
        ARC(subset="ARC-Easy", split="dev", data_dir=str(data_dir))

import pytest
from task_fixtures import MMLU_AUX_ROWS, MMLU_ROWS, hub_order

from tasks.mmlu import MMLU


def test_57_subjects():
    assert len(MMLU.groups) == 57
    assert len(set(MMLU.groups)) == 57
    assert {"abstract_algebra", "world_religions", "high_school_us_history", "professional_law"} <= set(MMLU.groups)


def test_conversations_from_parquet_in_hub_order(data_dir):
    task = MMLU(subset="all", split="test", data_dir=str(data_dir))
    assert task.eval_type == "categorical"
    got = list(task)
    expected_rows = hub_order(MMLU_ROWS)
    assert len(got) == 4
    for conversation, row in zip(got, expected_rows):
        letter = "ABCD"[row["answer"]]
        assert conversation["subject"] == row["subject"]
        assert tuple(conversation["letters"]) == ("A", "B", "C", "D")
        assert conversation["messages"][1] == {"role": "assistant", "content": letter}
    anatomy = next(c for c in got if c["subject"] == "anatomy")
    assert anatomy["messages"][0] == {
        "role": "user",
        "content": "Multiple Choice question: Which of the following is the body cavity that contains the pituitary gland?\n"
        "- Abdominal=A\n- Cranial=B\n- Pleural=C\n- Spinal=D\n\n"
        "Respond only with the letter of the correct answer.",
    }
    assert anatomy["messages"][1]["content"] == "B"


def test_auxiliary_train_unwraps_rows(data_dir):
    task = MMLU(subset="auxiliary_train", split="train", data_dir=str(data_dir))
    got = list(task)
    expected = [row["train"] for row in hub_order(MMLU_AUX_ROWS)]
    assert [c["messages"][0]["content"].splitlines()[0] for c in got] == [
        f"Multiple Choice question: {row['question']}" for row in expected
    ]
    assert [c["messages"][1]["content"] for c in got] == ["ABCD"[row["answer"]] for row in expected]
    q3 = next(c for c in got if "three" in c["messages"][0]["content"])
    assert "- d3=D\n" in q3["messages"][0]["content"]
    assert q3["messages"][1]["content"] == "D"


def test_nanochat_spelling_all_auxiliary_train(data_dir):
    # nanochat's chat_sft.py: MMLU(subset="all", split="auxiliary_train"), the
    # all config's auxiliary_train split (flat rows, no wrapper).
    task = MMLU(subset="all", split="auxiliary_train", data_dir=str(data_dir))
    rows = hub_order(MMLU_ROWS[::-1])
    assert [c["subject"] for c in task] == [row["subject"] for row in rows]
    assert [c["messages"][1]["content"] for c in task] == ["ABCD"[row["answer"]] for row in rows]
    positional = MMLU("all", "auxiliary_train", data_dir=str(data_dir), start=1, stop=3)
    assert list(positional) == list(task)[1:3]


def test_evaluate(data_dir):
    task = MMLU(subset="all", split="test", data_dir=str(data_dir), stop=2)
    assert len(task) == 2
    for conversation in task:
        right = conversation["messages"][1]["content"]
        assert task.evaluate(conversation, right)
        for wrong in "ABCD".replace(right, ""):
            assert not task.evaluate(conversation, wrong)


def test_bad_arguments(data_dir):
    with pytest.raises(ValueError):
        MMLU(subset="auxiliary_train", split="test", data_dir=str(data_dir))
    with pytest.raises(ValueError):
        MMLU(subset="everything", split="test", data_dir=str(data_dir))
    with pytest.raises(ValueError):
        MMLU(subset="all", split="training", data_dir=str(data_dir))
    with pytest.raises(ValueError, match="'auxiliary_train' goes with subset 'all'"):
        MMLU(subset="anatomy", split="auxiliary_train", data_dir=str(data_dir))
    with pytest.raises(ValueError, match="only has split 'train'"):
        MMLU(subset="auxiliary_train", split="auxiliary_train", data_dir=str(data_dir))
    with pytest.raises(ValueError, match="subset='all', split='auxiliary_train'"):
        MMLU(subset="all", split="train", data_dir=str(data_dir))

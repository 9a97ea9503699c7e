import pytest
from task_fixtures import GSM8K_ROWS, hub_order

from tasks.gsm8k import GSM8K, extract_answer

# The conversations the rows must become, written out by hand.
EXPECTED = {
    GSM8K_ROWS[0]["question"]: [
        {"type": "text", "text": "Natalia sold 48/2 = "},
        {"type": "python", "text": "48/2"},
        {"type": "python_output", "text": "24"},
        {"type": "text", "text": "24 clips in May.\nNatalia sold 48+24 = "},
        {"type": "python", "text": "48+24"},
        {"type": "python_output", "text": "72"},
        {"type": "text", "text": "72 clips altogether in April and May.\n#### 72"},
    ],
    GSM8K_ROWS[1]["question"]: [
        {"type": "text", "text": "Weng earns 12/60 = $"},
        {"type": "python", "text": "12/60"},
        {"type": "python_output", "text": "0.2"},
        {"type": "text", "text": "0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $"},
        {"type": "python", "text": "0.2*50"},
        {"type": "python_output", "text": "10"},
        {"type": "text", "text": "10.\n#### 10"},
    ],
    GSM8K_ROWS[2]["question"]: [
        {"type": "text", "text": "It has 1200 + 34 = 1234 cows.\n#### 1,234"},
    ],
    # Split on the LAST "=" (the expression has "=="); a call without "="
    # has an empty output; text between parts is kept even when empty.
    GSM8K_ROWS[3]["question"]: [
        {"type": "text", "text": "Check: "},
        {"type": "python", "text": "2*3==6"},
        {"type": "python_output", "text": "True"},
        {"type": "text", "text": "True. Then "},
        {"type": "python", "text": "5+5"},
        {"type": "python_output", "text": ""},
        {"type": "text", "text": "\n#### 10"},
    ],
    GSM8K_ROWS[4]["question"]: [
        {"type": "text", "text": "-5 - 3 = "},
        {"type": "python", "text": "-5-3"},
        {"type": "python_output", "text": "-8"},
        {"type": "text", "text": "-8\n#### -8"},
    ],
}


def test_conversations_and_hub_order(data_dir):
    task = GSM8K(subset="main", split="train", data_dir=str(data_dir))
    assert task.eval_type == "generative"
    assert len(task) == len(GSM8K_ROWS)
    order = [row["question"] for row in hub_order(GSM8K_ROWS)]
    got = list(task)
    assert [c["messages"][0]["content"] for c in got] == order
    for conversation in got:
        question = conversation["messages"][0]["content"]
        assert conversation == {
            "messages": [
                {"role": "user", "content": question},
                {"role": "assistant", "content": EXPECTED[question]},
            ]
        }


def test_slicing_and_env_var(data_dir, monkeypatch):
    monkeypatch.setenv("CONVPACK_DATA_DIR", str(data_dir))
    full = list(GSM8K(subset="main", split="train"))
    part = GSM8K(subset="main", split="train", start=1, stop=5, step=2)
    assert list(part) == full[1:5:2]
    assert len(GSM8K(subset="main", split="test")) == 2


def test_evaluate_and_reward(data_dir):
    task = GSM8K(subset="main", split="train", data_dir=str(data_dir))
    by_question = {c["messages"][0]["content"]: c for c in task}
    natalia = by_question[GSM8K_ROWS[0]["question"]]
    assert task.evaluate(natalia, "She sold 72 in total.\n#### 72") == 1
    assert task.reward(natalia, "#### 72") == 1.0
    assert task.evaluate(natalia, "#### 71") == 0
    assert task.reward(natalia, "#### 71") == 0.0
    assert task.evaluate(natalia, "The answer is 72") == 0  # no "#### "
    cows = by_question[GSM8K_ROWS[2]["question"]]
    assert task.evaluate(cows, "#### 1234") == 1  # commas removed on both sides
    assert task.evaluate(cows, "#### 1,234") == 1
    diver = by_question[GSM8K_ROWS[4]["question"]]
    assert task.evaluate(diver, "#### -8") == 1
    assert task.evaluate(diver, "#### 8") == 0
    with pytest.raises(TypeError):
        task.evaluate(natalia, 72)


def test_extract_answer():
    assert extract_answer("so #### 1,000,000 done") == "1000000"
    assert extract_answer("#### -3.5") == "-3.5"
    assert extract_answer("####72") is None
    assert extract_answer("nothing") is None


def test_bad_arguments(data_dir):
    with pytest.raises(ValueError, match="subset"):
        GSM8K(subset="mian", split="train", data_dir=str(data_dir))
    with pytest.raises(ValueError, match="split"):
        GSM8K(subset="main", split="validation", data_dir=str(data_dir))

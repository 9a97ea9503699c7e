import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

import convpack
from tasks.spellingbee import USER_MESSAGE_TEMPLATES, SimpleSpelling, SpellingBee

ROOT = Path(__file__).resolve().parents[2]
# Where the convpack under test is imported from (installed, or built in place).
CONVPACK_HOME = str(Path(convpack.__file__).resolve().parents[1])


@pytest.fixture(scope="module")
def bee():
    return SpellingBee(size=2000, split="train")


def test_two_instances_give_identical_examples(bee):
    other = SpellingBee(size=2000, split="train")
    assert [bee[i] for i in range(0, 2000, 37)] == [other[i] for i in range(0, 2000, 37)]
    assert SpellingBee(size=50, split="test")[7] == SpellingBee(size=50, split="test")[7]


def test_examples_do_not_depend_on_the_process():
    # A fresh interpreter (with a different hash seed) gives the same examples.
    code = (
        "import json, sys; sys.path[:0] = [sys.argv[2], sys.argv[1]]\n"
        "from tasks.spellingbee import SpellingBee, SimpleSpelling\n"
        "print(json.dumps([SpellingBee(size=10)[3], SpellingBee(size=10, split='test')[4], SimpleSpelling(size=10)[5]]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(ROOT), CONVPACK_HOME],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"},
    ).stdout
    import json

    assert json.loads(out) == [
        SpellingBee(size=10)[3],
        SpellingBee(size=10, split="test")[4],
        SimpleSpelling(size=10)[5],
    ]


def test_train_and_test_differ():
    train = [SpellingBee(size=20, split="train")[i]["messages"][0]["content"] for i in range(20)]
    test = [SpellingBee(size=20, split="test")[i]["messages"][0]["content"] for i in range(20)]
    assert train != test


def check_answer(conversation):
    """Recompute the reference answer from the word and letter."""
    question = conversation["messages"][0]["content"]
    parts = conversation["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["text", "text", "python", "python_output", "text"]
    match = re.fullmatch(r"'([a-z]+)'\.count\('([a-z])'\)", parts[2]["text"])
    assert match, parts[2]["text"]
    word, letter = match.groups()
    assert word in question and letter in question
    count = sum(1 for c in word if c == letter)
    assert parts[3]["text"] == str(count)
    # The manual count: the word spelled out, then one line per letter with
    # the running count on the hits.
    manual = parts[0]["text"]
    assert f"{word}:{','.join(word)}" in manual.splitlines()
    hits = re.findall(r"^(\d+):([a-z])(.*)$", manual, re.MULTILINE)
    assert [int(i) for i, _, _ in hits] == list(range(1, len(word) + 1))
    assert "".join(c for _, c, _ in hits) == word
    running = 0
    for _, c, rest in hits:
        if c == letter:
            running += 1
            assert str(running) in rest
        else:
            assert rest == ""
    assert parts[4]["text"].endswith(f"#### {count}")
    return word, letter, count


def test_answers_are_correct_and_evaluate_to_one(bee):
    counts = []
    for i in range(0, 2000, 7):
        conversation = bee[i]
        _, _, count = check_answer(conversation)
        counts.append(count)
        response = "".join(p["text"] for p in conversation["messages"][1]["content"])
        assert bee.evaluate(conversation, response) == 1
        assert bee.reward(conversation, response) == 1.0
        assert bee.evaluate(conversation, f"#### {count + 1}") == 0
        assert bee.reward(conversation, "no idea") == 0.0
    assert 0 in counts  # letters outside the word happen
    assert max(counts) >= 2


def script_of(text):
    names = {unicodedata.name(c, "") for c in text}
    if any(n.startswith("HANGUL") for n in names):
        return "ko"
    if any(n.startswith(("HIRAGANA", "KATAKANA")) for n in names):
        return "ja"
    if any(n.startswith("CJK") for n in names):
        return "zh"
    return "latin"


def test_templates_cover_seven_languages(bee):
    assert {script_of(t) for t in USER_MESSAGE_TEMPLATES} == {"latin", "zh", "ko", "ja"}
    lowered = [t.lower() for t in USER_MESSAGE_TEMPLATES]
    assert any(t.startswith("how many") for t in lowered)  # English
    assert any(t.startswith("¿cuántas") for t in lowered)  # Spanish
    assert any(t.startswith("combien") for t in lowered)  # French
    assert any(t.startswith("wie oft") for t in lowered)  # German
    seen = {script_of(bee[i]["messages"][0]["content"]) for i in range(2000)}
    assert seen == {"latin", "zh", "ko", "ja"}


def test_strawberry():
    task = SpellingBee(size=300, words=["strawberry"])
    for conversation in task:
        word, letter, count = check_answer(conversation)
        assert word == "strawberry"
        assert count == "strawberry".count(letter)
    r_questions = [c for c in task if c["messages"][1]["content"][2]["text"] == "'strawberry'.count('r')"]
    assert r_questions and all(c["messages"][1]["content"][3]["text"] == "3" for c in r_questions)


def test_default_word_list():
    task = SpellingBee(size=1)
    assert len(task.words) > 100_000
    assert all(w.isalpha() and w.islower() for w in task.words[:1000])
    assert list(task.words) == sorted(task.words)


def test_simple_spelling_exact_format():
    task = SimpleSpelling(size=3, words=["word"])
    assert task[0] == {
        "messages": [
            {"role": "user", "content": "Spell the word: word"},
            {"role": "assistant", "content": "word:w,o,r,d"},
        ]
    }
    big = SimpleSpelling(size=500)
    for i in range(0, 500, 50):
        user, assistant = big[i]["messages"]
        word = user["content"].removeprefix("Spell the word: ")
        assert assistant["content"] == word + ":" + ",".join(word)
        assert big.evaluate(big[i], assistant["content"])
        assert not big.evaluate(big[i], word)


def test_word_list_file_and_bad_arguments(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("banana\napple\n\nbanana\n", encoding="utf-8")
    task = SpellingBee(size=5, word_list=path)
    assert task.words == ["apple", "banana"]
    with pytest.raises(ValueError):
        SpellingBee(size=5, split="validation", words=["a"])
    with pytest.raises(ValueError):
        SpellingBee(size=5, words=[])
    with pytest.raises(FileNotFoundError):
        SpellingBee(size=5, word_list=tmp_path / "missing.txt")

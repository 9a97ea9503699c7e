"""MMLU: multiple-choice questions over 57 subjects.

https://huggingface.co/datasets/cais/mmlu

Rows have ``question``, ``subject``, ``choices`` (four strings) and
``answer`` (0-3). The auxiliary training data (about 100K questions from ARC,
OBQA, RACE and MCTest) is reached two ways on the hub, both accepted here:
``MMLU("all", "auxiliary_train")`` (nanochat's spelling today: the ``all``
config's ``auxiliary_train`` split) and ``MMLU("auxiliary_train", "train")``
(the ``auxiliary_train`` config, whose rows are wrapped in a ``train``
column; the wrapper is removed). Each reads its own hub config and split.
"""

from __future__ import annotations

from typing import Any

from convpack.tasks.common import Conversation, Task, render_mc
from convpack.tasks.data import load_task_dataset, nested_row

__all__ = ["MMLU"]


class MMLU(Task):
    """``MMLU(subset, split)``: four-way multiple choice over 57 subjects.

    Args:
        subset: ``"all"``, ``"auxiliary_train"`` or one of the 57 subjects
            (``MMLU.groups``).
        split: ``"test"``, ``"validation"`` or ``"dev"``; ``"auxiliary_train"``
            with subset ``"all"``; ``"train"`` with subset ``"auxiliary_train"``.
        data_dir: a local data directory (see ``convpack.tasks.data``).
        **kwargs: ``start``, ``stop``, ``step`` of the view (see ``Task``).

    Raises:
        ValueError: for an unknown subset or split, or a pair the hub lacks.
        DatasetNotFoundError: if the data is in none of the places looked in.
        ImportError: if the data is parquet and pyarrow is missing.
    """

    letters = ("A", "B", "C", "D")
    groups = (
        "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge",
        "college_biology", "college_chemistry", "college_computer_science", "college_mathematics",
        "college_medicine", "college_physics", "computer_security", "conceptual_physics",
        "econometrics", "electrical_engineering", "elementary_mathematics", "formal_logic",
        "global_facts", "high_school_biology", "high_school_chemistry",
        "high_school_computer_science", "high_school_european_history", "high_school_geography",
        "high_school_government_and_politics", "high_school_macroeconomics",
        "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
        "high_school_psychology", "high_school_statistics", "high_school_us_history",
        "high_school_world_history", "human_aging", "human_sexuality", "international_law",
        "jurisprudence", "logical_fallacies", "machine_learning", "management", "marketing",
        "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
        "philosophy", "prehistory", "professional_accounting", "professional_law",
        "professional_medicine", "professional_psychology", "public_relations",
        "security_studies", "sociology", "us_foreign_policy", "virology", "world_religions",
    )  # fmt: skip

    def __init__(self, subset: str, split: str, data_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if subset not in ("all", "auxiliary_train") and subset not in self.groups:
            raise ValueError(f"MMLU subset must be 'all', 'auxiliary_train' or one of the 57 subjects, got {subset!r}")
        if split not in ("train", "validation", "dev", "test", "auxiliary_train"):
            raise ValueError(
                f"MMLU split must be 'auxiliary_train', 'train', 'validation', 'dev' or 'test', got {split!r}"
            )
        if subset == "auxiliary_train" and split != "train":
            raise ValueError(f"MMLU subset 'auxiliary_train' only has split 'train', got {split!r}")
        if subset != "auxiliary_train" and split == "train":
            raise ValueError(
                f"MMLU subset {subset!r} has no 'train' split "
                "(use subset='all', split='auxiliary_train')"
            )
        if split == "auxiliary_train" and subset != "all":
            raise ValueError(f"MMLU split 'auxiliary_train' goes with subset 'all', got {subset!r}")
        self.subset = subset
        self.split = split
        self.ds = load_task_dataset("cais/mmlu", subset, split, data_dir)

    @property
    def eval_type(self) -> str:
        """``"categorical"``."""
        return "categorical"

    def num_examples(self) -> int:
        """The number of rows in the split."""
        return len(self.ds)

    def get_example(self, index: int) -> Conversation:
        """The conversation of physical row ``index`` (``render_mc`` prompt,
        answer letter), with ``subject`` and ``letters``.

        Raises:
            ValueError: if the row does not have 4 choices and an answer 0-3.
        """
        row = self.ds[index]
        if "train" in row and isinstance(row["train"], dict):
            row = nested_row(row, "train")
        choices = row["choices"]
        answer = row["answer"]
        if len(choices) != len(self.letters):
            raise ValueError(f"MMLU row {index}: expected 4 choices, got {len(choices)}")
        if not isinstance(answer, int) or not 0 <= answer < len(self.letters):
            raise ValueError(f"MMLU row {index}: answer must be 0-3, got {answer!r}")
        return {
            "messages": [
                {"role": "user", "content": render_mc(row["question"], self.letters, choices)},
                {"role": "assistant", "content": self.letters[answer]},
            ],
            "subject": row["subject"],
            "letters": self.letters,
        }

    def evaluate(self, conversation: Conversation, assistant_response: str) -> bool:
        """Whether the response is the reference letter.

        Args:
            conversation: an example of this task.
            assistant_response: the predicted letter.

        Returns:
            bool: True when it equals the reference letter.
        """
        return assistant_response == conversation["messages"][-1]["content"]

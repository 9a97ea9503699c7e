"""MMLU: multiple-choice questions over 57 subjects.

https://huggingface.co/datasets/cais/mmlu

Rows have ``question``, ``subject``, ``choices`` (four strings) and
``answer`` (0-3). The ``auxiliary_train`` subset wraps each row in a
``train`` column; the wrapper is removed.
"""

from __future__ import annotations

from typing import Any

from tasks.common import Conversation, Task, render_mc
from tasks.data import load_task_dataset

__all__ = ["MMLU"]


class MMLU(Task):
    """``MMLU(subset="all" | "auxiliary_train" | <subject>, split=...)``."""

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
        if split not in ("train", "validation", "dev", "test"):
            raise ValueError(f"MMLU split must be 'train', 'validation', 'dev' or 'test', got {split!r}")
        if subset == "auxiliary_train" and split != "train":
            raise ValueError(f"MMLU auxiliary_train only has split 'train', got {split!r}")
        if subset != "auxiliary_train" and split == "train":
            raise ValueError(f"MMLU subset {subset!r} has no 'train' split (use auxiliary_train)")
        self.subset = subset
        self.split = split
        self.ds = load_task_dataset("cais/mmlu", subset, split, data_dir)

    @property
    def eval_type(self) -> str:
        return "categorical"

    def num_examples(self) -> int:
        return len(self.ds)

    def get_example(self, index: int) -> Conversation:
        row = self.ds[index]
        if "train" in row and isinstance(row["train"], dict):
            row = row["train"]
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
        """Whether the response is the reference letter."""
        return assistant_response == conversation["messages"][-1]["content"]

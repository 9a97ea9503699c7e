"""Rows in the hub datasets' schemas and helpers shared by the task tests."""

from __future__ import annotations

import json
from pathlib import Path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def hub_order(rows: list[dict], seed: int = 42) -> list[dict]:
    """The order nanochat's tasks give these rows: the split's rows in file
    order, permuted by numpy's default_rng(seed) (the permutation HF
    `datasets` uses for shuffle(seed=...); test_hub_dataset checks that)."""
    import numpy as np

    return [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))]


GSM8K_ROWS = [
    {
        "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?",
        "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
    },
    {
        "question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
        "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10",
    },
    {
        "question": "A farm has 1,200 cows and buys 34 more. How many cows does it have now?",
        "answer": "It has 1200 + 34 = 1234 cows.\n#### 1,234",
    },
    {
        "question": "Is 2*3 equal to 6? Add 5 and 5 if it is.",
        "answer": "Check: <<2*3==6=True>>True. Then <<5+5>>\n#### 10",
    },
    {
        "question": "A diver is 5 meters below sea level and goes 3 meters deeper. What is her height relative to sea level?",
        "answer": "-5 - 3 = <<-5-3=-8>>-8\n#### -8",
    },
]

MMLU_ROWS = [
    {
        "question": "Find the degree for the given field extension Q(sqrt(2), sqrt(3)) over Q.",
        "subject": "abstract_algebra",
        "choices": ["0", "4", "2", "6"],
        "answer": 1,
    },
    {
        "question": "Which of the following is the body cavity that contains the pituitary gland?",
        "subject": "anatomy",
        "choices": ["Abdominal", "Cranial", "Pleural", "Spinal"],
        "answer": 1,
    },
    {
        "question": "What is the second planet from the Sun?",
        "subject": "astronomy",
        "choices": ["Venus", "Mercury", "Earth", "Mars"],
        "answer": 0,
    },
    {
        "question": "Which gas makes up most of Earth's atmosphere?",
        "subject": "high_school_chemistry",
        "choices": ["Oxygen", "Carbon dioxide", "Argon", "Nitrogen"],
        "answer": 3,
    },
]

MMLU_AUX_ROWS = [
    {"train": {"question": "Aux question one?", "subject": "", "choices": ["a1", "b1", "c1", "d1"], "answer": 2}},
    {"train": {"question": "Aux question two?", "subject": "", "choices": ["a2", "b2", "c2", "d2"], "answer": 0}},
    {"train": {"question": "Aux question three?", "subject": "", "choices": ["a3", "b3", "c3", "d3"], "answer": 3}},
]

ARC_ROWS = [
    {
        "id": "Mercury_7175875",
        "question": "An astronomer observes that a planet rotates faster after a meteorite impact. Which is the most likely effect of this increase in rotation?",
        "choices": {
            "text": [
                "Planetary density will decrease.",
                "Planetary years will become longer.",
                "Planetary days will become shorter.",
                "Planetary gravity will become stronger.",
            ],
            "label": ["A", "B", "C", "D"],
        },
        "answerKey": "C",
    },
    {
        "id": "NYSEDREGENTS_2015_4_8",
        "question": "Which object is the best conductor of electricity?",
        "choices": {
            "text": ["a wax crayon", "a plastic spoon", "a rubber eraser", "an iron nail"],
            "label": ["1", "2", "3", "4"],
        },
        "answerKey": "4",
    },
    {
        "id": "Mercury_SC_401169",
        "question": "Which of these is a renewable resource?",
        "choices": {"text": ["coal", "oil", "wind", "natural gas", "uranium"], "label": ["A", "B", "C", "D", "E"]},
        "answerKey": "C",
    },
]

SMOLTALK_ROWS = [
    {
        "messages": [
            {"role": "user", "content": "What is the meaning of the word 'finely'?"},
            {"role": "assistant", "content": "'Finely' means in a fine or delicate way."},
        ],
        "source": "smol-magpie-ultra",
    },
    {
        "messages": [
            {"role": "system", "content": "You're an AI assistant for text re-writing."},
            {"role": "user", "content": "Hey Alex, I've been thinking about our project."},
            {"role": "assistant", "content": "Dear Alex, I hope this message finds you well."},
        ],
        "source": "smol-rewrite",
    },
    {
        "messages": [
            {"role": "user", "content": "In a town of 100 people, 90 hate a new policy. How many are in favor?"},
            {"role": "assistant", "content": "At most 10 people are in favor."},
            {"role": "user", "content": "And as a percentage?"},
            {"role": "assistant", "content": "At most 10%."},
        ],
        "source": "smol-magpie-ultra",
    },
]

SMOLTALK_BAD_ROWS = [
    {
        "messages": [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi"},
        ],
        "source": "ok",
    },
    {
        "messages": [
            {"role": "user", "content": "Hello"},
            {"role": "user", "content": "Anyone?"},
        ],
        "source": "bad",
    },
]

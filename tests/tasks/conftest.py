"""Fixture datasets for the task tests, written in the hub datasets' schemas.

Nothing here touches the network: the hub is switched off
(``HF_HUB_OFFLINE``), and nanochat's cache directory is a fresh temporary
one, so a real ``~/.cache/nanochat`` on the machine is never read.

Keep file names here distinct from the ``tasks`` modules (``common.py``,
``data.py``, ``gsm8k.py``, ...): with ``tests/`` on ``sys.path`` this folder is
a portion of the ``tasks`` namespace package too, ahead of the real one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from task_fixtures import (
    ARC_ROWS,
    GSM8K_ROWS,
    MMLU_AUX_ROWS,
    MMLU_ROWS,
    SMOLTALK_BAD_ROWS,
    SMOLTALK_ROWS,
    write_jsonl,
    write_parquet,
)


@pytest.fixture(autouse=True)
def _offline_and_isolated(monkeypatch, tmp_path_factory):
    monkeypatch.delenv("CONVPACK_DATA_DIR", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(tmp_path_factory.mktemp("nanochat-base")))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("convpack-data")
    write_jsonl(root / "openai" / "gsm8k" / "main" / "train.jsonl", GSM8K_ROWS)
    write_jsonl(root / "openai" / "gsm8k" / "main" / "test.jsonl", GSM8K_ROWS[:2])
    write_parquet(root / "cais" / "mmlu" / "all" / "test.parquet", MMLU_ROWS)
    write_parquet(root / "cais" / "mmlu" / "all" / "auxiliary_train.parquet", MMLU_ROWS[::-1])
    write_jsonl(root / "cais" / "mmlu" / "auxiliary_train" / "train.jsonl", MMLU_AUX_ROWS)
    write_jsonl(root / "allenai" / "ai2_arc" / "ARC-Easy" / "train.jsonl", ARC_ROWS)
    (root / "allenai" / "ai2_arc" / "ARC-Challenge").mkdir(parents=True)
    (root / "allenai" / "ai2_arc" / "ARC-Challenge" / "test.json").write_text(
        json.dumps(ARC_ROWS[:2]), encoding="utf-8"
    )
    write_jsonl(root / "HuggingFaceTB" / "smol-smoltalk" / "default" / "train.jsonl", SMOLTALK_ROWS)
    write_jsonl(root / "HuggingFaceTB" / "smol-smoltalk" / "default" / "test.jsonl", SMOLTALK_BAD_ROWS)
    return root

"""Fixture datasets for the task tests, written in the hub datasets' schemas.

Nothing here touches the network: the hub is switched off for `datasets`
and `huggingface_hub` before either is imported, and `datasets` caches into a
temporary directory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
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

_CACHE = tempfile.mkdtemp(prefix="convpack-hf-cache-")
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_CACHE"] = _CACHE
os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
os.environ.pop("CONVPACK_DATA_DIR", None)

# If another test module imported them first, the variables above came too
# late for these two: switch the hub off in their settings directly.
import datasets.config  # noqa: E402  (after the environment is set)
import huggingface_hub.constants  # noqa: E402

datasets.config.HF_HUB_OFFLINE = True
huggingface_hub.constants.HF_HUB_OFFLINE = True


@pytest.fixture(scope="session", autouse=True)
def _remove_cache():
    yield
    shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch):
    monkeypatch.delenv("CONVPACK_DATA_DIR", raising=False)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("convpack-data")
    write_jsonl(root / "openai" / "gsm8k" / "main" / "train.jsonl", GSM8K_ROWS)
    write_jsonl(root / "openai" / "gsm8k" / "main" / "test.jsonl", GSM8K_ROWS[:2])
    write_parquet(root / "cais" / "mmlu" / "all" / "test.parquet", MMLU_ROWS)
    write_jsonl(root / "cais" / "mmlu" / "auxiliary_train" / "train.jsonl", MMLU_AUX_ROWS)
    write_jsonl(root / "allenai" / "ai2_arc" / "ARC-Easy" / "train.jsonl", ARC_ROWS)
    (root / "allenai" / "ai2_arc" / "ARC-Challenge").mkdir(parents=True)
    (root / "allenai" / "ai2_arc" / "ARC-Challenge" / "test.json").write_text(
        json.dumps(ARC_ROWS[:2]), encoding="utf-8"
    )
    write_jsonl(root / "HuggingFaceTB" / "smol-smoltalk" / "default" / "train.jsonl", SMOLTALK_ROWS)
    write_jsonl(root / "HuggingFaceTB" / "smol-smoltalk" / "default" / "test.jsonl", SMOLTALK_BAD_ROWS)
    return root

import pytest

from tasks.data import DatasetNotFoundError
from tasks.gsm8k import GSM8K
from tasks.smoltalk import SmolTalk


def test_missing_local_dataset_names_every_path_tried(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        GSM8K(subset="socratic", split="train", data_dir=str(tmp_path))
    message = str(info.value)
    folder = tmp_path / "openai" / "gsm8k" / "socratic"
    for ext in ("jsonl", "json", "parquet"):
        assert str(folder / f"train.{ext}") in message
    assert "data_dir" in message and "CONVPACK_DATA_DIR" in message
    assert isinstance(info.value, FileNotFoundError)


def test_dataset_without_subset_uses_default_folder(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        SmolTalk(split="test", data_dir=str(tmp_path))
    assert str(tmp_path / "HuggingFaceTB" / "smol-smoltalk" / "default" / "test.jsonl") in str(info.value)


def test_hub_failure_names_the_hub_id_and_local_paths(tmp_path, monkeypatch):
    # The hub is switched off for the tests, so the hub path fails offline.
    monkeypatch.setenv("CONVPACK_DATA_DIR", str(tmp_path))
    with pytest.raises(DatasetNotFoundError) as info:
        GSM8K(subset="main", split="test")
    message = str(info.value)
    assert "'openai/gsm8k'" in message
    assert str(tmp_path / "openai" / "gsm8k" / "main" / "test.jsonl") in message


def test_hub_failure_without_any_data_dir():
    with pytest.raises(DatasetNotFoundError) as info:
        SmolTalk(split="train")
    message = str(info.value)
    assert "'HuggingFaceTB/smol-smoltalk'" in message
    assert "HuggingFaceTB/smol-smoltalk/default/train.jsonl" in message  # how to provide it

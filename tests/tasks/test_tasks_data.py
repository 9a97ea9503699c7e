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


# ------------------------------------------------------------ offline


class NoNetwork:
    """Stands in for the socket functions: counts attempts, each fails at once."""

    def __init__(self, monkeypatch):
        import socket

        self.attempts = 0
        for name in ("getaddrinfo", "create_connection"):
            monkeypatch.setattr(socket, name, self)

    def __call__(self, *args, **kwargs):
        self.attempts += 1
        raise OSError(101, "Network is unreachable (blocked by the test)")


def _expected_paths(tmp_path, subset, split):
    manifest = tmp_path / "nanochat" / "task_data" / "openai--gsm8k" / subset / split / "manifest.json"
    return [str(manifest)]


def test_offline_fails_at_once_naming_the_switches_and_paths(tmp_path, monkeypatch):
    network = NoNetwork(monkeypatch)
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(tmp_path / "nanochat"))
    monkeypatch.setenv("CONVPACK_DATA_DIR", str(tmp_path / "local"))
    with pytest.raises(DatasetNotFoundError) as info:
        GSM8K(subset="main", split="train")
    message = str(info.value)
    assert network.attempts == 0
    for needle in ("HF_HUB_OFFLINE", "data_dir=", "CONVPACK_DATA_DIR", "'openai/gsm8k'"):
        assert needle in message
    for path in _expected_paths(tmp_path, "main", "train"):
        assert path in message
    for ext in ("jsonl", "json", "parquet"):
        assert str(tmp_path / "local" / "openai" / "gsm8k" / "main" / f"train.{ext}") in message


def test_datasets_offline_switch_counts_too(tmp_path, monkeypatch):
    network = NoNetwork(monkeypatch)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DatasetNotFoundError) as info:
        SmolTalk(split="test")
    assert network.attempts == 0
    assert "HF_DATASETS_OFFLINE" in str(info.value)


def test_no_network_tries_the_hub_once_without_retries(tmp_path, monkeypatch):
    pytest.importorskip("pyarrow")
    network = NoNetwork(monkeypatch)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(tmp_path / "nanochat"))
    with pytest.raises(DatasetNotFoundError) as info:
        GSM8K(subset="socratic", split="test")
    message = str(info.value)
    assert network.attempts == 1
    for needle in ("HF_HUB_OFFLINE=1", "data_dir=", "CONVPACK_DATA_DIR", "'openai/gsm8k'", "Network is unreachable"):
        assert needle in message
    for path in _expected_paths(tmp_path, "socratic", "test"):
        assert path in message
    # Nothing is left in the cache by a failed attempt.
    assert not (tmp_path / "nanochat" / "task_data").exists()

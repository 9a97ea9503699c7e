import json

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


# --- errors that name the file, the row and the rule -------------------------


def _gsm8k_file(tmp_path, rows):
    from task_fixtures import write_jsonl

    return write_jsonl(tmp_path / "openai" / "gsm8k" / "main" / "test.jsonl", rows)


def test_a_row_without_a_column_names_the_file_the_row_and_the_column(tmp_path):
    from task_fixtures import GSM8K_ROWS

    from tasks.data import DataFileError, MissingColumnError

    rows = [dict(row) for row in GSM8K_ROWS]
    del rows[3]["answer"]
    path = _gsm8k_file(tmp_path, rows)
    task = GSM8K(subset="main", split="test", data_dir=str(tmp_path))
    # The task's order is shuffled: find the example that holds file row 3.
    index = [i for i in range(len(task)) if task.ds._physical(i) == 3][0]
    with pytest.raises(MissingColumnError) as info:
        task[index]
    message = str(info.value)
    assert message.startswith(f"{path}, row 3 (line 4): no column 'answer'"), message
    assert "'question'" in message  # the columns the row has
    # Still what a missing key has always been, and a data-file error.
    assert isinstance(info.value, KeyError) and isinstance(info.value, DataFileError)
    for i in range(len(task)):  # the other rows are fine
        if i != index:
            assert task[i]["messages"][0]["role"] == "user"


def test_a_parquet_file_without_a_column_is_named(tmp_path):
    pytest.importorskip("pyarrow")
    from task_fixtures import GSM8K_ROWS, write_parquet

    from tasks.data import MissingColumnError

    path = write_parquet(
        tmp_path / "openai" / "gsm8k" / "main" / "test.parquet",
        [{"question": row["question"]} for row in GSM8K_ROWS],
    )
    task = GSM8K(subset="main", split="test", data_dir=str(tmp_path))
    with pytest.raises(MissingColumnError, match=r"no column 'answer'") as info:
        task[0]
    assert str(info.value).startswith(f"{path}, row {task.ds._physical(0)}: ")


@pytest.mark.parametrize("suffix", ["jsonl", "json"])
def test_deeply_nested_json_in_a_local_copy_is_a_named_error(tmp_path, suffix):
    from task_fixtures import GSM8K_ROWS

    from tasks.data import DataFileError

    path = tmp_path / "openai" / "gsm8k" / "main" / f"test.{suffix}"
    path.parent.mkdir(parents=True)
    good = "\n".join(json.dumps(row) for row in GSM8K_ROWS[:2])
    deep = '{"question": ' + "[" * 200_000 + "]" * 200_000 + ', "answer": "#### 1"}'
    path.write_text(good + "\n" + deep + "\n", encoding="utf-8")
    with pytest.raises(DataFileError) as info:
        GSM8K(subset="main", split="test", data_dir=str(tmp_path))
    assert str(info.value) == f"{path}, line 3: JSON nested too deeply"


def test_deeply_nested_json_in_a_json_array_file_is_a_named_error(tmp_path):
    from tasks.data import DataFileError, load_local_file

    path = tmp_path / "rows.json"
    path.write_text("[" + "[" * 200_000 + "]" * 200_000 + "]", encoding="utf-8")
    with pytest.raises(DataFileError, match="nested too deeply") as info:
        load_local_file(path)
    assert str(path) in str(info.value)


def test_local_files_read_are_recorded_for_the_sandbox(tmp_path):
    from task_fixtures import GSM8K_ROWS

    from tasks.data import local_paths_read

    path = _gsm8k_file(tmp_path, GSM8K_ROWS)
    GSM8K(subset="main", split="test", data_dir=str(tmp_path))
    assert str(path.resolve()) in local_paths_read()


def test_a_nested_row_without_a_column_is_named_too(tmp_path):
    from task_fixtures import MMLU_AUX_ROWS, write_jsonl

    from tasks.data import MissingColumnError
    from tasks.mmlu import MMLU

    rows = [{"train": dict(row["train"])} for row in MMLU_AUX_ROWS]
    for row in rows:
        del row["train"]["choices"]
    path = write_jsonl(tmp_path / "cais" / "mmlu" / "auxiliary_train" / "train.jsonl", rows)
    task = MMLU(subset="auxiliary_train", split="train", data_dir=str(tmp_path))
    physical = task.ds._physical(0)
    with pytest.raises(MissingColumnError) as info:
        task[0]
    assert str(info.value).startswith(
        f"{path}, row {physical} (line {physical + 1}), column 'train': no column 'choices'"
    ), str(info.value)

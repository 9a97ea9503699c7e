"""HubDataset and load_hub_dataset: nanochat's current data API.

The oracles: numpy's default_rng(seed).permutation written out in the test,
HF ``datasets``' own shuffle (when installed), and cache folders laid out by
hand the way nanochat writes them.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from task_fixtures import (
    ARC_ROWS,
    GSM8K_ROWS,
    MMLU_ROWS,
    SMOLTALK_ROWS,
    hub_order,
    write_jsonl,
    write_parquet,
)

import tasks.common
import tasks.data
from convpack.tasks import data as data_impl
from tasks.arc import ARC
from tasks.common import HubDataset, load_hub_dataset
from tasks.data import DataFileError, DatasetNotFoundError
from tasks.gsm8k import GSM8K
from tasks.mmlu import MMLU
from tasks.smoltalk import SmolTalk

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

ROWS = [{"id": i, "text": f"row {i}", "tags": ["a"] * (i % 3), "meta": {"n": i * i}} for i in range(23)]


def table(rows):
    return pa.Table.from_pylist(rows)


@pytest.mark.parametrize("backing", ["arrow", "list"])
def test_rows_as_dicts_len_and_bounds(backing):
    ds = HubDataset(table(ROWS) if backing == "arrow" else list(ROWS))
    assert len(ds) == 23
    assert [ds[i] for i in range(23)] == ROWS
    assert list(ds) == ROWS
    assert ds[-1] == ROWS[-1]
    assert ds.column_names == ["id", "text", "tags", "meta"]
    with pytest.raises(IndexError):
        ds[23]
    with pytest.raises(IndexError):
        ds[-24]
    with pytest.raises(TypeError):
        ds["0"]
    with pytest.raises(TypeError):
        ds[True]


@pytest.mark.parametrize("backing", ["arrow", "list"])
@pytest.mark.parametrize("n", [0, 1, 2, 23])
@pytest.mark.parametrize("seed", [0, 42, 1234])
def test_shuffle_is_numpy_default_rng_permutation(backing, n, seed):
    rows = ROWS[:n]
    ds = HubDataset(table(rows) if backing == "arrow" else list(rows))
    shuffled = ds.shuffle(seed)
    expected = [rows[i] for i in np.random.default_rng(seed).permutation(n)]
    assert list(shuffled) == expected
    # A view: the same table underneath, the original left as it was.
    assert shuffled.table is ds.table
    assert list(ds) == rows


def test_shuffle_of_a_shuffled_view_composes():
    ds = HubDataset(table(ROWS)).shuffle(42)
    twice = ds.shuffle(7)
    first = [ROWS[i] for i in np.random.default_rng(42).permutation(23)]
    assert list(twice) == [first[i] for i in np.random.default_rng(7).permutation(23)]


def test_shuffle_matches_hf_datasets():
    datasets = pytest.importorskip("datasets")
    hf = datasets.Dataset.from_list(ROWS)
    ours = HubDataset(table(ROWS))
    assert list(ours.shuffle(42)) == list(hf.shuffle(seed=42))
    assert list(ours.shuffle(42).shuffle(3)) == list(hf.shuffle(seed=42).shuffle(seed=3))
    # And the order the task tests use as their oracle is that order too.
    assert hub_order(ROWS) == list(hf.shuffle(seed=42))


def test_bad_permutation_and_table():
    with pytest.raises(ValueError):
        HubDataset(list(ROWS), permutation=[0, 23])
    with pytest.raises(ValueError):
        HubDataset(list(ROWS), permutation=[[0, 1]])
    with pytest.raises(TypeError):
        HubDataset(42)


def test_nanochat_names_are_where_nanochat_has_them():
    assert tasks.common.HubDataset is data_impl.HubDataset
    assert tasks.common.load_hub_dataset is data_impl.load_hub_dataset
    assert tasks.data.load_hub_dataset is data_impl.load_hub_dataset


# ------------------------------------------------------- nanochat's cache


def write_nanochat_cache(base: Path, repo_id: str, subset: str, split: str, shards: list[list[dict]]) -> Path:
    """A cache folder the way nanochat leaves one: numbered shards, then manifest.json."""
    folder = base / "task_data" / repo_id.replace("/", "--") / subset / split
    folder.mkdir(parents=True)
    names = []
    for index, rows in enumerate(shards):
        name = f"{index:05d}.parquet"
        pq.write_table(table(rows), folder / name)
        names.append(name)
    (folder / "manifest.json").write_text(json.dumps(names))
    return folder


def test_load_hub_dataset_reads_a_nanochat_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(tmp_path))
    write_nanochat_cache(tmp_path, "openai/gsm8k", "main", "train", [GSM8K_ROWS[:2], GSM8K_ROWS[2:]])
    ds = load_hub_dataset("openai/gsm8k", "main", split="train")
    assert list(ds) == GSM8K_ROWS  # shards concatenated in manifest order
    task = GSM8K(subset="main", split="train")
    assert [c["messages"][0]["content"] for c in task] == [r["question"] for r in hub_order(GSM8K_ROWS)]


def test_default_base_dir_is_home_cache_nanochat(tmp_path, monkeypatch):
    monkeypatch.delenv("NANOCHAT_BASE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    write_nanochat_cache(tmp_path / ".cache" / "nanochat", "HuggingFaceTB/smol-smoltalk", "default", "test", [SMOLTALK_ROWS])
    task = SmolTalk(split="test")
    assert [c["messages"] for c in task] == [r["messages"] for r in hub_order(SMOLTALK_ROWS)]


def test_nanochat_spellings_read_the_folders_nanochat_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(tmp_path))
    write_nanochat_cache(tmp_path, "cais/mmlu", "all", "auxiliary_train", [MMLU_ROWS])
    write_nanochat_cache(tmp_path, "cais/mmlu", "all", "test", [MMLU_ROWS[:1]])
    write_nanochat_cache(tmp_path, "allenai/ai2_arc", "ARC-Easy", "test", [ARC_ROWS])
    aux = MMLU(subset="all", split="auxiliary_train")
    assert [c["subject"] for c in aux] == [r["subject"] for r in hub_order(MMLU_ROWS)]
    assert len(MMLU(subset="all", split="test", stop=5200)) == 1
    assert len(ARC(subset="ARC-Easy", split="test")) == 3


def test_local_copy_comes_before_the_cache(tmp_path, monkeypatch):
    base, local = tmp_path / "base", tmp_path / "local"
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(base))
    write_nanochat_cache(base, "openai/gsm8k", "main", "train", [GSM8K_ROWS])
    write_jsonl(local / "openai" / "gsm8k" / "main" / "train.jsonl", GSM8K_ROWS[:1])
    monkeypatch.setenv("CONVPACK_DATA_DIR", str(local))
    assert len(GSM8K("main", "train")) == 1  # the local copy
    # A split missing from CONVPACK_DATA_DIR falls through to the cache ...
    monkeypatch.setenv("CONVPACK_DATA_DIR", str(tmp_path / "empty"))
    assert len(GSM8K("main", "train")) == 5
    # ... but an explicit data_dir= is used alone.
    with pytest.raises(DatasetNotFoundError):
        GSM8K("main", "train", data_dir=str(tmp_path / "empty"))


@pytest.mark.parametrize("manifest", ['["../00000.parquet"]', '"00000.parquet"', "[", "[1]", '["/etc/passwd"]'])
def test_a_bad_manifest_is_refused(tmp_path, monkeypatch, manifest):
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(tmp_path))
    folder = write_nanochat_cache(tmp_path, "openai/gsm8k", "main", "train", [GSM8K_ROWS])
    (folder / "manifest.json").write_text(manifest)
    with pytest.raises(DataFileError) as info:
        GSM8K("main", "train")
    assert str(folder / "manifest.json") in str(info.value)


# ------------------------------------------------------------ local files


def test_local_jsonl_json_and_parquet_give_the_same_rows(tmp_path):
    write_jsonl(tmp_path / "a" / "openai" / "gsm8k" / "main" / "train.jsonl", GSM8K_ROWS)
    (tmp_path / "b" / "openai" / "gsm8k" / "main").mkdir(parents=True)
    (tmp_path / "b" / "openai" / "gsm8k" / "main" / "train.json").write_text(json.dumps(GSM8K_ROWS))
    write_parquet(tmp_path / "c" / "openai" / "gsm8k" / "main" / "train.parquet", GSM8K_ROWS)
    for name in "abc":
        assert list(load_hub_dataset("openai/gsm8k", "main", "train", data_dir=tmp_path / name)) == GSM8K_ROWS


def test_local_jsonl_with_bom_crlf_and_a_line_separator_in_a_string(tmp_path):
    rows = [{"question": "a\u2028b", "answer": "#### 1"}, {"question": "c", "answer": "#### 2"}]
    path = tmp_path / "openai" / "gsm8k" / "main" / "train.jsonl"
    path.parent.mkdir(parents=True)
    text = "\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows)
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert list(load_hub_dataset("openai/gsm8k", "main", "train", data_dir=tmp_path)) == rows


@pytest.mark.parametrize(
    "content,rule",
    [(b'{"a": 1}\n[1]\n', "line 2: expected a JSON object"), (b'{"a": 1}\n{"a": \n', "line 2: not valid JSON"),
     (b'{"a": 1}\n{"a": "\xff"}\n', "line 2 (byte 16): not valid UTF-8")],
)
def test_bad_local_jsonl_names_file_and_line(tmp_path, content, rule):
    path = tmp_path / "openai" / "gsm8k" / "main" / "train.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(DataFileError) as info:
        GSM8K("main", "train", data_dir=tmp_path)
    assert str(info.value).startswith(f"{path}, {rule}")


# -------------------------------------------------------- hub download


class FakeHub:
    """Serves the parquet listing and the shards from memory, counting requests."""

    def __init__(self, endpoint: str, repo_id: str, subset: str, split: str, shards: list[list[dict]]):
        self.files = {}
        urls = []
        for index, rows in enumerate(shards):
            url = f"{endpoint}/api/datasets/{repo_id}/parquet/{subset}/{split}/{index}.parquet"
            buffer = io.BytesIO()
            pq.write_table(table(rows), buffer)
            self.files[url] = buffer.getvalue()
            urls.append(url)
        self.files[f"{endpoint}/api/datasets/{repo_id}/parquet/{subset}/{split}"] = json.dumps(urls).encode()
        self.requests: list[str] = []

    def open(self, url):
        self.requests.append(url)
        return io.BytesIO(self.files[url])


def test_hub_download_lands_in_nanochat_layout_once(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(tmp_path))
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example")
    hub = FakeHub("https://hub.example", "openai/gsm8k", "main", "test", [GSM8K_ROWS[:3], GSM8K_ROWS[3:]])
    monkeypatch.setattr(data_impl, "_http_open", hub.open)
    task = GSM8K(subset="main", split="test")
    assert [c["messages"][0]["content"] for c in task] == [r["question"] for r in hub_order(GSM8K_ROWS)]
    assert len(hub.requests) == 3  # the listing and two shards
    folder = tmp_path / "task_data" / "openai--gsm8k" / "main" / "test"
    assert json.loads((folder / "manifest.json").read_text()) == ["00000.parquet", "00001.parquet"]
    assert sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) == [
        "00000.parquet", "00001.parquet", "manifest.json"
    ]
    GSM8K(subset="main", split="test")
    assert len(hub.requests) == 3  # the second time, from the cache


def test_a_failed_download_leaves_no_manifest(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(tmp_path))
    hub = FakeHub("https://huggingface.co", "openai/gsm8k", "main", "test", [GSM8K_ROWS[:3], GSM8K_ROWS[3:]])
    del hub.files[next(u for u in hub.files if u.endswith("/1.parquet"))]
    monkeypatch.setattr(data_impl, "_http_open", hub.open)
    with pytest.raises(DatasetNotFoundError) as info:
        GSM8K(subset="main", split="test")
    assert "KeyError" in str(info.value)
    assert not (tmp_path / "task_data" / "openai--gsm8k" / "main" / "test" / "manifest.json").exists()


def test_token_goes_to_the_hub_only(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "secret")
    assert data_impl._hub_headers("https://huggingface.co/api/datasets/x") == {"Authorization": "Bearer secret"}
    assert data_impl._hub_headers("https://elsewhere.example/file") == {}
    with pytest.raises(ValueError):
        data_impl._http_open("file:///etc/passwd")

"""Without the `hub` extra (pyarrow, datasets, huggingface_hub) the tasks that
need no hub data import and work; the others say what to install.

Each case runs in a fresh interpreter whose import system refuses those
packages, as on an install without the extra.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from task_fixtures import GSM8K_ROWS, MMLU_ROWS, hub_order, write_jsonl, write_parquet

import convpack

ROOT = Path(__file__).resolve().parents[2]
# Where the convpack under test is imported from (installed, or built in place).
CONVPACK_HOME = str(Path(convpack.__file__).resolve().parents[1])

_BLOCK = """
import sys
BLOCKED = ("pyarrow", "datasets", "huggingface_hub")
class _Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return None
sys.meta_path.insert(0, _Refuse())
sys.path[:0] = [sys.argv[2], sys.argv[1]]
"""


def run(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CONVPACK_DATA_DIR", "HF_DATASETS_OFFLINE")}
    full_env.update(NANOCHAT_BASE_DIR=str(tmp_path / "nanochat"), HF_HUB_OFFLINE="1")
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", _BLOCK + code, str(ROOT), CONVPACK_HOME],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=tmp_path,
        timeout=300,
    )


def test_tasks_without_hub_data_work(tmp_path):
    identity = tmp_path / "identity.jsonl"
    identity.write_text(json.dumps([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]) + "\n")
    write_jsonl(tmp_path / "data" / "openai" / "gsm8k" / "main" / "train.jsonl", GSM8K_ROWS)
    code = f"""
import json
import tasks.common, tasks.data, tasks.arc, tasks.mmlu, tasks.smoltalk  # all import
from tasks.spellingbee import SpellingBee, SimpleSpelling
from tasks.humaneval import HumanEval
from tasks.customjson import CustomJSON
from tasks.gsm8k import GSM8K
he = HumanEval()
out = dict(
    bee=SpellingBee(size=3)[2]["messages"][1]["content"][-1]["text"],
    simple=SimpleSpelling(size=3, split="test")[0]["messages"][1]["content"],
    humaneval=[len(he), sorted(c["task_id"] for c in he)[0]],
    custom=CustomJSON(filepath={str(identity)!r})[0],
    gsm8k=[c["messages"][0]["content"] for c in GSM8K("main", "train", data_dir={str(tmp_path / "data")!r})],
    loaded=sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED),
)
print(json.dumps(out))
"""
    result = run(code, tmp_path)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["bee"].splitlines()[-1].startswith("#### ")
    assert out["simple"].split(":")[1] == ",".join(out["simple"].split(":")[0])
    assert out["humaneval"] == [164, "HumanEval/0"]
    assert out["custom"]["messages"][1] == {"role": "assistant", "content": "hello"}
    assert out["gsm8k"] == [row["question"] for row in hub_order(GSM8K_ROWS)]
    assert out["loaded"] == []


def _import_error(tmp_path: Path, construct: str, **env: str) -> str:
    code = f"""
from tasks.gsm8k import GSM8K
from tasks.mmlu import MMLU
try:
    {construct}
except ImportError as exc:
    print("ImportError:", exc)
"""
    result = run(code, tmp_path, **env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_parquet_copy_without_pyarrow_names_the_extra(tmp_path):
    write_parquet(tmp_path / "data" / "cais" / "mmlu" / "all" / "test.parquet", MMLU_ROWS)
    out = _import_error(tmp_path, f"MMLU('all', 'test', data_dir={str(tmp_path / 'data')!r})")
    assert out.startswith("ImportError:")
    assert "pip install pyarrow datasets" in out and "test.parquet" in out


def test_hub_without_pyarrow_names_the_extra_before_any_network(tmp_path):
    env = {"HF_HUB_OFFLINE": "0"}
    code = "import socket\nsocket.getaddrinfo = socket.create_connection = None\nGSM8K('main', 'train')"
    out = _import_error(tmp_path, code.replace("\n", "; "), **env)
    assert out.startswith("ImportError:")
    assert "pip install pyarrow datasets" in out and "openai/gsm8k" in out

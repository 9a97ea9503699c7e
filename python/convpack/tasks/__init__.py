"""Chat tasks for training and evaluation, one module per dataset.

Every task is a lazy, sliceable view of conversations (``common.Task``);
data comes from a local copy, nanochat's download cache or the hub
(``data``). The modules: ``common`` (Task, TaskMixture, TaskSequence,
render_mc, HubDataset, load_hub_dataset), ``data``, ``arc``, ``customjson``,
``gsm8k``, ``humaneval``, ``mmlu``, ``smoltalk``, ``spellingbee``.

Two ways to import them, the same classes either way:

- ``from convpack.tasks.gsm8k import GSM8K``: always these modules.
- ``from tasks.gsm8k import GSM8K``: the drop-in for nanochat's scripts.
  The installed top-level ``tasks`` is a *namespace package* (a folder with
  no ``__init__.py``) whose modules only re-export from here. Python merges
  every ``tasks`` folder on ``sys.path`` into one namespace, in ``sys.path``
  order, and the script's own directory comes first: run from a checkout
  that has its own ``tasks/`` folder without ``__init__.py`` (nanochat's),
  each module that exists there is the local file, and convpack's fill in
  only the modules missing locally. A local ``tasks/`` *with* an
  ``__init__.py`` is a regular package and replaces convpack's ``tasks``
  entirely. Because the fill-in modules import from ``convpack.tasks``, they
  never pick up a local ``tasks/common.py`` with another API.

Submodules are imported on use, so ``import convpack.tasks`` stays cheap and
needs only numpy; parquet data and the hub need ``pip install pyarrow datasets``.
"""

__all__ = ["arc", "common", "customjson", "data", "gsm8k", "humaneval", "mmlu", "smoltalk", "spellingbee"]

"""Chat tasks for training and evaluation, one module per dataset.

A drop-in for nanochat's ``tasks`` package: ``from tasks.gsm8k import GSM8K``
works the same. Every task is a lazy, sliceable view of conversations (see
``tasks.common.Task``); data comes from the Hugging Face hub or from a local
copy (``data_dir=`` or ``CONVPACK_DATA_DIR``, see ``tasks.data``).

Submodules are imported on use, so ``import tasks`` stays cheap.
"""

__all__ = ["arc", "common", "customjson", "data", "gsm8k", "humaneval", "mmlu", "smoltalk", "spellingbee"]

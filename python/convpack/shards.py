"""Rendered shards: a dataset rendered once into Parquet files, read back
memory-mapped by ``DataGenerator`` (no rendering, only packing).

``render_shards(dataset, tokenizer, out_dir)`` writes ``out_dir``:

* ``convpack-shards.json``: the key (what the rendering depends on), the
  dataset length and rows per shard, then, once every shard is written,
  ``"complete": true``.
* ``shard-00000.parquet``, ...: shard ``s`` holds conversations
  ``[s * rows_per_shard, (s + 1) * rows_per_shard)`` with the columns
  ``index`` (uint64, the source index), ``length`` (uint32, tokens),
  ``ids`` (list of uint16 when the vocabulary fits, else uint32) and
  ``mask_runs`` (list of uint32: run lengths of the mask, alternating
  0s and 1s, starting with the run of 0s). A render with
  ``truncate="turns"`` splits each conversation at exchanges into pieces
  of at most ``max_tokens`` (a ``DataGenerator``'s row) and adds
  ``pieces`` (list of uint32: the pieces' lengths, which ``ids`` holds one
  after another), ``cut`` (uint32: exchanges cut to the row on their own)
  and ``lost`` (uint64: supervised tokens those cuts dropped).

Each shard is written to a temporary name and renamed into place, so a render
killed midway leaves only whole shards; rendering again with the same key
writes the missing ones (the same bytes an uninterrupted render writes, since
rendering is deterministic). Memory is bounded by one shard per process.

The key is a hash of the tokenizer's saved files, the chat format,
``max_tokens`` and the truncation; a directory rendered under another key is
refused with a ``ValueError`` naming the fields that differ.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import tempfile
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Optional, Union

import numpy as np

__all__ = ["CHAT_FORMAT", "RenderedDataset", "render_key", "render_shards"]

MANIFEST = "convpack-shards.json"
FORMAT = "convpack.shards"
VERSION = 1
# The renderer's identity: a chat format (e.g. a Jinja template) adds its own
# here, and every key that names it changes with it.
CHAT_FORMAT = "nanochat"
OPEN_SHARDS = 4


def _tokenizer_hash(tokenizer: Any) -> str:
    """sha256 over the files ``tokenizer.save`` writes (its vocabulary,
    pattern and special tokens)."""
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory() as d:
        tokenizer.save(d, nanochat_files=False)
        for name in sorted(os.listdir(d)):
            with open(os.path.join(d, name), "rb") as f:
                digest.update(name.encode() + b"\0" + hashlib.sha256(f.read()).digest())
    return digest.hexdigest()


def render_key(tokenizer: Any, max_tokens: int = 2048, truncate: str = "tail",
               chat_format: Any = CHAT_FORMAT) -> dict:
    """What a rendering depends on, as a dict of JSON values (``hash`` is
    over the others). ``chat_format`` is the format's identity: a string or
    any JSON value (e.g. a template's text and options)."""
    key = {
        "tokenizer": _tokenizer_hash(tokenizer),
        "vocab_size": int(tokenizer.get_vocab_size()),
        "chat_format": chat_format,
        "max_tokens": int(max_tokens),
        "truncate": truncate,
    }
    key["hash"] = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return key


def _differs(theirs: dict, mine: dict) -> list:
    return [k for k in mine if k != "hash" and theirs.get(k) != mine[k]]


def _mask_runs(mask: np.ndarray) -> np.ndarray:
    """Run lengths of a 0/1 mask, starting with the run of 0s (maybe 0 long)."""
    if mask.size == 0:
        return np.zeros(0, dtype=np.uint32)
    change = np.flatnonzero(np.diff(mask)) + 1
    bounds = np.concatenate(([0], change, [mask.size]))
    runs = np.diff(bounds).astype(np.uint32)
    if mask[0] == 1:
        runs = np.concatenate(([0], runs)).astype(np.uint32)
    return runs


def _runs_to_mask(runs: np.ndarray) -> np.ndarray:
    values = np.arange(runs.size, dtype=np.uint8) % 2
    return np.repeat(values, runs.astype(np.int64))


# Set in each worker (forked: the dataset is shared, never pickled).
_JOB: dict = {}


def _init_worker(job: dict) -> None:
    _JOB.clear()
    _JOB.update(job)


def _render_shard(s: int) -> int:
    """Renders shard ``s`` into place; returns its row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    job = _JOB
    n, per, out_dir = job["n"], job["rows_per_shard"], job["out_dir"]
    lo, hi = s * per, min(n, (s + 1) * per)
    dataset, tok = job["dataset"], job["tokenizer"]
    pieces = None
    if job["packer"] is not None:
        # Split at turns exactly as a DataGenerator's packer splits.
        items = [dataset[i] for i in range(lo, hi)]
        ids, mask, piece_offsets, counts, cut, lost = job["packer"].render_rows(items, lo)
        conv_pieces = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        offsets = piece_offsets[conv_pieces]
        pieces = np.diff(piece_offsets).astype(np.uint32)
    else:
        ids, mask, offsets = tok.render_conversations(
            (dataset[i] for i in range(lo, hi)), max_tokens=job["max_tokens"],
            num_threads=job["num_threads"], chat_format=job["chat_format"])
    id_type = pa.uint16() if job["vocab_size"] <= 2**16 else pa.uint32()
    lengths = np.diff(offsets).astype(np.uint32)
    runs = [_mask_runs(mask[offsets[j]:offsets[j + 1]]) for j in range(hi - lo)]
    run_offsets = np.concatenate(([0], np.cumsum([r.size for r in runs]))).astype(np.int32)
    columns = {
        "index": pa.array(np.arange(lo, hi, dtype=np.uint64)),
        "length": pa.array(lengths),
        "ids": pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)),
                                        pa.array(ids.astype(np.uint32)).cast(id_type)),
        "mask_runs": pa.ListArray.from_arrays(
            pa.array(run_offsets),
            pa.array(np.concatenate(runs) if runs else np.zeros(0, np.uint32),
                     type=pa.uint32())),
    }
    if pieces is not None:
        columns["pieces"] = pa.ListArray.from_arrays(pa.array(conv_pieces.astype(np.int32)),
                                                     pa.array(pieces, type=pa.uint32()))
        columns["cut"] = pa.array(cut.astype(np.uint32))
        columns["lost"] = pa.array(lost)
    table = pa.table(columns)
    final = os.path.join(out_dir, f"shard-{s:05d}.parquet")
    tmp = final + _TMP_TAG + _writer_id()
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return hi - lo


# A shard's temporary name: "shard-00007.parquet" + _TMP_TAG + _writer_id().
_TMP_TAG = ".tmp-"


def _writer_id() -> str:
    """``<host>-<pid>``: unique among the processes sharing ``out_dir``, on
    one machine or several."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _remove_stale_temporaries(out_dir: str) -> None:
    """Removes the half-written shards of renders that were killed midway
    (the shards themselves only ever appear whole, renamed into place).
    Only this machine's temporaries whose process is gone are removed: other
    tasks sharing ``out_dir`` may be writing theirs right now."""
    host = socket.gethostname()
    for name in os.listdir(out_dir):
        shard, tag, owner = name.partition(".parquet" + _TMP_TAG)
        owner_host, _, pid = owner.rpartition("-")
        if (not tag or not shard.startswith("shard-") or owner_host != host
                or not pid.isdigit() or _alive(int(pid))):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(out_dir, name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # PermissionError: alive, another user's
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def render_shards(
    dataset: Any,
    tokenizer: Any,
    out_dir: Union[str, os.PathLike],
    *,
    max_tokens: int = 2048,
    truncate: str = "tail",
    rows_per_shard: int = 16384,
    num_proc: int = 1,
    num_threads: Optional[int] = None,
    progress: bool = True,
    chat_format: Any = None,
    only: Optional[Any] = None,
) -> Optional[RenderedDataset]:
    """Renders ``dataset`` (``len`` + indexing: a Task, a list, an HF
    ``Dataset``) once into Parquet shards under ``out_dir`` and returns the
    :class:`RenderedDataset` over them. Resumes a render that was killed
    (whole shards are kept, the rest rendered).

    Args:
        num_proc: processes rendering shards in parallel (forked, so the
            dataset is shared, not pickled).
        num_threads: Rust threads per process (``None``: all, divided among
            the processes).
        progress: a tqdm bar over the conversations.
        max_tokens: conversations are rendered truncated to this many
            tokens; with ``truncate="turns"``, split at exchanges into pieces
            of at most this many (pass the ``DataGenerator``'s row length:
            ``seq_len + 1`` in ``padded`` and ``bestfit``, ``max_tokens`` in
            ``stream`` and ``varlen``).
        truncate: ``"tail"`` (cut a conversation's end off) or ``"turns"``
            (split it at exchanges, as ``DataGenerator(truncate="turns")``
            does; read back only by a generator whose rows are
            ``max_tokens`` long).
        only: render just these shard numbers (``range(-(-len(dataset) //
            rows_per_shard))`` are all of them) and return ``None`` unless
            that completes the render: how a render is spread over machines
            sharing ``out_dir`` (one task per shard, e.g. a Ray Data
            ``map`` over the shard numbers; see the README). A last call
            without ``only`` renders whatever is missing, marks the render
            complete and returns the dataset. The shards are the bytes a
            single ``render_shards`` call writes.

    Raises:
        ValueError: ``out_dir`` holds shards of another key (naming the
            fields that differ) or of another dataset length; a bad argument.
        ConversationError: a bad conversation (its index in the message).
    """
    if truncate not in ("tail", "turns"):
        raise ValueError(f"shards are rendered with truncate 'tail' or 'turns', got {truncate!r}")
    if not isinstance(rows_per_shard, int) or rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be an int >= 1, got {rows_per_shard!r}")
    if not isinstance(num_proc, int) or num_proc < 1:
        raise ValueError(f"num_proc must be an int >= 1, got {num_proc!r}")
    out_dir = os.fspath(out_dir)
    n = len(dataset)
    from .chat_format import NANOCHAT, format_identity, resolve_chat_format

    template = resolve_chat_format(tokenizer, chat_format)
    key = render_key(tokenizer, max_tokens, truncate, format_identity(template))
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, MANIFEST)
    manifest = {"format": FORMAT, "version": VERSION, "key": key, "num_rows": n,
                "rows_per_shard": rows_per_shard, "complete": False}
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        bad = _differs(old.get("key", {}), key)
        if bad:
            raise ValueError(
                f"{out_dir} holds shards rendered with another {', '.join(bad)} "
                f"(key {old.get('key', {}).get('hash', '?')[:12]}, this render's "
                f"{key['hash'][:12]}); use another directory")
        if (old.get("num_rows"), old.get("rows_per_shard")) != (n, rows_per_shard):
            raise ValueError(
                f"{out_dir} holds a render of {old.get('num_rows')} conversations in shards of "
                f"{old.get('rows_per_shard')}; this one is {n} in shards of {rows_per_shard}")
    else:
        _write_json(path, manifest)
    _remove_stale_temporaries(out_dir)
    shards = -(-n // rows_per_shard)
    wanted = range(shards)
    if only is not None:
        wanted = sorted({int(s) for s in only})
        if any(not 0 <= s < shards for s in wanted):
            raise ValueError(f"only= names shards outside 0..{shards - 1}: {list(only)!r}")
    todo = [s for s in wanted
            if not os.path.exists(os.path.join(out_dir, f"shard-{s:05d}.parquet"))]
    from . import _core
    from .datagen import _core_tokenizer

    threads = num_threads or max(1, _core.max_threads() // num_proc)
    packer = None
    if truncate == "turns":
        # A stream packer's pieces are max_tokens long; it only renders here.
        packer = _core.Packer(
            _core_tokenizer(tokenizer), "stream", batch_size=1, seq_len=max_tokens,
            dataset_len=max(n, 1), rank=0, world_size=1, max_tokens=max_tokens,
            num_threads=threads, truncate="turns",
            chat_format=None if template is None else template._core)
        if template is not None and getattr(tokenizer, "_hf", None) is not None:
            tokenizer._check_template_rules(template)
    job = dict(n=n, rows_per_shard=rows_per_shard, out_dir=out_dir, dataset=dataset,
               tokenizer=tokenizer, max_tokens=max_tokens, num_threads=threads,
               vocab_size=key["vocab_size"], packer=packer,
               chat_format=NANOCHAT if template is None else template)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, initial=n - sum(min(n, (s + 1) * rows_per_shard) - s * rows_per_shard
                                            for s in todo),
                   unit="conv", desc="rendering shards")
    try:
        if num_proc == 1 or len(todo) <= 1:
            _init_worker(job)
            for s in todo:
                done = _render_shard(s)
                if bar is not None:
                    bar.update(done)
        else:
            import multiprocessing

            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(num_proc, mp_context=ctx, initializer=_init_worker,
                                     initargs=(job,)) as pool:
                for done in pool.map(_render_shard, todo):
                    if bar is not None:
                        bar.update(done)
    finally:
        if bar is not None:
            bar.close()
        _JOB.clear()
    if only is not None and not all(
            os.path.exists(os.path.join(out_dir, f"shard-{s:05d}.parquet")) for s in range(shards)):
        return None
    manifest["complete"] = True
    _write_json(path, manifest)
    return RenderedDataset(out_dir)


def _write_json(path: str, value: dict) -> None:
    # Per process: tasks sharing out_dir may write the same manifest at once.
    tmp = path + f".tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


class RenderedDataset:
    """Shards written by :func:`render_shards`, read memory-mapped
    (``pyarrow.parquet.read_table(memory_map=True)``, a few shards open at a
    time). ``dataset[i]`` is ``(ids uint32, mask uint8)``, the rendering of
    conversation ``i`` (rendered with ``truncate="turns"``: ``(ids, mask,
    pieces, cut, lost)``, its pieces' lengths and the split's counts);
    ``DataGenerator`` packs these rows as they are.

    Raises ``ValueError`` when the directory holds no finished render."""

    def __init__(self, out_dir: Union[str, os.PathLike]) -> None:
        self.out_dir = os.fspath(out_dir)
        path = os.path.join(self.out_dir, MANIFEST)
        try:
            with open(path) as f:
                manifest = json.load(f)
        except FileNotFoundError:
            raise ValueError(f"{self.out_dir} holds no rendered shards ({MANIFEST})") from None
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise ValueError(f"{path} is not a convpack shards manifest of version {VERSION}")
        if not manifest.get("complete"):
            raise ValueError(f"{self.out_dir}: the render is not finished; run it again to "
                             "complete it")
        self.key: dict = manifest["key"]
        self.num_rows: int = manifest["num_rows"]
        self.rows_per_shard: int = manifest["rows_per_shard"]
        self._open: OrderedDict = OrderedDict()

    def __len__(self) -> int:
        return self.num_rows

    def _shard(self, s: int) -> tuple:
        if s in self._open:
            self._open.move_to_end(s)
            return self._open[s]
        import pyarrow.parquet as pq

        table = pq.read_table(os.path.join(self.out_dir, f"shard-{s:05d}.parquet"),
                              memory_map=True)
        ids = table.column("ids").combine_chunks()
        runs = table.column("mask_runs").combine_chunks()
        entry = (ids.offsets.to_numpy(), ids.values.to_numpy().astype(np.uint32),
                 runs.offsets.to_numpy(), runs.values.to_numpy())
        if "pieces" in table.column_names:
            pieces = table.column("pieces").combine_chunks()
            entry += (pieces.offsets.to_numpy(), pieces.values.to_numpy(),
                      table.column("cut").to_numpy(), table.column("lost").to_numpy())
        self._open[s] = entry
        if len(self._open) > OPEN_SHARDS:
            self._open.popitem(last=False)
        return entry

    def __getitem__(self, i: int) -> tuple:
        if not isinstance(i, (int, np.integer)) or not 0 <= i < self.num_rows:
            raise IndexError(f"row {i!r} of {self.num_rows}")
        s, j = divmod(int(i), self.rows_per_shard)
        entry = self._shard(s)
        offsets, ids, run_offsets, runs = entry[:4]
        row = ids[offsets[j]:offsets[j + 1]]
        mask = _runs_to_mask(runs[run_offsets[j]:run_offsets[j + 1]])
        if len(entry) == 4:
            return row, mask
        piece_offsets, pieces, cut, lost = entry[4:]
        return (row, mask, pieces[piece_offsets[j]:piece_offsets[j + 1]], int(cut[j]),
                int(lost[j]))

    def check(self, tokenizer: Any, max_tokens: int, truncate: str,
              chat_format: Any = CHAT_FORMAT) -> None:
        """``ValueError`` naming what differs when these shards were not
        rendered with this tokenizer, chat format, ``max_tokens`` and
        ``truncate``."""
        mine = render_key(tokenizer, max_tokens, truncate, chat_format)
        bad = _differs(self.key, mine)
        if bad:
            raise ValueError(
                f"the shards in {self.out_dir} were rendered with another {', '.join(bad)} "
                f"than this generator's (" + ", ".join(
                    f"{k}: {self.key.get(k)!r} vs {mine[k]!r}" for k in bad if k != "tokenizer")
                + ")")

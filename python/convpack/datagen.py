"""``convpack.DataGenerator``: conversations to device-ready training batches.

A drop-in for nanochat's SFT and mid-training data generators: the same
tensors, built by the Rust packer (``convpack._core.Packer``) straight into
the buffers that become the batch.

Modes (see SPEC "Packing: DataGenerator"):

* ``padded``: nanochat's SFT collate. ``(inputs, targets)`` int64,
  ``(B, max(len) - 1)``.
* ``stream``: nanochat's mid-training loop. ``inputs`` int32, ``targets``
  int64, ``(B, T)``.
* ``bestfit``: BOS-aligned best-fit rows of ``T + 1`` tokens, ``overflow``
  ``"pad"`` or ``"crop"``. ``inputs`` int32, ``targets`` int64, ``(B, T)``.
* ``varlen``: padding-free rows for variable-length attention. Yields
  ``(inputs, targets, cu_seqlens, position_ids)``:

  - ``inputs`` int32 and ``targets`` int64, ``(B, T)``; rows are filled end
    to end with *segments*, each a run of one conversation's tokens whose
    targets are that conversation's next tokens (-1 where the loss mask is
    0). A conversation that does not fit the rest of a row continues in a new
    segment at the start of the next row (the next batch after the last
    row), so every supervised token is a target exactly once per epoch.
    Segments never cross rows (none is longer than ``T``).
  - ``cu_seqlens`` int32, ``(max_seqs + 1,)``: segment boundaries over the
    flattened ``B*T`` tokens, ``0, end_1, ..., B*T``, then ``B*T`` repeated
    (empty sequences) so the shape never changes and a compiled model does
    not recompile. Pass ``max_seqlen=T`` to the attention kernel.
  - ``position_ids`` int64, ``(B, T)``: restart at 0 at every segment (so
    ``position_ids == 0`` marks the same boundaries).
  - At most ``max_seqs`` segments per batch (default ``B * max(4, T // 16)``).
    A segment is placed only if the batch can still give each later row one
    segment and, when the segment ends before its row does, the rest of its
    row one more; otherwise the rest of the row becomes one filler segment
    (inputs BOS, targets -1). Only many very short conversations hit this.

Iteration never ends on its own (like nanochat's generators): stop on
``last_step``.

PyTorch is optional: ``output="numpy"`` yields numpy arrays and needs only
numpy; ``output="torch"`` (the default) needs ``pip install torch``.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from collections.abc import Sequence
from typing import Any, Callable, Optional

import numpy as np

from . import _core
from .chat_format import format_identity, resolve_chat_format
from .shards import RenderedDataset
from .sources import STREAM_LEN, StreamSource, is_stream

__all__ = [
    "DataGenerator",
    "NoSupervisedTokensWarning",
    "PinnedRing",
    "resolve_distributed",
]

MODES = ("padded", "stream", "bestfit", "varlen")
OUTPUTS = ("torch", "numpy")
_STATE_FORMAT = "convpack.DataGenerator"
_STATE_VERSION = 1
# Tokens per batch (batch_size * (seq_len + 1)) and buffered conversations
# are bounded before anything is allocated (the packer checks the same).
MAX_BATCH_TOKENS = 2**31 - 1
MAX_BUFFER_SIZE = 2**20
MAX_PREFETCH = 1024
# Items a shuffled stream is drawn from (shuffle=True on a stream).
DEFAULT_SHUFFLE_BUFFER = 1024
# Chunks read ahead for `prefetch` (each waits on a thread of its own, and
# they render one after another on the generator's `num_threads`).
MAX_CHUNKS_AHEAD = 8


class NoSupervisedTokensWarning(UserWarning):
    """A batch came out with no supervised target (every target -1): a loss
    averaged over it is NaN. Warned once per generator; the conversations
    with no supervised token are counted in
    ``DataGenerator.stats["unsupervised"]``."""


def _import_torch() -> Any:
    """torch, or an ``ImportError`` that says how to get it."""
    try:
        import torch
    except ImportError:
        raise ImportError(
            "DataGenerator(output='torch') needs PyTorch: pip install torch; "
            "output='numpy' needs only numpy"
        ) from None
    return torch


#: The most ranks a job may have (ranks and sizes are 64-bit in the core).
MAX_WORLD_SIZE = 2**63 - 1


def _check_int(name: str, value: Any, low: int, high: Optional[int] = None) -> int:
    """``value`` as an int in ``[low, high]``: ``TypeError`` for a non-int
    (bools and floats included), ``ValueError`` out of range."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def _physical_memory() -> Optional[int]:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def resolve_distributed(rank: Optional[int] = None, world_size: Optional[int] = None) -> tuple:
    """``(rank, world_size)``: the arguments where given, else from
    ``torch.distributed`` when it is initialised, else the ``RANK`` /
    ``WORLD_SIZE`` environment variables, else ``(0, 1)``.

    Raises ``TypeError`` for a non-int argument and ``ValueError`` for an
    out-of-range rank or a malformed variable.
    """
    if rank is not None:
        _check_int("rank", rank, 0, MAX_WORLD_SIZE - 1)
    if world_size is not None:
        _check_int("world_size", world_size, 1, MAX_WORLD_SIZE)
    if rank is None or world_size is None:
        detected_rank, detected_world = 0, 1
        # torch.distributed can only be initialised if torch was imported.
        torch = sys.modules.get("torch")
        dist = getattr(torch, "distributed", None)
        if dist is not None and dist.is_available() and dist.is_initialized():
            detected_rank, detected_world = dist.get_rank(), dist.get_world_size()
        else:
            for name in ("RANK", "WORLD_SIZE"):
                value = os.environ.get(name)
                if value is not None and not value.strip().isdigit():
                    raise ValueError(f"environment variable {name}={value!r} is not a non-negative int")
            detected_rank = int(os.environ.get("RANK", "0"))
            detected_world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = detected_rank if rank is None else rank
        world_size = detected_world if world_size is None else world_size
    if not 1 <= world_size <= MAX_WORLD_SIZE:
        raise ValueError(f"world_size must be in [1, {MAX_WORLD_SIZE}], got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    return int(rank), int(world_size)


class PinnedRing:
    """A ring of host buffers for asynchronous host-to-device copies.

    Slots are handed out round-robin. A slot is handed out again only after
    (1) it was released by the consumer, which issued the copy that reads it,
    and (2) that copy's event has completed (``event.synchronize()``), so a
    slot is never overwritten while a ``non_blocking`` copy still reads it.

    ``make_slot()`` builds one slot's buffers; events need ``synchronize()``.
    """

    def __init__(self, n_slots: int, make_slot: Callable[[], Any]) -> None:
        if n_slots < 1:
            raise ValueError("a ring needs at least one slot")
        self.slots = [make_slot() for _ in range(n_slots)]
        self._released = [True] * n_slots
        self._events: list = [None] * n_slots
        self._next = 0
        self._cond = threading.Condition()

    def acquire(self, stop: Optional[threading.Event] = None) -> int:
        """The next slot, once it is free; ``-1`` if ``stop`` was set first."""
        with self._cond:
            i = self._next
            while not self._released[i]:
                if stop is not None and stop.is_set():
                    return -1
                self._cond.wait(timeout=0.05)
            self._released[i] = False
            self._next = (i + 1) % len(self.slots)
            event, self._events[i] = self._events[i], None
        if event is not None:
            event.synchronize()
        return i

    def release(self, i: int, event: Any = None) -> None:
        """Gives slot ``i`` back; it is reused after ``event`` completes."""
        with self._cond:
            self._events[i] = event
            self._released[i] = True
            self._cond.notify_all()


class _CudaTransfer:
    """Pinned host slots and ``non_blocking`` copies to a CUDA device."""

    pin_memory = True

    def __init__(self, device: Any) -> None:
        torch = _import_torch()
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {str(device)!r}: CUDA is not available here; "
                "pass device='cpu' (or leave device unset) to get batches on the CPU")
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"device {str(device)!r}: there are {torch.cuda.device_count()} CUDA devices")
        self.torch = torch
        self.device = torch.device("cuda", index)

    def send(self, tensors: Sequence[Any]) -> tuple:
        torch = self.torch
        out = tuple(t.to(self.device, non_blocking=True) for t in tensors)
        # The copies run on the target device's current stream; record there
        # (not on whatever device is current) so the event covers them.
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        return out, event


def _resolve_device(device: Any, output: str) -> Any:
    """The torch device batches go to (``None`` for numpy output).

    ``cpu`` and ``cuda[:n]`` have their own paths; any other torch device
    must accept a tensor through ``.to(device)`` here and now, else
    ``ValueError`` naming it (never CPU tensors in its place).
    """
    if output == "numpy":
        if device is None or str(device) == "cpu":
            return None
        raise ValueError(f"output='numpy' yields host arrays: device must be 'cpu', got {device!r}")
    torch = _import_torch()
    try:
        dev = torch.device("cpu" if device is None else device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"device {device!r} is not a torch device: {e}") from None
    if dev.type not in ("cpu", "cuda"):
        try:
            torch.zeros(1, dtype=torch.int32).to(dev)
        except Exception as e:  # each backend raises its own kind
            raise ValueError(
                f"device {str(dev)!r} cannot take tensors here ({type(e).__name__}: {e}); "
                "use 'cpu' or 'cuda[:n]'") from None
    return dev


def _make_transfer(device: Any) -> Any:
    """The transfer for a device (tests replace this to fake CUDA on CPU)."""
    return _CudaTransfer(device)


class _Batch:
    __slots__ = ("slot", "arrays", "views", "state", "progress", "cache")

    def __init__(self, slot, arrays, views, state, progress, cache) -> None:
        self.slot = slot
        self.arrays = arrays
        self.views = views
        self.state = state
        self.progress = progress
        self.cache = cache


class _Producer:
    """Makes batches: fetches what the packer asks for, has it rendered and
    packed, and keeps the next conversations rendering in the background.

    Everything runs in the thread that calls ``next()``; only rendering runs
    elsewhere (on Rust threads, without the GIL). ``ahead`` batches' worth of
    conversations are kept rendering beyond the one chunk that is always in
    flight."""

    def __init__(self, dataset, packer, chunk: int, ring: Optional[PinnedRing],
                 cache: bool = False, ahead: int = 0, batch_size: int = 1) -> None:
        self.dataset = dataset
        self.packer = packer
        self.chunk = chunk
        self.ring = ring
        self.cache = cache
        self.ahead = ahead
        # Conversations a batch uses, estimated from what the batches so far
        # used (the read-ahead's depth only; batches do not depend on it).
        self.per_batch = float(batch_size)

    def _read(self, n: int) -> int:
        """Reads the next ``n`` conversations the packer wants and submits
        them: rendering runs in the background while this thread (holding
        the GIL) reads on."""
        p = self.packer
        indices = p.wanted(n)
        dataset = self.dataset
        if isinstance(dataset, StreamSource):
            items = dataset.read(indices)
            if items:
                p.submit(items)
            return len(items)
        if self.cache:
            # Cached conversations are not read again (None stands in).
            items = [None if hit else dataset[i] for i, hit in zip(indices, p.cached(indices))]
        else:
            items = [dataset[i] for i in indices]
        p.submit(items)
        return len(indices)

    def _read_ahead(self) -> tuple:
        """``(chunks, size)``: chunks to keep rendering after a batch is
        planned, and how many conversations to read into each new one: one
        chunk, plus enough for ``ahead`` batches in at most
        ``MAX_CHUNKS_AHEAD`` more (larger chunks for a deep read-ahead)."""
        if self.ahead == 0:
            return 1, self.chunk
        convs = int(self.ahead * self.per_batch)
        size = max(self.chunk, -(-convs // MAX_CHUNKS_AHEAD))
        return 1 + -(-convs // size), size

    def produce(self) -> _Batch:
        p = self.packer
        while True:
            need = p.plan()
            if need == 0:
                break
            # Bounded chunks: a large best-fit buffer fills over several
            # reads instead of one huge one.
            if self._read(max(self.chunk, min(need, 16 * self.chunk))) == 0:
                # A one-shot stream ended: no batch can be completed.
                raise StopIteration
            if p.in_flight() < 2:
                # Read the next chunk while that one renders.
                self._read(self.chunk)
        # Render the next conversations while this batch is written and used.
        chunks, size = self._read_ahead()
        for _ in range(chunks - p.in_flight()):
            self._read(size)
        rows, cols, nseq, wide = p.shape()
        in_dtype = np.int64 if wide else np.int32
        shapes = [((rows, cols), in_dtype), ((rows, cols), np.int64)]
        if nseq:
            shapes += [((nseq,), np.int32), ((rows, cols), np.int64)]
        slot, views = -1, None
        if self.ring is None:
            arrays = [np.empty(shape, dtype=dt) for shape, dt in shapes]
        else:
            slot = self.ring.acquire()
            flats = self.ring.slots[slot]
            views = [flat[: int(np.prod(shape))].view(*shape)
                     for flat, (shape, _) in zip(flats, shapes)]
            arrays = [v.numpy() for v in views]
        try:
            p.write(*arrays)
        except BaseException:
            if slot >= 0:
                self.ring.release(slot)
            raise
        state = p.state()
        if isinstance(self.dataset, StreamSource):
            self.dataset.prune(state)
        if state["batches"]:
            self.per_batch = max(1.0, state["consumed"] / state["batches"])
        return _Batch(slot, arrays, views, state, p.progress(), p.cache_stats())


def _core_tokenizer(tokenizer: Any) -> Any:
    """The core of a convpack ``Tokenizer``; a ``tiktoken.Encoding`` or an
    object holding one in ``.enc`` (nanochat's own tokenizer, as chat_sft's
    ``load_model`` returns it) gets the equivalent convpack tokenizer, built
    once per encoding, with identical ids."""
    from .interop import from_tiktoken, tiktoken_encoding_of

    core = getattr(tokenizer, "_core", tokenizer)
    if isinstance(core, _core.CoreTokenizer):
        return core
    if tiktoken_encoding_of(tokenizer) is not None:
        return from_tiktoken(tokenizer)._core
    raise TypeError(
        f"tokenizer must be a convpack.Tokenizer, a tiktoken.Encoding or an object "
        f"holding one in .enc (nanochat's tokenizer), got {type(tokenizer).__name__}; "
        "or load the same vocabulary with convpack.Tokenizer (e.g. from_directory)"
    )


def _format_label(identity: Any) -> str:
    """A chat format's identity (``format_identity``) for an error message."""
    if isinstance(identity, dict) and isinstance(identity.get("template_sha256"), str):
        return (f"chat template sha256 {identity['template_sha256'][:12]} (train_on="
                f"{identity.get('train_on')!r}, train_end_of_turn={identity.get('train_end_of_turn')!r}, "
                f"variables={identity.get('variables')!r})")
    return repr(identity)


class DataGenerator:
    """Packs a dataset of conversations into training batches.

    Args:
        dataset: anything with ``__len__`` and ``__getitem__`` returning
            conversations (every Task is).
        tokenizer: a ``convpack.Tokenizer``, or a ``tiktoken.Encoding`` or an
            object holding one in ``.enc`` (nanochat's tokenizer): the same ids.
        batch_size: rows per batch (``B``).
        seq_len: columns per row (``T``); required except in ``padded``, where
            it optionally truncates conversations to ``T + 1`` tokens.
            ``batch_size * (seq_len + 1)`` is at most ``2**31 - 1``.
        mode: ``"padded"``, ``"stream"``, ``"bestfit"`` or ``"varlen"``.
        overflow: ``bestfit`` only: ``"pad"`` or ``"crop"`` (``"crop"`` with
            another mode is a ``ValueError``).
        buffer_size: ``bestfit`` only: conversations to choose from (at most
            ``2**20``).
        max_tokens: conversations are rendered truncated to this many tokens.
        truncate: what happens to a conversation longer than a row
            (``min(max_tokens, seq_len + 1)``; ``max_tokens`` in ``stream``
            and ``varlen``): ``"tail"`` (nanochat's) cuts its end off;
            ``"turns"`` splits it at exchange boundaries into several
            training conversations, each starting with BOS, repeating the
            system message if there is one, and holding whole
            user-assistant exchanges; only a single exchange longer than the
            row is cut. Each piece is packed as a conversation of its own.
            ``"keep"`` (``bestfit`` only) is nanochat's loader bit for bit:
            the conversation (rendered to ``max_tokens``) enters the buffer
            whole, never fits a row and so is never trained on; it takes a
            buffer place for good (all places taken: rows of padding only).
        cache: keep each conversation's rendering (ids as uint16 when the
            vocabulary allows, else uint32; the mask as run lengths) so later
            epochs neither read nor render it again, only pack. Batches are
            identical with and without the cache.
        cache_bytes: the cache's memory bound (default 2 GiB); once full,
            caching stops (nothing fails) and the rest is rendered as usual.
        device: where batches go (``None``: CPU). ``"cuda[:n]"``: batches are
            built in a ring of pinned buffers and copied with
            ``non_blocking=True``. Another torch device (e.g. ``"meta"``) must
            accept tensors through ``.to(device)``, else ``ValueError``.
        output: ``"torch"`` (tensors; needs PyTorch) or ``"numpy"`` (numpy
            arrays on the host; needs only numpy; ``device`` must be CPU).
        rank, world_size: default from ``torch.distributed``, then the
            ``RANK``/``WORLD_SIZE`` variables, then 0/1.
        num_iterations: ``-1`` (the default): ``last_step`` turns True once an
            epoch's worth of conversations has been consumed. ``n > 0``:
            ``last_step`` turns True at batch ``n`` (or after an epoch, if
            that comes first) and ``progress`` is ``batches / n``.
        prefetch: batches' worth of conversations kept rendering ahead,
            in the background, while the caller uses a batch (0: one chunk
            of ``max(32, 8 * threads)`` conversations ahead, always kept).
            Rendering, nearly all of a batch's cost, runs on Rust threads
            without the GIL; reading the dataset (which holds the GIL) and
            packing (without it) happen in ``next()``, so no Python thread
            is started and no batch waits on a handoff between threads.
            Batches are the same for every ``prefetch``.
        num_threads: rendering threads (``None``: all). The chunks read
            ahead render one after another, so rendering never takes more
            threads than this, whatever ``prefetch`` is.
        on_error: ``"raise"`` (``ConversationError`` naming the dataset index)
            or ``"skip"`` (dropped and counted in ``skipped``).
        max_seqs: ``varlen`` only: segments per batch (``cu_seqlens`` has
            ``max_seqs + 1`` entries).
        shuffle, seed: each epoch reads the dataset (or rendered shards) in
            its own permutation, drawn from ``seed`` and the epoch alone, so
            the same on every rank (ranks still cover each epoch once) and
            after a resume (computed per index: nothing to store). A stream
            is read through a seeded buffer of ``shuffle_buffer`` items
            instead (default 1024; see ``convpack.sources``): each pass its
            own order, the same on every rank's view, its buffer in
            ``state_dict()``.
        dataset: also an iterable without ``len`` (a stream: see
            ``convpack.sources``) or a ``convpack.RenderedDataset``.
        chat_format: as for ``Tokenizer.render_conversation`` (``None``: the
            tokenizer's ``chat_template`` if it has one, else nanochat's
            format). With a template, rows are padded with its
            ``bos_token`` (else ``eos_token``) id.

    Yields (iterating never ends; stop on ``last_step``), per mode:

    ========== ============================== ==================================
    mode       inputs                         other outputs
    ========== ============================== ==================================
    padded     int64 ``(B, max(len) - 1)``    targets int64, same shape
    stream     int32 ``(B, T)``               targets int64 ``(B, T)``
    bestfit    int32 ``(B, T)``               targets int64 ``(B, T)``
    varlen     int32 ``(B, T)``               targets int64 ``(B, T)``,
                                              cu_seqlens int32 ``(max_seqs+1,)``,
                                              position_ids int64 ``(B, T)``
    ========== ============================== ==================================

    ``padded`` inputs are int64 because nanochat's SFT collate builds them so;
    the other modes follow nanochat's int32 inputs. Targets are -1 where the
    loss mask is 0 (``stream`` ignores the mask).

    Attributes (updated after every ``next()``):
        last_step (bool): True once an epoch's worth has been consumed (with
            ``num_iterations=-1``, after one epoch), or at batch
            ``num_iterations``.
        progress (float): 0..1 of the current epoch, from what was consumed
            (``batches / num_iterations`` when ``num_iterations > 0``).
        epoch (int): the 1-based epoch the last batch began in.
        stats (dict): ``pad`` (share of target positions that are padding),
            ``crop`` (share of entered tokens dropped by cropping or
            truncation to a row), ``supervised`` (share of targets not -1),
            ``batches``, ``tokens``, ``unsupervised`` (conversations that had
            no supervised token; the first batch with no supervised target
            at all issues a ``NoSupervisedTokensWarning``, once); with ``truncate="turns"``:
            ``split`` (conversations split into pieces), ``exchanges_cut``
            (single exchanges longer than a row, cut) and
            ``supervised_dropped`` (supervised tokens those cuts lost); with
            ``cache=True``: ``cache``, a dict of ``bytes`` used,
            ``conversations`` cached, ``hits`` (conversations served from
            it) and ``full``.
        skipped (int): bad conversations dropped with ``on_error="skip"``.

    Raises:
        TypeError: an argument of the wrong type (e.g. ``rank=1.5``), or a
            tokenizer that is not a ``convpack.Tokenizer``.
        ValueError: an invalid or oversized argument (named in the message).
        MemoryError: batches larger than this machine's memory.
        ImportError: ``output="torch"`` without PyTorch installed.

    ``next()`` may be called from several threads: calls are serialised.
    """

    def __init__(
        self,
        dataset: Any,
        tokenizer: Any,
        *,
        batch_size: int,
        seq_len: Optional[int] = None,
        mode: str = "bestfit",
        overflow: str = "pad",
        buffer_size: int = 100,
        max_tokens: int = 2048,
        truncate: str = "tail",
        cache: bool = False,
        cache_bytes: int = 2**31,
        device: Any = None,
        output: str = "torch",
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        num_iterations: int = -1,
        prefetch: int = 2,
        num_threads: Optional[int] = None,
        on_error: str = "raise",
        max_seqs: Optional[int] = None,
        shuffle: bool = False,
        seed: int = 0,
        chat_format: Any = None,
        shuffle_buffer: Optional[int] = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if overflow not in ("pad", "crop"):
            raise ValueError(f"overflow must be 'pad' or 'crop', got {overflow!r}")
        if overflow == "crop" and mode != "bestfit":
            raise ValueError(f"overflow='crop' applies to mode='bestfit' only, not {mode!r}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if truncate not in ("tail", "turns", "keep"):
            raise ValueError(f"truncate must be 'tail', 'turns' or 'keep', got {truncate!r}")
        if truncate == "keep" and mode != "bestfit":
            raise ValueError(f"truncate='keep' applies to mode='bestfit' only, not {mode!r}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        batch_size = _check_int("batch_size", batch_size, 1, MAX_BATCH_TOKENS)
        buffer_size = _check_int("buffer_size", buffer_size, 1, MAX_BUFFER_SIZE)
        max_tokens = _check_int("max_tokens", max_tokens, 1, MAX_BATCH_TOKENS)
        prefetch = _check_int("prefetch", prefetch, 0, MAX_PREFETCH)
        num_iterations = _check_int("num_iterations", num_iterations, -1, 2**63 - 1)
        if num_iterations == 0:
            raise ValueError("num_iterations must be -1 (one epoch) or >= 1, got 0")
        if seq_len is None and mode != "padded":
            raise ValueError(f"mode {mode!r} needs seq_len")
        if seq_len is not None:
            seq_len = _check_int("seq_len", seq_len, 1, MAX_BATCH_TOKENS)
        if num_threads is not None:
            num_threads = _check_int("num_threads", num_threads, 1, 4096)
        if not isinstance(cache, bool):
            raise TypeError(f"cache must be a bool, got {type(cache).__name__}")
        cache_bytes = _check_int("cache_bytes", cache_bytes, 0, 2**63 - 1)
        if not isinstance(shuffle, bool):
            raise TypeError(f"shuffle must be a bool, got {type(shuffle).__name__}")
        seed = _check_int("seed", seed, 0, 2**64 - 1)
        # The widest row: padded rows are the longest conversation minus one.
        if mode == "padded":
            max_cols = min(max_tokens, (seq_len or max_tokens) + 1) - 1
        else:
            max_cols = seq_len
        if batch_size * (max_cols + 1) > MAX_BATCH_TOKENS:
            raise ValueError(
                f"batch_size * (seq_len + 1) = {batch_size} * {max_cols + 1} is above "
                f"{MAX_BATCH_TOKENS} tokens per batch")
        rank, world_size = resolve_distributed(rank, world_size)
        source: Optional[StreamSource] = None
        if is_stream(dataset):
            if cache:
                raise ValueError(
                    "cache=True keeps rendered conversations by dataset index, which a stream "
                    "does not have: render it once with convpack.render_shards instead")
            # The packer reads this rank's stream by ordinal (one rank of one).
            if shuffle_buffer is None:
                shuffle_buffer = DEFAULT_SHUFFLE_BUFFER
            shuffle_buffer = _check_int("shuffle_buffer", shuffle_buffer, 1, MAX_BUFFER_SIZE)
            source = StreamSource(dataset, rank, world_size,
                                  shuffle_buffer=shuffle_buffer if shuffle else 0, seed=seed)
            n = STREAM_LEN
        else:
            if shuffle_buffer is not None:
                raise ValueError(
                    "shuffle_buffer applies to streams; shuffle=True permutes a map-style "
                    "dataset (or rendered shards) whole, with no buffer")
            n = len(dataset)
            if n < 1:
                raise ValueError("the dataset is empty")
        if mode == "varlen":
            if max_seqs is None:
                max_seqs = batch_size * max(4, seq_len // 16)
            max_seqs = _check_int("max_seqs", max_seqs, batch_size + 1, MAX_BATCH_TOKENS)
        else:
            max_seqs = None
        core_tok = _core_tokenizer(tokenizer)
        template = resolve_chat_format(tokenizer, chat_format)
        if template is not None and getattr(tokenizer, "_hf", None) is not None:
            # Here rather than at the first batch.
            tokenizer._check_template_rules(template)
        if isinstance(dataset, RenderedDataset):
            # Rows rendered ahead enter at the packer: they must be what this
            # generator would render.
            dataset.check(tokenizer, max_tokens, truncate, format_identity(template))
        self.device = _resolve_device(device, output)
        # Memory taken before the first batch: the batches in flight (ring
        # slots or queued batches) and the best-fit buffer at its longest.
        cell_bytes = (8 if mode == "padded" else 4) + 8 + (8 if mode == "varlen" else 0)
        in_flight = prefetch + 2
        needed = in_flight * batch_size * max(max_cols, 1) * cell_bytes
        if mode == "bestfit":
            needed += buffer_size * min(max_tokens, seq_len + 1) * 5
        memory = _physical_memory()
        if memory is not None and needed > memory:
            raise MemoryError(
                f"batch_size={batch_size}, seq_len={seq_len}, prefetch={prefetch}"
                + (f", buffer_size={buffer_size}" if mode == "bestfit" else "")
                + f" need about {needed / 2**30:.1f} GiB; this machine has {memory / 2**30:.1f} GiB")

        self.dataset = dataset
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.mode = mode
        self.overflow = overflow
        self.buffer_size = buffer_size
        self.max_tokens = max_tokens
        self.rank = rank
        self.world_size = world_size
        self.num_iterations = num_iterations
        self.prefetch = prefetch
        self.on_error = on_error
        self.output = output
        self.truncate = truncate
        self._source = source
        # The remainder an elastic resume dealt (see load_state_dict), or None.
        self._elastic: Optional[dict] = None
        self._packer_args = dict(
            batch_size=batch_size, seq_len=seq_len, dataset_len=n,
            rank=0 if source else rank, world_size=1 if source else world_size,
            overflow=overflow, buffer_size=buffer_size,
            max_tokens=max_tokens, max_seqs=max_seqs,
            num_threads=num_threads or 0, skip_errors=on_error == "skip", truncate=truncate,
            chat_format=None if template is None else template._core,
        )
        if shuffle and source is None:
            # Streams are shuffled by their source's buffer, not by ordinal.
            self._packer_args["shuffle_seed"] = seed
        self.shuffle, self.seed = shuffle, seed
        self.shuffle_buffer = shuffle_buffer if shuffle and source is not None else None
        self.cache = cache
        self.chat_format = template
        self._core_tok = core_tok
        try:
            packer = _core.Packer(core_tok, mode, **self._packer_args,
                                  cache_bytes=cache_bytes if cache else None)
        except ValueError as e:
            raise ValueError(str(e)) from None
        if isinstance(dataset, RenderedDataset) and truncate == "turns":
            row = packer.piece_limit()
            if row != max_tokens:
                raise ValueError(
                    f"the shards in {dataset.out_dir} are split at turns into pieces of up to "
                    f"max_tokens={max_tokens}, but this generator's rows hold {row} tokens: "
                    f"render them with max_tokens={row} (and pass that here)")
        threads = num_threads or _core.max_threads()
        self._chunk = max(32, 8 * threads)

        self._transfer = None
        ring = None
        if self.device is not None and self.device.type == "cuda":
            self._transfer = _make_transfer(self.device)
            ring = self._new_ring(max(1, max_cols))
        self._producer = _Producer(source or dataset, packer, self._chunk, ring, cache,
                                   ahead=prefetch, batch_size=batch_size)
        self.max_seqs = max_seqs
        self._state: dict = packer.state()
        self._failure: Optional[BaseException] = None
        # Serialises next(), close() and load_state_dict() across threads.
        self._lock = threading.RLock()
        self._warned_unsupervised = False
        self._set_progress(packer.state(), packer.progress(), packer.cache_stats())

    # ------------------------------------------------------------ buffers

    def _new_ring(self, max_cols: int) -> PinnedRing:
        torch = _import_torch()
        b = self.batch_size
        pin = getattr(self._transfer, "pin_memory", False)
        in_dtype = torch.int64 if self.mode == "padded" else torch.int32
        cells = b * max_cols
        nseq = self._packer_args["max_seqs"] + 1 if self.mode == "varlen" else 0

        def make_slot():
            slot = [torch.empty(cells, dtype=in_dtype, pin_memory=pin),
                    torch.empty(cells, dtype=torch.int64, pin_memory=pin)]
            if nseq:
                slot += [torch.empty(nseq, dtype=torch.int32, pin_memory=pin),
                         torch.empty(cells, dtype=torch.int64, pin_memory=pin)]
            return slot

        return PinnedRing(self.prefetch + 2, make_slot)

    # ------------------------------------------------------------ iteration

    def __iter__(self) -> DataGenerator:
        return self

    def __next__(self) -> tuple:
        with self._lock:
            before = self._state["supervised"]
            batch = self._next_locked()
            empty = self._state["supervised"] == before and self.mode != "stream"
        if empty and not self._warned_unsupervised:
            self._warned_unsupervised = True
            warnings.warn(
                f"batch {self.stats['batches']} has no supervised target (every target is -1, "
                "so a mean loss over it is NaN); "
                f"{self.stats['unsupervised']} conversation(s) so far have no supervised token: "
                "check the dataset's assistant messages and max_tokens",
                NoSupervisedTokensWarning, stacklevel=2)
        return batch

    def _next_locked(self) -> tuple:
        if self._failure is not None:
            raise self._failure
        try:
            item = self._producer.produce()
        except BaseException as e:
            self._failure = e
            raise
        if self._producer.ring is not None:
            tensors, event = self._transfer.send(item.views)
            self._producer.ring.release(item.slot, event)
        elif self.output == "numpy":
            tensors = tuple(item.arrays)
        else:
            torch = _import_torch()
            tensors = tuple(torch.from_numpy(a) for a in item.arrays)
            if self.device.type != "cpu":
                tensors = tuple(t.to(self.device) for t in tensors)
        self._state = item.state
        self._set_progress(item.state, item.progress, item.cache)
        return tuple(tensors)

    def close(self) -> None:
        """Stops the background work: waits for the conversations rendering
        ahead and drops them with the rendered buffer (after waiting for a
        ``next()`` in progress in another thread). Iterating afterwards
        continues with the same batches, reading and rendering again what
        it needs. Raises nothing a ``next()`` would not."""
        with self._lock:
            packer = self._producer.packer
            if packer.in_flight():
                packer.load_state(dict(self._state))

    # ------------------------------------------------------------ progress

    def _set_progress(self, state: dict, progress: tuple, cache: Optional[tuple] = None) -> None:
        if self._source is not None:
            progress = self._source.progress(state)
        epoch, fraction, epoch_done = progress
        # After an elastic resume, batches count on from the old ranks'.
        batches = state["batches"] + (self._elastic["batches"] if self._elastic else 0)
        self.epoch: int = epoch
        self.skipped: int = state["skipped"]
        if self.num_iterations > 0:
            self.progress: float = min(batches / self.num_iterations, 1.0)
        else:
            self.progress = fraction
        self.last_step: bool = bool(epoch_done) or (0 < self.num_iterations <= batches)
        tokens, entered = state["tokens"], state["entered"]
        self.stats: dict = {
            "pad": state["pad"] / tokens if tokens else 0.0,
            "crop": state["dropped"] / entered if entered else 0.0,
            "supervised": state["supervised"] / tokens if tokens else 0.0,
            "batches": batches,
            "tokens": tokens,
            "unsupervised": state["unsupervised"],
            "split": state["split"],
            "exchanges_cut": state["cut"],
            "supervised_dropped": state["lost"],
        }
        if cache is not None:
            used, cached, hits, full = cache
            self.stats["cache"] = {"bytes": used, "conversations": cached, "hits": hits,
                                   "full": full}

    # ------------------------------------------------------------ resume

    def _config(self) -> dict:
        return {
            "mode": self.mode, "batch_size": self.batch_size, "seq_len": self.seq_len,
            "overflow": self.overflow if self.mode == "bestfit" else None,
            "buffer_size": self.buffer_size if self.mode == "bestfit" else None,
            "max_tokens": self.max_tokens, "max_seqs": self.max_seqs,
            "truncate": self.truncate,
            "rank": self.rank, "world_size": self.world_size,
            "dataset_len": None if self._source else self._packer_args["dataset_len"],
            # Only with shuffle=True, so states of unshuffled runs stay as they were.
            **({"shuffle_seed": self.seed} if self.shuffle else {}),
            **({"shuffle_buffer": self.shuffle_buffer} if self.shuffle_buffer else {}),
            # The format's identity (nanochat's: "nanochat"): the same
            # positions rendered by another template are other batches.
            "chat_format": format_identity(self.chat_format),
        }

    def state_dict(self) -> dict:
        """The point after the last batch returned by ``next()`` (batches
        prefetched but not consumed are not counted): a small JSON-serialisable
        dict for ``load_state_dict``."""
        packer = dict(self._state)
        packer["held"] = list(packer["held"])
        out = {"format": _STATE_FORMAT, "version": _STATE_VERSION, **self._config(), "packer": packer}
        if self._source is not None:
            # The stream's own position and the conversations the packer holds.
            out["source"] = self._source.state(packer)
        if self._elastic is not None:
            out["elastic"] = dict(self._elastic, gap=list(self._elastic["gap"]))
        return out

    def load_state_dict(self, state: Any) -> None:
        """Continues exactly where ``state`` (from ``state_dict``) left off;
        or, given a list of states (one per rank of a run, in rank order,
        e.g. gathered with ``torch.distributed.all_gather_object``), makes an
        *elastic resume* under this generator's ``world_size``, which may
        differ from theirs.

        Exact resume: every field is checked against this generator (same
        dataset length, mode, shapes, rank and world size; counters and held
        conversations that a generator like this one could have reached).

        Elastic resume (map-style datasets and rendered shards; not streams,
        whose position is their source's): what is preserved is the epoch's
        *remaining set*, the conversations no old rank has used up: those no
        old rank fetched yet, and those the old ranks held (a best-fit
        buffer, a partly used ``stream`` / ``varlen`` conversation, the
        pieces left of a ``truncate="turns"`` split), which go back to the
        remaining set whole (a part already trained on is trained on again).
        The new ranks deal the remaining set round robin (new rank ``r``
        takes its ``r``-th, ``r + world_size``-th, ... conversation in
        epoch order), so every conversation of the epoch is used exactly
        once across the old and new ranks, then continue in their own order
        (and ``shuffle`` permutation) from the next epoch. Every new rank
        must load the same list; its batches are deterministic. What is not
        preserved: the order of the old buffers (each new buffer fills
        afresh), the old batches' layout, and ``stats`` other than
        ``batches`` (which counts on from the old ranks' largest).

        Raises:
            ValueError: naming the field that is missing, unknown, or cannot
                come from this generator (nothing is changed then); for a
                list, also states that are not one per rank of one run, or
                a stream.
            TypeError: a field of the wrong type, or ``state`` not a dict
                (or a list of dicts).
        """
        if isinstance(state, (list, tuple)):
            self._load_elastic(list(state))
            return
        self._check_state(state, same_rank=True)
        if (self._source is None) != ("source" not in state):
            raise ValueError(
                "the state was saved from a " + ("stream" if "source" in state else "map-style")
                + " dataset, this generator reads a "
                + ("stream" if self._source is not None else "map-style dataset")
                + " (field 'source')")
        elastic = state.get("elastic")
        with self._lock:
            # Check on a scratch packer first, so a bad state changes nothing.
            scratch = _core.Packer(self._core_tok, self.mode, **self._packer_args)
            if elastic is not None:
                scratch.set_elastic(elastic["gap"], elastic["from"], elastic["end"])
            scratch.load_state(dict(state["packer"]))
            if self._source is not None:
                self._source.load(state["source"], state["packer"])
            self._failure = None
            packer = self._producer.packer
            if elastic is not None or self._elastic is not None:
                e = elastic or {"gap": [], "from": 0, "end": 0}
                packer.set_elastic(e["gap"], e["from"], e["end"])
            self._elastic = None if elastic is None else dict(elastic)
            packer.load_state(dict(state["packer"]))
            self._state = packer.state()
            self._set_progress(self._state, packer.progress(), packer.cache_stats())

    def _check_state(self, state: Any, same_rank: bool) -> None:
        """Checks a state's fields against this generator (all but rank and
        world size unless ``same_rank``)."""
        if not isinstance(state, dict):
            raise TypeError(f"a DataGenerator state is a dict, got {type(state).__name__}")
        if state.get("format") != _STATE_FORMAT:
            raise ValueError("not a convpack.DataGenerator state dict (field 'format')")
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported state version {state.get('version')!r} (field 'version')")
        config = self._config()
        for key in state:
            if key not in config and key not in ("format", "version", "packer", "source",
                                                 "elastic"):
                raise ValueError(f"the state has an unknown field {key!r}")
        for key, mine in config.items():
            if key not in state:
                raise ValueError(f"the state has no field {key!r}")
            if not same_rank and key in ("rank", "world_size"):
                continue
            theirs = state[key]
            if key == "chat_format" and theirs != mine:
                raise ValueError(
                    f"state was saved with the chat format {_format_label(theirs)}, this "
                    f"generator renders with {_format_label(mine)} (field 'chat_format')")
            if type(theirs) is not type(mine) or theirs != mine:
                raise ValueError(
                    f"state was saved with {key}={theirs!r}, this generator has {mine!r}")
        if not isinstance(state.get("packer"), dict):
            raise ValueError("the state has no 'packer' dict (field 'packer')")
        elastic = state.get("elastic")
        if elastic is not None:
            fields = {"gap", "from", "end", "batches"}
            if not isinstance(elastic, dict) or set(elastic) != fields:
                raise ValueError(f"the state's 'elastic' must be a dict of {sorted(fields)} "
                                 "(field 'elastic')")
            if not isinstance(elastic["gap"], list):
                raise TypeError("the state's elastic 'gap' must be a list of ints (field 'elastic')")
            for key in ("from", "end", "batches"):
                _check_int(f"the state's elastic {key!r}", elastic[key], 0, 2**53)
            for p in elastic["gap"]:
                _check_int("a position in the state's elastic 'gap'", p, 0, 2**53)

    def _load_elastic(self, states: list) -> None:
        if self._source is not None:
            raise ValueError(
                "an elastic resume (a list of states) applies to map-style datasets and rendered "
                "shards; a stream resumes through its source's own state: load this rank's "
                "state under the same world_size")
        if not states:
            raise ValueError("an elastic resume needs the states of every old rank, got none")
        for i, st in enumerate(states):
            try:
                self._check_state(st, same_rank=False)
            except (TypeError, ValueError) as e:
                raise type(e)(f"state {i} of {len(states)}: {e}") from None
            if "source" in st:
                raise ValueError(f"state {i} of {len(states)} was saved from a stream "
                                 "(field 'source')")
            if st["world_size"] != len(states) or st["rank"] != i:
                raise ValueError(
                    f"state {i} of {len(states)} was saved by rank {st['rank']} of "
                    f"{st['world_size']}: pass one state per old rank, in rank order")
            if st.get("elastic") != states[0].get("elastic"):
                raise ValueError(f"states 0 and {i} come from different runs (field 'elastic')")
        olds = []
        for st in states:
            e = st.get("elastic")
            olds.append((st["world_size"], None if e is None else (e["gap"], e["from"], e["end"]),
                         dict(st["packer"])))
        with self._lock:
            packer = self._producer.packer
            gap, start, end = packer.merge_states(olds)
            before = (states[0].get("elastic") or {}).get("batches", 0)
            batches = before + max(st["packer"]["batches"] for st in states)
            packer.set_elastic(gap, start, end)
            self._elastic = {"gap": list(gap), "from": start, "end": end, "batches": batches}
            self._failure = None
            self._state = packer.state()
            self._set_progress(self._state, packer.progress(), packer.cache_stats())

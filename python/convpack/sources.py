"""Streamed sources for ``convpack.DataGenerator``: iterables of
conversations the generator pulls, decided once at the edge.

A source without ``len`` and indexing (a generator, a Hugging Face
``datasets.IterableDataset``, any iterable) is wrapped in a
:class:`StreamSource`, which gives the packer what it asks for by *ordinal*
(the k-th conversation this rank reads, counted across passes). The packer
itself is the one the map-style path uses; only where the conversations come
from differs.

Sharding is the source's where it has one (``datasets.IterableDataset``:
``datasets.distributed.split_dataset_by_node``, unless the dataset was split
already; a MosaicML ``streaming.StreamingDataset``: its own split over the
ranks it detects, and its ``state_dict(num_samples, from_beginning)`` in
snapshots), else every ``world_size``-th item goes to a rank
(item ``i`` to rank ``i % world_size``).

Passes: a re-iterable source (``iter(source) is not source``: an
``IterableDataset``, a list, a class with ``__iter__``) starts a new pass
(``set_epoch(e)`` first when it has one) when it ends, so iteration never
ends, like the map-style path; a one-shot iterator (a generator object) has
one pass, after which ``next()`` raises ``StopIteration`` (the batch that
could not be filled is not returned).

Shuffle (``DataGenerator(shuffle=True, seed=..., shuffle_buffer=N)``): the
stream is read through a buffer of ``N`` items; each item handed on is drawn
from the buffer at a position given by a hash of ``(seed, pass, draw)``
and its place refilled from the stream, so each pass has its own order,
determined by the seed alone. A plain iterable is shuffled before the rank
filter, so every rank sees the same shuffled stream and takes its
``world_size``-th items of it; a source split by node is shuffled within the
rank's split. Memory: ``N`` items (and a copy in each snapshot).

Resume: the state holds the conversations the packer still holds (raw, as
the source gave them: they must be JSON-serialisable for a JSON checkpoint),
the pass boundaries, and a snapshot of the source's position at most
``SNAPSHOT_EVERY`` conversations before the resume point: the source's own
``state_dict()`` where it has one (``IterableDataset.state_dict()``), else
the count of raw items read in the pass, which a fresh iterator of the same
source skips; with a shuffle buffer, also the buffer's items at the snapshot
and the draws made. :class:`SourceResumeError` (a ``ValueError``) is raised when
the source cannot be brought back there.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from collections.abc import Iterable, Iterator
from typing import Any, Optional

__all__ = ["SNAPSHOT_EVERY", "SourceResumeError", "StreamSource", "is_stream"]

# Snapshots of the source's own state are taken every this many ordinals:
# a resume re-reads at most this many conversations.
SNAPSHOT_EVERY = 256
# Ordinals as the packer sees them stay below its counter bound (2**53).
STREAM_LEN = 2**53


class SourceResumeError(ValueError):
    """A streamed source cannot be brought back to a saved position (a
    one-shot iterator already started or asked for a second pass, a state
    saved from another kind of source, a source that ended early)."""


class _Exhausted(Exception):
    """A one-shot source ended."""


def is_stream(dataset: Any) -> bool:
    """True for what ``DataGenerator`` reads as a stream: an iterable
    without ``__len__`` and ``__getitem__``."""
    if _mosaic(dataset):
        return True
    if hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__"):
        return False
    return isinstance(dataset, Iterable)


def _mosaic(source: Any) -> bool:
    """A MosaicML ``streaming.StreamingDataset`` (read as a stream, though it
    has ``len`` and indexing: its own rank split and resume)."""
    streaming = sys.modules.get("streaming")
    cls = getattr(streaming, "StreamingDataset", None)
    return cls is not None and isinstance(source, cls)


def _hf_iterable(source: Any) -> bool:
    try:
        from datasets import IterableDataset
    except ImportError:
        return False
    return isinstance(source, IterableDataset)


class StreamSource:
    """This rank's view of a stream, indexed by ordinal for the packer."""

    def __init__(self, source: Any, rank: int, world_size: int, shuffle_buffer: int = 0,
                 seed: int = 0) -> None:
        self.kind = "hf" if _hf_iterable(source) else "mosaic" if _mosaic(source) else "plain"
        self.rank, self.world_size = rank, world_size
        # A StreamingDataset splits itself over the ranks it detects.
        self.filter = world_size > 1 and self.kind == "plain"
        if self.kind == "hf":
            self.filter = False
            if world_size > 1 and getattr(source, "_distributed", None) is None:
                from datasets.distributed import split_dataset_by_node

                source = split_dataset_by_node(source, rank=rank, world_size=world_size)
        self.source = source
        self.reiterable = iter(source) is not source if self.kind == "plain" else True
        if self.kind == "plain" and not self.reiterable and inspect.isgenerator(source):
            if inspect.getgeneratorstate(source) != inspect.GEN_CREATED:
                raise SourceResumeError(
                    "the generator was already started: pass a fresh one, so that the "
                    "stream and a resumed state line up")
        try:
            self.length: Optional[int] = len(source)  # type: ignore[arg-type]
        except TypeError:
            self.length = None
        self.items: dict = {}  # ordinal -> item, the window the packer may still ask for
        self.pulled = 0  # ordinals read so far
        self.passes = [0]  # ordinal at which each pass began
        self.raw = 0  # raw items read in this pass (before the rank filter)
        self.shuffle_buffer, self.seed = shuffle_buffer, seed
        self.buf: list = []  # the shuffle buffer
        self.drawn = 0  # items drawn from the (shuffled) stream in this pass
        self.exhausted = False  # the source ended this pass (the buffer drains)
        # (ordinal, pass, source state or None, raw, drawn, buffer or None, exhausted)
        self.snapshots: list = [(0, 0, None, 0, 0, [] if shuffle_buffer else None, False)]
        self.it: Optional[Iterator] = None
        self.done = False  # a one-shot source ended

    # ------------------------------------------------------------ reading

    def _start_pass(self, state: Any = None) -> None:
        e = len(self.passes) - 1
        if hasattr(self.source, "set_epoch"):
            self.source.set_epoch(e)
        if state is not None:
            self.source.load_state_dict(state)
        self.it = iter(self.source)

    def _draw(self) -> Any:
        """The next item of the pass, through the shuffle buffer if any
        (``StopIteration`` at the pass's end)."""
        if not self.shuffle_buffer:
            item = next(self.it)  # type: ignore[arg-type]
            self.raw += 1
            self.drawn += 1
            return item
        buf = self.buf
        while not self.exhausted and len(buf) < self.shuffle_buffer:
            try:
                buf.append(next(self.it))  # type: ignore[arg-type]
            except StopIteration:
                self.exhausted = True
                break
            self.raw += 1
        if not buf:
            raise StopIteration
        key = f"{self.seed}:{len(self.passes) - 1}:{self.drawn}".encode()
        j = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") % len(buf)
        item, buf[j] = buf[j], buf[-1]
        buf.pop()
        self.drawn += 1
        return item

    def _pull(self) -> Any:
        """The next item of this rank (a new pass where the source ended)."""
        fresh_pass = False
        while True:
            if self.it is None:
                self._start_pass()
            try:
                item = self._draw()
            except StopIteration:
                if not self.reiterable or self.done:
                    self.done = True
                    raise _Exhausted() from None
                if fresh_pass or self.pulled == self.passes[-1]:
                    raise ValueError("the source yielded no conversation for this rank "
                                     "in a whole pass") from None
                self.passes.append(self.pulled)
                self.raw = self.drawn = 0
                self.buf, self.exhausted = [], False
                self.it = None
                fresh_pass = True
                self.snapshots.append((self.pulled, len(self.passes) - 1, None, 0, 0,
                                       [] if self.shuffle_buffer else None, False))
                continue
            if self.filter and (self.drawn - 1) % self.world_size != self.rank:
                continue
            return item

    def __getitem__(self, k: int) -> Any:
        if k in self.items:
            return self.items[k]
        if k < self.pulled:
            raise KeyError(f"internal: ordinal {k} of the stream is no longer held")
        while self.pulled <= k:
            if self.pulled % SNAPSHOT_EVERY == 0 and not self.snapshots_at(self.pulled):
                self._snapshot()
            item = self._pull()
            self.items[self.pulled] = item
            self.pulled += 1
        return self.items[k]

    def snapshots_at(self, k: int) -> bool:
        return bool(self.snapshots) and self.snapshots[-1][0] == k

    def _snapshot(self) -> None:
        state = None
        if self.kind == "hf" and self.it is not None and self.pulled > self.passes[-1]:
            state = self.source.state_dict()
        elif self.kind == "mosaic" and self.it is not None and self.pulled > self.passes[-1]:
            # Samples of this pass read by all ranks (each reads as many).
            world = getattr(self.source, "_parallel_rank_world", None)
            ranks = getattr(world, "num_ranks", self.world_size)
            state = self.source.state_dict(num_samples=self.raw * ranks, from_beginning=True)
        buf = list(self.buf) if self.shuffle_buffer else None
        self.snapshots.append((self.pulled, len(self.passes) - 1, state, self.raw, self.drawn,
                               buf, self.exhausted))

    def read(self, indices: list) -> list:
        """The items for ``indices`` (what the packer asked for); a one-shot
        source that ends stops with ``StopIteration`` after the items it had."""
        out = []
        for i in indices:
            try:
                out.append(self[i])
            except _Exhausted:
                return out
        return out

    def ended(self) -> bool:
        return self.done

    # ------------------------------------------------------------ state

    def prune(self, packer_state: dict) -> None:
        """Forgets what the packer can no longer ask for after this state."""
        nxt, held = packer_state["next"], set(packer_state["held"])
        for k in [k for k in self.items if k < nxt and k not in held]:
            del self.items[k]
        keep = [s for s in self.snapshots if s[0] <= nxt]
        if keep:
            self.snapshots = [keep[-1]] + [s for s in self.snapshots if s[0] > nxt]

    def progress(self, packer_state: dict) -> tuple:
        """``(epoch, fraction, an epoch's worth consumed)`` after a batch."""
        start, consumed = packer_state["batch_start"], packer_state["consumed"]
        e = sum(1 for p in self.passes if p <= start)
        first = self.passes[1] if len(self.passes) > 1 else None
        if self.done and first is None:
            first = self.pulled
        pass_len = (self.passes[e] - self.passes[e - 1]) if e < len(self.passes) else None
        if pass_len is None and self.length:
            pass_len = -(-(self.length - self.rank) // self.world_size) if self.filter \
                else self.length
        base = self.passes[e - 1]
        fraction = min(1.0, (consumed - base) / pass_len) if pass_len else 0.0
        return e, fraction, first is not None and consumed >= first

    def state(self, packer_state: dict) -> dict:
        nxt = packer_state["next"]
        snap = [s for s in self.snapshots if s[0] <= nxt]
        if not snap:
            raise RuntimeError("internal: no snapshot of the stream before the resume point")
        ordinal, pass_, state, raw, drawn, buf, exhausted = snap[-1]
        snapshot = {"ordinal": ordinal, "pass": pass_, "state": state, "raw": raw}
        if self.shuffle_buffer:
            snapshot.update(drawn=drawn, buffer=list(buf), exhausted=exhausted)
        return {
            "kind": self.kind,
            "passes": list(self.passes[: pass_ + 1]),
            "snapshot": snapshot,
            "held": [[k, self.items[k]] for k in packer_state["held"]],
        }

    def load(self, saved: Any, packer_state: dict) -> None:
        """Back to a state from ``state``: the held items, then the source at
        the snapshot (``SourceResumeError`` when that cannot be done, or when
        ``saved`` does not go with the packer's ``packer_state``)."""
        if not isinstance(saved, dict) or saved.get("kind") != self.kind:
            kind = saved.get("kind") if isinstance(saved, dict) else type(saved).__name__
            raise SourceResumeError(
                f"the state's source is {kind!r}, this generator reads a {self.kind!r} stream")
        try:
            snap = saved["snapshot"]
            ordinal, pass_, state, raw = snap["ordinal"], snap["pass"], snap["state"], snap["raw"]
            passes = [int(p) for p in saved["passes"]]
            held = {int(k): item for k, item in saved["held"]}
            shuffled = "buffer" in snap
            if shuffled:
                drawn, exhausted = int(snap["drawn"]), bool(snap["exhausted"])
                buf = list(snap["buffer"])
            else:
                drawn, exhausted, buf = raw, False, []
        except (KeyError, TypeError, ValueError) as e:
            raise SourceResumeError(f"the state's source field is malformed ({e})") from None
        if shuffled != bool(self.shuffle_buffer):
            raise SourceResumeError(
                "the state was saved " + ("with" if shuffled else "without")
                + " a shuffle buffer, this generator reads the stream "
                + ("through one" if self.shuffle_buffer else "in its order"))
        if len(buf) > self.shuffle_buffer:
            raise SourceResumeError(
                f"the state's shuffle buffer holds {len(buf)} items, more than "
                f"shuffle_buffer={self.shuffle_buffer}")
        if len(passes) != pass_ + 1:
            raise SourceResumeError("the state's source passes do not match its snapshot")
        # The snapshot lies at most SNAPSHOT_EVERY conversations before the
        # packer's next one, and the source holds what the packer holds.
        nxt = packer_state.get("next")
        if not isinstance(ordinal, int) or not isinstance(nxt, int) or not (
                0 <= ordinal <= nxt <= ordinal + SNAPSHOT_EVERY):
            raise SourceResumeError(
                f"the state's source snapshot is at conversation {ordinal!r} of the stream, the "
                f"packer state's \"next\" at {nxt!r}: they do not go together")
        if set(held) != set(packer_state.get("held", ())):
            raise SourceResumeError(
                "the state's source holds other conversations than the packer state's \"held\"")
        if pass_ > 0 and not self.reiterable:
            raise SourceResumeError(
                "the state is in pass {pass_ + 1} of the stream, but this source is a one-shot "
                "iterator (it has one pass)")
        if self.pulled or self.it is not None:
            if not self.reiterable:
                raise SourceResumeError(
                    "this one-shot iterator was already read from: resume on a fresh "
                    "generator with a fresh iterator")
        if state is not None and not hasattr(self.source, "load_state_dict"):
            raise SourceResumeError(
                "the state holds the source's own state_dict, but this source has no "
                "load_state_dict")
        self.items, self.passes, self.snapshots = dict(held), passes, []
        self.done = False
        self.pulled = ordinal
        self.raw = 0
        self.buf, self.drawn, self.exhausted = list(buf), drawn, exhausted
        self._start_pass(state)
        if state is None:
            # No state of its own: skip the raw items read before the snapshot.
            for _ in range(raw):
                try:
                    next(self.it)  # type: ignore[arg-type]
                except StopIteration:
                    raise SourceResumeError(
                        f"the source ended after {self.raw} items of pass {pass_ + 1}; the "
                        f"state was saved after {raw}: is this the same source?") from None
                self.raw += 1
        else:
            self.raw = raw
        self.snapshots.append((ordinal, pass_, state, raw, drawn,
                               list(buf) if self.shuffle_buffer else None, exhausted))

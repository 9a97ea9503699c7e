"""Encode throughput of the other fast exact encoders, cl100k, in one run.

Every encoder installed here is timed against tiktoken on cl100k_base's
ranks and pattern: convpack, quicktok (``quicktok-v1`` on PyPI), fastokens
(twice: built from the ranks, ``from_tiktoken``, and from the cl100k
``tokenizer.json`` of ``convpack.bench.hf_files``, ``from_file``, a faster
path of its own), bpe-openai, riptoken and the ``tokenizers`` library (on
that ``tokenizer.json``). ``pip install
'convpack[peers]'`` installs them; one that is missing gets a note, not a
row. Texts: English prose, source code, multilingual translations and chat
messages (``convpack.bench.texts``).

Forms, each where the encoder has one:

- ``1 thread, per document``: one call per document through Python
  (``encode_ordinary(doc)``, ``encode(doc).ids``);
- ``batch of lists``: a list of documents in, a list of id lists out
  (tiktoken's ``encode_ordinary_batch``, convpack's ``encode(docs)``,
  ``encode_batch_fast`` / ``encode_batch`` with ``.ids``);
- ``flat batch``: one flat array of ids and the documents' offsets
  (convpack's ``encode_to_numpy``, quicktok's ``encode_batch``, fastokens'
  ``encode_batch_flat``), against tiktoken's batch of lists.

Batches run on every core and on one thread. Encoders that take no thread
count (fastokens, riptoken, ``tokenizers``) use their own thread pool,
which has every core; the one-thread batches therefore run in a child
process pinned to one CPU (``os.sched_setaffinity``), started with
``RAYON_NUM_THREADS=1`` and ``TOKENIZERS_PARALLELISM=false``, where every
encoder is given or limited to one thread and, whatever its pool does,
runs on one core. The pin is needed: fastokens' batches use every core
whatever ``RAYON_NUM_THREADS`` says (measured: CPU time 1.9x the wall
time on 2 cores with it set to 1).

Before anything is timed, every encoder's output in every form is compared,
document by document, with tiktoken's ``encode_ordinary`` on each text. An
encoder that differs is still timed and its cell is marked with the number
of documents that differ; one that raises is not timed and its cell says
why. convpack differing is an error (``BenchmarkMismatch``). Each round
times every encoder once, one after the other, each with nothing
remembered of the rounds before (``Peer.fresh``: convpack's piece cache
and the ``tokenizers`` word cache emptied, fastokens, whose word cache
cannot be emptied, built again; the others keep nothing between calls,
measured: the same text is no faster the second time); best of 5 rounds. Figures are x tiktoken in the same
form and thread count (MB/s of UTF-8 input in the rows).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from .common import (
    BenchmarkMismatch,
    cl100k_path,
    cold_cache,
    cpu_count,
    installed,
    interleaved,
    note,
)
from .texts import CORPORA, corpus

__all__ = ["PEERS", "Peer", "run"]

SECTION = "peers"
PER_DOC, LISTS, FLAT = "1 thread, per document", "batch of lists", "flat batch"


@dataclass(frozen=True)
class Peer:
    """An encoder the section times: its name in the table, the module it
    imports, the distribution that installs it, and how to build it."""

    name: str
    module: str
    distribution: str
    build: Callable[[dict], Any]
    #: ``{form: make(encoder, docs, threads) -> call}``; ``call()`` returns
    #: a list of id lists or a flat ``(ids, offsets)`` pair.
    forms: dict
    #: ``fresh(encoder, ctx)``: the encoder to time in a round, with nothing
    #: remembered of the rounds before (called outside the timing).
    fresh: Callable[[Any, dict], Any] = lambda enc, ctx: cold_cache(enc)


def _ids_of(out: Any) -> list:
    """A list of id lists from a batch's output (lists, or flat ids and offsets)."""
    if isinstance(out, tuple) and len(out) == 2:
        import numpy as np

        ids, offsets = out
        if isinstance(ids, (bytes, bytearray)):
            ids = np.frombuffer(ids, np.uint32)
            offsets = np.frombuffer(offsets, np.uint64)
        return [
            ids[int(offsets[i]) : int(offsets[i + 1])].tolist() for i in range(len(offsets) - 1)
        ]
    return [list(x) for x in out]


def _tiktoken(ctx: dict) -> Any:
    import tiktoken

    return tiktoken.Encoding(
        "bench-cl100k", pat_str=ctx["pattern"], mergeable_ranks=ctx["ranks"], special_tokens={}
    )


def _convpack(ctx: dict) -> Any:
    import convpack

    return convpack.Tokenizer.from_tiktoken_file(
        ctx["path"], pattern=ctx["pattern"], special_tokens={}
    )


def _quicktok(ctx: dict) -> Any:
    import quicktok

    return quicktok.get_encoding("cl100k_base")


def _fastokens(ctx: dict) -> Any:
    import fastokens

    enc = fastokens.Tokenizer.from_tiktoken(ctx["path"], pattern=ctx["pattern"], special_tokens={})
    # Its first call sets something up (a 1 MB text then runs at a third of
    # the speed of the next one): not what a round times.
    enc.encode("a")
    return enc


def _fastokens_hf(ctx: dict) -> Any:
    import fastokens

    from .hf_files import built_directory

    path = os.path.join(built_directory("cl100k"), "tokenizer.json")
    enc = fastokens.Tokenizer.from_file(path)
    enc.encode("a")  # as above: its first call sets something up
    return enc


def _bpe_openai(ctx: dict) -> Any:
    import bpe_openai

    return bpe_openai.get_encoding("cl100k_base")


def _riptoken(ctx: dict) -> Any:
    import riptoken

    return riptoken.CoreBPE(ctx["ranks"], {}, ctx["pattern"])


def _hf_tokenizers(ctx: dict) -> Any:
    import tokenizers

    from .hf_files import built_directory

    return tokenizers.Tokenizer.from_file(os.path.join(built_directory("cl100k"), "tokenizer.json"))


def _per_doc(method: str) -> Callable:
    def make(enc, docs, threads):
        encode = getattr(enc, method)
        return lambda: [encode(d) for d in docs]

    return make


def _per_doc_ids(method: str, **kwargs) -> Callable:
    def make(enc, docs, threads):
        encode = getattr(enc, method)
        return lambda: [encode(d, **kwargs).ids for d in docs]

    return make


def _batch_ids(method: str, **kwargs) -> Callable:
    def make(enc, docs, threads):
        batch = getattr(enc, method)
        return lambda: [e.ids for e in batch(docs, **kwargs)]

    return make


def _fresh_make(peer: Peer, make: Callable, enc: Any, ctx: dict, docs: list, threads) -> Callable:
    """A round's call: ``make`` over the peer's encoder with its memory of
    the rounds before gone (``Peer.fresh``), so every encoder meets the
    text as new, as convpack does with its piece cache emptied."""
    return make(peer.fresh(enc, ctx), docs, threads)


def _convpack_make(method: str, threads_kw: bool = True) -> Callable:
    def make(enc, docs, threads):
        call = getattr(enc, method)
        if method == "encode" and threads is None:
            return lambda: [call(d) for d in docs]
        return lambda: call(docs, num_threads=threads)

    return make


def _pooled(make: Callable) -> Callable:
    """A batch form whose thread count is the encoder's own pool's."""
    make.pooled = True  # type: ignore[attr-defined]
    return make


#: fastokens' forms, the same for both of its builds.
_FASTOKENS_FORMS = {
    PER_DOC: _per_doc_ids("encode"),
    LISTS: _pooled(_batch_ids("encode_batch")),
    FLAT: _pooled(lambda e, docs, t: lambda: e.encode_batch_flat(docs)),
}

PEERS = (
    Peer(
        "tiktoken",
        "tiktoken",
        "tiktoken",
        _tiktoken,
        {
            PER_DOC: _per_doc("encode_ordinary"),
            LISTS: lambda e, docs, t: lambda: e.encode_ordinary_batch(docs, num_threads=t),
        },
    ),
    Peer(
        "convpack",
        "convpack",
        "convpack",
        _convpack,
        {
            PER_DOC: lambda e, docs, t: _convpack_make("encode")(e, docs, None),
            LISTS: _convpack_make("encode"),
            FLAT: _convpack_make("encode_to_numpy"),
        },
    ),
    Peer(
        "quicktok",
        "quicktok",
        "quicktok-v1",
        _quicktok,
        {
            PER_DOC: _per_doc("encode_ordinary"),
            FLAT: lambda e, docs, t: lambda: e.encode_batch(docs, threads=t),
        },
    ),
    Peer(
        "fastokens",
        "fastokens",
        "fastokens",
        _fastokens,
        _FASTOKENS_FORMS,
        # Its word cache outlives calls (the same 1 MB of English runs 1.4x
        # faster the second time) and cannot be emptied: a new one per round.
        fresh=lambda enc, ctx: _fastokens(ctx),
    ),
    # fastokens again, on the cl100k tokenizer.json of convpack.bench.hf_files
    # (the same ranks and ids): its Hugging Face path is another, faster one
    # than its tiktoken path. Built again every round too (seconds each).
    Peer(
        "fastokens, tokenizer.json",
        "fastokens",
        "fastokens",
        _fastokens_hf,
        _FASTOKENS_FORMS,
        fresh=lambda enc, ctx: _fastokens_hf(ctx),
    ),
    Peer(
        "bpe-openai",
        "bpe_openai",
        "bpe-openai",
        _bpe_openai,
        {
            PER_DOC: _per_doc("encode_ordinary"),
            LISTS: lambda e, docs, t: lambda: e.encode_ordinary_batch(docs, num_threads=t),
        },
    ),
    Peer(
        "riptoken",
        "riptoken",
        "riptoken",
        _riptoken,
        {
            PER_DOC: _per_doc("encode_ordinary"),
            LISTS: _pooled(lambda e, docs, t: lambda: e.encode_ordinary_batch(docs)),
        },
    ),
    Peer(
        "HF tokenizers",
        "tokenizers",
        "tokenizers",
        _hf_tokenizers,
        {
            PER_DOC: _per_doc_ids("encode", add_special_tokens=False),
            LISTS: _pooled(_batch_ids("encode_batch_fast", add_special_tokens=False)),
        },
    ),
)


def measure(
    quick: bool,
    batch_threads: int,
    per_document: bool,
    corpora: tuple = tuple(CORPORA),
    peers: Optional[tuple] = None,
) -> list:
    """Check, then time, every installed encoder in this process.

    Args:
        quick: small inputs and one round.
        batch_threads: threads of the batch forms (an encoder with its own
            pool uses the pool: run with ``RAYON_NUM_THREADS`` set to match).
        per_document: also time the one-thread per-document form.
        corpora: which texts.
        peers: which encoders by name (default: all of ``PEERS``).

    Returns:
        Peer rows (see ``run``) and notes.

    Raises:
        BenchmarkMismatch: convpack's ids differ from tiktoken's.
    """
    from tiktoken.load import load_tiktoken_bpe

    from .._encodings import NAMED_ENCODINGS

    path = cl100k_path()
    total_chars = 20_000 if quick else 1_000_000
    repeats = 1 if quick else 5
    forms = ([PER_DOC] if per_document else []) + [LISTS, FLAT]
    rows: list = []
    encoders: dict = {}
    ctx = {
        "path": path,
        "pattern": NAMED_ENCODINGS["cl100k_base"].pattern,
        "ranks": load_tiktoken_bpe(path),
    }
    for peer in PEERS:
        if peers is not None and peer.name not in peers and peer.name != "tiktoken":
            continue
        if not installed(peer.module):
            if per_document:  # say it once, not from the child too
                rows.append(
                    note(
                        SECTION,
                        f"{peer.name} not installed, no rows (pip install {peer.distribution})",
                    )
                )
            continue
        try:
            with warnings.catch_warnings():
                # A peer's own deprecated calls (importlib.resources in
                # bpe-openai) are not the benchmark's business.
                warnings.simplefilter("ignore", DeprecationWarning)
                encoders[peer.name] = (peer, peer.build(ctx))
        except Exception as exc:  # a peer that cannot load cl100k: say so
            rows.append(note(SECTION, f"{peer.name} could not be built: {exc!r:.200}"))
    tiktoken_enc = encoders["tiktoken"][1]
    for corpus_name in corpora:
        docs = corpus(corpus_name, total_chars)
        mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
        expected = [tiktoken_enc.encode_ordinary(d) for d in docs]
        for form in forms:
            threads = 1 if form == PER_DOC else batch_threads
            checked: dict = {}
            makers: dict = {}
            for name, (peer, enc) in encoders.items():
                make = peer.forms.get(form)
                if make is None:
                    continue
                checked[name] = _check(name, make, enc, docs, threads, expected)
                if "error" not in checked[name]:
                    makers[name] = functools.partial(_fresh_make, peer, make, enc, ctx, docs, threads)
            if "tiktoken" not in makers:  # flat batches compare with tiktoken's lists
                tt_make = encoders["tiktoken"][0].forms[LISTS]
                tt = functools.partial(tt_make, tiktoken_enc, docs, threads)
                makers = {"tiktoken": tt, **makers}
            speeds = interleaved(makers, mb, repeats, warmup=not quick)
            for name, result in checked.items():
                peer = encoders[name][0]
                speed = speeds.get(name, float("nan"))
                rows.append(
                    {
                        "section": SECTION,
                        "kind": "peer",
                        "case": _case(corpus_name, form, threads, name),
                        "form": form,
                        "threads": threads,
                        "pooled": bool(getattr(peer.forms[form], "pooled", False)),
                        "encoder": name,
                        "corpus": corpus_name,
                        "unit": "MB/s",
                        "speed": speed,
                        "tiktoken": speeds["tiktoken"],
                        "vs_tiktoken": speed / speeds["tiktoken"],
                        "docs": len(docs),
                        **result,
                    }
                )
    return rows


def _case(corpus_name: str, form: str, threads: int, name: str) -> str:
    if form == PER_DOC:
        return f"{corpus_name}, {form}, {name}"
    return f"{corpus_name}, {form}, {threads} thread{'s' if threads > 1 else ''}, {name}"


def _check(name: str, make: Callable, enc: Any, docs: list, threads: int, expected: list) -> dict:
    """``{"differs": n}`` (documents whose ids differ from tiktoken's), or
    ``{"error": text}`` when the encoder raised."""
    try:
        got = _ids_of(make(enc, docs, threads)())
    except Exception as exc:
        if name == "convpack":
            raise
        return {"error": f"{type(exc).__name__}: {exc}"[:200]}
    if len(got) != len(expected):
        differs = len(expected)
    else:
        differs = sum(a != b for a, b in zip(got, expected))
    if name == "convpack" and differs:
        raise BenchmarkMismatch(
            f"peers: convpack's ids differ from tiktoken's on {differs} documents"
        )
    return {"differs": differs}


def run(quick: bool = False) -> list:
    """The per-document form and the batches on every core here, the
    batches on one thread in a child process (see above).

    Returns:
        Rows with ``kind="peer"``: ``encoder``, ``form``, ``threads``,
        ``corpus``, ``speed`` (MB/s), ``tiktoken`` (MB/s, same form and
        threads), ``vs_tiktoken``, ``docs`` and ``differs`` (documents
        whose ids differ from tiktoken's) or ``error``; notes for encoders
        that are missing.

    Raises:
        BenchmarkMismatch: convpack's ids differ from tiktoken's.
    """
    threads = cpu_count()
    rows = measure(quick, threads, per_document=True)
    if threads > 1:
        rows += _one_thread_batches(quick)
    return rows


def pin_to_one_cpu() -> None:
    """Pin the calling thread, and so every thread it starts from now on
    (they inherit it: call this before any encoder builds its pool), to one
    of the CPUs it may run on, so that an encoder whose thread pool ignores
    the thread-count settings still runs on one core.

    Raises:
        OSError: the system cannot pin processes (``os.sched_setaffinity``
            is Linux's); the child then fails and the one-thread rows are a
            note saying so, rather than figures that may use every core.
    """
    if not hasattr(os, "sched_setaffinity"):
        raise OSError("os.sched_setaffinity is not available: cannot pin to one CPU")
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def _one_thread_batches(quick: bool) -> list:
    import convpack

    env = dict(os.environ, RAYON_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(convpack.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([package_root, *sys.path])
    command = [sys.executable, "-m", "convpack.bench.peers", "--batch-threads", "1", "--one-cpu"]
    done = subprocess.run(
        command + (["--quick"] if quick else []), env=env, capture_output=True, text=True
    )
    if done.returncode == 3:
        raise BenchmarkMismatch(done.stderr.strip().splitlines()[-1])
    if done.returncode != 0:
        tail = " ".join(done.stderr.strip().splitlines()[-3:])
        return [note(SECTION, f"one-thread batches not measured: the child process failed: {tail}")]
    return json.loads(done.stdout)


def _main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description="the peers benchmark's batches, as JSON rows")
    parser.add_argument("--batch-threads", type=int, required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--corpora", default=",".join(CORPORA), help="comma-separated texts")
    parser.add_argument(
        "--one-cpu", action="store_true", help="pin this process to one CPU before timing"
    )
    args = parser.parse_args(argv)
    if args.one_cpu:
        pin_to_one_cpu()
    try:
        corpora = tuple(args.corpora.split(","))
        rows = measure(args.quick, args.batch_threads, per_document=False, corpora=corpora)
    except BenchmarkMismatch as exc:
        print(exc, file=sys.stderr)
        return 3
    json.dump(rows, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(_main())

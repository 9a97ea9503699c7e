"""Fork safety: a child forked after convpack's thread pool has run can still
tokenize and render (on its own threads).

Each scenario runs in a fresh interpreter with a timeout, so a deadlock fails
the test instead of hanging the suite. The parent's own results are checked
against tiktoken (the oracle) and the child's against the parent's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

# Enough threads that the pool is really multi-threaded even on one core.
_ENV = {**os.environ, "RAYON_NUM_THREADS": "4"}
_TIMEOUT = 90

_PRELUDE = """
import json, os, sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
import tiktoken
from tiktoken.load import load_tiktoken_bpe
import convpack
path = sys.argv[1]
tok = convpack.Tokenizer.from_tiktoken_file(
        path, pattern=convpack.SPLIT_PATTERN, special_tokens=convpack.CHAT_SPECIAL_TOKENS
    )
ranks = load_tiktoken_bpe(path)
n = len(ranks)
oracle = tiktoken.Encoding("o", pat_str=convpack.SPLIT_PATTERN, mergeable_ranks=ranks,
    special_tokens={s: n + i for i, s in enumerate(convpack.CHAT_SPECIAL_TOKENS)})
texts_a = [f"alpha {i} the quick brown fox" for i in range(200)]
texts_b = [f"beta {i} jumps over the lazy dog" for i in range(200)]
conv = {"messages": [{"role": "user", "content": "hi there"},
                     {"role": "assistant", "content": "hello, friend"}]}
# Run the pool in the parent first: this is what used to break the child.
assert tok.encode(texts_a) == oracle.encode_ordinary_batch(texts_a)
ids, mask, offsets = tok.render_conversations([conv] * 64)
expected_b = oracle.encode_ordinary_batch(texts_b)
expected_render = (ids.tolist(), mask.tolist(), offsets.tolist())
def child_work():
    got = tok.encode(texts_b)
    r = tok.render_conversations([conv] * 64)
    return got == expected_b and (r[0].tolist(), r[1].tolist(), r[2].tolist()) == expected_render
"""


def _run(body: str, cl100k_path: str) -> str:
    script = _PRELUDE + textwrap.dedent(body)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", script, cl100k_path],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
            env=_ENV,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the forked child did not finish within {_TIMEOUT} s (deadlock)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_os_fork_child_tokenizes_and_renders(cl100k_path):
    out = _run(
        """
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            ok = child_work()
            os.write(w, b"ok" if ok else b"wrong")
            os._exit(0)
        os.close(w)
        got = os.read(r, 16)
        os.waitpid(pid, 0)
        # The parent's pool still works after the fork too.
        assert tok.encode(texts_b) == expected_b
        print(got.decode())
        """,
        cl100k_path,
    )
    assert out == "ok"


def test_multiprocessing_fork_pool(cl100k_path):
    out = _run(
        """
        import multiprocessing as mp
        def work(i):
            return child_work()
        with mp.get_context("fork").Pool(2) as pool:
            results = pool.map(work, range(4))
        print(json.dumps(results))
        """,
        cl100k_path,
    )
    assert json.loads(out) == [True] * 4


@pytest.mark.slow  # importing torch in the child takes most of it
def test_torch_dataloader_fork_workers(cl100k_path):
    pytest.importorskip("torch")
    out = _run(
        """
        import torch
        from torch.utils.data import DataLoader, Dataset
        class Texts(Dataset):
            def __len__(self):
                return 8
            def __getitem__(self, i):
                # A batch encode inside the worker uses the thread pool.
                rows = tok.encode(texts_b[i * 10:(i + 1) * 10])
                return torch.tensor([x for row in rows for x in row])
        loader = DataLoader(Texts(), batch_size=None, num_workers=2,
                            multiprocessing_context="fork")
        got = [t.tolist() for t in loader]
        want = [[x for row in expected_b[i * 10:(i + 1) * 10] for x in row] for i in range(8)]
        print("ok" if got == want else "wrong")
        """,
        cl100k_path,
    )
    assert out == "ok"

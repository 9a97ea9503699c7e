"""No panic reaches Python: every place in the bindings and the core where
one could start is either gone or on the allowlist below with the reason it
cannot fire on any input.

A panic inside a ``#[pymethods]`` function surfaces as pyo3's
``PanicException``, which subclasses ``BaseException``: ``except Exception``
does not catch it. The work the bindings hand to the core runs inside
``detached`` / ``run_sized`` (``catch_unwind``, then a ``RuntimeError``);
the rest must not be able to panic at all. The grep looks for the ways a
panic starts (``unwrap``, ``expect``, the panicking macros) and for
allocations sized by a number (``with_capacity``, ``vec![x; n]``,
``reserve``, ``resize``, ``repeat``), whose "capacity overflow" on a
caller-controlled size is a panic too. A new one fails this test until it
is made fallible or its reason is written here.
"""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
BINDINGS = ROOT / "rust" / "convpack-py" / "src"
CORE = ROOT / "rust" / "convpack-core" / "src"

PANIC_SITE = re.compile(
    r"\.unwrap\(\)|\.expect\(|\b(?:panic|unreachable|todo|unimplemented|assert|assert_eq|assert_ne)!"
    r"|with_capacity\(|vec!\[[^\]]*;|\.reserve(?:_exact)?\(|\.resize\(|\.repeat\("
)

# (file relative to rust/, text of the line, why it cannot panic on any input)
ALLOWED = [
    # Capacities equal to the length of something already in memory: a Vec
    # of that many items fits, since its source does.
    ("convpack-py/src/convert.rs", "Vec::with_capacity(items.len())", "a Python list's length"),
    ("convpack-py/src/convert.rs", "Vec::with_capacity(parts.len())", "a Python list's length"),
    ("convpack-py/src/lib.rs", "Vec::with_capacity(rows.len() + 1)", "rows are in memory"),
    ("convpack-py/src/lib.rs", "Vec::with_capacity(texts.len())", "a Python list's length"),
    ("convpack-py/src/pack.rs", "Vec::with_capacity(items.len())", "the items pushed"),
    ("convpack-py/src/pack.rs", "Vec<Slot> = Vec::with_capacity(items.len())", "the items pushed"),
    ("convpack-py/src/pack.rs", "Vec::with_capacity(slots.len())", "slots are in memory"),
    ("convpack-py/src/pack.rs", "vec![false; indices.len()]", "indices are in memory"),
    ("convpack-py/src/pack.rs", "Vec::with_capacity(olds.len())", "the old ranks' states are in memory"),
    ("convpack-core/src/template.rs", "Vec::with_capacity(globals.len() + 3)", "the template's globals are in memory"),
    ("convpack-core/src/template.rs", "vec![None; assistant.len()]", "one per assistant message in memory"),
    ("convpack-core/src/template.rs", "vec![false; assistant.len()]", "one per assistant message in memory"),
    ("convpack-core/src/bpe.rs", "encoder.reserve(ranks.len())", "ranks are in memory"),
    ("convpack-core/src/bpe.rs", "pairs.reserve(merges.len())", "merges are in memory"),
    ("convpack-core/src/bpe.rs", "Vec::with_capacity(merges.len())", "merges are in memory"),
    ("convpack-core/src/hf.rs", "Vec::with_capacity(merges.len())", "merges are in memory"),
    ("convpack-py/src/hf.rs", "Vec::with_capacity(vocab.len())", "a dict's length"),
    ("convpack-py/src/hf.rs", "vec![None; size]", "size is at most MAX_VOCAB_SIZE, checked above"),
    ("convpack-py/src/hf.rs", "Vec::with_capacity(merges.len())", "a list's length"),
    ("convpack-py/src/pack.rs", "Vec::with_capacity(lengths.len())", "the piece lengths are in memory"),
    ("convpack-core/src/bpe.rs", "Vec::with_capacity(text.len() / 3 + 1)", "a third of a text in memory"),
    ("convpack-core/src/bpe.rs", "Vec::with_capacity(ids.len() * 4)", "4 bytes per u32 id in memory"),
    ("convpack-core/src/bpe.rs", "vec![Rank::MAX; 256 * 256]", "a constant size"),
    ("convpack-core/src/pack/cache.rs", "slots.resize(len, NONE)", "after try_reserve_exact(len)"),
    ("convpack-core/src/pack/cache.rs", "Vec::with_capacity(e.n_pieces as usize)", "pieces the cache holds"),
    ("convpack-core/src/pack/cache.rs", "Vec::with_capacity(n)", "a cached piece's length"),
    ("convpack-core/src/pack/cache.rs", "mask.resize(mask.len() + run as usize", "runs sum to the piece's length"),
    ("convpack-core/src/parallel.rs", "Vec::with_capacity(items.len())", "items are in memory"),
    ("convpack-core/src/pretokenize.rs", "vec![other; 0x10000]", "a constant size"),
    ("convpack-core/src/render.rs", ".resize(self.mask.len() + self.ids.len() - before, m)", "ids just pushed"),
    ("convpack-core/src/render.rs", "out.ids.reserve(estimate)", "at most the text in memory and max_tokens"),
    ("convpack-core/src/render.rs", "out.mask.reserve(estimate)", "at most the text in memory and max_tokens"),
    ("convpack-core/src/template.rs", "String::with_capacity(source.len())", "a template in memory"),
    ("convpack-core/src/template.rs", "Vec::with_capacity(assistant.len())", "messages in memory"),
    ("convpack-core/src/template.rs", "String::with_capacity(marked.len())", "a text in memory"),
    ("convpack-core/src/template.rs", "Vec::with_capacity(ids.len())", "ids in memory"),
    ("convpack-core/src/template.rs", "let mut seen = vec![false; n];", "n is a conversation's message count"),
    ("convpack-core/src/train.rs", "Vec::with_capacity(word.len())", "a word in memory"),
    ("convpack-core/src/vocab.rs", "vec![Vec::new(); size]", "size is at most the ranks read + MAX_RANK_GAPS"),
    ("convpack-core/src/vocab.rs", "String::with_capacity(ranks.len() * 16)", "ranks in memory"),
    # Constants the code itself passes, never input.
    ("convpack-core/src/pretokenize.rs", '.expect("constant character class parses")', "a constant pattern"),
    ("convpack-core/src/pretokenize.rs", "unreachable!(", "a \\p{..} class always parses to a Unicode class"),
]


def _code_lines(path: pathlib.Path):
    """(line number, code without its comment) up to a file's test module."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip().startswith("#[cfg(test)]"):
            return
        yield number, line.split("//")[0]


def _sources():
    files = sorted(BINDINGS.glob("*.rs")) + sorted(CORE.rglob("*.rs"))
    # pack/tests.rs is the packer's test module (declared under #[cfg(test)]).
    return [f for f in files if f.relative_to(CORE.parent.parent).as_posix() != "convpack-core/src/pack/tests.rs"]


def test_every_panic_site_is_removed_or_proven_safe():
    used = set()
    unexplained = []
    for path in _sources():
        rel = path.relative_to(ROOT / "rust").as_posix()
        for number, code in _code_lines(path):
            if not PANIC_SITE.search(code):
                continue
            hits = [i for i, (f, text, _) in enumerate(ALLOWED) if f == rel and text in code]
            if not hits:
                unexplained.append(f"rust/{rel}:{number}: {code.strip()}")
            used.update(hits)
    assert not unexplained, "possible panics across the boundary:\n" + "\n".join(unexplained)
    stale = [ALLOWED[i][:2] for i in range(len(ALLOWED)) if i not in used]
    assert not stale, f"allowlist entries that match no code any more: {stale}"


def test_the_grep_finds_what_it_looks_for():
    # The pattern itself: each kind is found, comments and debug asserts are not.
    for line in ["x.unwrap()", "x.expect(\"m\")", "panic!(\"m\")", "unreachable!()", "assert!(a)",
                 "assert_eq!(a, b)", "Vec::with_capacity(n)", "vec![0u8; n]", "v.reserve(n)",
                 "v.resize(n, 0)", "s.repeat(n)"]:
        assert PANIC_SITE.search(line), line
    for line in ["debug_assert!(a)", "x.unwrap_or(0)", "vec![1, 2, 3]", "v.try_reserve(n)"]:
        assert not PANIC_SITE.search(line), line


def test_work_in_the_bindings_runs_under_catch_unwind():
    # The core's work is handed over only through `detached` (which releases
    # the GIL) and `run_sized`; both catch a panic and raise RuntimeError.
    lib = (BINDINGS / "lib.rs").read_text(encoding="utf-8")
    assert "py.detach(|| catch_unwind(AssertUnwindSafe(f)))" in lib
    assert "catch_unwind(AssertUnwindSafe(f)).map_err(|_| panic_error(what))" in lib
    for path in BINDINGS.glob("*.rs"):
        for number, code in _code_lines(path):
            if "py.detach(" in code or "allow_threads(" in code:
                assert "catch_unwind" in code, f"{path.name}:{number}: GIL released without catch_unwind"

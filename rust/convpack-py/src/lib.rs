//! `convpack._core`: the Python bindings. Everything here converts Python
//! objects in and arrays out; the work is done by `convpack_core`, with the
//! GIL released.

mod convert;
mod errors;
mod hf;
mod pack;
mod template;

use std::borrow::Cow;
use std::convert::Infallible;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use convpack_core::{
    bpe::Rank,
    parallel::{map_chunked, map_chunked_each},
    pretokenize::Splitter,
    train, vocab, AllowedSpecials, ChatTokens, Conversation, CoreError, Renderer, Tokenizer,
};
use numpy::{IntoPyArray, PyArray1};
use pyo3::exceptions::{PyMemoryError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyList, PyString};
use rustc_hash::FxHashMap;

use crate::convert::{type_name, Arena, ExtractError};
use crate::errors::{conversation_error, panic_error, IntoPyResult};
use crate::template::PyChatTemplate;

fn py_int(py: Python<'_>, i: Rank) -> Bound<'_, PyAny> {
    let Ok(o) = i.into_pyobject(py);
    o.into_any()
}

/// Work on fewer bytes of text than this keeps the GIL: releasing and taking
/// it back costs more than such work, and holds other threads up no longer.
const DETACH_MIN_BYTES: usize = 2048;

/// Runs `f`, without the GIL when it has at least [`DETACH_MIN_BYTES`] of
/// text to process; a panic becomes a Python exception.
fn run_sized<T: Send>(
    py: Python<'_>,
    text_bytes: usize,
    what: &str,
    f: impl FnOnce() -> T + Send,
) -> PyResult<T> {
    if text_bytes >= DETACH_MIN_BYTES {
        detached(py, what, f)
    } else {
        catch_unwind(AssertUnwindSafe(f)).map_err(|_| panic_error(what))
    }
}

/// Runs `f` without the GIL; a panic becomes a Python exception.
pub(crate) fn detached<T: Send>(
    py: Python<'_>,
    what: &str,
    f: impl FnOnce() -> T + Send,
) -> PyResult<T> {
    py.detach(|| catch_unwind(AssertUnwindSafe(f)))
        .map_err(|_| panic_error(what))
}

fn extract_error(py: Python<'_>, e: ExtractError, index: Option<usize>) -> PyErr {
    match e {
        ExtractError::Python(err) => err,
        ExtractError::Rule(mut c) => {
            c.conversation_index = index.or(c.conversation_index);
            conversation_error(py, &c)
        }
    }
}

/// Conversations extracted and rendered at a time by `render_conversations`:
/// the input may be an endless iterator, so only the output accumulates.
const RENDER_CHUNK: usize = 4096;

/// Python ints made up front for ids up to this far past the ranks (the
/// special tokens); an id further out gets a fresh int.
const CACHED_SPECIAL_INTS: usize = 1024;

/// Token ids from a Python iterable, each checked: a non-int is a
/// `TypeError`, an int outside `0..vocab_size` a `ValueError` naming it.
fn ids_arg(ids: &Bound<'_, PyAny>, vocab_size: usize) -> PyResult<Vec<Rank>> {
    let mut out = Vec::new();
    if let Ok(len) = ids.len() {
        out.try_reserve(len)
            .map_err(|_| PyMemoryError::new_err(format!("cannot hold {len} token ids")))?;
    }
    for (i, item) in ids.try_iter()?.enumerate() {
        let item = item?;
        out.push(id_arg(
            &item,
            vocab_size,
            &format!("token id at position {i}"),
        )?);
    }
    Ok(out)
}

/// One token id (`what` names it in errors).
fn id_arg(item: &Bound<'_, PyAny>, vocab_size: usize, what: &str) -> PyResult<Rank> {
    if item.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be an int, got bool"
        )));
    }
    match item.extract::<i64>() {
        Ok(v) if v >= 0 && (v as u64) < vocab_size as u64 => Ok(v as Rank),
        Ok(v) => Err(PyValueError::new_err(format!(
            "{what} is {v}, which is not in the vocabulary (ids 0..{vocab_size})"
        ))),
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyOverflowError>(item.py()) => {
            Err(PyValueError::new_err(format!(
                "{what} is {}, which is not in the vocabulary (ids 0..{vocab_size})",
                item.repr().map(|r| r.to_string()).unwrap_or_default()
            )))
        }
        Err(_) => Err(PyTypeError::new_err(format!(
            "{what} must be an int, got {}",
            type_name(item)
        ))),
    }
}

fn out_of_memory(what: &str) -> PyErr {
    PyMemoryError::new_err(format!("out of memory while {what}"))
}

/// Token ids of many texts in one flat array, and the texts' offsets into it.
pub(crate) type FlatIds<'py> = (Bound<'py, PyArray1<Rank>>, Bound<'py, PyArray1<i64>>);

/// The ids of `texts`, each encoded by `encode` on `num_threads` threads
/// (0 = all) without the GIL, as one flat array and the texts' offsets
/// into it (text `i` is `ids[offsets[i]..offsets[i + 1]]`).
pub(crate) fn flat_ids<'py>(
    py: Python<'py>,
    texts: &Bound<'py, PyAny>,
    num_threads: usize,
    encode: impl Fn(&str) -> Vec<Rank> + Sync,
) -> PyResult<FlatIds<'py>> {
    let mut arena = Arena::default();
    let strs = keep_texts(&mut arena, texts)?;
    let views: Vec<Cow<'_, str>> = strs.iter().map(|&i| arena.get(i)).collect();
    let refs: Vec<&str> = views.iter().map(|c| c.as_ref()).collect();
    let flat = detached(py, "encoding", || -> Result<_, String> {
        let rows = map_chunked(&refs, num_threads, |t| encode(t));
        let total: usize = rows.iter().map(|r| r.len()).sum();
        let mut ids: Vec<Rank> = Vec::new();
        ids.try_reserve_exact(total)
            .map_err(|_| format!("{total} token ids"))?;
        let mut offsets: Vec<i64> = Vec::with_capacity(rows.len() + 1);
        offsets.push(0);
        for r in rows {
            ids.extend_from_slice(&r);
            offsets.push(ids.len() as i64);
        }
        Ok((ids, offsets))
    })?;
    let (ids, offsets) =
        flat.map_err(|what| PyMemoryError::new_err(format!("cannot hold {what}")))?;
    Ok((ids.into_pyarray(py), offsets.into_pyarray(py)))
}

/// A BPE tokenizer with chat special tokens (the core of `convpack.Tokenizer`).
#[pyclass(module = "convpack._core", name = "CoreTokenizer", frozen)]
pub struct PyTokenizer {
    pub inner: Arc<Tokenizer>,
    /// A Python int for every id, made once: building a list of ids is then
    /// reference counting instead of allocating an int per token.
    ints: Vec<Py<PyAny>>,
    /// The chat token ids, when the vocabulary has them all (looked up once).
    chat: Result<ChatTokens, String>,
    /// Whether a chat template sees conversations in NFC (see
    /// [`template::Nfc`]; set once by `Tokenizer.from_hf`).
    template_nfc: AtomicBool,
}

impl PyTokenizer {
    fn new(py: Python<'_>, tok: Tokenizer) -> Self {
        PyTokenizer {
            chat: ChatTokens::of(&tok).map_err(|e| e.to_string()),
            ints: (0..tok
                .vocab_size()
                .min(tok.ranks().len() + CACHED_SPECIAL_INTS) as Rank)
                .map(|i| py_int(py, i).unbind())
                .collect(),
            inner: Arc::new(tok),
            template_nfc: AtomicBool::new(false),
        }
    }

    /// How chat templates read conversations for this tokenizer.
    pub fn template_nfc(&self) -> template::Nfc {
        template::Nfc(self.template_nfc.load(Ordering::Relaxed))
    }

    /// `ids` as a Python list of ints: one allocation for the list, then a
    /// reference count and a store per id (no per-item checks).
    fn id_list<'py, I: Copy + Into<u32>>(
        &self,
        py: Python<'py>,
        ids: &[I],
    ) -> PyResult<Bound<'py, PyList>> {
        let len = ffi::Py_ssize_t::try_from(ids.len())
            .map_err(|_| PyMemoryError::new_err(format!("cannot hold {} token ids", ids.len())))?;
        // SAFETY: the GIL is held (`py`). `PyList_New` returns a new list
        // of `len` empty slots (or null with an exception set); every slot
        // is filled exactly once below with an owned reference before the
        // list is handed to Python, and on failure the list is released
        // (slots still null are skipped by its deallocator).
        unsafe {
            let list = ffi::PyList_New(len);
            if list.is_null() {
                return Err(PyErr::fetch(py));
            }
            for (k, &i) in ids.iter().enumerate() {
                let i: Rank = i.into();
                let item = match self.ints.get(i as usize) {
                    Some(o) => {
                        let p = o.as_ptr();
                        ffi::Py_INCREF(p);
                        p
                    }
                    None => {
                        let p = ffi::PyLong_FromUnsignedLong(i.into());
                        if p.is_null() {
                            ffi::Py_DECREF(list);
                            return Err(PyErr::fetch(py));
                        }
                        p
                    }
                };
                ffi::PyList_SET_ITEM(list, k as ffi::Py_ssize_t, item);
            }
            // A list of ints is in no reference cycle, so the cycle collector
            // need not walk it: untracked, it is freed by reference counting
            // as before, and the collections that list allocations trigger
            // no longer visit every id of every young list (40% of a short
            // `render_conversation` call went to them). Like CPython's own
            // untracking of tuples of atoms; a caller who later stores the
            // list inside itself makes a cycle that is never collected.
            ffi::PyObject_GC_UnTrack(list.cast());
            Ok(Bound::from_owned_ptr(py, list).cast_into_unchecked())
        }
    }

    /// A Python list of the id lists of `texts`, each encoded by `encode`
    /// on `num_threads` threads (0 = all) without the GIL. Python lists can
    /// be made on one thread only; each block of texts becomes its lists as
    /// soon as it is encoded, while the other threads encode the next
    /// blocks (see `parallel::map_chunked_each`), instead of all the lists
    /// after the whole batch with the other threads idle. An error is the
    /// first text's in order.
    pub(crate) fn lists_of<'py>(
        &self,
        py: Python<'py>,
        texts: &[&str],
        num_threads: usize,
        encode: impl Fn(&str) -> Result<Vec<Rank>, CoreError> + Sync,
    ) -> PyResult<Bound<'py, PyList>> {
        let mut slots: Vec<Option<PyResult<Py<PyList>>>> = texts.iter().map(|_| None).collect();
        let Ok(()) = detached(py, "encoding", || {
            map_chunked_each(
                texts,
                num_threads,
                |t| encode(t),
                |start, rows| {
                    Python::attach(|py| {
                        for (slot, ids) in slots[start..].iter_mut().zip(rows) {
                            *slot = Some(
                                ids.py_err(py)
                                    .and_then(|ids| self.id_list(py, &ids))
                                    .map(Bound::unbind),
                            );
                        }
                    });
                    Ok::<(), Infallible>(())
                },
            )
        })?;
        let lists = slots
            .into_iter()
            .map(|s| s.unwrap_or_else(|| Err(panic_error("encoding"))))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, lists)
    }

    fn renderer(&self) -> PyResult<Renderer<'_>> {
        match &self.chat {
            Ok(chat) => Ok(Renderer {
                tok: &self.inner,
                chat: *chat,
            }),
            Err(e) => Err(PyValueError::new_err(e.clone())),
        }
    }
}

#[pymethods]
impl PyTokenizer {
    /// Builds a tokenizer from token bytes indexed by rank, `(name, id)`
    /// special tokens and a split pattern.
    #[staticmethod]
    fn from_ranks(
        py: Python<'_>,
        ranks: Vec<Vec<u8>>,
        specials: Vec<(String, Rank)>,
        pattern: &str,
    ) -> PyResult<Self> {
        let tok = Tokenizer::new(ranks, specials, pattern).py_err(py)?;
        Ok(PyTokenizer::new(py, tok))
    }

    /// Parses a `.tiktoken` rank file's contents (`file` names it in errors).
    #[staticmethod]
    fn parse_tiktoken(py: Python<'_>, contents: &[u8], file: &str) -> PyResult<Vec<Py<PyBytes>>> {
        let ranks = vocab::parse_tiktoken(contents, file).py_err(py)?;
        Ok(ranks.iter().map(|r| PyBytes::new(py, r).unbind()).collect())
    }

    /// Builds a tokenizer straight from a `.tiktoken` file's contents.
    #[staticmethod]
    fn from_tiktoken(
        py: Python<'_>,
        contents: &[u8],
        file: &str,
        specials: Option<Vec<(String, Rank)>>,
        pattern: &str,
    ) -> PyResult<Self> {
        let ranks = vocab::parse_tiktoken(contents, file).py_err(py)?;
        let n = ranks.len() as Rank;
        let specials = specials.unwrap_or_else(|| {
            convpack_core::CHAT_SPECIAL_TOKENS
                .iter()
                .enumerate()
                .map(|(i, s)| (s.to_string(), n + i as Rank))
                .collect()
        });
        let tok = Tokenizer::new(ranks, specials, pattern)
            .map_err(|e| PyValueError::new_err(format!("{file}: {e}")))?;
        Ok(PyTokenizer::new(py, tok))
    }

    /// The ranks in `.tiktoken` format.
    fn to_tiktoken(&self) -> String {
        vocab::write_tiktoken(self.inner.ranks())
    }

    #[getter]
    fn pattern(&self) -> &str {
        self.inner.pattern()
    }

    /// `"fast:<name>"` when the hand-written scanner splits text, `"regex"`
    /// when the general regex engine does.
    #[getter]
    fn pretokenizer(&self) -> String {
        self.inner.pretokenizer()
    }

    #[getter]
    fn special_tokens(&self) -> Vec<(String, Rank)> {
        self.inner.specials().to_vec()
    }

    #[getter]
    fn n_ranks(&self) -> usize {
        self.inner.ranks().len()
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }

    fn ranks(&self, py: Python<'_>) -> Vec<Py<PyBytes>> {
        self.inner
            .ranks()
            .iter()
            .map(|r| PyBytes::new(py, r).unbind())
            .collect()
    }

    fn special_id(&self, name: &str) -> Option<Rank> {
        self.inner.special_id(name)
    }

    fn encode_ordinary<'py>(
        &self,
        py: Python<'py>,
        text: Bound<'py, PyString>,
    ) -> PyResult<Bound<'py, PyList>> {
        let tok = &self.inner;
        let ids = match text.to_str() {
            Ok(s) => run_sized(py, s.len(), "encoding", || tok.encode_ordinary(s))?,
            Err(_) => {
                let mut arena = Arena::default();
                let s = arena_text(&mut arena, text)?;
                detached(py, "encoding", || tok.encode_ordinary(&s))?
            }
        };
        self.id_list(py, &ids)
    }

    /// Encodes text, turning the allowed special tokens (`"all"` or a list
    /// of names) into their ids (tiktoken's rule: any other special token in
    /// the text is an error).
    fn encode<'py>(
        &self,
        py: Python<'py>,
        text: Bound<'py, PyString>,
        allowed_special: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let tok = &self.inner;
        let allowed = allowed_arg(tok, &allowed_special)?;
        let ids = match text.to_str() {
            // Borrowed straight from the str: no copy for the common case.
            Ok(s) => run_sized(py, s.len(), "encoding", || tok.encode_allowed(s, &allowed))?,
            Err(_) => {
                let mut arena = Arena::default();
                let s = arena_text(&mut arena, text)?;
                detached(py, "encoding", || tok.encode_allowed(&s, &allowed))?
            }
        }
        .py_err(py)?;
        self.id_list(py, &ids)
    }

    /// [`encode`](Self::encode) of many texts on `num_threads` threads (0 =
    /// all) without the GIL; the allowed set is built once for all of them.
    fn encode_batch<'py>(
        &self,
        py: Python<'py>,
        texts: Bound<'py, PyAny>,
        allowed_special: Bound<'py, PyAny>,
        num_threads: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        let tok = &self.inner;
        let allowed = allowed_arg(tok, &allowed_special)?;
        let mut arena = Arena::default();
        let strs = keep_texts(&mut arena, &texts)?;
        let views: Vec<Cow<'_, str>> = strs.iter().map(|&i| arena.get(i)).collect();
        let refs: Vec<&str> = views.iter().map(|c| c.as_ref()).collect();
        self.lists_of(py, &refs, num_threads, |t| tok.encode_allowed(t, &allowed))
    }

    /// Encodes many texts on `num_threads` threads (0 = all) without the GIL.
    fn encode_ordinary_batch<'py>(
        &self,
        py: Python<'py>,
        texts: Bound<'py, PyAny>,
        num_threads: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        let mut arena = Arena::default();
        let strs = keep_texts(&mut arena, &texts)?;
        let views: Vec<Cow<'_, str>> = strs.iter().map(|&i| arena.get(i)).collect();
        let refs: Vec<&str> = views.iter().map(|c| c.as_ref()).collect();
        let tok = &self.inner;
        self.lists_of(py, &refs, num_threads, |t| {
            Ok::<_, CoreError>(tok.encode_ordinary(t))
        })
    }

    /// For benchmarks: encodes each text in turn on this thread, in Rust
    /// alone (no Python objects made), `repeats` times with a fresh piece
    /// cache each time; returns the token count of one pass and the best
    /// pass's seconds.
    fn time_encode_ordinary(
        &self,
        py: Python<'_>,
        texts: Bound<'_, PyAny>,
        repeats: usize,
    ) -> PyResult<(usize, f64)> {
        let mut arena = Arena::default();
        let strs = keep_texts(&mut arena, &texts)?;
        let views: Vec<Cow<'_, str>> = strs.iter().map(|&i| arena.get(i)).collect();
        let refs: Vec<&str> = views.iter().map(|c| c.as_ref()).collect();
        let tok = &self.inner;
        detached(py, "encoding", || {
            let mut best = f64::INFINITY;
            let mut tokens = 0;
            for _ in 0..repeats.max(1) {
                let fresh = tok.as_ref().clone().with_new_identity();
                let start = std::time::Instant::now();
                tokens = refs.iter().map(|t| fresh.encode_ordinary(t).len()).sum();
                best = best.min(start.elapsed().as_secs_f64());
            }
            (tokens, best)
        })
    }

    /// Encodes many texts into one flat uint32 array plus int64 offsets
    /// (`len + 1`): text i is `ids[offsets[i]:offsets[i+1]]`. No Python int
    /// is made per token.
    #[allow(clippy::type_complexity)]
    fn encode_ordinary_flat<'py>(
        &self,
        py: Python<'py>,
        texts: Bound<'py, PyAny>,
        num_threads: usize,
    ) -> PyResult<FlatIds<'py>> {
        let tok = &self.inner;
        flat_ids(py, &texts, num_threads, |t| tok.encode_ordinary(t))
    }

    /// Whether chat templates see this tokenizer's conversations with every
    /// str value in NFC (a `tokenizer.json` whose normalizer is NFC).
    fn set_template_nfc(&self, on: bool) {
        self.template_nfc.store(on, Ordering::Relaxed);
    }

    fn decode(&self, py: Python<'_>, ids: Bound<'_, PyAny>) -> PyResult<String> {
        let ids = ids_arg(&ids, self.inner.vocab_size())?;
        self.inner.decode(&ids).py_err(py)
    }

    fn decode_bytes<'py>(
        &self,
        py: Python<'py>,
        ids: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let ids = ids_arg(&ids, self.inner.vocab_size())?;
        let b = self.inner.decode_bytes(&ids).py_err(py)?;
        Ok(PyBytes::new(py, &b))
    }

    fn token_bytes<'py>(
        &self,
        py: Python<'py>,
        id: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let id = id_arg(&id, self.inner.vocab_size(), "token id")?;
        let b = self.inner.token_bytes(id).py_err(py)?;
        Ok(PyBytes::new(py, b))
    }

    /// Checks one token id (`what` names it in errors) and returns it.
    fn check_id(&self, id: Bound<'_, PyAny>, what: &str) -> PyResult<Rank> {
        let id = id_arg(&id, self.inner.vocab_size(), what)?;
        match self.inner.token_bytes(id) {
            Ok(_) => Ok(id),
            Err(_) => Err(PyValueError::new_err(format!(
                "{what} is {id}, which no token of the vocabulary has"
            ))),
        }
    }

    fn token_id(&self, bytes: &[u8]) -> Option<Rank> {
        self.inner.token_id(bytes)
    }

    /// `(ids, mask)` as lists, like nanochat's `render_conversation`; with
    /// `chat_format`, rendered by that chat template.
    #[pyo3(signature = (conversation, max_tokens, chat_format = None))]
    fn render_conversation<'py>(
        &self,
        py: Python<'py>,
        conversation: Bound<'py, PyAny>,
        max_tokens: usize,
        chat_format: Option<PyRef<'py, PyChatTemplate>>,
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>)> {
        if let Some(t) = chat_format {
            let conv = template::extract(&conversation, self.template_nfc())
                .map_err(|e| extract_error(py, e, None))?;
            let (tmpl, tok) = (&t.inner, &self.inner);
            let r = run_sized(py, conv.text_len(), "rendering", || {
                tmpl.render(tok, &conv, max_tokens)
            })?
            .py_err(py)?;
            return Ok((self.id_list(py, &r.ids)?, self.id_list(py, &r.mask)?));
        }
        let renderer = self.renderer()?;
        let mut arena = Arena::default();
        let spec = arena
            .add(&conversation)
            .map_err(|e| extract_error(py, e, None))?;
        let conv = arena.view(&spec);
        let r = run_sized(py, conv.text_len(), "rendering", || {
            renderer.render(&conv, max_tokens)
        })?
        .py_err(py)?;
        // Lists of ints, as nanochat returns (a Vec<u8> would become bytes).
        Ok((self.id_list(py, &r.ids)?, self.id_list(py, &r.mask)?))
    }

    #[pyo3(signature = (conversation, max_tokens, chat_format = None))]
    fn render_for_completion(
        &self,
        py: Python<'_>,
        conversation: Bound<'_, PyAny>,
        max_tokens: usize,
        chat_format: Option<PyRef<'_, PyChatTemplate>>,
    ) -> PyResult<Vec<Rank>> {
        if let Some(t) = chat_format {
            let conv = template::extract(&conversation, self.template_nfc())
                .map_err(|e| extract_error(py, e, None))?;
            let (tmpl, tok) = (&t.inner, &self.inner);
            return run_sized(py, conv.text_len(), "rendering", || {
                tmpl.render_for_completion(tok, &conv, max_tokens)
            })?
            .py_err(py);
        }
        let renderer = self.renderer()?;
        let mut arena = Arena::default();
        let spec = arena
            .add(&conversation)
            .map_err(|e| extract_error(py, e, None))?;
        let conv = arena.view(&spec);
        run_sized(py, conv.text_len(), "rendering", || {
            renderer.render_for_completion(&conv, max_tokens)
        })?
        .py_err(py)
    }

    /// Renders many conversations on `num_threads` threads (0 = all) and
    /// returns flat `ids` (uint32), flat `mask` (uint8) and `offsets` (int64,
    /// len + 1): conversation i is `ids[offsets[i]:offsets[i+1]]`. The first
    /// bad conversation raises `ConversationError` naming its index.
    ///
    /// The input is taken [`RENDER_CHUNK`] conversations at a time, so an
    /// endless iterator costs only the output, which grows fallibly: running
    /// out of memory raises `MemoryError`.
    #[allow(clippy::type_complexity)]
    #[pyo3(signature = (conversations, max_tokens, num_threads, chat_format = None))]
    fn render_conversations<'py>(
        &self,
        py: Python<'py>,
        conversations: Bound<'py, PyAny>,
        max_tokens: usize,
        num_threads: usize,
        chat_format: Option<PyRef<'py, PyChatTemplate>>,
    ) -> PyResult<(
        Bound<'py, PyArray1<Rank>>,
        Bound<'py, PyArray1<u8>>,
        Bound<'py, PyArray1<i64>>,
    )> {
        let template = chat_format.map(|t| Arc::clone(&t.inner));
        let nfc = self.template_nfc();
        let renderer = match &template {
            Some(_) => None,
            None => Some(self.renderer()?),
        };
        let mut ids: Vec<Rank> = Vec::new();
        let mut mask: Vec<u8> = Vec::new();
        let mut offsets: Vec<i64> = vec![0];
        let mut iter = conversations.try_iter()?;
        let mut base = 0usize;
        loop {
            let mut arena = Arena::default();
            let mut specs = Vec::new();
            let mut rich = Vec::new();
            // An error met while extracting; raised only after the
            // conversations before it rendered cleanly, so the error always
            // names the first bad conversation.
            let mut pending: Option<PyErr> = None;
            let mut exhausted = false;
            while specs.len() + rich.len() < RENDER_CHUNK {
                let at = base + specs.len() + rich.len();
                match iter.next() {
                    None => {
                        exhausted = true;
                        break;
                    }
                    Some(Err(e)) => {
                        pending = Some(e);
                        break;
                    }
                    Some(Ok(c)) => {
                        let r = match template {
                            Some(_) => template::extract(&c, nfc).map(|t| rich.push(t)),
                            None => arena.add(&c).map(|spec| specs.push(spec)),
                        };
                        if let Err(e) = r {
                            pending = Some(extract_error(py, e, Some(at)));
                            break;
                        }
                    }
                }
            }
            let convs: Vec<Conversation<Cow<'_, str>>> =
                specs.iter().map(|s| arena.view(s)).collect();
            // Room for the chunk's ids and masks (about a token per byte of
            // text) and for the render's own buffers, taken before rendering:
            // running out of memory is then a MemoryError here, not an
            // allocation failing in the middle of a render (which aborts).
            let text: usize = convs.iter().map(|c| c.text_len()).sum::<usize>()
                + rich.iter().map(|c| c.text_len()).sum::<usize>();
            let mut room: Vec<u8> = Vec::new();
            ids.try_reserve(text)
                .and_then(|_| mask.try_reserve(text))
                .and_then(|_| room.try_reserve_exact(text.saturating_mul(8)))
                .map_err(|_| out_of_memory("collecting rendered conversations"))?;
            drop(room);
            let tok = &self.inner;
            let results = detached(py, "rendering", || match (&renderer, &template) {
                (Some(r), _) => r.render_batch(&convs, max_tokens, num_threads),
                (None, Some(t)) => convpack_core::parallel::map_chunked(&rich, num_threads, |c| {
                    t.render(tok, c, max_tokens)
                }),
                (None, None) => Vec::new(),
            })?;
            let count = convs.len() + rich.len();
            for (i, r) in results.into_iter().enumerate() {
                let r = r.map_err(|e| e.with_conversation(base + i)).py_err(py)?;
                ids.try_reserve(r.ids.len())
                    .and_then(|_| mask.try_reserve(r.mask.len()))
                    .and_then(|_| offsets.try_reserve(1))
                    .map_err(|_| out_of_memory("collecting rendered conversations"))?;
                ids.extend_from_slice(&r.ids);
                mask.extend_from_slice(&r.mask);
                offsets.push(ids.len() as i64);
            }
            if let Some(e) = pending {
                return Err(e);
            }
            if exhausted {
                break;
            }
            base += count;
        }
        Ok((
            ids.into_pyarray(py),
            mask.into_pyarray(py),
            offsets.into_pyarray(py),
        ))
    }
}

/// Keeps every text of an iterable of str in the arena (a `TypeError`
/// names the first that is not a str).
fn keep_texts<'py>(arena: &mut Arena<'py>, texts: &Bound<'py, PyAny>) -> PyResult<Vec<usize>> {
    // A str is an iterable of one-character strs: taken as a list of texts,
    // it would silently encode each character apart.
    if texts.is_instance_of::<PyString>() || texts.is_instance_of::<PyBytes>() {
        return Err(PyTypeError::new_err(format!(
            "expected a list of str, got one {} (wrap a single text in a list)",
            type_name(texts)
        )));
    }
    let mut strs = Vec::new();
    for (i, t) in texts.try_iter()?.enumerate() {
        let t = t?;
        let s = t.cast_into::<PyString>().map_err(|e| {
            PyTypeError::new_err(format!(
                "encode expects strings, got {} at position {i}",
                type_name(&e.into_inner())
            ))
        })?;
        strs.push(arena.keep(s)?);
    }
    Ok(strs)
}

fn arena_text<'py>(arena: &mut Arena<'py>, text: Bound<'py, PyString>) -> PyResult<String> {
    let i = arena.keep(text)?;
    Ok(arena.get(i).into_owned())
}

/// The allowed special tokens of `encode`: the str `"all"`, or an iterable
/// of str names (a name that is no special token allows nothing).
fn allowed_arg(tok: &Tokenizer, allowed: &Bound<'_, PyAny>) -> PyResult<AllowedSpecials> {
    if let Ok(s) = allowed.cast::<PyString>() {
        return match s.to_str()? {
            "all" => Ok(AllowedSpecials::All),
            other => Err(PyValueError::new_err(format!(
                "allowed_special must be 'all' or a collection of names, got {other:?}"
            ))),
        };
    }
    let mut names = Vec::new();
    for name in allowed.try_iter()? {
        let name = name?;
        let name = name.cast_into::<PyString>().map_err(|e| {
            PyTypeError::new_err(format!(
                "allowed_special must hold str names, got {}",
                type_name(&e.into_inner())
            ))
        })?;
        names.push(name.to_str()?.to_owned());
    }
    Ok(tok.allowed_specials(names.iter().map(String::as_str)))
}

/// Counts pieces of training text chunk by chunk, then learns the merges.
#[pyclass(module = "convpack._core", name = "BpeTrainer")]
struct PyBpeTrainer {
    splitter: Splitter,
    counts: FxHashMap<Vec<u8>, u64>,
}

#[pymethods]
impl PyBpeTrainer {
    #[new]
    fn new(pattern: &str) -> PyResult<Self> {
        let splitter = Splitter::new(pattern).map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(PyBpeTrainer {
            splitter,
            counts: FxHashMap::default(),
        })
    }

    /// Adds a chunk of texts (a list of str).
    fn feed(&mut self, py: Python<'_>, texts: Bound<'_, PyList>) -> PyResult<()> {
        let mut arena = Arena::default();
        let mut idx = Vec::with_capacity(texts.len());
        for t in texts.iter() {
            let s = t.cast_into::<PyString>().map_err(|_| {
                pyo3::exceptions::PyTypeError::new_err("training texts must be strings")
            })?;
            idx.push(arena.keep(s)?);
        }
        let views: Vec<Cow<'_, str>> = idx.iter().map(|&i| arena.get(i)).collect();
        let refs: Vec<&str> = views.iter().map(|c| c.as_ref()).collect();
        let splitter = &self.splitter;
        let counts = &mut self.counts;
        detached(py, "counting training text", || {
            train::count_pieces(splitter, &refs, counts)
        })?
        .py_err(py)
    }

    /// Learns merges up to `n_ranks` tokens; returns token bytes by rank.
    fn finish(&mut self, py: Python<'_>, n_ranks: usize) -> PyResult<Vec<Py<PyBytes>>> {
        let counts = &self.counts;
        let tokens = detached(py, "training", || train::train(counts, n_ranks))?.py_err(py)?;
        Ok(tokens
            .iter()
            .map(|t| PyBytes::new(py, t).unbind())
            .collect())
    }
}

/// Threads in the process-wide pool.
#[pyfunction]
fn max_threads() -> usize {
    convpack_core::parallel::max_threads()
}

/// Every thread's piece cache starts over at its next piece (benchmarks:
/// text new to the encoder, with the tables as a running encoder has them).
#[pyfunction]
fn forget_pieces() {
    convpack_core::bpe::forget_pieces()
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyTokenizer>()?;
    m.add_class::<PyBpeTrainer>()?;
    m.add_function(wrap_pyfunction!(max_threads, m)?)?;
    m.add_function(wrap_pyfunction!(forget_pieces, m)?)?;
    pack::register(m)?;
    template::register(m)?;
    hf::register(m)?;
    m.add("SPLIT_PATTERN", convpack_core::SPLIT_PATTERN)?;
    m.add("CL100K_PATTERN", convpack_core::CL100K_PATTERN)?;
    m.add(
        "CL100K_TIKTOKEN_PATTERN",
        convpack_core::CL100K_TIKTOKEN_PATTERN,
    )?;
    m.add("MAX_VOCAB_SIZE", convpack_core::MAX_VOCAB_SIZE)?;
    m.add("MAX_SPECIAL_TOKENS", convpack_core::MAX_SPECIAL_TOKENS)?;
    m.add(
        "CHAT_SPECIAL_TOKENS",
        convpack_core::CHAT_SPECIAL_TOKENS.to_vec(),
    )?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

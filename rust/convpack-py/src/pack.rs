//! Bindings of the packers (`convpack._core.Packer`), driven by
//! `convpack.DataGenerator`.
//!
//! Python fetches the conversations the packer asks for (`wanted`), hands
//! them over (`push`: extraction with the GIL, rendering on the thread pool
//! without it), and has batches written straight into its numpy buffers
//! (`plan`, `shape`, `write`).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;

use convpack_core::pack::{
    merge, Elastic, Inputs, Mode, Outputs, Overflow, PackConfig, PackState, Packer, RenderCache,
    Schedule,
};
use convpack_core::parallel::InTurn;
use convpack_core::{
    ChatTemplate, ChatTokens, Content, Conversation, ConversationError, CoreError, Message, Part,
    Rendered, Renderer, TemplateConversation, Tokenizer, Turns,
};
use numpy::{PyArray1, PyArrayDyn, PyArrayMethods};
use pyo3::exceptions::{PyMemoryError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyList, PyTuple};

use crate::convert::{Arena, ConversationSpec, ExtractError};
use crate::errors::IntoPyResult;
use crate::template::{self, PyChatTemplate};
use crate::{detached, PyTokenizer};

fn core<T>(py: Python<'_>, r: Result<T, CoreError>) -> PyResult<T> {
    r.py_err(py)
}

/// A packer over a dataset of `dataset_len` conversations for one rank.
#[pyclass(module = "convpack._core", name = "Packer")]
pub struct PyPacker {
    inner: Packer,
    tok: Arc<Tokenizer>,
    /// The chat template, when not nanochat's format.
    template: Option<Arc<ChatTemplate>>,
    /// How the template reads conversations (the tokenizer's).
    nfc: template::Nfc,
    max_tokens: usize,
    num_threads: usize,
    cache: Option<RenderCache>,
    /// Chunks rendering in the background (`submit`), in fetch order.
    pending: VecDeque<Chunk>,
    /// Conversations in them.
    pending_len: usize,
    /// Has the chunks render one after another, so that rendering never
    /// takes more than `num_threads` threads however many are in flight;
    /// with the process that made it (a forked child makes its own: the
    /// turns taken in the parent would never end there).
    turns: (Arc<InTurn>, u32),
}

type RenderResults = Vec<Result<Turns, ConversationError>>;

/// Where each conversation of a chunk comes from.
enum Slot {
    Cached(Turns),
    Failed(ConversationError),
    Render,
}

/// A chunk submitted for rendering in the background.
struct Chunk {
    slots: Vec<Slot>,
    indices: Vec<usize>,
    /// The conversations, shared with the render thread: a process forked
    /// while the thread ran has no such thread and renders them itself.
    convs: Arc<Vec<Conversation<String>>>,
    /// The same for a chat template (one of the two is empty).
    rich: Arc<Vec<TemplateConversation>>,
    /// The process that started the thread.
    pid: u32,
    rendered: std::thread::JoinHandle<RenderResults>,
}

impl Chunk {
    /// The rendered conversations: the thread's, or (in a forked child,
    /// where the thread does not exist) rendered here.
    fn results(
        self,
        py: Python<'_>,
        job: &RenderJob,
    ) -> PyResult<(Vec<Slot>, Vec<usize>, RenderResults)> {
        let Chunk {
            slots,
            indices,
            convs,
            rich,
            pid,
            rendered,
        } = self;
        let results = if pid == std::process::id() {
            detached(py, "rendering", || rendered.join())?
                .map_err(|_| PyRuntimeError::new_err("a render thread panicked"))?
        } else {
            // Joining or detaching a thread of the parent would touch a
            // thread this process does not have.
            std::mem::forget(rendered);
            detached(py, "rendering", || job.run(&convs, &rich))?
        };
        Ok((slots, indices, results))
    }
}

impl Drop for PyPacker {
    fn drop(&mut self) {
        let pid = std::process::id();
        for chunk in self.pending.drain(..) {
            if chunk.pid != pid {
                std::mem::forget(chunk.rendered);
            }
        }
    }
}

/// What rendering a chunk needs, free of Python (it may run on another
/// thread).
struct RenderJob {
    tok: Arc<Tokenizer>,
    template: Option<Arc<ChatTemplate>>,
    split: bool,
    limit: usize,
    max_tokens: usize,
    threads: usize,
}

impl RenderJob {
    fn run<S: AsRef<str> + Sync>(
        &self,
        convs: &[Conversation<S>],
        rich: &[TemplateConversation],
    ) -> RenderResults {
        if let Some(t) = &self.template {
            let tok = &self.tok;
            return convpack_core::parallel::map_chunked(rich, self.threads, |c| {
                if self.split {
                    t.render_turns(tok, c, self.limit)
                } else {
                    t.render(tok, c, self.max_tokens).map(Turns::from)
                }
            });
        }
        if convs.is_empty() {
            return Vec::new();
        }
        let renderer = match Renderer::new(&self.tok) {
            Ok(r) => r,
            Err(e) => {
                let e = ConversationError::new(None, e.to_string());
                return convs.iter().map(|_| Err(e.clone())).collect();
            }
        };
        if self.split {
            renderer.render_turns_batch(convs, self.limit, self.threads)
        } else {
            renderer
                .render_batch(convs, self.max_tokens, self.threads)
                .into_iter()
                .map(|r| r.map(Turns::from))
                .collect()
        }
    }
}

/// A conversation with its own copies of the strings.
fn owned(c: Conversation<Cow<'_, str>>) -> Conversation<String> {
    Conversation {
        messages: c
            .messages
            .into_iter()
            .map(|m| Message {
                role: m.role,
                content: match m.content {
                    Content::Text(t) => Content::Text(t.into_owned()),
                    Content::Parts(ps) => Content::Parts(
                        ps.into_iter()
                            .map(|p| Part {
                                kind: p.kind,
                                text: p.text.into_owned(),
                            })
                            .collect(),
                    ),
                },
            })
            .collect(),
    }
}

impl PyPacker {
    fn job(&self) -> RenderJob {
        RenderJob {
            tok: Arc::clone(&self.tok),
            template: self.template.clone(),
            split: self.inner.config().split_turns,
            limit: self.inner.piece_limit(),
            max_tokens: self.max_tokens,
            threads: self.num_threads,
        }
    }

    /// Reads `items` (for `indices`) out of Python: cached ones from the
    /// cache, bad ones as their error, the rest into `arena` to render.
    fn extract<'py>(
        &mut self,
        arena: &mut Arena<'py>,
        items: &[Bound<'py, PyAny>],
        indices: &[usize],
    ) -> PyResult<(Vec<Slot>, Vec<ConversationSpec>, Vec<TemplateConversation>)> {
        let mut specs = Vec::with_capacity(items.len());
        let mut rich = Vec::new();
        let mut slots: Vec<Slot> = Vec::with_capacity(items.len());
        for (item, &index) in items.iter().zip(indices) {
            if item.is_none() {
                // None stands in for a cached conversation; anywhere else it
                // is a dataset row that is None: a bad conversation, raised
                // or skipped like any other.
                slots.push(match self.cache.as_mut().and_then(|c| c.get(index)) {
                    Some(t) => Slot::Cached(t),
                    None => Slot::Failed(
                        ConversationError::new(
                            None,
                            "the conversation is None, not a dict with a \"messages\" list",
                        )
                        .with_conversation(index),
                    ),
                });
                continue;
            }
            if let Ok(row) = item.cast::<PyTuple>() {
                // A row rendered ahead of time (`RenderedDataset`): it enters
                // at the packer, like a conversation the cache held.
                slots.push(match self.rendered_row(row) {
                    Ok(t) => Slot::Cached(t),
                    Err(e) => {
                        Slot::Failed(ConversationError::new(None, e).with_conversation(index))
                    }
                });
                continue;
            }
            let added = match self.template {
                Some(_) => template::extract(item, self.nfc).map(|c| rich.push(c)),
                None => arena.add(item).map(|s| specs.push(s)),
            };
            match added {
                Ok(()) => slots.push(Slot::Render),
                Err(ExtractError::Rule(e)) => slots.push(Slot::Failed(e.with_conversation(index))),
                Err(ExtractError::Python(e)) => return Err(e),
            }
        }
        Ok((slots, specs, rich))
    }

    /// A rendered row: `(ids uint32, mask uint8)` arrays, or for a
    /// conversation split at turns `(ids, mask, pieces, cut, lost)` with
    /// `pieces` the pieces' lengths (uint32) and the split's counts (see
    /// `Turns`); checked against this packer's vocabulary, `max_tokens` and
    /// piece limit. The error is the rule broken.
    fn rendered_row(&self, row: &Bound<'_, PyTuple>) -> Result<Turns, String> {
        let split = self.inner.config().split_turns;
        match (row.len(), split) {
            (2, false) => self.rendered_ids(row, self.max_tokens).map(Turns::from),
            (5, true) => self.rendered_pieces(row),
            (2 | 5, _) => Err(format!(
                "a row rendered {} reached a packer that {}",
                if row.len() == 2 { "whole" } else { "in pieces (truncate='turns')" },
                if split { "splits at turns" } else { "does not split at turns" }
            )),
            (n, _) => Err(format!(
                "a rendered row is (ids, mask) or (ids, mask, pieces, cut, lost), got a tuple of {n}"
            )),
        }
    }

    fn rendered_pieces(&self, row: &Bound<'_, PyTuple>) -> Result<Turns, String> {
        let limit = self.inner.piece_limit();
        let whole = self.rendered_ids(row, usize::MAX)?;
        let item = |i: usize| row.get_item(i).map_err(|e| e.to_string());
        let lengths = item(2)?
            .cast::<PyArray1<u32>>()
            .map_err(|_| "rendered piece lengths must be a uint32 numpy array".to_string())?
            .to_vec()
            .map_err(|e| e.to_string())?;
        let count = |i: usize, what: &str| -> Result<u64, String> {
            item(i)?
                .extract::<u64>()
                .map_err(|_| format!("a rendered row's {what} must be an int >= 0"))
        };
        let (cut, lost) = (count(3, "cut")?, count(4, "lost")?);
        let total: u64 = lengths.iter().map(|&l| l as u64).sum();
        if total != whole.ids.len() as u64 {
            return Err(format!(
                "rendered pieces of {total} tokens in all, but {} ids",
                whole.ids.len()
            ));
        }
        if let Some(&l) = lengths.iter().find(|&&l| l == 0 || l as usize > limit) {
            return Err(format!(
                "a rendered piece of {l} tokens; pieces are 1 to {limit} tokens (this packer's row)"
            ));
        }
        let mut pieces = Vec::with_capacity(lengths.len());
        let mut at = 0;
        for l in lengths {
            let end = at + l as usize;
            pieces.push(Rendered {
                ids: whole.ids[at..end].to_vec(),
                mask: whole.mask[at..end].to_vec(),
            });
            at = end;
        }
        Ok(Turns { pieces, cut, lost })
    }

    /// The `(ids, mask)` arrays at the start of a rendered row, at most
    /// `max_len` long.
    fn rendered_ids(&self, row: &Bound<'_, PyTuple>, max_len: usize) -> Result<Rendered, String> {
        let array = |i: usize| row.get_item(i).map_err(|e| e.to_string());
        let ids = array(0)?;
        let ids = ids
            .cast::<PyArray1<u32>>()
            .map_err(|_| "rendered ids must be a uint32 numpy array".to_string())?
            .to_vec()
            .map_err(|e| e.to_string())?;
        let mask = array(1)?;
        let mask = mask
            .cast::<PyArray1<u8>>()
            .map_err(|_| "a rendered mask must be a uint8 numpy array".to_string())?
            .to_vec()
            .map_err(|e| e.to_string())?;
        if ids.len() != mask.len() {
            return Err(format!("{} ids but {} mask values", ids.len(), mask.len()));
        }
        if ids.len() > max_len {
            return Err(format!(
                "a rendered row of {} tokens, above max_tokens {}",
                ids.len(),
                self.max_tokens
            ));
        }
        let vocab = self.tok.vocab_size();
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            ));
        }
        if mask.iter().any(|&m| m > 1) {
            return Err("a rendered mask holds values other than 0 and 1".into());
        }
        Ok(Rendered { ids, mask })
    }

    /// Puts a chunk's conversations, in order, into the cache and the packer.
    fn finish(
        &mut self,
        py: Python<'_>,
        slots: Vec<Slot>,
        indices: Vec<usize>,
        rendered: RenderResults,
    ) -> PyResult<()> {
        let (inner, cache) = (&mut self.inner, &mut self.cache);
        let r = detached(py, "packing", move || {
            let mut rendered = rendered.into_iter();
            let mut docs: RenderResults = Vec::with_capacity(slots.len());
            for (slot, &index) in slots.into_iter().zip(&indices) {
                docs.push(match slot {
                    Slot::Cached(t) => Ok(t),
                    Slot::Failed(e) => Err(e),
                    Slot::Render => {
                        let r = rendered
                            .next()
                            .unwrap_or_else(|| {
                                Err(ConversationError::new(None, "internal: missing rendering"))
                            })
                            .map_err(|e| e.with_conversation(index));
                        if let (Ok(t), Some(c)) = (&r, cache.as_mut()) {
                            c.insert(index, t);
                        }
                        r
                    }
                });
            }
            inner.push_turns(docs)
        })?;
        core(py, r)
    }

    /// Waits for the oldest chunk in flight and takes it in.
    fn take_chunk(&mut self, py: Python<'_>) -> PyResult<()> {
        let Some(chunk) = self.pending.pop_front() else {
            return Ok(());
        };
        self.pending_len -= chunk.indices.len();
        let job = self.job();
        let (slots, indices, rendered) = chunk.results(py, &job)?;
        self.finish(py, slots, indices, rendered)
    }

    /// Takes every chunk in flight in.
    fn drain(&mut self, py: Python<'_>) -> PyResult<()> {
        while !self.pending.is_empty() {
            self.take_chunk(py)?;
        }
        Ok(())
    }
}

#[pymethods]
impl PyPacker {
    #[new]
    #[pyo3(signature = (
        tokenizer, mode, *, batch_size, seq_len, dataset_len, rank, world_size,
        overflow = "pad", buffer_size = 100, max_tokens = 2048, max_seqs = None,
        num_threads = 0, skip_errors = false, truncate = "tail", cache_bytes = None,
        shuffle_seed = None,
        chat_format = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        tokenizer: PyRef<'_, PyTokenizer>,
        mode: &str,
        batch_size: usize,
        seq_len: Option<usize>,
        dataset_len: usize,
        rank: usize,
        world_size: usize,
        overflow: &str,
        buffer_size: usize,
        max_tokens: usize,
        max_seqs: Option<usize>,
        num_threads: usize,
        skip_errors: bool,
        truncate: &str,
        cache_bytes: Option<u64>,
        shuffle_seed: Option<u64>,
        chat_format: Option<PyRef<'_, PyChatTemplate>>,
    ) -> PyResult<Self> {
        // "keep": nanochat's best-fit, where an over-long conversation stays
        // whole in the buffer (PackConfig::keep_long).
        let (split_turns, keep_long) = match truncate {
            "tail" => (false, false),
            "turns" => (true, false),
            "keep" => (false, true),
            t => {
                return Err(PyValueError::new_err(format!(
                    "truncate must be 'tail', 'turns' or 'keep', got {t:?}"
                )))
            }
        };
        let overflow = match overflow {
            "pad" => Overflow::Pad,
            "crop" => Overflow::Crop,
            o => {
                return Err(PyValueError::new_err(format!(
                    "overflow must be 'pad' or 'crop', got {o:?}"
                )))
            }
        };
        let mode = match mode {
            "padded" => Mode::Padded,
            "stream" => Mode::Stream,
            "bestfit" => Mode::BestFit {
                overflow,
                buffer_size,
            },
            "varlen" => Mode::Varlen {
                max_seqs: max_seqs.ok_or_else(|| PyValueError::new_err("varlen needs max_seqs"))?,
            },
            m => {
                return Err(PyValueError::new_err(format!(
                    "mode must be 'padded', 'stream', 'bestfit' or 'varlen', got {m:?}"
                )))
            }
        };
        let template = chat_format.map(|t| Arc::clone(&t.inner));
        // A template's rows are padded with its BOS token (else its EOS, else
        // the vocabulary's first special token): nanochat's ids are not there.
        let (bos, pad) = match &template {
            None => {
                let chat = ChatTokens::of(&tokenizer.inner)
                    .map_err(|e| PyValueError::new_err(e.to_string()))?;
                (chat.bos, chat.assistant_end)
            }
            Some(t) => {
                let tok = &tokenizer.inner;
                let id = ["bos_token", "eos_token"]
                    .iter()
                    .find_map(|v| t.variable(v).and_then(|s| tok.special_id(s)))
                    .or_else(|| tok.specials().iter().map(|(_, id)| *id).min())
                    .unwrap_or(0);
                (id, id)
            }
        };
        let cfg = PackConfig {
            mode,
            batch_size,
            seq_len,
            bos,
            pad,
            skip_errors,
            max_tokens,
            split_turns,
            keep_long,
        };
        let order = cfg.order();
        let err = |e: CoreError| PyValueError::new_err(e.to_string());
        let mut sched = Schedule::new(dataset_len, rank, world_size, order).map_err(err)?;
        if let Some(seed) = shuffle_seed {
            sched = sched.with_shuffle(seed);
        }
        let cache = cache_bytes
            .map(|b| RenderCache::new(dataset_len, tokenizer.inner.vocab_size(), b))
            .transpose()
            .map_err(|e| PyMemoryError::new_err(e.to_string()))?;
        Ok(PyPacker {
            inner: Packer::new(cfg, sched).map_err(err)?,
            tok: Arc::clone(&tokenizer.inner),
            nfc: tokenizer.template_nfc(),
            template,
            max_tokens,
            num_threads,
            cache,
            pending: VecDeque::new(),
            pending_len: 0,
            turns: (Arc::default(), std::process::id()),
        })
    }

    /// 0 when the next batch is laid out, else how many more conversations
    /// it needs at least. Raises `ConversationError` for a bad conversation
    /// (unless skipping).
    fn plan(&mut self, py: Python<'_>) -> PyResult<usize> {
        loop {
            let inner = &mut self.inner;
            let fill = detached(py, "packing", || inner.plan())?;
            match core(py, fill)? {
                convpack_core::pack::Fill::Ready => return Ok(0),
                convpack_core::pack::Fill::NeedMore(n) if self.pending.is_empty() => {
                    return Ok(n.max(1))
                }
                convpack_core::pack::Fill::NeedMore(_) => self.take_chunk(py)?,
            }
        }
    }

    /// Dataset indices to fetch and `push` (or `submit`) next, at most `n`:
    /// after the ones in flight.
    fn wanted(&self, n: usize) -> Vec<usize> {
        if self.pending_len == 0 {
            return self.inner.wanted(n);
        }
        self.inner
            .wanted(self.pending_len + n)
            .split_off(self.pending_len)
    }

    /// Which of `indices` the render cache holds (all False without one):
    /// those may be pushed as None instead of being read.
    fn cached(&self, indices: Vec<usize>) -> Vec<bool> {
        match &self.cache {
            Some(c) => indices.iter().map(|&i| c.contains(i)).collect(),
            None => vec![false; indices.len()],
        }
    }

    /// Renders `conversations` (dataset rows `first`, `first + 1`, ...)
    /// as this packer would, without packing them: `(ids uint32, mask
    /// uint8, piece_offsets int64, pieces uint32, cut uint64, lost uint64)`,
    /// where conversation `j` is `pieces[j]` consecutive pieces, piece `k`
    /// is `ids[piece_offsets[k]:piece_offsets[k + 1]]`, and `cut`/`lost` are
    /// its split's counts. For rendering shards ahead of time. Raises the
    /// first bad conversation's `ConversationError`.
    #[allow(clippy::type_complexity)]
    fn render_rows<'py>(
        &mut self,
        py: Python<'py>,
        conversations: Bound<'py, PyAny>,
        first: usize,
    ) -> PyResult<(
        Bound<'py, PyArray1<u32>>,
        Bound<'py, PyArray1<u8>>,
        Bound<'py, PyArray1<i64>>,
        Bound<'py, PyArray1<u32>>,
        Bound<'py, PyArray1<u64>>,
        Bound<'py, PyArray1<u64>>,
    )> {
        let items: Vec<Bound<'_, PyAny>> = conversations.try_iter()?.collect::<PyResult<_>>()?;
        let indices: Vec<usize> = (first..first + items.len()).collect();
        let mut arena = Arena::default();
        let (slots, specs, rich) = self.extract(&mut arena, &items, &indices)?;
        let convs: Vec<Conversation<Cow<'_, str>>> = specs.iter().map(|s| arena.view(s)).collect();
        let job = self.job();
        let mut rendered = detached(py, "rendering", || job.run(&convs, &rich))?.into_iter();
        let (mut ids, mut mask, mut offsets) = (Vec::new(), Vec::new(), vec![0i64]);
        let (mut pieces, mut cut, mut lost) = (Vec::new(), Vec::new(), Vec::new());
        for (slot, &index) in slots.into_iter().zip(&indices) {
            let turns = match slot {
                Slot::Cached(t) => t,
                Slot::Failed(e) => return Err(crate::errors::conversation_error(py, &e)),
                Slot::Render => match rendered.next() {
                    Some(Ok(t)) => t,
                    Some(Err(e)) => {
                        return Err(crate::errors::conversation_error(
                            py,
                            &e.with_conversation(index),
                        ))
                    }
                    None => return Err(PyRuntimeError::new_err("internal: missing rendering")),
                },
            };
            pieces.push(turns.pieces.len() as u32);
            cut.push(turns.cut);
            lost.push(turns.lost);
            for p in &turns.pieces {
                ids.extend_from_slice(&p.ids);
                mask.extend_from_slice(&p.mask);
                offsets.push(ids.len() as i64);
            }
        }
        Ok((
            PyArray1::from_vec(py, ids),
            PyArray1::from_vec(py, mask),
            PyArray1::from_vec(py, offsets),
            PyArray1::from_vec(py, pieces),
            PyArray1::from_vec(py, cut),
            PyArray1::from_vec(py, lost),
        ))
    }

    /// Renders the conversations fetched for `wanted` (in that order); None
    /// stands for one the cache holds. Chunks still rendering from `submit`
    /// are taken in first.
    fn push(&mut self, py: Python<'_>, conversations: Bound<'_, PyAny>) -> PyResult<()> {
        self.drain(py)?;
        let items: Vec<Bound<'_, PyAny>> = conversations.try_iter()?.collect::<PyResult<_>>()?;
        let indices = self.inner.wanted(items.len());
        let mut arena = Arena::default();
        let (slots, specs, rich) = self.extract(&mut arena, &items, &indices)?;
        let convs: Vec<Conversation<Cow<'_, str>>> = specs.iter().map(|s| arena.view(s)).collect();
        let job = self.job();
        let rendered = detached(py, "rendering", || job.run(&convs, &rich))?;
        self.finish(py, slots, indices, rendered)
    }

    /// Like `push`, but renders in the background: returns once the
    /// conversations are read out of the Python objects, so the caller can
    /// read the next ones meanwhile. `plan` takes the results in, in order.
    /// `wanted` accounts for chunks in flight.
    fn submit(&mut self, py: Python<'_>, conversations: Bound<'_, PyAny>) -> PyResult<()> {
        if self.inner.restoring() {
            return self.push(py, conversations);
        }
        let items: Vec<Bound<'_, PyAny>> = conversations.try_iter()?.collect::<PyResult<_>>()?;
        let indices = self.wanted(items.len());
        let mut arena = Arena::default();
        let (slots, specs, rich) = self.extract(&mut arena, &items, &indices)?;
        let convs: Arc<Vec<Conversation<String>>> =
            Arc::new(specs.iter().map(|s| owned(arena.view(s))).collect());
        let rich = Arc::new(rich);
        let job = self.job();
        let shared = Arc::clone(&convs);
        let shared_rich = Arc::clone(&rich);
        let pid = std::process::id();
        if self.turns.1 != pid {
            self.turns = (Arc::default(), pid);
        }
        let turns = Arc::clone(&self.turns.0);
        let ticket = turns.ticket();
        let in_thread = Arc::clone(&turns);
        let rendered = match std::thread::Builder::new()
            .name("convpack-render".into())
            .spawn(move || in_thread.run(ticket, || job.run(&shared, &shared_rich)))
        {
            Ok(handle) => handle,
            Err(e) => {
                // The ticket is taken: end its turn, or later chunks wait.
                detached(py, "rendering", || turns.run(ticket, || ()))?;
                return Err(PyRuntimeError::new_err(format!(
                    "cannot start a render thread: {e}"
                )));
            }
        };
        self.pending_len += indices.len();
        self.pending.push_back(Chunk {
            slots,
            indices,
            convs,
            rich,
            pid,
            rendered,
        });
        Ok(())
    }

    /// Longest piece a conversation enters the packer as (its row; with
    /// `truncate="turns"`, the length conversations are split at).
    fn piece_limit(&self) -> usize {
        self.inner.piece_limit()
    }

    /// Chunks submitted and not yet taken in by `plan`.
    fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// `(bytes used, conversations cached, served from the cache, full)`,
    /// or None without a cache.
    fn cache_stats(&self) -> Option<(u64, u64, u64, bool)> {
        self.cache.as_ref().map(|c| {
            let s = c.stats();
            (s.bytes, s.conversations, s.hits, s.full)
        })
    }

    /// `(rows, cols, len(cu_seqlens) or 0, inputs are int64)` of the planned
    /// batch, or None before `plan` returned 0.
    fn shape(&self) -> Option<(usize, usize, usize, bool)> {
        self.inner
            .shape()
            .map(|s| (s.rows, s.cols, s.seqlens, s.wide_inputs))
    }

    /// Writes the planned batch into C-contiguous arrays of exactly the
    /// planned sizes (any shape): inputs int32 (int64 for `padded`), targets
    /// int64, and for `varlen` cu_seqlens int32 and position_ids int64.
    #[pyo3(signature = (inputs, targets, cu_seqlens = None, position_ids = None))]
    fn write(
        &mut self,
        py: Python<'_>,
        inputs: Bound<'_, PyAny>,
        targets: Bound<'_, PyArrayDyn<i64>>,
        cu_seqlens: Option<Bound<'_, PyArrayDyn<i32>>>,
        position_ids: Option<Bound<'_, PyArrayDyn<i64>>>,
    ) -> PyResult<()> {
        let not_contiguous = |what: &str| {
            PyValueError::new_err(format!("{what} must be a writable C-contiguous array"))
        };
        fn borrow(what: &'static str) -> impl Fn(numpy::BorrowError) -> PyErr {
            move |_| PyValueError::new_err(format!("{what} is already borrowed"))
        }
        let mut in32 = None;
        let mut in64 = None;
        if let Ok(a) = inputs.cast::<PyArrayDyn<i32>>() {
            in32 = Some(a.try_readwrite().map_err(borrow("inputs"))?);
        } else if let Ok(a) = inputs.cast::<PyArrayDyn<i64>>() {
            in64 = Some(a.try_readwrite().map_err(borrow("inputs"))?);
        } else {
            return Err(PyTypeError::new_err(
                "inputs must be an int32 or int64 numpy array",
            ));
        }
        let mut t = targets.try_readwrite().map_err(borrow("targets"))?;
        let mut cu = cu_seqlens
            .as_ref()
            .map(|a| a.try_readwrite())
            .transpose()
            .map_err(borrow("cu_seqlens"))?;
        let mut pos = position_ids
            .as_ref()
            .map(|a| a.try_readwrite())
            .transpose()
            .map_err(borrow("position_ids"))?;
        let inputs = match (&mut in32, &mut in64) {
            (Some(a), _) => Inputs::I32(a.as_slice_mut().map_err(|_| not_contiguous("inputs"))?),
            (_, Some(a)) => Inputs::I64(a.as_slice_mut().map_err(|_| not_contiguous("inputs"))?),
            _ => {
                return Err(PyTypeError::new_err(
                    "inputs must be an int32 or int64 numpy array",
                ))
            }
        };
        let out = Outputs {
            inputs,
            targets: t.as_slice_mut().map_err(|_| not_contiguous("targets"))?,
            cu_seqlens: match cu.as_mut() {
                Some(a) => Some(a.as_slice_mut().map_err(|_| not_contiguous("cu_seqlens"))?),
                None => None,
            },
            position_ids: match pos.as_mut() {
                Some(a) => Some(
                    a.as_slice_mut()
                        .map_err(|_| not_contiguous("position_ids"))?,
                ),
                None => None,
            },
        };
        let inner = &mut self.inner;
        let r = detached(py, "packing", || inner.write(out))?;
        core(py, r)
    }

    /// The resume point after the last written batch, as a JSON-able dict.
    fn state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        state_to_dict(py, self.inner.state())
    }

    /// Resets to a dict from `state`; `wanted`/`push` then re-render the
    /// held conversations.
    fn load_state(&mut self, py: Python<'_>, state: Bound<'_, PyDict>) -> PyResult<()> {
        let st = state_from_dict(&state)?;
        // Chunks read ahead belong to the old position.
        let job = self.job();
        for chunk in std::mem::take(&mut self.pending) {
            let _ = chunk.results(py, &job);
        }
        self.pending_len = 0;
        self.inner
            .load_state(st)
            .map_err(|e| PyValueError::new_err(format!("cannot load this state: {e}")))
    }

    /// Starts over on this packer's schedule dealing the elastic remainder
    /// `(gap, from, end)` first (nothing held or fetched; `load_state` may
    /// follow with a state saved on that schedule).
    fn set_elastic(&mut self, py: Python<'_>, gap: Vec<u64>, start: u64, end: u64) -> PyResult<()> {
        let job = self.job();
        for chunk in std::mem::take(&mut self.pending) {
            let _ = chunk.results(py, &job);
        }
        self.pending_len = 0;
        let mut sched = self.inner.schedule().clone();
        sched.elastic = None;
        // An empty remainder is the schedule's own order.
        let r = if gap.is_empty() && end == 0 {
            self.inner.set_schedule(sched)
        } else {
            sched
                .with_elastic(Elastic {
                    gap,
                    from: start,
                    end,
                })
                .and_then(|s| self.inner.set_schedule(s))
        };
        r.map_err(|e| PyValueError::new_err(format!("cannot load this state: {e}")))
    }

    /// The elastic remainder `(gap, from, end)` left by the old ranks'
    /// states: `olds[r]` is `(world_size, remainder or None, packer state)`
    /// of rank `r`, on this packer's dataset, mode and shuffle.
    #[allow(clippy::type_complexity)]
    fn merge_states(
        &self,
        olds: Vec<(usize, Option<(Vec<u64>, u64, u64)>, Bound<'_, PyDict>)>,
    ) -> PyResult<(Vec<u64>, u64, u64)> {
        let err = |e: CoreError| PyValueError::new_err(format!("cannot merge these states: {e}"));
        let mine = self.inner.schedule();
        let mut scheds = Vec::with_capacity(olds.len());
        for (r, (world, elastic, state)) in olds.iter().enumerate() {
            let st = state_from_dict(state)?;
            let mut s = Schedule::new(mine.len, r, *world, mine.order).map_err(err)?;
            s.seed = mine.seed;
            if let Some((gap, from, end)) = elastic {
                s = s
                    .with_elastic(Elastic {
                        gap: gap.clone(),
                        from: *from,
                        end: *end,
                    })
                    .map_err(err)?;
            }
            scheds.push((s, st));
        }
        let e = merge(&scheds, self.inner.config()).map_err(err)?;
        Ok((e.gap, e.from, e.end))
    }

    /// `(epoch, fraction of it consumed, an epoch's worth consumed)`.
    fn progress(&self) -> (u64, f64, bool) {
        let p = self.inner.progress();
        (p.epoch, p.fraction, p.epoch_done)
    }
}

const STATE_KEYS: [&str; 19] = [
    "next",
    "consumed",
    "batch_start",
    "skipped",
    "batches",
    "held",
    "offset",
    "unusable_run",
    "tokens",
    "pad",
    "supervised",
    "entered",
    "dropped",
    "unsupervised",
    "held_pieces",
    "next_piece",
    "split",
    "cut",
    "lost",
];

fn state_to_dict<'py>(py: Python<'py>, st: &PackState) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let c = &st.counters;
    d.set_item("next", st.next)?;
    d.set_item("consumed", st.consumed)?;
    d.set_item("batch_start", st.batch_start)?;
    d.set_item("skipped", st.skipped)?;
    d.set_item("batches", st.batches)?;
    d.set_item("held", st.held.clone())?;
    d.set_item("offset", st.offset)?;
    d.set_item("unusable_run", st.unusable_run)?;
    d.set_item("tokens", c.tokens)?;
    d.set_item("pad", c.pad)?;
    d.set_item("supervised", c.supervised)?;
    d.set_item("entered", c.entered)?;
    d.set_item("dropped", c.dropped)?;
    d.set_item("unsupervised", c.unsupervised)?;
    d.set_item("held_pieces", st.held_pieces.clone())?;
    d.set_item("next_piece", st.next_piece)?;
    d.set_item("split", c.split)?;
    d.set_item("cut", c.cut)?;
    d.set_item("lost", c.lost)?;
    Ok(d)
}

/// A non-negative int (not a bool, not a float) up to 2**53.
fn count(v: &Bound<'_, PyAny>, field: &str) -> PyResult<u64> {
    if v.is_instance_of::<PyBool>() || !v.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "the packer state's {field:?} must be an int, got {}",
            v.get_type().name()?
        )));
    }
    match v.extract::<u64>() {
        Ok(n) if n <= convpack_core::pack::MAX_COUNT => Ok(n),
        _ => Err(PyValueError::new_err(format!(
            "the packer state's {field:?} must be an int in [0, 2**53], got {v}"
        ))),
    }
}

/// Reads a dict from `state`: every key present, nothing else, every value
/// of the right type; errors name the field. The packer then checks the
/// values against its configuration.
fn state_from_dict(d: &Bound<'_, PyDict>) -> PyResult<PackState> {
    for k in d.keys() {
        let known = k
            .extract::<String>()
            .is_ok_and(|k| STATE_KEYS.contains(&k.as_str()));
        if !known {
            return Err(PyValueError::new_err(format!(
                "the packer state has an unknown field {k}"
            )));
        }
    }
    let field = |k: &str| -> PyResult<Bound<'_, PyAny>> {
        d.get_item(k)?
            .ok_or_else(|| PyValueError::new_err(format!("the packer state has no {k:?} field")))
    };
    let get = |k: &str| -> PyResult<u64> { count(&field(k)?, k) };
    let list = |k: &str| -> PyResult<Vec<usize>> {
        let obj = field(k)?;
        let items = obj.cast::<PyList>().map_err(|_| {
            PyTypeError::new_err(format!("the packer state's {k:?} must be a list of ints"))
        })?;
        if items.len() > convpack_core::pack::MAX_BUFFER_SIZE {
            return Err(PyValueError::new_err(format!(
                "the packer state's {k:?} holds more conversations than any buffer"
            )));
        }
        items.iter().map(|v| Ok(count(&v, k)? as usize)).collect()
    };
    let held = list("held")?;
    let held_pieces = list("held_pieces")?;
    let mut st = PackState {
        next: get("next")?,
        consumed: get("consumed")?,
        batch_start: get("batch_start")?,
        skipped: get("skipped")?,
        batches: get("batches")?,
        held,
        held_pieces,
        next_piece: get("next_piece")? as usize,
        offset: get("offset")? as usize,
        unusable_run: get("unusable_run")?,
        ..PackState::default()
    };
    st.counters.tokens = get("tokens")?;
    st.counters.pad = get("pad")?;
    st.counters.supervised = get("supervised")?;
    st.counters.entered = get("entered")?;
    st.counters.dropped = get("dropped")?;
    st.counters.unsupervised = get("unsupervised")?;
    st.counters.split = get("split")?;
    st.counters.cut = get("cut")?;
    st.counters.lost = get("lost")?;
    Ok(st)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyPacker>()?;
    Ok(())
}

//! Packing rendered conversations into training batches.
//!
//! A [`Packer`] is a resumable state machine fed with rendered conversations
//! in fetch order. [`Packer::plan`] lays out the next batch; when it runs out
//! of conversations it returns [`Fill::NeedMore`] and keeps its partial
//! layout, so the caller can fetch more ([`Packer::wanted`] says which
//! dataset indices), [`Packer::push`] them, and call `plan` again. Once it
//! returns [`Fill::Ready`], [`Packer::write`] copies the batch into the
//! caller's buffers (no intermediate copy) and [`Packer::state`] is the exact
//! point to resume from.
//!
//! Modes (each matching, tensor for tensor, the nanochat loop it replaces):
//!
//! * [`Mode::Padded`]: `B` conversations per batch in the strided order;
//!   `ncols = max(len) - 1`; row `i` holds `ids[:-1]` as inputs and `ids[1:]`
//!   as targets (-1 where the mask is 0), the rest is the fill id / -1.
//! * [`Mode::Stream`]: ids of consecutive conversations concatenated; every
//!   batch takes the next `B*T + 1` tokens, inputs `buf[:-1]`, targets
//!   `buf[1:]` (mask ignored); the next batch starts after them.
//! * [`Mode::BestFit`]: rows of `T + 1` tokens, each starting at a
//!   conversation's BOS; from a buffer of `buffer_size` conversations the
//!   largest that fits goes in (the first on ties); when none fits the row is
//!   padded with BOS (mask 0) or the shortest conversation (first on ties) is
//!   cropped to fill it and its remainder dropped. Conversations longer than
//!   a row are truncated to the row when they enter the buffer.
//! * [`Mode::Varlen`]: padding-free rows; see [`Mode::Varlen`] for the layout.

mod cache;
mod schedule;
mod state;
mod write;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;

pub use cache::{CacheStats, RenderCache};
pub use schedule::{Elastic, Order, Progress, Schedule};
pub use state::{merge, Counters, PackState, MAX_BATCH_TOKENS, MAX_BUFFER_SIZE, MAX_COUNT};
pub use write::{write_segments, write_shifted, OutId, Piece};

use crate::bpe::Rank;
use crate::error::{ConversationError, CoreError};
use crate::render::{Rendered, Turns};

/// What `bestfit` does when no buffered conversation fits the rest of a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Fill the rest of the row with BOS, mask 0 (targets -1).
    Pad,
    /// Crop the shortest buffered conversation to fill the row exactly; its
    /// remainder is dropped.
    Crop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Padded,
    Stream,
    BestFit {
        overflow: Overflow,
        buffer_size: usize,
    },
    /// Padding-free rows for variable-length attention.
    ///
    /// Layout of a batch of `B` rows of `T`:
    ///
    /// * Rows are filled end to end with *segments*. A segment is a run of one
    ///   conversation's inputs `ids[a..b]` whose targets are `ids[a+1..b+1]`
    ///   (-1 where the mask is 0). Conversations are taken in fetch order; one
    ///   that does not fit the rest of a row continues as a new segment at the
    ///   start of the next row (in the next batch after the last row). A
    ///   conversation of `n` tokens thus contributes `n - 1` inputs, and every
    ///   target of it appears exactly once. Conversations of one token have no
    ///   target and are dropped.
    /// * Segments never cross rows, so no segment is longer than `T`.
    /// * `position_ids` (int64, `B x T`) restart at 0 at every segment.
    /// * `cu_seqlens` (int32, `max_seqs + 1`) are the segment boundaries over
    ///   the flattened `B*T` tokens: `0, end_1, end_2, ..., B*T`, then repeated
    ///   `B*T` (empty sequences) up to the fixed length, so its shape never
    ///   changes between batches.
    /// * A batch never holds more than `max_seqs` segments. When one more
    ///   segment would exceed that (only with many very short
    ///   conversations), the rest of the row becomes one filler segment
    ///   (inputs BOS, targets -1), counted as padding.
    Varlen {
        max_seqs: usize,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackConfig {
    pub mode: Mode,
    pub batch_size: usize,
    /// `T`: columns per row. For `Padded`, optional: conversations are
    /// truncated to `T + 1` tokens so a batch has at most `T` columns.
    pub seq_len: Option<usize>,
    pub bos: Rank,
    /// Filler input id of `Padded` rows (nanochat uses `<|assistant_end|>`).
    pub pad: Rank,
    /// Drop conversations that failed to render (and count them) instead of
    /// returning their error.
    pub skip_errors: bool,
    /// Conversations were rendered truncated to this many tokens (a bound
    /// the state checks use).
    pub max_tokens: usize,
    /// Conversations longer than a row are pushed in pieces split at
    /// exchanges (`truncate="turns"`, see `push_turns`).
    pub split_turns: bool,
    /// `BestFit` only: a conversation longer than a row enters the buffer
    /// whole, where it never fits and so is never trained on, as in
    /// nanochat's loader (which this reproduces bit for bit). Otherwise it
    /// is cut to the row as it enters.
    pub keep_long: bool,
}

impl PackConfig {
    fn validate(&self) -> Result<(), CoreError> {
        let bad = |s: String| Err(CoreError::Invalid(s));
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if self.max_tokens == 0 {
            return bad("max_tokens must be at least 1".into());
        }
        // Checked before anything is allocated: a row holds T + 1 tokens.
        let row = match (self.mode, self.seq_len) {
            (Mode::Padded, None) => self.max_tokens,
            (_, t) => t.unwrap_or(0).saturating_add(1),
        };
        if (self.batch_size as u128) * (row as u128) > MAX_BATCH_TOKENS as u128 {
            return bad(format!(
                "batch_size * (seq_len + 1) = {} * {row} is above {MAX_BATCH_TOKENS} tokens per batch",
                self.batch_size
            ));
        }
        if let Mode::BestFit { buffer_size, .. } = self.mode {
            if buffer_size > MAX_BUFFER_SIZE {
                return bad(format!(
                    "buffer_size must be at most {MAX_BUFFER_SIZE}, got {buffer_size}"
                ));
            }
        }
        if self.keep_long && !matches!(self.mode, Mode::BestFit { .. }) {
            return bad("keeping over-long conversations whole applies to bestfit only".into());
        }
        if self.keep_long && self.split_turns {
            return bad(
                "over-long conversations are either kept whole or split at turns, not both".into(),
            );
        }
        match (self.mode, self.seq_len) {
            (Mode::Padded, Some(0)) => bad("seq_len must be at least 1".into()),
            (Mode::Padded, _) => Ok(()),
            (_, None) => bad("seq_len is required in this mode".into()),
            (_, Some(0)) => bad("seq_len must be at least 1".into()),
            (Mode::BestFit { buffer_size: 0, .. }, _) => {
                bad("buffer_size must be at least 1".into())
            }
            (Mode::Varlen { max_seqs }, _) if max_seqs <= self.batch_size => bad(format!(
                "max_seqs must exceed batch_size ({}), got {max_seqs}",
                self.batch_size
            )),
            _ => Ok(()),
        }
    }

    /// The fetch order of the nanochat loop this mode replaces.
    pub fn order(&self) -> Order {
        match self.mode {
            Mode::Padded => Order::Strided,
            _ => Order::Rolling,
        }
    }
}

/// What `plan` needs next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// The batch is laid out; call `write`.
    Ready,
    /// At least this many more conversations must be pushed.
    NeedMore(usize),
}

/// Shape of the planned batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchShape {
    pub rows: usize,
    pub cols: usize,
    /// Length of `cu_seqlens` (`Varlen` only; 0 otherwise).
    pub seqlens: usize,
    /// Whether inputs are int64 (`Padded`) rather than int32.
    pub wide_inputs: bool,
}

/// Inputs buffer: int32 or int64.
pub enum Inputs<'a> {
    I32(&'a mut [i32]),
    I64(&'a mut [i64]),
}

/// Caller-provided, C-contiguous output buffers (flattened).
pub struct Outputs<'a> {
    pub inputs: Inputs<'a>,
    pub targets: &'a mut [i64],
    /// `Varlen` only.
    pub cu_seqlens: Option<&'a mut [i32]>,
    /// `Varlen` only.
    pub position_ids: Option<&'a mut [i64]>,
}

struct Fetched {
    index: usize,
    doc: Result<Turns, ConversationError>,
    /// Pieces already pulled (`truncate="turns"`; 0 or 1 otherwise).
    taken: usize,
}

struct Held {
    index: usize,
    doc: Arc<Rendered>,
    /// Which piece of its conversation this is, and whether the last one.
    piece: usize,
    last: bool,
}

#[derive(Default)]
struct Plan {
    rows: Vec<Vec<Piece>>,
    /// Tokens placed in the last row.
    pos: usize,
    /// Segments placed so far (`Varlen`).
    segs: usize,
    /// Padding target positions, counted when the batch is written.
    pad: u64,
}

pub struct Packer {
    cfg: PackConfig,
    sched: Schedule,
    /// Fetched, not yet pulled, in ordinal order starting at `state.next`.
    queue: VecDeque<Fetched>,
    /// Ordinal of the next conversation to fetch.
    fetch: u64,
    /// Held conversations to re-render after `load_state`, in order.
    restore: Vec<usize>,
    /// Pieces of the first conversation fetched after `load_state` that
    /// were already pulled before the state was saved.
    restore_taken: usize,
    buffer: Vec<Held>,
    head: Option<(Held, usize)>,
    plan: Plan,
    ready: bool,
    st: PackState,
    /// `consumed` after the last written batch.
    batch_end: u64,
}

impl Packer {
    pub fn new(cfg: PackConfig, sched: Schedule) -> Result<Self, CoreError> {
        cfg.validate()?;
        if sched.order != cfg.order() {
            return Err(CoreError::Invalid(
                "the schedule's order does not match the mode".into(),
            ));
        }
        Ok(Packer {
            cfg,
            sched,
            queue: VecDeque::new(),
            fetch: 0,
            restore: Vec::new(),
            restore_taken: 0,
            buffer: Vec::new(),
            head: None,
            plan: Plan::default(),
            ready: false,
            st: PackState::default(),
            batch_end: 0,
        })
    }

    pub fn config(&self) -> &PackConfig {
        &self.cfg
    }

    pub fn schedule(&self) -> &Schedule {
        &self.sched
    }

    /// Starts over on `sched` (an elastic resume's): a fresh state, nothing
    /// held or fetched.
    pub fn set_schedule(&mut self, sched: Schedule) -> Result<(), CoreError> {
        if sched.order != self.cfg.order() {
            return Err(CoreError::Invalid(
                "the schedule's order does not match the mode".into(),
            ));
        }
        self.sched = sched;
        self.load_state(PackState::default())
    }

    /// Whether held conversations must be pushed again after `load_state`
    /// (`wanted` lists them) before anything else.
    pub fn restoring(&self) -> bool {
        !self.restore.is_empty()
    }

    /// Dataset indices to fetch next, at most `n` (after `load_state`, first
    /// exactly the held conversations to re-render). Push them in this order.
    pub fn wanted(&self, n: usize) -> Vec<usize> {
        if !self.restore.is_empty() {
            return self.restore.clone();
        }
        (0..n as u64)
            .map(|j| self.sched.index(self.fetch + j))
            .collect()
    }

    /// Appends rendered conversations for the indices `wanted` returned, in
    /// order (fewer is fine outside a restore).
    pub fn push(
        &mut self,
        docs: Vec<Result<Rendered, ConversationError>>,
    ) -> Result<(), CoreError> {
        self.push_turns(docs.into_iter().map(|d| d.map(Turns::from)).collect())
    }

    /// `push` for conversations rendered in pieces (`truncate="turns"`):
    /// each piece is packed as a conversation of its own.
    pub fn push_turns(
        &mut self,
        docs: Vec<Result<Turns, ConversationError>>,
    ) -> Result<(), CoreError> {
        if !self.restore.is_empty() {
            return self.finish_restore(docs);
        }
        for doc in docs {
            let index = self.sched.index(self.fetch);
            let taken = std::mem::take(&mut self.restore_taken);
            if let Ok(t) = &doc {
                if taken >= t.pieces.len() && taken > 0 {
                    return Err(CoreError::Invalid(format!(
                        "conversation {index} renders in {} pieces, but the saved state had \
                         used {taken}; is this the same dataset and tokenizer?",
                        t.pieces.len()
                    )));
                }
            }
            self.fetch += 1;
            self.queue.push_back(Fetched { index, doc, taken });
        }
        Ok(())
    }

    fn finish_restore(
        &mut self,
        docs: Vec<Result<Turns, ConversationError>>,
    ) -> Result<(), CoreError> {
        if docs.len() != self.restore.len() {
            return Err(CoreError::Invalid(format!(
                "expected {} conversations to restore the packer's state, got {}",
                self.restore.len(),
                docs.len()
            )));
        }
        let indices = std::mem::take(&mut self.restore);
        let mut held = Vec::with_capacity(docs.len());
        for ((index, doc), &piece) in indices.into_iter().zip(docs).zip(&self.st.held_pieces) {
            let mut turns = doc.map_err(|e| CoreError::Conversation(e.with_conversation(index)))?;
            let n = turns.pieces.len();
            if piece >= n {
                return Err(CoreError::Invalid(format!(
                    "conversation {index} renders in {n} pieces, the saved state holds piece \
                     {piece}; is this the same dataset and tokenizer?"
                )));
            }
            let mut doc = std::mem::take(&mut turns.pieces[piece]);
            if let Some(cap) = self.entry_cap() {
                doc.truncate(cap);
            }
            held.push(Held {
                index,
                doc: Arc::new(doc),
                piece,
                last: piece + 1 == n,
            });
        }
        match self.cfg.mode {
            Mode::BestFit { .. } => self.buffer = held,
            Mode::Stream | Mode::Varlen { .. } => {
                let offset = self.st.offset;
                if let Some(h) = held.pop() {
                    // A varlen head always has a target left to place.
                    let usable = match self.cfg.mode {
                        Mode::Varlen { .. } => h.doc.len().saturating_sub(1),
                        _ => h.doc.len(),
                    };
                    if offset >= usable {
                        return Err(CoreError::Invalid(format!(
                            "conversation {} has {} tokens, fewer than the saved offset {offset}; \
                             is this the same dataset and tokenizer?",
                            h.index,
                            h.doc.len()
                        )));
                    }
                    self.head = Some((h, offset));
                }
            }
            Mode::Padded => {}
        }
        Ok(())
    }

    /// Whether targets are -1 where the mask is 0 (all modes but `stream`).
    fn uses_mask(&self) -> bool {
        !matches!(self.cfg.mode, Mode::Stream)
    }

    /// The longest piece to split conversations into (`truncate="turns"`).
    pub fn piece_limit(&self) -> usize {
        self.entry_cap()
            .map_or(self.cfg.max_tokens, |c| c.min(self.cfg.max_tokens))
    }

    /// Longest conversation kept when it enters the packer.
    pub fn entry_cap(&self) -> Option<usize> {
        match self.cfg.mode {
            Mode::Padded => self.cfg.seq_len.map(|t| t + 1),
            Mode::BestFit { .. } if self.cfg.keep_long => None,
            Mode::BestFit { .. } => self.cfg.seq_len.map(|t| t + 1),
            Mode::Stream | Mode::Varlen { .. } => None,
        }
    }

    /// The next usable conversation in fetch order, `None` when the queue is
    /// empty. Bad ones are skipped and counted (or returned as the error,
    /// staying at the front so the state stays valid).
    fn pull(&mut self) -> Result<Option<Held>, CoreError> {
        loop {
            let Some(front) = self.queue.front_mut() else {
                return Ok(None);
            };
            let index = front.index;
            let turns = match &mut front.doc {
                Err(e) if !self.cfg.skip_errors => {
                    return Err(CoreError::Conversation(e.clone().with_conversation(index)));
                }
                Err(_) => {
                    self.queue.pop_front();
                    self.st.next += 1;
                    self.st.skipped += 1;
                    self.st.consumed += 1;
                    self.unusable()?;
                    continue;
                }
                Ok(t) => t,
            };
            let piece = front.taken;
            let n = turns.pieces.len();
            if piece == 0 {
                let c = &mut self.st.counters;
                c.split += (n > 1) as u64;
                c.cut += turns.cut;
                c.lost += turns.lost;
            }
            let mut doc = std::mem::take(&mut turns.pieces[piece]);
            front.taken += 1;
            let last = piece + 1 == n;
            if last {
                self.queue.pop_front();
                self.st.next += 1;
            }
            self.st.counters.entered += doc.len() as u64;
            if doc.is_empty() || (doc.len() < 2 && matches!(self.cfg.mode, Mode::Varlen { .. })) {
                // Nothing to train on; using it would place no token.
                self.st.counters.dropped += doc.len() as u64;
                self.st.consumed += last as u64;
                self.unusable()?;
                continue;
            }
            self.st.unusable_run = 0;
            // Counted as rendered (before a row cuts it): a conversation
            // that has nothing to train on at all.
            if self.uses_mask() && doc.mask.iter().all(|&m| m == 0) {
                self.st.counters.unsupervised += 1;
            }
            if let Some(cap) = self.entry_cap() {
                if doc.len() > cap {
                    self.st.counters.dropped += (doc.len() - cap) as u64;
                    doc.truncate(cap);
                }
            }
            return Ok(Some(Held {
                index,
                doc: Arc::new(doc),
                piece,
                last,
            }));
        }
    }

    fn unusable(&mut self) -> Result<(), CoreError> {
        self.st.unusable_run += 1;
        if self.st.unusable_run > self.sched.len as u64 {
            return Err(CoreError::Invalid(format!(
                "rank {}: every conversation it reads was skipped (bad or without tokens to train on)",
                self.sched.rank
            )));
        }
        Ok(())
    }

    /// Lays out the next batch as far as the pushed conversations allow.
    pub fn plan(&mut self) -> Result<Fill, CoreError> {
        if self.ready {
            return Ok(Fill::Ready);
        }
        if !self.restore.is_empty() {
            return Ok(Fill::NeedMore(self.restore.len()));
        }
        let fill = match self.cfg.mode {
            Mode::Padded => self.plan_padded()?,
            Mode::Stream => self.plan_stream()?,
            Mode::BestFit {
                overflow,
                buffer_size,
            } => self.plan_bestfit(overflow, buffer_size)?,
            Mode::Varlen { max_seqs } => self.plan_varlen(max_seqs)?,
        };
        self.ready = fill == Fill::Ready;
        Ok(fill)
    }

    fn plan_padded(&mut self) -> Result<Fill, CoreError> {
        let b = self.cfg.batch_size;
        while self.plan.rows.len() < b {
            match self.pull()? {
                Some(h) => {
                    self.st.consumed += h.last as u64;
                    let n = h.doc.len() - 1;
                    self.plan.rows.push(vec![Piece::doc(&h.doc, 0, n)]);
                }
                None => return Ok(Fill::NeedMore(b - self.plan.rows.len())),
            }
        }
        Ok(Fill::Ready)
    }

    fn plan_stream(&mut self) -> Result<Fill, CoreError> {
        let t = self.cfg.seq_len.unwrap_or(0);
        let need = self.cfg.batch_size * t + 1;
        if self.plan.rows.is_empty() {
            self.plan.rows.push(Vec::new());
        }
        while self.plan.pos < need {
            let (h, off) = match self.head.take() {
                Some(x) => x,
                None => match self.pull()? {
                    // Counted when fetched, like nanochat's cursor.
                    Some(h) => {
                        self.st.consumed += h.last as u64;
                        (h, 0)
                    }
                    None => return Ok(Fill::NeedMore(1)),
                },
            };
            let take = (h.doc.len() - off).min(need - self.plan.pos);
            self.plan.rows[0].push(Piece::doc(&h.doc, off, take));
            self.plan.pos += take;
            if off + take < h.doc.len() {
                self.head = Some((h, off + take));
            }
        }
        Ok(Fill::Ready)
    }

    fn plan_bestfit(&mut self, overflow: Overflow, buffer_size: usize) -> Result<Fill, CoreError> {
        let cap = self.cfg.seq_len.unwrap_or(0) + 1;
        let b = self.cfg.batch_size;
        loop {
            if self.plan.rows.is_empty() || self.plan.pos == cap {
                if self.plan.rows.len() == b {
                    return Ok(Fill::Ready);
                }
                self.plan.rows.push(Vec::new());
                self.plan.pos = 0;
            }
            while self.buffer.len() < buffer_size {
                match self.pull()? {
                    Some(h) => self.buffer.push(h),
                    None => return Ok(Fill::NeedMore(buffer_size - self.buffer.len())),
                }
            }
            let remaining = cap - self.plan.pos;
            let mut best: Option<(usize, usize)> = None;
            for (i, h) in self.buffer.iter().enumerate() {
                let n = h.doc.len();
                if n <= remaining && best.is_none_or(|(_, m)| n > m) {
                    best = Some((i, n));
                }
            }
            let row = self.plan.rows.len() - 1;
            match (best, overflow) {
                (Some((i, n)), _) => {
                    let h = self.buffer.remove(i);
                    self.plan.rows[row].push(Piece::doc(&h.doc, 0, n));
                    self.plan.pos += n;
                    self.st.consumed += h.last as u64;
                }
                (None, Overflow::Pad) => {
                    self.plan.rows[row].push(Piece::filler(remaining));
                    self.plan.pad += remaining as u64;
                    self.plan.pos = cap;
                }
                (None, Overflow::Crop) => {
                    let mut shortest = 0;
                    for (i, h) in self.buffer.iter().enumerate() {
                        if h.doc.len() < self.buffer[shortest].doc.len() {
                            shortest = i;
                        }
                    }
                    let h = self.buffer.remove(shortest);
                    self.st.counters.dropped += (h.doc.len() - remaining) as u64;
                    self.plan.rows[row].push(Piece::doc(&h.doc, 0, remaining));
                    self.plan.pos = cap;
                    self.st.consumed += h.last as u64;
                }
            }
        }
    }

    fn plan_varlen(&mut self, max_seqs: usize) -> Result<Fill, CoreError> {
        let t = self.cfg.seq_len.unwrap_or(0);
        let b = self.cfg.batch_size;
        loop {
            if self.plan.rows.is_empty() || self.plan.pos == t {
                if self.plan.rows.len() == b {
                    return Ok(Fill::Ready);
                }
                self.plan.rows.push(Vec::new());
                self.plan.pos = 0;
            }
            let row = self.plan.rows.len() - 1;
            let (h, off) = match self.head.take() {
                Some(x) => x,
                None => match self.pull()? {
                    Some(h) => (h, 0),
                    None => return Ok(Fill::NeedMore(1)),
                },
            };
            // Segments this row may still use, keeping one for each later row.
            let avail = max_seqs.saturating_sub(self.plan.segs + (b - row - 1));
            let left = h.doc.len() - 1 - off;
            let take = left.min(t - self.plan.pos);
            let ends_row = self.plan.pos + take == t;
            if avail >= if ends_row { 1 } else { 2 } {
                self.plan.rows[row].push(Piece::doc(&h.doc, off, take));
                self.plan.pos += take;
                if take == left {
                    self.st.consumed += h.last as u64;
                } else {
                    self.head = Some((h, off + take));
                }
            } else {
                let rest = t - self.plan.pos;
                self.plan.rows[row].push(Piece::filler(rest));
                self.plan.pad += rest as u64;
                self.plan.pos = t;
                self.head = Some((h, off));
            }
            self.plan.segs += 1;
        }
    }

    /// Shape of the planned batch (`None` until `plan` returned `Ready`).
    pub fn shape(&self) -> Option<BatchShape> {
        if !self.ready {
            return None;
        }
        let b = self.cfg.batch_size;
        let t = self.cfg.seq_len.unwrap_or(0);
        Some(match self.cfg.mode {
            Mode::Padded => BatchShape {
                rows: b,
                cols: self
                    .plan
                    .rows
                    .iter()
                    .flatten()
                    .map(|p| p.len)
                    .max()
                    .unwrap_or(0),
                seqlens: 0,
                wide_inputs: true,
            },
            Mode::Varlen { max_seqs } => BatchShape {
                rows: b,
                cols: t,
                seqlens: max_seqs + 1,
                wide_inputs: false,
            },
            _ => BatchShape {
                rows: b,
                cols: t,
                seqlens: 0,
                wide_inputs: false,
            },
        })
    }

    /// Writes the planned batch into `out` and moves on to the next one.
    pub fn write(&mut self, out: Outputs<'_>) -> Result<(), CoreError> {
        let shape = self.shape().ok_or_else(|| {
            CoreError::Invalid("no batch is planned; call plan() until it is ready".into())
        })?;
        let cells = shape.rows * shape.cols;
        let inputs_len = match &out.inputs {
            Inputs::I32(s) => s.len(),
            Inputs::I64(s) => s.len(),
        };
        let wrong = |what: &str, got: usize, want: usize| {
            CoreError::Invalid(format!(
                "{what} buffer holds {got} values, the batch needs {want}"
            ))
        };
        if inputs_len != cells {
            return Err(wrong("inputs", inputs_len, cells));
        }
        if out.targets.len() != cells {
            return Err(wrong("targets", out.targets.len(), cells));
        }
        match (&out.inputs, shape.wide_inputs) {
            (Inputs::I64(_), true) | (Inputs::I32(_), false) => {}
            _ => {
                return Err(CoreError::Invalid(format!(
                    "inputs must be {} in this mode",
                    if shape.wide_inputs { "int64" } else { "int32" }
                )))
            }
        }
        let sup = match self.cfg.mode {
            Mode::Varlen { .. } => {
                let (Some(cu), Some(pos)) = (out.cu_seqlens, out.position_ids) else {
                    return Err(CoreError::Invalid(
                        "varlen needs cu_seqlens and position_ids buffers".into(),
                    ));
                };
                if cu.len() != shape.seqlens {
                    return Err(wrong("cu_seqlens", cu.len(), shape.seqlens));
                }
                if pos.len() != cells {
                    return Err(wrong("position_ids", pos.len(), cells));
                }
                self.write_varlen(out.inputs, out.targets, cu, pos, shape)
            }
            _ => self.write_rows(out.inputs, out.targets, shape),
        };
        let pad = match self.cfg.mode {
            Mode::Padded => self
                .plan
                .rows
                .iter()
                .map(|r| (shape.cols - r.iter().map(|p| p.len).sum::<usize>()) as u64)
                .sum(),
            _ => self.plan.pad,
        };
        let c = &mut self.st.counters;
        c.tokens += cells as u64;
        c.pad += pad;
        c.supervised += sup;
        self.st.batches += 1;
        self.st.batch_start = self.batch_end;
        self.batch_end = self.st.consumed;
        self.plan = Plan::default();
        self.ready = false;
        self.sync_state();
        Ok(())
    }

    fn write_rows(&self, inputs: Inputs<'_>, targets: &mut [i64], shape: BatchShape) -> u64 {
        match inputs {
            Inputs::I32(i) => self.write_rows_as(i, targets, shape),
            Inputs::I64(i) => self.write_rows_as(i, targets, shape),
        }
    }

    fn write_rows_as<I: OutId>(
        &self,
        inputs: &mut [I],
        targets: &mut [i64],
        shape: BatchShape,
    ) -> u64 {
        let cols = shape.cols;
        let bos = self.cfg.bos;
        match self.cfg.mode {
            Mode::Stream => write_shifted(&self.plan.rows[0], bos, inputs, targets, false),
            Mode::BestFit { .. } => self
                .plan
                .rows
                .iter()
                .zip(
                    inputs
                        .chunks_mut(cols.max(1))
                        .zip(targets.chunks_mut(cols.max(1))),
                )
                .map(|(row, (i, t))| write_shifted(row, bos, i, t, true))
                .sum(),
            _ => self
                .plan
                .rows
                .iter()
                .zip(
                    inputs
                        .chunks_mut(cols.max(1))
                        .zip(targets.chunks_mut(cols.max(1))),
                )
                .map(|(row, (i, t))| write_segments(row, self.cfg.pad, i, t, None))
                .sum(),
        }
    }

    fn write_varlen(
        &self,
        inputs: Inputs<'_>,
        targets: &mut [i64],
        cu: &mut [i32],
        pos: &mut [i64],
        shape: BatchShape,
    ) -> u64 {
        let cols = shape.cols;
        let mut k = 0;
        let mut end = 0i32;
        cu[0] = 0;
        for row in &self.plan.rows {
            for p in row {
                end += p.len as i32;
                k += 1;
                cu[k] = end;
            }
        }
        cu[k + 1..].fill(end);
        let Inputs::I32(inputs) = inputs else {
            return 0;
        };
        self.plan
            .rows
            .iter()
            .zip(
                inputs
                    .chunks_mut(cols)
                    .zip(targets.chunks_mut(cols))
                    .zip(pos.chunks_mut(cols)),
            )
            .map(|(row, ((i, t), p))| write_segments(row, self.cfg.bos, i, t, Some(p)))
            .sum()
    }

    fn sync_state(&mut self) {
        self.st.next = self.fetch - self.queue.len() as u64;
        self.st.next_piece = self.queue.front().map_or(0, |f| f.taken);
        match (&self.cfg.mode, &self.head) {
            (Mode::BestFit { .. }, _) => {
                self.st.held = self.buffer.iter().map(|h| h.index).collect();
                self.st.held_pieces = self.buffer.iter().map(|h| h.piece).collect();
                self.st.offset = 0;
            }
            (_, Some((h, off))) => {
                self.st.held = vec![h.index];
                self.st.held_pieces = vec![h.piece];
                self.st.offset = *off;
            }
            _ => {
                self.st.held.clear();
                self.st.held_pieces.clear();
                self.st.offset = 0;
            }
        }
    }

    /// The state after the last written batch.
    pub fn state(&self) -> &PackState {
        &self.st
    }

    /// Progress as of the last written batch.
    pub fn progress(&self) -> Progress {
        self.sched.progress(self.st.batch_start, self.batch_end)
    }

    /// Resets to `state` (taken from a packer with the same configuration and
    /// schedule). The held conversations must then be re-rendered: `wanted`
    /// lists them and `push` takes them back.
    pub fn load_state(&mut self, state: PackState) -> Result<(), CoreError> {
        state::check(&state, &self.cfg, &self.sched)?;
        self.queue.clear();
        self.buffer.clear();
        self.head = None;
        self.plan = Plan::default();
        self.ready = false;
        self.fetch = state.next;
        self.restore = state.held.clone();
        self.restore_taken = state.next_piece;
        self.batch_end = state.consumed;
        self.st = state;
        Ok(())
    }
}

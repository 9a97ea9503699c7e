//! The packer's resumable state, and the checks a state must pass before a
//! packer takes it.
//!
//! A state comes back from a checkpoint file, so it is untrusted input: every
//! field is checked against the packer it is loaded into (its mode, shapes
//! and schedule) and against the other fields, and a state that no packer
//! with this configuration could have written is refused with an error
//! naming the field.

use std::collections::HashSet;

use super::schedule::Elastic;
use super::{Mode, PackConfig, Schedule};
use crate::error::CoreError;

/// Tokens per batch are at most this (`batch_size * (seq_len + 1)`), so
/// every position in a batch fits the int32 offsets of `cu_seqlens`.
pub const MAX_BATCH_TOKENS: u64 = i32::MAX as u64;

/// The best-fit search scans the buffer for every conversation it places;
/// beyond this it would only cost time and memory.
pub const MAX_BUFFER_SIZE: usize = 1 << 20;

/// Counters in a state are at most 2**53: exact in JSON numbers, and far
/// beyond any real run (about 285 years at a million per second).
pub const MAX_COUNT: u64 = 1 << 53;

/// Conversations left between the ranks that an elastic resume deals at
/// most (the old ranks' lag behind the furthest one, plus what they hold).
pub const MAX_GAP: usize = 1 << 24;

/// Token counters, for `stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Target positions written.
    pub tokens: u64,
    /// Target positions that are padding.
    pub pad: u64,
    /// Targets that are not -1.
    pub supervised: u64,
    /// Tokens of the conversations that entered the packer.
    pub entered: u64,
    /// Of those, tokens dropped by cropping or truncation to a row.
    pub dropped: u64,
    /// Conversations (pieces, with `truncate="turns"`) that entered with no
    /// supervised token (every target -1), in the modes that use the mask.
    pub unsupervised: u64,
    /// Conversations split into several pieces (`truncate="turns"`).
    pub split: u64,
    /// Exchanges too long for a piece on their own, cut.
    pub cut: u64,
    /// Supervised tokens those cuts dropped.
    pub lost: u64,
}

/// Everything needed to resume exactly after a batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackState {
    /// Fetch ordinal of the first conversation not held by the packer.
    pub next: u64,
    /// Conversations used up (skipped ones included).
    pub consumed: u64,
    /// `consumed` when the last batch began (for its progress).
    pub batch_start: u64,
    pub skipped: u64,
    pub batches: u64,
    /// Dataset indices of the held conversations: the best-fit buffer in
    /// order, or the partially used one in `stream` / `varlen`.
    pub held: Vec<usize>,
    /// Which piece of its conversation each held one is (all 0 unless
    /// conversations are split with `truncate="turns"`).
    pub held_pieces: Vec<usize>,
    /// Pieces already pulled of the conversation at `next`.
    pub next_piece: usize,
    /// Tokens already used of the partially used conversation.
    pub offset: usize,
    /// Consecutive conversations that could not be used (to detect a rank
    /// whose every conversation is bad).
    pub unusable_run: u64,
    pub counters: Counters,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Checks `st` against a packer with `cfg` and `sched`; the error names the
/// field and the rule.
pub(super) fn check(st: &PackState, cfg: &PackConfig, sched: &Schedule) -> Result<(), CoreError> {
    let bad = |field: &str, why: String| {
        Err(CoreError::Invalid(format!(
            "the packer state's \"{field}\" ({why}) cannot come from this generator"
        )))
    };
    let c = &st.counters;
    for (field, v) in [
        ("next", st.next),
        ("consumed", st.consumed),
        ("batch_start", st.batch_start),
        ("skipped", st.skipped),
        ("batches", st.batches),
        ("unusable_run", st.unusable_run),
        ("tokens", c.tokens),
        ("pad", c.pad),
        ("supervised", c.supervised),
        ("entered", c.entered),
        ("dropped", c.dropped),
        ("unsupervised", c.unsupervised),
        ("split", c.split),
        ("cut", c.cut),
        ("lost", c.lost),
    ] {
        if v > MAX_COUNT {
            return bad(field, format!("{v} is above 2**53"));
        }
    }
    let (b, t) = (cfg.batch_size as u128, cfg.seq_len.unwrap_or(0) as u128);
    let len = sched.len as u64;
    let max_held = match cfg.mode {
        Mode::BestFit { buffer_size, .. } => buffer_size,
        Mode::Stream | Mode::Varlen { .. } => 1,
        Mode::Padded => 0,
    };
    if st.held.len() > max_held {
        return bad(
            "held",
            format!(
                "{} conversations; this mode holds at most {max_held}",
                st.held.len()
            ),
        );
    }
    if st.held_pieces.len() != st.held.len() {
        return bad(
            "held_pieces",
            format!(
                "{} entries for {} held conversations",
                st.held_pieces.len(),
                st.held.len()
            ),
        );
    }
    // Pieces exist only when conversations are split at exchanges; a piece
    // number is bounded by the exchanges that fit max_tokens.
    let split = st.next_piece > 0 || st.held_pieces.iter().any(|&p| p > 0) || c.split > 0;
    if split && !cfg.split_turns {
        return bad(
            "held_pieces",
            "pieces of split conversations, but this generator does not split them".into(),
        );
    }
    if let Some(&p) = st
        .held_pieces
        .iter()
        .chain([&st.next_piece])
        .find(|&&p| p > cfg.max_tokens)
    {
        return bad("held_pieces", format!("piece {p} of a conversation"));
    }
    let step = gcd(sched.world as u64, len);
    for &i in &st.held {
        if i >= sched.len {
            return bad(
                "held",
                format!(
                    "conversation {i}, beyond the dataset's {} conversations",
                    sched.len
                ),
            );
        }
        // Rank r reads (r + k * world) mod len: reachable only if i - r is a
        // multiple of gcd(world, len).
        // (A shuffled or elastic schedule reaches any conversation.)
        let diff = (i as u64 + len - sched.rank as u64 % len) % len;
        if sched.seed.is_none() && sched.elastic.is_none() && !diff.is_multiple_of(step) {
            return bad(
                "held",
                format!("conversation {i}, which rank {} never reads", sched.rank),
            );
        }
    }
    // Held conversations were fetched but not used up, except in `stream`,
    // which counts a conversation as used when it is fetched.
    let unconsumed = match cfg.mode {
        Mode::BestFit { .. } | Mode::Varlen { .. } => st.held.len() as u64,
        Mode::Stream | Mode::Padded => 0,
    };
    if cfg.split_turns {
        // A conversation counts as used when its last piece is; earlier
        // pieces may still be held.
        let held = st.held.len() as u64 + (st.next_piece > 0) as u64;
        if st.consumed > st.next + (st.next_piece > 0) as u64 || st.next > st.consumed + held {
            return bad(
                "next",
                format!(
                    "{}, but consumed is {} and {} pieces are held",
                    st.next,
                    st.consumed,
                    st.held.len()
                ),
            );
        }
    } else if st.next != st.consumed + unconsumed {
        return bad(
            "next",
            format!(
                "{}, but consumed is {} and {unconsumed} held conversations are not used up",
                st.next, st.consumed
            ),
        );
    }
    if let (Mode::Stream | Mode::Varlen { .. }, [i]) = (cfg.mode, st.held.as_slice()) {
        // The held one is the last pulled: the one at `next` when it is
        // partly pulled, else the one before.
        let last = if st.next_piece > 0 {
            st.next + 1
        } else {
            st.next
        };
        let want = sched.index(last.saturating_sub(1));
        if last == 0 || *i != want {
            return bad(
                "held",
                format!("conversation {i}, but the last one fetched is {want}"),
            );
        }
    }
    if st.held.is_empty() && st.offset != 0 {
        return bad(
            "offset",
            format!("{} with no partially used conversation", st.offset),
        );
    }
    if matches!(cfg.mode, Mode::Stream) && !st.held.is_empty() && st.offset == 0 {
        return bad(
            "offset",
            "0, but a held stream conversation is partly used".into(),
        );
    }
    if st.offset >= cfg.max_tokens {
        return bad(
            "offset",
            format!("{}, not below max_tokens {}", st.offset, cfg.max_tokens),
        );
    }
    if st.batch_start > st.consumed {
        return bad(
            "batch_start",
            format!("{}, above consumed {}", st.batch_start, st.consumed),
        );
    }
    if st.skipped > st.consumed {
        return bad(
            "skipped",
            format!("{}, above consumed {}", st.skipped, st.consumed),
        );
    }
    if st.unusable_run > st.consumed.min(len) {
        return bad(
            "unusable_run",
            format!(
                "{}, above consumed {} or the dataset length {len}",
                st.unusable_run, st.consumed
            ),
        );
    }
    let used = (st.consumed - st.skipped) as u128;
    let batches = st.batches as u128;
    // Conversations that can have been used up by `batches` batches: one
    // per row in `padded`, at most one per token elsewhere.
    let (max_used, exact) = match cfg.mode {
        Mode::Padded => (batches * b, true),
        _ => (batches * b * (t + 1), false),
    };
    let exact = exact && !cfg.split_turns;
    if (exact && used != max_used) || used > max_used {
        return bad(
            "consumed",
            format!(
                "{} with {} skipped after {} batches",
                st.consumed, st.skipped, st.batches
            ),
        );
    }
    // Between two usable conversations at most a dataset's worth were bad.
    if st.skipped as u128 > (used + st.held.len() as u128 + 1) * len as u128 {
        return bad(
            "skipped",
            format!("{} for {} conversations used", st.skipped, used),
        );
    }
    let tokens = c.tokens as u128;
    match cfg.mode {
        Mode::Padded => {
            // Columns are the longest conversation minus one.
            let longest = match cfg.seq_len {
                Some(t) => (t as u128 + 1).min(cfg.max_tokens as u128),
                None => cfg.max_tokens as u128,
            };
            let widest = longest.saturating_sub(1);
            if !tokens.is_multiple_of(b) || tokens > batches * b * widest {
                return bad(
                    "tokens",
                    format!("{} after {} batches", c.tokens, st.batches),
                );
            }
        }
        _ if tokens != batches * b * t => {
            return bad(
                "tokens",
                format!("{}, not {} batches of {}x{}", c.tokens, st.batches, b, t),
            );
        }
        _ => {}
    }
    if c.pad > c.tokens {
        return bad("pad", format!("{}, above tokens {}", c.pad, c.tokens));
    }
    if c.supervised > c.tokens - c.pad {
        return bad(
            "supervised",
            format!(
                "{}, above the {} tokens that are not padding",
                c.supervised,
                c.tokens - c.pad
            ),
        );
    }
    if c.dropped > c.entered {
        return bad(
            "dropped",
            format!("{}, above entered {}", c.dropped, c.entered),
        );
    }
    // Conversations fetched whole or in part, bad ones aside.
    let convs = (st.next + 1 - st.skipped.min(st.next + 1)) as u128;
    if c.split as u128 > convs {
        return bad("split", format!("{} of {convs} conversations", c.split));
    }
    if c.cut > c.entered {
        return bad("cut", format!("{}, above entered {}", c.cut, c.entered));
    }
    if !cfg.split_turns {
        // One piece per conversation, of at most max_tokens.
        if c.entered as u128 > convs * cfg.max_tokens as u128 {
            return bad(
                "entered",
                format!(
                    "{} tokens from {convs} conversations of at most {}",
                    c.entered, cfg.max_tokens
                ),
            );
        }
        if c.unsupervised as u128 > convs {
            return bad(
                "unsupervised",
                format!(
                    "{}, above the {convs} conversations fetched",
                    c.unsupervised
                ),
            );
        }
        if c.cut > 0 || c.lost > 0 {
            return bad(
                "cut",
                "exchanges cut, but this generator does not split conversations".into(),
            );
        }
    }
    Ok(())
}

/// The epoch's remainder after the old ranks' states, for an elastic resume
/// under another world size: every global position no old rank has used up.
/// That is the positions each rank has not fetched yet and the ones it holds
/// (a best-fit buffer, a partly used conversation, the remaining pieces of a
/// split one: they go back whole, their order in the old buffers is lost).
///
/// `olds[r]` is rank `r`'s schedule and state, each checked against `cfg`
/// and its schedule first; the schedules must be those of one run (one
/// world, every rank once, the same dataset, seed and remainder).
pub fn merge(olds: &[(Schedule, PackState)], cfg: &PackConfig) -> Result<Elastic, CoreError> {
    let bad = |why: String| Err(CoreError::Invalid(why));
    let Some((first, _)) = olds.first() else {
        return bad("an elastic resume needs the states of the old ranks, got none".into());
    };
    let len = first.len as u64;
    for (r, (s, st)) in olds.iter().enumerate() {
        if s.rank != r || s.world != olds.len() {
            return bad(format!(
                "state {r} was saved by rank {} of {}; pass one state per old rank, in rank order",
                s.rank, s.world
            ));
        }
        if (s.len, s.seed, s.order, &s.elastic)
            != (first.len, first.seed, first.order, &first.elastic)
        {
            return bad(format!(
                "state {r} comes from another run than state 0 (dataset, shuffle or remainder)"
            ));
        }
        check(st, cfg, s).map_err(|e| CoreError::Invalid(format!("state of rank {r}: {e}")))?;
    }
    // Every position at or past `from` is free: past the last one any rank
    // fetched, and past the positions an earlier remainder did not deal.
    let mut from = first.elastic.as_ref().map_or(0, |e| e.from);
    for (s, st) in olds {
        if st.next > 0 {
            from = from.max(s.global(st.next - 1) as u64 + 1);
        }
    }
    let mut gap = Vec::new();
    for (r, (s, st)) in olds.iter().enumerate() {
        // Fetched nothing yet from `next` on (a split one at `next` included).
        let mut k = st.next;
        while (s.global(k) as u64) < from {
            if gap.len() >= MAX_GAP {
                return bad(format!(
                    "the ranks are further apart than an elastic resume deals: more than \
                     {MAX_GAP} conversations between rank {r} and the furthest one"
                ));
            }
            gap.push(s.global(k) as u64);
            k += 1;
        }
        // Held ones go back: the latest fetch of each held conversation.
        let mut held: HashSet<usize> = st.held.iter().copied().collect();
        if st.next_piece > 0 {
            held.remove(&s.index(st.next));
        }
        let mut k = st.next;
        while !held.is_empty() && k > 0 && st.next - k <= len {
            k -= 1;
            if held.remove(&s.index(k)) {
                gap.push(s.global(k) as u64);
            }
        }
        if let Some(i) = held.iter().min() {
            return bad(format!(
                "rank {r} holds conversation {i}, which is not among the last {len} it fetched"
            ));
        }
    }
    gap.sort_unstable();
    gap.dedup();
    let end = from.div_ceil(len) * len;
    let elastic = Elastic { gap, from, end };
    elastic.check(first.len)?;
    Ok(elastic)
}

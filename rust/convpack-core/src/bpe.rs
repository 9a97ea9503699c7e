//! Byte-level BPE encoding and decoding, id-for-id compatible with tiktoken
//! for the same split pattern, merge ranks and special tokens.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use std::hash::Hasher;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use rustc_hash::{FxHashMap, FxHashSet, FxHasher};

use crate::error::CoreError;
use crate::pretokenize::Splitter;

/// Token id (equal to the merge rank for ordinary tokens).
pub type Rank = u32;

/// The chat special tokens, in the order their ids follow the merge ranks.
pub const CHAT_SPECIAL_TOKENS: [&str; 9] = [
    "<|bos|>",
    "<|user_start|>",
    "<|user_end|>",
    "<|assistant_start|>",
    "<|assistant_end|>",
    "<|python_start|>",
    "<|python_end|>",
    "<|output_start|>",
    "<|output_end|>",
];

/// Largest vocabulary (one more than the largest id) a tokenizer may have:
/// every id then fits the `int32` inputs the packers write.
pub const MAX_VOCAB_SIZE: usize = 1 << 31;

/// Most special tokens a tokenizer may have: far more than any vocabulary
/// in use (tiktoken's largest has about a thousand), and few enough that
/// loading them stays cheap (their matcher costs about a kilobyte each).
pub const MAX_SPECIAL_TOKENS: usize = 1 << 17;

/// Pieces this long or longer are merged without the piece cache.
const HEAP_MERGE_MIN_LEN: usize = 128;

/// Pieces this long or longer merge with a heap (O(n log n)) instead of the
/// quadratic scan, which is faster only for short pieces (by callgrind on
/// Chinese and Japanese text, whose letter runs are long pieces).
const SCAN_MERGE_MAX_LEN: usize = 40;

/// The bytes of a piece of at most 7 bytes and its length, packed in a u64.
#[inline]
fn short_key(piece: &[u8]) -> Option<u64> {
    let n = piece.len();
    // Fixed-size loads that may overlap (an overlapped byte is ORed with
    // itself) instead of a copy of variable length, which is a memcpy call.
    let bytes = match n {
        0 => 0,
        1..=3 => {
            piece[0] as u64
                | (piece[n / 2] as u64) << (8 * (n / 2))
                | (piece[n - 1] as u64) << (8 * (n - 1))
        }
        4..=7 => {
            let mut lo = [0u8; 4];
            lo.copy_from_slice(&piece[..4]);
            let mut hi = [0u8; 4];
            hi.copy_from_slice(&piece[n - 4..]);
            u32::from_le_bytes(lo) as u64 | (u32::from_le_bytes(hi) as u64) << (8 * (n - 4))
        }
        _ => return None,
    };
    Some(bytes | (n as u64) << 56)
}

/// Longest piece [`mid_key`] packs.
const MID_KEY_MAX: usize = 15;

/// The bytes of a piece of 8 to 15 bytes and its length, packed in a u128.
#[inline]
fn mid_key(piece: &[u8]) -> Option<u128> {
    let n = piece.len();
    if !(8..=MID_KEY_MAX).contains(&n) {
        return None;
    }
    let load8 = |b: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[..8]);
        u64::from_le_bytes(w) as u128
    };
    // The last eight bytes overlap the first eight: an overlapped byte is
    // ORed with itself.
    Some(load8(piece) | load8(&piece[n - 8..]) << (8 * (n - 8)) | (n as u128) << 120)
}

/// One part of a piece during [`Tokenizer::merge_small`].
#[derive(Clone, Copy, Default)]
struct Part {
    /// Id of the token this part and the next one concatenate to
    /// (`Rank::MAX`: none).
    pair: Rank,
    /// This part's token id.
    id: Rank,
    /// Offset of its first byte in the piece.
    start: u32,
}

/// One part of a piece during [`Tokenizer::merge_heap`]: a node of a
/// linked list, indexed by the part's first byte.
#[derive(Clone, Copy)]
struct Node {
    id: Rank,
    /// Rank of the pair this part starts with the next part (`Rank::MAX`:
    /// none, or this part has been merged into its left neighbour).
    pair: Rank,
    next: u32,
    prev: u32,
}

/// Scratch space of [`Tokenizer::merge_heap`], reused between pieces.
#[derive(Default)]
struct HeapScratch {
    nodes: Vec<Node>,
    heap: Vec<Reverse<(Rank, u32)>>,
}

#[inline]
fn pair_key(a: Rank, b: Rank) -> u64 {
    ((a as u64) << 32) | b as u64
}

/// Entries each thread's piece cache holds before it starts over.
const PIECE_CACHE_CAPACITY: usize = 1 << 16;

/// Splits of a token whose part is at most this long are found by hashing
/// the part; longer parts are found by walking a trie of the long tokens.
const SHORT_PART: usize = 64;

/// Byte `i` of `key`, read from the front or (`rev`) from the back.
#[inline]
fn key_at(key: &[u8], rev: bool, i: usize) -> u8 {
    if rev {
        key[key.len() - 1 - i]
    } else {
        key[i]
    }
}

/// One node of a [`Trie`]: the edge into it is bytes `start..end` of the
/// key of token `src` (the node sits at depth `end`).
struct TrieNode {
    src: Rank,
    start: u32,
    end: u32,
    children: Vec<u32>,
    /// Rank of the token whose key ends here (`Rank::MAX`: none).
    rank: Rank,
}

/// A compressed byte trie of tokens (the long ones), for finding every token
/// that is a prefix (or, with `rev`, a suffix) of a string in one walk.
/// Edges are ranges of the tokens' own bytes, so a token adds at most two
/// nodes however long it is: memory follows the number of long tokens, not
/// their bytes (a trie node per byte cost a hostile rank file with one huge
/// token over a hundred bytes per byte).
struct Trie<'a> {
    ranks: &'a [Vec<u8>],
    rev: bool,
    nodes: Vec<TrieNode>,
}

impl<'a> Trie<'a> {
    fn new(ranks: &'a [Vec<u8>], rev: bool) -> Self {
        let root = TrieNode {
            src: 0,
            start: 0,
            end: 0,
            children: Vec::new(),
            rank: Rank::MAX,
        };
        Trie {
            ranks,
            rev,
            nodes: vec![root],
        }
    }

    /// First byte of the edge into `node`.
    fn first_byte(&self, node: usize) -> u8 {
        let n = &self.nodes[node];
        key_at(&self.ranks[n.src as usize], self.rev, n.start as usize)
    }

    /// The child of `at` whose edge starts with `b`.
    fn child(&self, at: usize, b: u8) -> Option<(usize, usize)> {
        self.nodes[at]
            .children
            .iter()
            .enumerate()
            .find(|&(_, &c)| self.first_byte(c as usize) == b)
            .map(|(slot, &c)| (slot, c as usize))
    }

    /// How many bytes of the edge into `node` match `key` from `pos` on.
    fn common(&self, node: usize, key: &[u8], pos: usize) -> usize {
        let n = &self.nodes[node];
        let src = &self.ranks[n.src as usize];
        let edge = (n.end - n.start) as usize;
        (0..edge.min(key.len() - pos))
            .take_while(|&i| {
                key_at(src, self.rev, n.start as usize + i) == key_at(key, self.rev, pos + i)
            })
            .count()
    }

    /// Adds token `rank` (its bytes are `ranks[rank]`).
    fn insert(&mut self, rank: Rank) {
        let key = &self.ranks[rank as usize];
        let (mut at, mut pos) = (0usize, 0usize);
        while pos < key.len() {
            let Some((slot, c)) = self.child(at, key_at(key, self.rev, pos)) else {
                let leaf = self.nodes.len() as u32;
                self.nodes.push(TrieNode {
                    src: rank,
                    start: pos as u32,
                    end: key.len() as u32,
                    children: Vec::new(),
                    rank,
                });
                self.nodes[at].children.push(leaf);
                return;
            };
            let m = self.common(c, key, pos);
            if m < (self.nodes[c].end - self.nodes[c].start) as usize {
                // Split the edge: a new node where the keys part.
                let mid = self.nodes.len() as u32;
                let (src, start) = (self.nodes[c].src, self.nodes[c].start);
                self.nodes.push(TrieNode {
                    src,
                    start,
                    end: start + m as u32,
                    children: vec![c as u32],
                    rank: Rank::MAX,
                });
                self.nodes[c].start = start + m as u32;
                self.nodes[at].children[slot] = mid;
                at = mid as usize;
            } else {
                at = c;
            }
            pos += m;
        }
        self.nodes[at].rank = rank;
    }

    /// Calls `f(length, rank)` for every token that `key` (read from the
    /// back with `rev`) starts with, shortest first.
    fn walk(&self, key: &[u8], mut f: impl FnMut(usize, Rank)) {
        let (mut at, mut pos) = (0usize, 0usize);
        while pos < key.len() {
            let Some((_, c)) = self.child(at, key_at(key, self.rev, pos)) else {
                return;
            };
            let m = self.common(c, key, pos);
            if m < (self.nodes[c].end - self.nodes[c].start) as usize {
                return;
            }
            at = c;
            pos += m;
            if self.nodes[at].rank != Rank::MAX {
                f(pos, self.nodes[at].rank);
            }
        }
    }
}

/// `(a, b)` -> the token `a`'s and `b`'s bytes concatenate to, for every
/// way of splitting every token into two tokens.
///
/// Linear in the vocabulary's total size: a short token tries every split;
/// a long one finds its token prefixes and suffixes by hashing the short
/// ones and walking tries for the long ones, so one huge token (a hostile
/// rank file) costs its length, not its length squared, and memory in
/// proportion to the splits found, not to its length.
fn pair_table(ranks: &[Vec<u8>], encoder: &FxHashMap<Vec<u8>, Rank>) -> FxHashMap<u64, Rank> {
    let mut forward = Trie::new(ranks, false);
    let mut backward = Trie::new(ranks, true);
    for (rank, bytes) in ranks.iter().enumerate() {
        if bytes.len() > SHORT_PART {
            forward.insert(rank as Rank);
            backward.insert(rank as Rank);
        }
    }
    let mut pairs = FxHashMap::default();
    // (k, token bytes[..k]) and (k, token bytes[k..]), each sorted by k.
    let mut prefixes: Vec<(usize, Rank)> = Vec::new();
    let mut suffixes: Vec<(usize, Rank)> = Vec::new();
    for (rank, bytes) in ranks.iter().enumerate() {
        let n = bytes.len();
        if n <= SHORT_PART {
            for k in 1..n {
                if let (Some(&a), Some(&b)) = (encoder.get(&bytes[..k]), encoder.get(&bytes[k..])) {
                    pairs.insert(pair_key(a, b), rank as Rank);
                }
            }
            continue;
        }
        prefixes.clear();
        suffixes.clear();
        for k in 1..=SHORT_PART {
            if let Some(&a) = encoder.get(&bytes[..k]) {
                prefixes.push((k, a));
            }
        }
        // The tries hold tokens longer than SHORT_PART only: these come after.
        forward.walk(&bytes[..n - 1], |len, r| prefixes.push((len, r)));
        backward.walk(&bytes[1..], |len, r| suffixes.push((n - len, r)));
        suffixes.reverse(); // longest suffix (smallest k) first
        for k in n - SHORT_PART..n {
            if let Some(&b) = encoder.get(&bytes[k..]) {
                suffixes.push((k, b));
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < prefixes.len() && j < suffixes.len() {
            let (kp, a) = prefixes[i];
            let (ks, b) = suffixes[j];
            if kp == ks {
                pairs.insert(pair_key(a, b), rank as Rank);
            }
            i += usize::from(kp <= ks);
            j += usize::from(ks <= kp);
        }
    }
    pairs
}

/// Per-thread memo of merged pieces, for the tokenizer `owner`.
///
/// A piece of up to [`MID_KEY_MAX`] bytes (nearly all) is keyed by its bytes
/// packed in an integer ([`short_key`], [`mid_key`]) and holds up to
/// [`INLINE_TOKENS`] tokens in its entry: a hit is one probe, with no
/// comparison of bytes elsewhere in memory and no second load for the
/// tokens. Longer pieces, and tokens beyond that, live in two flat arenas
/// (piece bytes and tokens), the long pieces indexed by their 64-bit hash,
/// so filling and clearing the cache allocates nothing per entry. A hash
/// collision of a long piece is a miss, and the newer piece wins.
struct PieceCache {
    owner: u64,
    /// [`PIECE_EPOCH`] when the cache was last emptied.
    epoch: u64,
    small: FxHashMap<u128, SmallEntry>,
    map: FxHashMap<u64, CacheEntry>,
    bytes: Vec<u8>,
    tokens: Vec<Rank>,
    /// Scratch space of [`Tokenizer::merge_small`].
    scratch: Vec<Part>,
    /// Scratch space of [`Tokenizer::merge_heap`].
    heap: HeapScratch,
}

/// Tokens a short piece's entry holds itself.
const INLINE_TOKENS: usize = 3;

/// A short piece's tokens: `len` of them in `tokens`, or, beyond
/// [`INLINE_TOKENS`], in the arena from `tokens[0]`.
#[derive(Clone, Copy)]
struct SmallEntry {
    len: u32,
    tokens: [Rank; INLINE_TOKENS],
}

#[derive(Clone, Copy)]
struct CacheEntry {
    bytes_at: u32,
    bytes_len: u32,
    tokens_at: u32,
    tokens_len: u32,
}

/// `piece` packed with its length, for a piece of up to [`MID_KEY_MAX`]
/// bytes (a short key's high half is zero, a mid key's is not).
#[inline]
fn small_key(piece: &[u8]) -> Option<u128> {
    short_key(piece).map(u128::from).or_else(|| mid_key(piece))
}

impl PieceCache {
    fn clear(&mut self) {
        self.small.clear();
        self.map.clear();
        self.bytes.clear();
        self.tokens.clear();
    }

    #[inline]
    fn get(&self, piece: &[u8]) -> Option<&[Rank]> {
        if let Some(key) = small_key(piece) {
            let e = self.small.get(&key)?;
            let n = e.len as usize;
            return if n <= INLINE_TOKENS {
                Some(&e.tokens[..n])
            } else {
                let at = e.tokens[0] as usize;
                Some(&self.tokens[at..at + n])
            };
        }
        let e = self.map.get(&long_hash(piece))?;
        let at = e.bytes_at as usize;
        if &self.bytes[at..at + e.bytes_len as usize] != piece {
            return None;
        }
        let t = e.tokens_at as usize;
        Some(&self.tokens[t..t + e.tokens_len as usize])
    }

    fn insert(&mut self, piece: &[u8], tokens: &[Rank]) {
        if self.small.len() + self.map.len() >= PIECE_CACHE_CAPACITY
            || self.bytes.len() > PIECE_CACHE_BYTES
        {
            self.clear();
        }
        if let Some(key) = small_key(piece) {
            let mut e = SmallEntry {
                len: tokens.len() as u32,
                tokens: [0; INLINE_TOKENS],
            };
            if tokens.len() <= INLINE_TOKENS {
                e.tokens[..tokens.len()].copy_from_slice(tokens);
            } else {
                e.tokens[0] = self.tokens.len() as u32;
                self.tokens.extend_from_slice(tokens);
            }
            self.small.insert(key, e);
            return;
        }
        let entry = CacheEntry {
            bytes_at: self.bytes.len() as u32,
            bytes_len: piece.len() as u32,
            tokens_at: self.tokens.len() as u32,
            tokens_len: tokens.len() as u32,
        };
        self.bytes.extend_from_slice(piece);
        self.tokens.extend_from_slice(tokens);
        self.map.insert(long_hash(piece), entry);
    }
}

#[inline]
fn long_hash(piece: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(piece);
    h.finish()
}

/// Bytes of pieces each thread's cache holds before it starts over.
const PIECE_CACHE_BYTES: usize = 1 << 22;

thread_local! {
    static PIECE_CACHE: RefCell<PieceCache> = RefCell::new(PieceCache {
        owner: 0,
        epoch: 0,
        small: FxHashMap::default(),
        map: FxHashMap::default(),
        bytes: Vec::new(),
        tokens: Vec::new(),
        scratch: Vec::new(),
        heap: HeapScratch::default(),
    });
}

/// Bumped by [`forget_pieces`]: a thread's cache of an older epoch starts over.
static PIECE_EPOCH: AtomicU64 = AtomicU64::new(0);

/// Makes every thread's piece cache start over at its next piece (the
/// tables stay): the next text is new to the encoder, as at the start of a
/// run. For benchmarks that time encoding text the encoder has not seen.
pub fn forget_pieces() {
    PIECE_EPOCH.fetch_add(1, Ordering::Relaxed);
}

/// Ids of tokenizers (0 is never used), so a thread's cache never serves one
/// tokenizer's pieces to another.
static NEXT_TOKENIZER_ID: AtomicU64 = AtomicU64::new(1);

/// Text a split pattern must cover without a gap: every ASCII character
/// (controls included), then letters, marks, numbers, spaces and symbols
/// from other scripts.
const PATTERN_PROBE_EXTRA: &str =
    "abc ABC 123 é ü ñ 中文字 日本語 한국어 Ωμέγα кириллица ١٢٣ Ⅻ ½ \u{a0}\u{3000}\u{2028}\u{85} e\u{301} 😀 👍🏽 \u{200d} \u{feff}\r\n\n\t  \n";

/// Refuses a split pattern that leaves text between (or around) its
/// matches: the regex engine skips such text, so encoding would drop it
/// silently (a pattern that matches nothing, such as `""` or `(?!)`, would
/// drop everything).
fn check_pattern_covers(splitter: &Splitter, pattern: &str) -> Result<(), CoreError> {
    if !matches!(splitter, Splitter::Regex(..)) {
        return Ok(()); // the scanners' pieces cover any text
    }
    let probe: String = (0u8..0x80)
        .map(char::from)
        .chain(PATTERN_PROBE_EXTRA.chars())
        .collect();
    let mut done = 0usize;
    let mut gap: Option<(usize, usize)> = None;
    let res = splitter.split(&probe, |piece| {
        let start = piece.as_ptr() as usize - probe.as_ptr() as usize;
        if start > done && gap.is_none() {
            gap = Some((done, start));
        }
        done = start + piece.len();
    });
    res?;
    if gap.is_none() && done < probe.len() {
        gap = Some((done, probe.len()));
    }
    match gap {
        None => Ok(()),
        Some((a, b)) => {
            let skipped: String = probe[a..b].chars().take(8).collect();
            Err(CoreError::Pattern(format!(
                "the split pattern {pattern:?} does not match every character (it skips {skipped:?}); \
                 text it does not match would be dropped, so a split pattern must match all text"
            )))
        }
    }
}

/// Which special tokens [`Tokenizer::encode_allowed`] turns into ids; the
/// text of any other special token is an error there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowedSpecials {
    /// Every special token.
    All,
    /// The special tokens with these ids (empty: none).
    Only(FxHashSet<Rank>),
}

/// A BPE tokenizer: split pattern, merge ranks and special tokens.
#[derive(Clone, Debug)]
pub struct Tokenizer {
    encoder: FxHashMap<Vec<u8>, Rank>,
    /// The tokens of at most 7 bytes again, keyed by [`short_key`]: most
    /// pieces are short, and an integer key needs no byte comparison.
    short_encoder: FxHashMap<u64, Rank>,
    /// The tokens of 8 to 15 bytes, keyed by [`mid_key`].
    mid_encoder: FxHashMap<u128, Rank>,
    /// `(left id, right id)` -> id of their concatenation, for every pair of
    /// tokens that concatenate to a token. Merging by ids hashes 8 bytes
    /// instead of a byte slice.
    pair_ranks: FxHashMap<u64, Rank>,
    /// Id of each single byte.
    byte_ranks: [Rank; 256],
    /// `byte_pairs[a * 256 + b]`: id of the two-byte token `[a, b]`, or
    /// `Rank::MAX`. Every merge starts from bytes, and this table (256 KiB)
    /// stays in cache where the pair hash map does not.
    byte_pairs: Vec<Rank>,
    /// Bytes of every ordinary token, indexed by rank.
    ranks: Vec<Vec<u8>>,
    specials: Vec<(String, Rank)>,
    special_ids: FxHashMap<String, Rank>,
    /// Id -> index into `specials`, so decoding a special id is one lookup.
    special_index: FxHashMap<Rank, u32>,
    /// Finds special tokens (leftmost, longest on a tie) in one pass.
    special_matcher: Option<AhoCorasick>,
    /// Finds every occurrence of every special token, overlapping ones
    /// included (for the check that no disallowed one occurs); built on the
    /// first call that allows some special tokens but not all.
    special_occurrences: OnceLock<Option<AhoCorasick>>,
    /// One more than the largest id (ordinary or special).
    vocab_size: usize,
    /// Bytes of the longest special token.
    max_special_len: usize,
    pattern: String,
    splitter: Splitter,
    /// A `tokenizer.json` merges list to merge by instead of by rank (see
    /// [`Tokenizer::with_merge_list`]).
    merge_list: Option<Arc<MergeList>>,
    /// Identity for the per-thread piece cache.
    id: u64,
}

/// A Hugging Face BPE merges list: `(left, right)` -> `(list index,
/// result id)`, merged lowest index first, leftmost on a tie, as
/// `tokenizers` merges; with `ignore_merges` a piece that is a token is that
/// token.
#[derive(Clone, Debug)]
pub struct MergeList {
    /// `(left, right)` -> list index (the first, for a pair listed twice).
    pairs: FxHashMap<u64, u32>,
    /// List index -> id of the merge's result.
    results: Vec<Rank>,
    /// `byte_pairs[a * 256 + b]`: list index of merging the single bytes
    /// `a` and `b`, or `Rank::MAX`.
    byte_pairs: Vec<u32>,
    ignore_merges: bool,
}

/// The order in which the merge loops join parts: each pair of parts gets
/// a value (`Rank::MAX`: they do not join), the lowest value joins first
/// (leftmost on a tie), and the value names the joined token.
trait MergeOrder {
    /// True when a pair's value is the id of its joined bytes (so short
    /// joins may be looked up by bytes instead of by the two ids).
    const BY_BYTES: bool;
    fn byte_pair(&self, a: u8, b: u8) -> Rank;
    fn pair(&self, a: Rank, b: Rank) -> Rank;
    /// Id of the token a pair of this value joins into.
    fn result(&self, value: Rank) -> Rank;
}

/// Merging by rank: a pair's value is its result's id (tiktoken's order).
struct ByRank<'a>(&'a Tokenizer);

impl MergeOrder for ByRank<'_> {
    const BY_BYTES: bool = true;
    #[inline(always)]
    fn byte_pair(&self, a: u8, b: u8) -> Rank {
        self.0.byte_pairs[a as usize * 256 + b as usize]
    }
    #[inline(always)]
    fn pair(&self, a: Rank, b: Rank) -> Rank {
        self.0.merged(a, b)
    }
    #[inline(always)]
    fn result(&self, value: Rank) -> Rank {
        value
    }
}

/// Merging by a merges list: a pair's value is its list index
/// (`tokenizers`' order).
struct ByList<'a>(&'a MergeList);

impl MergeOrder for ByList<'_> {
    const BY_BYTES: bool = false;
    #[inline(always)]
    fn byte_pair(&self, a: u8, b: u8) -> Rank {
        self.0.byte_pairs[a as usize * 256 + b as usize]
    }
    #[inline(always)]
    fn pair(&self, a: Rank, b: Rank) -> Rank {
        self.0
            .pairs
            .get(&pair_key(a, b))
            .copied()
            .unwrap_or(Rank::MAX)
    }
    #[inline(always)]
    fn result(&self, value: Rank) -> Rank {
        self.0.results[value as usize]
    }
}

impl Tokenizer {
    /// Builds a tokenizer from `ranks[i]` = the bytes of token `i` (empty: no
    /// ordinary token has id `i`), and special tokens with their ids. Every single byte must be a token, ranks must be
    /// unique, and special ids must not collide with ranks or each other.
    pub fn new(
        ranks: Vec<Vec<u8>>,
        specials: Vec<(String, Rank)>,
        pattern: &str,
    ) -> Result<Self, CoreError> {
        let splitter = Splitter::new(pattern)?;
        check_pattern_covers(&splitter, pattern)?;
        if ranks.len() > MAX_VOCAB_SIZE {
            return Err(CoreError::Invalid(format!(
                "{} ranks is more than the {MAX_VOCAB_SIZE} ids a vocabulary may have",
                ranks.len()
            )));
        }
        let mut encoder = FxHashMap::default();
        encoder.reserve(ranks.len());
        for (rank, bytes) in ranks.iter().enumerate() {
            if bytes.is_empty() {
                continue; // a hole: no ordinary token has this id
            }
            if let Some(prev) = encoder.insert(bytes.clone(), rank as Rank) {
                return Err(CoreError::Invalid(format!(
                    "tokens {prev} and {rank} have the same bytes {bytes:?}"
                )));
            }
        }
        let mut byte_ranks = [0; 256];
        for b in 0..=255u8 {
            match encoder.get(&[b][..]) {
                Some(&r) => byte_ranks[b as usize] = r,
                None => {
                    return Err(CoreError::Invalid(format!(
                        "the vocabulary has no token for the single byte {b:#04x}; byte-level BPE needs all 256"
                    )))
                }
            }
        }
        let mut byte_pairs = vec![Rank::MAX; 256 * 256];
        for (rank, bytes) in ranks.iter().enumerate() {
            if let [a, b] = bytes[..] {
                byte_pairs[a as usize * 256 + b as usize] = rank as Rank;
            }
        }
        let short_encoder = ranks
            .iter()
            .enumerate()
            .filter(|(_, bytes)| !bytes.is_empty())
            .filter_map(|(rank, bytes)| short_key(bytes).map(|k| (k, rank as Rank)))
            .collect();
        let mid_encoder = ranks
            .iter()
            .enumerate()
            .filter_map(|(rank, bytes)| mid_key(bytes).map(|k| (k, rank as Rank)))
            .collect();
        let pair_ranks = pair_table(&ranks, &encoder);
        if specials.len() > MAX_SPECIAL_TOKENS {
            return Err(CoreError::Invalid(format!(
                "{} special tokens is more than the {MAX_SPECIAL_TOKENS} a tokenizer may have",
                specials.len()
            )));
        }
        let mut special_ids = FxHashMap::default();
        for (name, id) in &specials {
            if name.is_empty() {
                return Err(CoreError::Invalid("a special token cannot be empty".into()));
            }
            if *id as usize >= MAX_VOCAB_SIZE {
                return Err(CoreError::Invalid(format!(
                    "special token {name:?} has id {id}; ids must be below {MAX_VOCAB_SIZE}"
                )));
            }
            if ranks.get(*id as usize).is_some_and(|b| !b.is_empty()) {
                return Err(CoreError::Invalid(format!(
                    "special token {name:?} has id {id}, which an ordinary token already uses"
                )));
            }
            if special_ids.insert(name.clone(), *id).is_some() {
                return Err(CoreError::Invalid(format!(
                    "special token {name:?} is listed twice"
                )));
            }
        }
        let mut used: Vec<Rank> = specials.iter().map(|s| s.1).collect();
        used.sort_unstable();
        if let Some(w) = used.windows(2).find(|w| w[0] == w[1]) {
            return Err(CoreError::Invalid(format!(
                "two special tokens have the same id {}",
                w[0]
            )));
        }
        let special_index = specials
            .iter()
            .enumerate()
            .map(|(i, s)| (s.1, i as u32))
            .collect();
        let vocab_size = specials
            .iter()
            .map(|s| s.1 as usize + 1)
            .max()
            .unwrap_or(0)
            .max(ranks.len());
        let max_special_len = specials.iter().map(|s| s.0.len()).max().unwrap_or(0);
        let special_matcher = if specials.is_empty() {
            None
        } else {
            let built = AhoCorasickBuilder::new()
                .match_kind(MatchKind::LeftmostLongest)
                .build(specials.iter().map(|s| s.0.as_bytes()))
                .map_err(|e| CoreError::Invalid(format!("special tokens: {e}")))?;
            Some(built)
        };
        Ok(Tokenizer {
            encoder,
            short_encoder,
            mid_encoder,
            pair_ranks,
            byte_ranks,
            byte_pairs,
            ranks,
            specials,
            special_ids,
            special_index,
            special_matcher,
            special_occurrences: OnceLock::new(),
            vocab_size,
            max_special_len,
            pattern: pattern.to_string(),
            splitter,
            merge_list: None,
            id: NEXT_TOKENIZER_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The same vocabulary merging by a `tokenizer.json` merges list
    /// (`(left id, right id)` in list order) the way `tokenizers` does,
    /// for files whose merges are not equivalent to a rank order.
    pub fn with_merge_list(
        mut self,
        merges: &[(Rank, Rank)],
        ignore_merges: bool,
    ) -> Result<Self, CoreError> {
        if merges.len() >= Rank::MAX as usize {
            return Err(CoreError::Invalid(format!(
                "{} merges is too many",
                merges.len()
            )));
        }
        let mut pairs = FxHashMap::default();
        pairs.reserve(merges.len());
        let mut results = Vec::with_capacity(merges.len());
        let mut byte_pairs = vec![Rank::MAX; 256 * 256];
        let mut joined = Vec::new();
        for (i, &(a, b)) in merges.iter().enumerate() {
            let part = |id: Rank| match self.ranks.get(id as usize) {
                Some(bytes) if !bytes.is_empty() => Ok(bytes.as_slice()),
                _ => Err(CoreError::Invalid(format!(
                    "merge {i} names id {id}, which is not an ordinary token"
                ))),
            };
            joined.clear();
            joined.extend_from_slice(part(a)?);
            joined.extend_from_slice(part(b)?);
            let Some(&result) = self.encoder.get(&joined) else {
                return Err(CoreError::Invalid(format!(
                    "merge {i} ({a}, {b}) makes {joined:?}, which is not a token"
                )));
            };
            results.push(result);
            // A pair listed twice keeps its first (lowest) index.
            let index = *pairs.entry(pair_key(a, b)).or_insert(i as u32);
            if let ([x], [y]) = (part(a)?, part(b)?) {
                if self.byte_ranks[*x as usize] == a && self.byte_ranks[*y as usize] == b {
                    byte_pairs[*x as usize * 256 + *y as usize] = index;
                }
            }
        }
        self.merge_list = Some(Arc::new(MergeList {
            pairs,
            results,
            byte_pairs,
            ignore_merges,
        }));
        Ok(self.with_new_identity())
    }

    /// True when pieces merge by a merges list (not by rank).
    pub fn merges_by_list(&self) -> bool {
        self.merge_list.is_some()
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The same tokenizer under a new identity: per-thread piece caches
    /// start empty for it (benchmarks use this to time cold caches).
    pub fn with_new_identity(mut self) -> Self {
        self.id = NEXT_TOKENIZER_ID.fetch_add(1, Ordering::Relaxed);
        self
    }

    /// Which path splits text (see [`Splitter::path`]).
    pub fn pretokenizer(&self) -> String {
        self.splitter.path()
    }

    /// Bytes of every ordinary token, indexed by rank (empty for a rank no
    /// ordinary token has).
    pub fn ranks(&self) -> &[Vec<u8>] {
        &self.ranks
    }

    pub fn specials(&self) -> &[(String, Rank)] {
        &self.specials
    }

    pub fn special_id(&self, name: &str) -> Option<Rank> {
        self.special_ids.get(name).copied()
    }

    /// One more than the largest id (ordinary or special).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Encodes text with no special-token handling: a special token's text is
    /// encoded as ordinary text.
    pub fn encode_ordinary(&self, text: &str) -> Vec<Rank> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        self.encode_ordinary_into(text, &mut out);
        out
    }

    /// Appends the tokens of `text` to `out` (see [`Tokenizer::encode_ordinary`]).
    pub fn encode_ordinary_into(&self, text: &str, out: &mut Vec<Rank>) {
        match &self.splitter {
            Splitter::Gpt(s, _) => s.split(text, |piece| self.encode_piece(piece.as_bytes(), out)),
            Splitter::O200k(s) => s.split(text, |piece| self.encode_piece(piece.as_bytes(), out)),
            Splitter::Regex(_) => {
                // fancy-regex can only fail by exceeding its backtrack limit;
                // fall back to encoding the remaining text as one piece so no
                // text is ever lost.
                let mut done = 0;
                let res = self.splitter.split(text, |piece| {
                    let start = piece.as_ptr() as usize - text.as_ptr() as usize;
                    self.encode_piece(piece.as_bytes(), out);
                    done = start + piece.len();
                });
                if res.is_err() && done < text.len() {
                    self.encode_piece(&text.as_bytes()[done..], out);
                }
            }
        }
    }

    /// The special tokens of `names` that [`Tokenizer::encode_allowed`]
    /// turns into ids; a name that is no special token allows nothing (as in
    /// tiktoken). Costs the number of names, not of special tokens.
    pub fn allowed_specials<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> AllowedSpecials {
        let ids: FxHashSet<Rank> = names
            .into_iter()
            .filter_map(|n| self.special_id(n))
            .collect();
        if ids.len() == self.specials.len() {
            return AllowedSpecials::All; // nothing left to refuse
        }
        AllowedSpecials::Only(ids)
    }

    /// Encodes text, turning the allowed special tokens into their ids. As in
    /// tiktoken, text that spells a special token that is not allowed is an
    /// error (pass it through [`Tokenizer::encode_ordinary`] to encode it as text).
    pub fn encode(&self, text: &str, allowed: &[&str]) -> Result<Vec<Rank>, CoreError> {
        self.encode_allowed(text, &self.allowed_specials(allowed.iter().copied()))
    }

    /// [`Tokenizer::encode`] with the allowed set built once (see
    /// [`Tokenizer::allowed_specials`]): linear in the text, whatever the
    /// number of special tokens.
    pub fn encode_allowed(
        &self,
        text: &str,
        allowed: &AllowedSpecials,
    ) -> Result<Vec<Rank>, CoreError> {
        if let Some(name) = self.disallowed_special_in(text, allowed) {
            return Err(CoreError::DisallowedSpecial(name.to_string()));
        }
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let Some(matcher) = &self.special_matcher else {
            self.encode_ordinary_into(text, &mut out);
            return Ok(out);
        };
        // No special token that is not allowed occurs anywhere in the text,
        // so every match is an allowed one.
        let mut done = 0;
        for m in matcher.find_iter(text) {
            self.encode_ordinary_into(&text[done..m.start()], &mut out);
            out.push(self.specials[m.pattern().as_usize()].1);
            done = m.end();
        }
        self.encode_ordinary_into(&text[done..], &mut out);
        Ok(out)
    }

    /// The automaton finding every occurrence of every special token,
    /// overlapping ones included (built on first use; `None` if it cannot be).
    fn every_special(&self) -> Option<&AhoCorasick> {
        self.special_occurrences
            .get_or_init(|| {
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::Standard)
                    .build(self.specials.iter().map(|s| s.0.as_bytes()))
                    .ok()
            })
            .as_ref()
    }

    /// The special tokens that occur in `text` (anywhere, overlapping ones
    /// too), each once, in the order of their first occurrence.
    pub fn specials_in(&self, text: &str) -> Vec<&str> {
        let mut found: Vec<&str> = Vec::new();
        match self.every_special() {
            Some(every) => {
                for m in every.find_overlapping_iter(text) {
                    let name = self.specials[m.pattern().as_usize()].0.as_str();
                    if !found.contains(&name) {
                        found.push(name);
                    }
                }
            }
            None => found.extend(
                self.specials
                    .iter()
                    .map(|s| s.0.as_str())
                    .filter(|name| text.contains(name)),
            ),
        }
        found
    }

    /// Length of the longest special token `bytes` starts with.
    pub fn longest_special_starting(&self, bytes: &[u8]) -> Option<usize> {
        let window = &bytes[..bytes.len().min(self.max_special_len)];
        self.longest_special_where(window, |start, _| start == 0)
    }

    /// Length of the longest special token `bytes` ends with.
    pub fn longest_special_ending(&self, bytes: &[u8]) -> Option<usize> {
        let window = &bytes[bytes.len().saturating_sub(self.max_special_len)..];
        let n = window.len();
        self.longest_special_where(window, |_, end| end == n)
    }

    fn longest_special_where(
        &self,
        window: &[u8],
        keep: impl Fn(usize, usize) -> bool,
    ) -> Option<usize> {
        match self.every_special() {
            Some(every) => every
                .find_overlapping_iter(window)
                .filter(|m| keep(m.start(), m.end()))
                .map(|m| m.len())
                .max(),
            None => self
                .specials
                .iter()
                .map(|s| s.0.as_bytes())
                .filter(|sp| {
                    window.len() >= sp.len()
                        && (keep(0, sp.len()) && window.starts_with(sp)
                            || keep(window.len() - sp.len(), window.len()) && window.ends_with(sp))
                })
                .map(<[u8]>::len)
                .max(),
        }
    }

    /// A special token that is not allowed and occurs in `text` (anywhere,
    /// also inside or across an allowed one, as tiktoken's check finds it).
    fn disallowed_special_in(&self, text: &str, allowed: &AllowedSpecials) -> Option<&str> {
        let AllowedSpecials::Only(ids) = allowed else {
            return None;
        };
        let matcher = self.special_matcher.as_ref()?;
        if ids.is_empty() {
            // Nothing allowed: any occurrence of any special token is one.
            return matcher
                .find(text)
                .map(|m| self.specials[m.pattern().as_usize()].0.as_str());
        }
        let found = match self.every_special() {
            Some(every) => every
                .find_overlapping_iter(text)
                .map(|m| &self.specials[m.pattern().as_usize()])
                .find(|(_, id)| !ids.contains(id)),
            // The automaton could not be built (the leftmost one above was):
            // one search per special token, slower but exact.
            None => self
                .specials
                .iter()
                .find(|(name, id)| !ids.contains(id) && text.contains(name.as_str())),
        };
        found.map(|(name, _)| name.as_str())
    }

    /// Encodes text with every special token recognised where its text
    /// occurs (leftmost, longest on a tie), the way `tokenizers` splits out
    /// a `tokenizer.json`'s added tokens before pre-tokenizing.
    pub fn encode_with_specials(&self, text: &str) -> Vec<Rank> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let Some(matcher) = &self.special_matcher else {
            self.encode_ordinary_into(text, &mut out);
            return out;
        };
        let mut done = 0;
        for m in matcher.find_iter(text) {
            self.encode_ordinary_into(&text[done..m.start()], &mut out);
            out.push(self.specials[m.pattern().as_usize()].1);
            done = m.end();
        }
        self.encode_ordinary_into(&text[done..], &mut out);
        out
    }

    /// Encodes many texts on up to `num_threads` threads of the process-wide
    /// pool (`0` means all of them).
    pub fn encode_ordinary_batch(&self, texts: &[&str], num_threads: usize) -> Vec<Vec<Rank>> {
        crate::parallel::map_chunked(texts, num_threads, |t| self.encode_ordinary(t))
    }

    /// Tokens of one pre-split piece, appended to `out`.
    #[inline]
    pub fn encode_piece(&self, piece: &[u8], out: &mut Vec<Rank>) {
        // Single bytes (spaces, punctuation) are common and need no hashing.
        if let [b] = piece {
            out.push(self.byte_ranks[*b as usize]);
            return;
        }
        let list = self.merge_list.as_deref();
        if list.is_none_or(|l| l.ignore_merges) {
            let whole = self.token_of(piece);
            if whole != Rank::MAX {
                out.push(whole);
                return;
            }
        }
        if piece.len() >= HEAP_MERGE_MIN_LEN {
            PIECE_CACHE.with(|cell| {
                let heap = &mut cell.borrow_mut().heap;
                match list {
                    Some(l) => self.merge_heap(&ByList(l), piece, heap, out),
                    None => self.merge_heap(&ByRank(self), piece, heap, out),
                }
            });
            return;
        }
        // Pieces that need merging repeat (names, rare words, code
        // identifiers): remember their tokens per thread.
        PIECE_CACHE.with(|cell| {
            let mut cache = cell.borrow_mut();
            let epoch = PIECE_EPOCH.load(Ordering::Relaxed);
            if cache.owner != self.id || cache.epoch != epoch {
                cache.owner = self.id;
                cache.epoch = epoch;
                cache.clear();
            }
            if let Some(tokens) = cache.get(piece) {
                // A few ids: pushes beat a call to memcpy.
                for &t in tokens {
                    out.push(t);
                }
                return;
            }
            let start = out.len();
            let cache = &mut *cache;
            match (list, piece.len() >= SCAN_MERGE_MAX_LEN) {
                (Some(l), true) => self.merge_heap(&ByList(l), piece, &mut cache.heap, out),
                (Some(l), false) => self.merge_small(&ByList(l), piece, &mut cache.scratch, out),
                (None, true) => self.merge_heap(&ByRank(self), piece, &mut cache.heap, out),
                (None, false) => self.merge_small(&ByRank(self), piece, &mut cache.scratch, out),
            }
            cache.insert(piece, &out[start..]);
        })
    }

    /// Id of the token that `a` and `b` concatenate to, or `Rank::MAX`.
    #[inline]
    fn merged(&self, a: Rank, b: Rank) -> Rank {
        self.pair_ranks
            .get(&pair_key(a, b))
            .copied()
            .unwrap_or(Rank::MAX)
    }

    /// Id of the ordinary token whose bytes are `bytes`, or `Rank::MAX`.
    /// Pieces of up to 15 bytes (nearly all) are looked up by an integer
    /// key: no byte comparison, and the maps stay in cache.
    #[inline(always)]
    fn token_of(&self, bytes: &[u8]) -> Rank {
        // Two bytes: the direct table (no hashing).
        if let [a, b] = *bytes {
            return self.byte_pairs[a as usize * 256 + b as usize];
        }
        let found = if let Some(k) = short_key(bytes) {
            self.short_encoder.get(&k)
        } else if let Some(k) = mid_key(bytes) {
            self.mid_encoder.get(&k)
        } else {
            self.encoder.get(bytes)
        };
        found.copied().unwrap_or(Rank::MAX)
    }

    /// Quadratic merge: repeatedly merge the adjacent pair of lowest rank
    /// (the leftmost on ties) until no pair is a token. Parts are byte
    /// ranges of the piece; whether two neighbours merge, and into which
    /// id, is a lookup of their joined bytes in the whole-token maps while
    /// the join is short (those maps are consulted for every piece, so they
    /// stay in cache where the table of token pairs, four times larger,
    /// does not), and of their two ids in that pair table beyond.
    ///
    /// `parts` is scratch space (reused between calls, so nothing is
    /// allocated per piece). A part and the pair it starts move together,
    /// so a merge shifts one array.
    fn merge_small<O: MergeOrder>(
        &self,
        order: &O,
        piece: &[u8],
        parts: &mut Vec<Part>,
        out: &mut Vec<Rank>,
    ) {
        debug_assert!(piece.len() < HEAP_MERGE_MIN_LEN);
        let len = piece.len();
        // Joins of other scripts' letters mostly miss the whole-token maps
        // too, and the shorter lookup by ids measured faster there.
        let by_bytes = O::BY_BYTES && piece.is_ascii();
        parts.clear();
        parts.extend(piece.iter().enumerate().map(|(i, &b)| {
            Part {
                pair: piece
                    .get(i + 1)
                    .map_or(Rank::MAX, |&c| order.byte_pair(b, c)),
                id: self.byte_ranks[b as usize],
                start: i as u32,
            }
        }));
        let mut n = parts.len();
        while n > 1 {
            // The lowest pair, leftmost on a tie, without a branch per part
            // (which one wins is unpredictable).
            let low = parts[..n - 1]
                .iter()
                .enumerate()
                .map(|(k, p)| (p.pair as u64) << 32 | k as u64)
                .min()
                .unwrap_or(u64::MAX);
            let (best, at) = ((low >> 32) as Rank, low as u32 as usize);
            if best == Rank::MAX {
                break;
            }
            // A few parts: a loop beats a call to memmove.
            for k in at + 1..n - 1 {
                parts[k] = parts[k + 1];
            }
            n -= 1;
            // End of part k (the start of the next one).
            let end = |parts: &[Part], k: usize| {
                if k + 1 < n {
                    parts[k + 1].start as usize
                } else {
                    len
                }
            };
            // Id of the token parts k and k + 1 join into: by the joined
            // bytes while they have an integer key (ASCII pieces), by the
            // two ids otherwise.
            let join = |parts: &[Part], k: usize| {
                if by_bytes {
                    let bytes = &piece[parts[k].start as usize..end(parts, k + 1)];
                    if bytes.len() <= MID_KEY_MAX {
                        return self.token_of(bytes);
                    }
                }
                order.pair(parts[k].id, parts[k + 1].id)
            };
            parts[at].id = order.result(best);
            parts[at].pair = if at + 1 < n {
                join(parts, at)
            } else {
                Rank::MAX
            };
            if at > 0 {
                parts[at - 1].pair = join(parts, at - 1);
            }
        }
        out.extend(parts[..n].iter().map(|p| p.id));
    }

    /// The same merge order as [`Tokenizer::merge_small`], with a heap of
    /// candidate pairs and a linked list of parts (for long pieces such as
    /// runs of whitespace or of letters of other scripts).
    ///
    /// `scratch` is reused between calls, so nothing is allocated per
    /// piece. Each part keeps the rank of the pair it starts, so a heap
    /// entry whose pair has changed since it was pushed is recognised
    /// without looking the pair up again.
    fn merge_heap<O: MergeOrder>(
        &self,
        order: &O,
        piece: &[u8],
        scratch: &mut HeapScratch,
        out: &mut Vec<Rank>,
    ) {
        let n = piece.len();
        const NONE: u32 = u32::MAX;
        let HeapScratch { nodes, heap } = scratch;
        // Parts are identified by their first byte's index.
        nodes.clear();
        nodes.extend(piece.iter().enumerate().map(|(i, &b)| {
            Node {
                id: self.byte_ranks[b as usize],
                pair: piece
                    .get(i + 1)
                    .map_or(Rank::MAX, |&c| order.byte_pair(b, c)),
                next: i as u32 + 1,
                prev: if i == 0 { NONE } else { i as u32 - 1 },
            }
        }));
        heap.clear();
        heap.extend(
            nodes
                .iter()
                .enumerate()
                .filter(|(_, p)| p.pair != Rank::MAX)
                .map(|(i, p)| Reverse((p.pair, i as u32))),
        );
        // Heapifies the initial pairs in O(n).
        let mut queue = BinaryHeap::from(std::mem::take(heap));
        while let Some(Reverse((r, i))) = queue.pop() {
            let i = i as usize;
            // Stale entry: the part is gone (its pair is then Rank::MAX) or
            // its pair has changed.
            if nodes[i].pair != r {
                continue;
            }
            let gone = nodes[i].next as usize;
            let after = nodes[gone].next;
            let id = order.result(r);
            nodes[i].id = id;
            nodes[i].next = after;
            nodes[gone].pair = Rank::MAX;
            nodes[i].pair = if (after as usize) < n {
                nodes[after as usize].prev = i as u32;
                order.pair(id, nodes[after as usize].id)
            } else {
                Rank::MAX
            };
            if nodes[i].pair != Rank::MAX {
                queue.push(Reverse((nodes[i].pair, i as u32)));
            }
            let before = nodes[i].prev;
            if before != NONE {
                let before = before as usize;
                nodes[before].pair = order.pair(nodes[before].id, id);
                if nodes[before].pair != Rank::MAX {
                    queue.push(Reverse((nodes[before].pair, before as u32)));
                }
            }
        }
        // Keeps the heap's allocation for the next piece.
        *heap = queue.into_vec();
        let mut i = 0;
        while i < n {
            out.push(nodes[i].id);
            i = nodes[i].next as usize;
        }
    }

    /// Bytes of one token (ordinary or special).
    pub fn token_bytes(&self, id: Rank) -> Result<&[u8], CoreError> {
        if let Some(b) = self.ranks.get(id as usize).filter(|b| !b.is_empty()) {
            return Ok(b);
        }
        self.special_index
            .get(&id)
            .map(|&i| self.specials[i as usize].0.as_bytes())
            .ok_or(CoreError::UnknownToken(id))
    }

    /// Id of an exact token byte string (ordinary tokens, then specials).
    pub fn token_id(&self, bytes: &[u8]) -> Option<Rank> {
        if let Some(&r) = self.encoder.get(bytes) {
            return Some(r);
        }
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| self.special_id(s))
    }

    /// Concatenated bytes of `ids`.
    pub fn decode_bytes(&self, ids: &[Rank]) -> Result<Vec<u8>, CoreError> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            out.extend_from_slice(self.token_bytes(id)?);
        }
        Ok(out)
    }

    /// Decoded text; invalid UTF-8 (a token boundary inside a character) is
    /// replaced with U+FFFD, as tiktoken's `decode` does.
    pub fn decode(&self, ids: &[Rank]) -> Result<String, CoreError> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids)?).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pretokenize::SPLIT_PATTERN;

    /// A tiny vocabulary: all bytes, then a few merges.
    pub(crate) fn toy() -> Tokenizer {
        let mut ranks: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        for m in [
            "ab", "abc", "  ", "    ", "he", "hel", "hell", "hello", " w",
        ] {
            ranks.push(m.as_bytes().to_vec());
        }
        let n = ranks.len() as Rank;
        let specials = CHAT_SPECIAL_TOKENS
            .iter()
            .enumerate()
            .map(|(i, s)| (s.to_string(), n + i as Rank))
            .collect();
        Tokenizer::new(ranks, specials, SPLIT_PATTERN).unwrap()
    }

    #[test]
    fn keys_are_the_bytes_and_length() {
        for n in 0..=MID_KEY_MAX {
            let piece: Vec<u8> = (0..n as u8).map(|i| 0xa1u8.wrapping_add(17 * i)).collect();
            // The bytes, zero-padded, with the length in the top byte.
            let mut buf = [0u8; 16];
            buf[..n].copy_from_slice(&piece);
            if n <= 7 {
                buf[7] = n as u8;
                let expected = u64::from_le_bytes(buf[..8].try_into().unwrap());
                assert_eq!(short_key(&piece), Some(expected), "{n} bytes");
                assert_eq!(mid_key(&piece), None, "{n} bytes");
            } else {
                buf[15] = n as u8;
                assert_eq!(mid_key(&piece), Some(u128::from_le_bytes(buf)), "{n} bytes");
                assert_eq!(short_key(&piece), None, "{n} bytes");
            }
        }
        assert_eq!(mid_key(&[0u8; MID_KEY_MAX + 1]), None);
    }

    #[test]
    fn round_trips_and_merges() {
        let t = toy();
        let ids = t.encode_ordinary("hello abcab");
        assert_eq!(t.decode(&ids).unwrap(), "hello abcab");
        assert_eq!(ids[0], 256 + 7); // "hello" is one token
    }

    /// Plain BPE over byte slices: merge the lowest-ranked adjacent pair,
    /// leftmost first, until none is a token.
    fn reference_merge(t: &Tokenizer, piece: &[u8]) -> Vec<Rank> {
        let mut parts: Vec<&[u8]> = piece.chunks(1).collect();
        loop {
            let best = (0..parts.len().saturating_sub(1))
                .filter_map(|k| {
                    let joined = [parts[k], parts[k + 1]].concat();
                    t.encoder.get(&joined).map(|&r| (r, k))
                })
                .min();
            let Some((_, k)) = best else { break };
            let end = parts[k + 1].as_ptr() as usize - piece.as_ptr() as usize + parts[k + 1].len();
            let start = parts[k].as_ptr() as usize - piece.as_ptr() as usize;
            parts[k] = &piece[start..end];
            parts.remove(k + 1);
        }
        parts.iter().map(|p| t.encoder[*p]).collect()
    }

    #[test]
    fn merges_agree_with_plain_bpe() {
        let t = toy();
        let long = "ab".repeat(300) + &" ".repeat(517) + "abc";
        let mut heap = Vec::new();
        t.merge_heap(
            &ByRank(&t),
            long.as_bytes(),
            &mut HeapScratch::default(),
            &mut heap,
        );
        assert_eq!(heap, reference_merge(&t, long.as_bytes()));
        for piece in ["abcabab", "hellhello", "    ab   ", "xhelloabc"] {
            let mut small = Vec::new();
            t.merge_small(&ByRank(&t), piece.as_bytes(), &mut Vec::new(), &mut small);
            assert_eq!(small, reference_merge(&t, piece.as_bytes()), "{piece:?}");
            let mut heap = Vec::new();
            t.merge_heap(
                &ByRank(&t),
                piece.as_bytes(),
                &mut HeapScratch::default(),
                &mut heap,
            );
            assert_eq!(heap, small, "{piece:?}");
        }
    }

    #[test]
    fn merges_agree_with_plain_bpe_on_a_trained_vocabulary() {
        // A vocabulary trained on repetitive words, so that tokens of 8 to
        // 15 bytes and longer exist, ASCII and not: every way a merge looks
        // up a join (whole-token maps, the pair table) is exercised.
        let words = [
            " internationalization",
            " international",
            " nationally",
            " rationalize",
            " interrelationships",
            " relationship",
            " éléphantesque",
            " éléphant",
            " Привет",
            " приветствие",
            " 日本語の文章",
            " 日本語",
        ];
        let text: String = (0..40)
            .flat_map(|i| words.iter().skip(i % 3))
            .copied()
            .collect();
        let mut counts = FxHashMap::default();
        let splitter = crate::pretokenize::Splitter::new(SPLIT_PATTERN).unwrap();
        crate::train::count_pieces(&splitter, &[text.as_str()], &mut counts).unwrap();
        let ranks = crate::train::train(&counts, 330).unwrap();
        assert!(ranks.iter().any(|r| (8..=15).contains(&r.len())));
        assert!(ranks.iter().any(|r| r.len() > 15));
        let t = Tokenizer::new(ranks, vec![], SPLIT_PATTERN).unwrap();
        let mut state: u64 = 0x853C_49E6_748F_EA9B;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // One heap scratch for every piece: what a longer piece left in it
        // must not leak into the next.
        let (mut parts, mut heap, mut scratch) = (Vec::new(), HeapScratch::default(), Vec::new());
        for _ in 0..3000 {
            // A slice of the training text, sometimes with one byte changed.
            let bytes = text.as_bytes();
            let len = 2 + (next() % (SCAN_MERGE_MAX_LEN as u64 - 2)) as usize;
            let at = (next() % (bytes.len() - len) as u64) as usize;
            let mut piece = bytes[at..at + len].to_vec();
            if next() % 4 == 0 {
                let k = (next() % len as u64) as usize;
                piece[k] = piece[k].wrapping_add(1);
            }
            let expected = reference_merge(&t, &piece);
            scratch.clear();
            t.merge_small(&ByRank(&t), &piece, &mut parts, &mut scratch);
            assert_eq!(scratch, expected, "{piece:?}");
            scratch.clear();
            t.merge_heap(&ByRank(&t), &piece, &mut heap, &mut scratch);
            assert_eq!(scratch, expected, "{piece:?}");
        }
    }

    #[test]
    fn pair_table_finds_every_split() {
        // Long tokens whose prefixes and suffixes are long tokens too.
        let mut ranks: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        for len in [2usize, 3, 63, 64, 65, 66, 100, 130, 131, 200] {
            ranks.push(vec![b'a'; len]);
        }
        ranks.push([vec![b'a'; 65], b"xy".to_vec()].concat());
        ranks.push([b"xy".to_vec(), vec![b'a'; 130]].concat());
        ranks.push(b"y".repeat(70));
        let mut encoder = FxHashMap::default();
        for (r, b) in ranks.iter().enumerate() {
            encoder.insert(b.clone(), r as Rank);
        }
        let mut expected = FxHashMap::default();
        for (rank, bytes) in ranks.iter().enumerate() {
            for k in 1..bytes.len() {
                if let (Some(&a), Some(&b)) = (encoder.get(&bytes[..k]), encoder.get(&bytes[k..])) {
                    expected.insert(pair_key(a, b), rank as Rank);
                }
            }
        }
        assert_eq!(pair_table(&ranks, &encoder), expected);
    }

    #[test]
    fn a_disallowed_special_inside_an_allowed_one_is_found() {
        let ranks: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let specials = vec![("<|ab|>".to_string(), 256), ("b|".to_string(), 257)];
        let t = Tokenizer::new(ranks, specials, SPLIT_PATTERN).unwrap();
        // tiktoken refuses text where a disallowed special occurs anywhere,
        // also inside a longer allowed one.
        assert_eq!(
            t.encode("x<|ab|>", &["<|ab|>"]),
            Err(CoreError::DisallowedSpecial("b|".into()))
        );
        assert_eq!(t.encode("x<|ab|>", &["<|ab|>", "b|"]).unwrap()[1], 256);
        assert_eq!(
            t.encode_allowed("b|", &AllowedSpecials::All).unwrap(),
            vec![257]
        );
        assert_eq!(
            t.allowed_specials(["b|", "<|ab|>", "nope"]),
            AllowedSpecials::All
        );
        let none = t.allowed_specials([]);
        assert_eq!(
            t.encode_allowed("zb|", &none),
            Err(CoreError::DisallowedSpecial("b|".into()))
        );
        let some = t.allowed_specials(["b|"]);
        let rows: Vec<_> = ["<|ab|>", "b|", "x"]
            .iter()
            .map(|x| t.encode_allowed(x, &some))
            .collect();
        assert_eq!(rows[0], Err(CoreError::DisallowedSpecial("<|ab|>".into())));
        assert_eq!(rows[1], Ok(vec![257]));
        assert_eq!(rows[2], Ok(vec![b'x' as Rank]));
    }

    #[test]
    fn special_ids_decode_by_lookup() {
        let ranks: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let specials: Vec<(String, Rank)> = (0..5000u32)
            .map(|i| (format!("<|s{i}|>"), 256 + i))
            .collect();
        let t = Tokenizer::new(ranks, specials, SPLIT_PATTERN).unwrap();
        assert_eq!(t.vocab_size(), 256 + 5000);
        assert_eq!(t.token_bytes(256 + 4321).unwrap(), b"<|s4321|>");
        assert_eq!(
            t.token_bytes(256 + 5000),
            Err(CoreError::UnknownToken(5256))
        );
    }

    #[test]
    fn refuses_patterns_that_skip_text() {
        let ranks = || (0..=255u8).map(|b| vec![b]).collect::<Vec<_>>();
        for bad in ["", "(?!)", r"\p{L}+", r"\w+|\s+", r"[^\n]+"] {
            match Tokenizer::new(ranks(), vec![], bad) {
                Err(CoreError::Pattern(m)) => {
                    assert!(m.contains("does not match every character"), "{m}")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        for good in [r"\S+|\s+", r"(?s).", r"\p{L}+|\p{N}|[^\p{L}\p{N}]+"] {
            assert!(Tokenizer::new(ranks(), vec![], good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn specials_need_permission() {
        let t = toy();
        assert!(matches!(
            t.encode("x<|bos|>y", &[]),
            Err(CoreError::DisallowedSpecial(_))
        ));
        let ids = t.encode("x<|bos|>y", &["<|bos|>"]).unwrap();
        assert_eq!(ids[1], t.special_id("<|bos|>").unwrap());
        // Encoded as text: "<|", "bos", "|>" with no merges in the toy vocabulary.
        assert_eq!(t.encode_ordinary("<|bos|>").len(), 7);
    }

    #[test]
    fn rejects_bad_vocabularies() {
        let ranks: Vec<Vec<u8>> = (0..=254u8).map(|b| vec![b]).collect();
        assert!(Tokenizer::new(ranks, vec![], SPLIT_PATTERN).is_err());
        let mut ranks: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        ranks.push(b"a".to_vec());
        assert!(Tokenizer::new(ranks, vec![], SPLIT_PATTERN).is_err());
        assert!(toy().decode(&[1_000_000]).is_err());
    }
}

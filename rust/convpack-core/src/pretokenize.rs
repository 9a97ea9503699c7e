//! Splitting text into pieces before BPE.
//!
//! Two implementations of the same contract (return the byte ranges that the
//! split pattern's `find_iter` would return):
//!
//! * [`GptSplitter`]: a hand-written scanner for the GPT-4 pattern family
//!   (nanochat's default with `\p{N}{1,2}` and cl100k's with `\p{N}{1,3}`). It
//!   classifies characters through a table built from the regex engine's own
//!   Unicode data, so it agrees with the regex character classes exactly.
//! * [`O200kSplitter`]: the same for o200k's case-aware pattern (GPT-4o,
//!   GPT-OSS), with its own table of letter cases and marks.
//! * a general `fancy_regex` fallback for any other pattern.

use std::sync::OnceLock;

use fancy_regex::Regex;

use crate::error::CoreError;

/// nanochat's split pattern: GPT-4's, except numbers are split in groups of
/// at most two digits (smaller vocabularies waste fewer tokens on numbers).
pub const SPLIT_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";

/// cl100k_base's split pattern (GPT-4).
pub const CL100K_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";

/// Character classes that the GPT-4 pattern family distinguishes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Class {
    Letter = 0,
    Number = 1,
    /// Unicode `White_Space` (the regex `\s`), except `\r` and `\n`.
    Space = 2,
    /// `\r` or `\n`.
    Newline = 3,
    Other = 4,
}

/// A class code per code point: a direct table for the BMP, sorted
/// disjoint ranges above it, `other` for everything not listed.
struct CodeTable {
    /// One code per code point below 0x10000.
    bmp: Vec<u8>,
    /// Sorted, disjoint ranges above the BMP, with their code.
    astral: Vec<(u32, u32, u8)>,
    other: u8,
}

fn unicode_ranges(class: &str) -> Vec<(u32, u32)> {
    use regex_syntax::hir::{Class as HirClass, HirKind};
    // The pattern is a constant the parser always accepts.
    let hir = regex_syntax::Parser::new()
        .parse(class)
        .expect("constant character class parses");
    match hir.kind() {
        HirKind::Class(HirClass::Unicode(c)) => c
            .ranges()
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect(),
        _ => unreachable!("a \\p{{..}} class is a Unicode class"),
    }
}

impl CodeTable {
    /// Codes from the regex engine's own Unicode data: each character
    /// class in `sets` (later ones win; the callers' sets are disjoint),
    /// then `\r` and `\n` as `newline`.
    fn build(sets: &[(&str, u8)], newline: u8, other: u8) -> CodeTable {
        let mut bmp = vec![other; 0x10000];
        let mut astral = Vec::new();
        for &(pattern, code) in sets {
            for (lo, hi) in unicode_ranges(pattern) {
                if lo < 0x10000 {
                    for cp in lo..=hi.min(0xFFFF) {
                        bmp[cp as usize] = code;
                    }
                }
                if hi >= 0x10000 {
                    astral.push((lo.max(0x10000), hi, code));
                }
            }
        }
        bmp['\r' as usize] = newline;
        bmp['\n' as usize] = newline;
        astral.sort_unstable_by_key(|r| r.0);
        CodeTable { bmp, astral, other }
    }

    #[inline(always)]
    fn code(&self, c: char) -> u8 {
        let cp = c as u32;
        if cp < 0x10000 {
            return self.bmp[cp as usize];
        }
        match self.astral.binary_search_by(|&(lo, hi, _)| {
            if hi < cp {
                std::cmp::Ordering::Less
            } else if lo > cp {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        }) {
            Ok(i) => self.astral[i].2,
            Err(_) => self.other,
        }
    }
}

/// The GPT-4 family's classes.
struct ClassTable(CodeTable);

fn class_table() -> &'static ClassTable {
    static TABLE: OnceLock<ClassTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        ClassTable(CodeTable::build(
            &[
                (r"\p{L}", Class::Letter as u8),
                (r"\p{N}", Class::Number as u8),
                (r"\s", Class::Space as u8),
            ],
            Class::Newline as u8,
            Class::Other as u8,
        ))
    })
}

impl ClassTable {
    #[inline]
    fn class(&self, c: char) -> Class {
        // Every stored code is a `Class` discriminant.
        match self.0.code(c) {
            0 => Class::Letter,
            1 => Class::Number,
            2 => Class::Space,
            3 => Class::Newline,
            _ => Class::Other,
        }
    }
}

/// Hand-written scanner equivalent to the GPT-4 split pattern with
/// `\p{N}{1,max_digits}`, and, with `run_to_end`, tiktoken's extra
/// alternative `\s++$` (a whitespace run that reaches the end of the text is
/// one piece, newlines included).
#[derive(Clone, Debug)]
pub struct GptSplitter {
    max_digits: usize,
    run_to_end: bool,
}

/// A decoded character with its byte offset and class.
#[derive(Clone, Copy)]
struct Ch {
    c: char,
    class: Class,
}

struct Cursor<'a> {
    text: &'a str,
    table: &'static ClassTable,
}

impl<'a> Cursor<'a> {
    #[inline(always)]
    fn at(&self, pos: usize) -> Option<(Ch, usize)> {
        let bytes = self.text.as_bytes();
        let b = *bytes.get(pos)?;
        if b < 0x80 {
            let c = b as char;
            return Some((
                Ch {
                    c,
                    class: self.table.class(c),
                },
                1,
            ));
        }
        // `pos` is always on a char boundary: the scanner only advances by
        // whole characters.
        let c = self.text[pos..].chars().next()?;
        Some((
            Ch {
                c,
                class: self.table.class(c),
            },
            c.len_utf8(),
        ))
    }
}

impl GptSplitter {
    pub fn new(max_digits: usize, run_to_end: bool) -> Self {
        GptSplitter {
            max_digits,
            run_to_end,
        }
    }

    /// Calls `f` with every piece of `text`, in order. The pieces cover the
    /// text exactly.
    pub fn split<'t>(&self, text: &'t str, mut f: impl FnMut(&'t str)) {
        let cur = Cursor {
            text,
            table: class_table(),
        };
        let mut pos = 0;
        while pos < text.len() {
            let end = self.match_at(&cur, pos);
            debug_assert!(end > pos);
            f(&text[pos..end]);
            pos = end;
        }
    }

    /// End of the match that the pattern's alternation finds at `pos`
    /// (leftmost-first: the first alternative that matches wins).
    fn match_at(&self, cur: &Cursor, pos: usize) -> usize {
        let (first, first_len) = match cur.at(pos) {
            Some(x) => x,
            None => return pos,
        };
        // 1. '(?i:[sdmt]|ll|ve|re)
        if first.c == '\'' {
            if let Some(end) = contraction(cur, pos + 1) {
                return end;
            }
        }
        match first.class {
            Class::Letter => return letters(cur, pos + first_len),
            Class::Number => {
                // 3. \p{N}{1,max}
                let mut end = pos + first_len;
                let mut n = 1;
                while n < self.max_digits {
                    match cur.at(end) {
                        Some((ch, l)) if ch.class == Class::Number => {
                            end += l;
                            n += 1;
                        }
                        _ => break,
                    }
                }
                return end;
            }
            Class::Other => {
                // 2. [^\r\n\p{L}\p{N}]?+\p{L}+ : the optional char is taken
                // possessively, so letters must follow it directly.
                if let Some((ch, _)) = cur.at(pos + first_len) {
                    if ch.class == Class::Letter {
                        return letters(cur, pos + first_len);
                    }
                }
                // 4. ` ?[^\s\p{L}\p{N}]++[\r\n]*` without the leading space.
                return punctuation(cur, pos);
            }
            Class::Space => {
                // 2. a whitespace char that is not \r or \n may lead letters.
                if let Some((ch, _)) = cur.at(pos + first_len) {
                    if ch.class == Class::Letter {
                        return letters(cur, pos + first_len);
                    }
                    // 4. with the optional leading space.
                    if first.c == ' ' && ch.class == Class::Other {
                        return punctuation(cur, pos + first_len);
                    }
                }
            }
            Class::Newline => {}
        }
        // Whitespace (first is \s): alternatives 5, 6, 7.
        let kind = |at: usize| match cur.at(at) {
            Some((ch, l)) if ch.class == Class::Space => Some((false, l)),
            Some((ch, l)) if ch.class == Class::Newline => Some((true, l)),
            _ => None,
        };
        whitespace_end(pos, cur.text.len(), self.run_to_end, kind)
    }
}

/// End of the whitespace piece at `pos`: `\s++$` when `run_to_end` (a run
/// reaching the end of the text is one piece), then `\s*[\r\n]+` (up to
/// the run's last newline), `\s+(?!\S)` (all but the run's last char,
/// unless the run ends the text), `\s+`. `kind(at)` is `Some((is \r or
/// \n, its length))` for a whitespace char at `at`, `None` otherwise.
#[inline]
fn whitespace_end(
    pos: usize,
    text_len: usize,
    run_to_end: bool,
    kind: impl Fn(usize) -> Option<(bool, usize)>,
) -> usize {
    let mut end = pos;
    let mut last_newline_end = None;
    let mut last_char_start = pos;
    let mut count = 0usize;
    while let Some((newline, l)) = kind(end) {
        if newline {
            last_newline_end = Some(end + l);
        }
        last_char_start = end;
        end += l;
        count += 1;
    }
    if run_to_end && end == text_len {
        return end;
    }
    if let Some(e) = last_newline_end {
        return e;
    }
    if end == text_len || count < 2 {
        // A lone whitespace char before a non-space, or the run at the end.
        return end;
    }
    last_char_start
}

#[inline]
fn letters(cur: &Cursor, mut end: usize) -> usize {
    // ASCII letters byte by byte (the only ASCII in \p{L}); a non-ASCII
    // character continues through the full decode.
    let bytes = cur.text.as_bytes();
    // Eight bytes at a time while a whole word fits (most English words do).
    while let Some(chunk) = bytes.get(end..end + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let n = ascii_letters_prefix(u64::from_le_bytes(word));
        end += n;
        if n < 8 {
            break;
        }
    }
    while end < bytes.len() && bytes[end].is_ascii_alphabetic() {
        end += 1;
    }
    if bytes.get(end).is_none_or(|&b| b < 0x80) {
        return end;
    }
    while let Some((ch, l)) = cur.at(end) {
        if ch.class != Class::Letter {
            break;
        }
        end += l;
    }
    end
}

/// How many of the eight bytes of `w` (little-endian: the first byte is the
/// lowest) are ASCII letters before the first byte that is not one.
#[inline(always)]
fn ascii_letters_prefix(w: u64) -> usize {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const fn splat(b: u8) -> u64 {
        b as u64 * 0x0101_0101_0101_0101
    }
    // Lowercase every byte's 0x20 bit and drop its high bit, so the sums
    // below stay inside their byte; the high bit of `w` is checked apart.
    let y = (w | splat(0x20)) & LOW7;
    // High bit of each byte: set where y >= 'a', and where y > 'z'.
    let at_least_a = y + splat(0x80 - b'a');
    let above_z = y + splat(0x80 - b'z' - 1);
    let letters = at_least_a & !above_z & !w & HIGH;
    ((!letters & HIGH).trailing_zeros() / 8) as usize
}

/// `[^\s\p{L}\p{N}]++[\r\n]*` starting at `pos` (which holds an `Other`).
#[inline]
fn punctuation(cur: &Cursor, mut end: usize) -> usize {
    while let Some((ch, l)) = cur.at(end) {
        if ch.class != Class::Other {
            break;
        }
        end += l;
    }
    while let Some((ch, l)) = cur.at(end) {
        if ch.class != Class::Newline {
            break;
        }
        end += l;
    }
    end
}

/// After an apostrophe at `pos - 1`: `(?i:[sdmt]|ll|ve|re)`, case-insensitive
/// with Unicode simple case folding (so U+017F LONG S matches `s`).
fn contraction(cur: &Cursor, pos: usize) -> Option<usize> {
    let (a, la) = cur.at(pos)?;
    let fold = |c: char| -> char {
        match c {
            '\u{17F}' => 's',
            _ => c.to_ascii_lowercase(),
        }
    };
    let a = fold(a.c);
    if matches!(a, 's' | 'd' | 'm' | 't') {
        return Some(pos + la);
    }
    let (b, lb) = cur.at(pos + la)?;
    let b = fold(b.c);
    match (a, b) {
        ('l', 'l') | ('v', 'e') | ('r', 'e') => Some(pos + la + lb),
        _ => None,
    }
}

/// o200k_base's split pattern (tiktoken's and `tokenizer.json`'s spelling).
pub const O200K_PATTERN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n/]*",
    r"|\s*[\r\n]+",
    r"|\s+(?!\S)",
    r"|\s+",
);

/// Character classes of the o200k pattern. `Upper` chars are in its
/// "upper" set `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]` only, `Lower` in its
/// "lower" set `[\p{Ll}\p{Lm}\p{Lo}\p{M}]` only; `Both` letters (`Lm`,
/// `Lo`) and `Mark`s are in both sets, and marks are not `\p{L}`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Oc {
    Upper = 0,
    Lower = 1,
    Both = 2,
    Mark = 3,
    Number = 4,
    /// `\s` except `\r` and `\n`.
    Space = 5,
    Newline = 6,
    Other = 7,
}

impl Oc {
    #[inline(always)]
    fn upper(self) -> bool {
        matches!(self, Oc::Upper | Oc::Both | Oc::Mark)
    }
    #[inline(always)]
    fn lower(self) -> bool {
        matches!(self, Oc::Lower | Oc::Both | Oc::Mark)
    }
    /// `[^\r\n\p{L}\p{N}]`: the optional char before a word.
    #[inline(always)]
    fn lead(self) -> bool {
        matches!(self, Oc::Mark | Oc::Space | Oc::Other)
    }
    /// `[^\s\p{L}\p{N}]`: punctuation.
    #[inline(always)]
    fn punct(self) -> bool {
        matches!(self, Oc::Mark | Oc::Other)
    }
}

/// The o200k pattern's classes.
struct O200kTable(CodeTable);

fn o200k_table() -> &'static O200kTable {
    static TABLE: OnceLock<O200kTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        // The general categories are disjoint, and disjoint from \s.
        O200kTable(CodeTable::build(
            &[
                (r"[\p{Lu}\p{Lt}]", Oc::Upper as u8),
                (r"\p{Ll}", Oc::Lower as u8),
                (r"[\p{Lm}\p{Lo}]", Oc::Both as u8),
                (r"\p{M}", Oc::Mark as u8),
                (r"\p{N}", Oc::Number as u8),
                (r"\s", Oc::Space as u8),
            ],
            Oc::Newline as u8,
            Oc::Other as u8,
        ))
    })
}

impl O200kTable {
    #[inline(always)]
    fn class(&self, c: char) -> Oc {
        const BY_CODE: [Oc; 8] = [
            Oc::Upper,
            Oc::Lower,
            Oc::Both,
            Oc::Mark,
            Oc::Number,
            Oc::Space,
            Oc::Newline,
            Oc::Other,
        ];
        BY_CODE[self.0.code(c) as usize & 7]
    }
}

/// Hand-written scanner equivalent to [`O200K_PATTERN`]'s `find_iter`.
#[derive(Clone, Debug, Default)]
pub struct O200kSplitter;

struct OCursor<'a> {
    text: &'a str,
    table: &'static O200kTable,
}

impl OCursor<'_> {
    /// The char at `pos` (a char boundary), its class and length.
    #[inline(always)]
    fn at(&self, pos: usize) -> Option<(char, Oc, usize)> {
        let b = *self.text.as_bytes().get(pos)?;
        if b < 0x80 {
            let c = b as char;
            return Some((c, self.table.class(c), 1));
        }
        let c = self.text[pos..].chars().next()?;
        Some((c, self.table.class(c), c.len_utf8()))
    }

    /// End of the run of chars from `pos` whose class passes `keep`.
    #[inline(always)]
    fn run(&self, mut pos: usize, keep: impl Fn(Oc) -> bool) -> usize {
        let bytes = self.text.as_bytes();
        // ASCII letters of one case, byte by byte, without the table.
        while let Some(&b) = bytes.get(pos) {
            let class = if b.is_ascii_lowercase() {
                Oc::Lower
            } else if b.is_ascii_uppercase() {
                Oc::Upper
            } else {
                break;
            };
            if !keep(class) {
                return pos;
            }
            pos += 1;
        }
        while let Some((_, class, l)) = self.at(pos) {
            if !keep(class) {
                break;
            }
            pos += l;
        }
        pos
    }

    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)?` at `pos`.
    #[inline]
    fn contraction(&self, pos: usize) -> usize {
        if self.text.as_bytes().get(pos) != Some(&b'\'') {
            return pos;
        }
        let chars = |p: usize| self.at(p).map(|(c, _, l)| (c, l));
        let fold = |c: char| {
            if c == '\u{17F}' {
                's'
            } else {
                c.to_ascii_lowercase()
            }
        };
        let Some((a, la)) = chars(pos + 1) else {
            return pos;
        };
        let a = fold(a);
        if matches!(a, 's' | 't' | 'm' | 'd') {
            return pos + 1 + la;
        }
        match chars(pos + 1 + la) {
            Some((b, lb)) if matches!((a, fold(b)), ('r', 'e') | ('v', 'e') | ('l', 'l')) => {
                pos + 1 + la + lb
            }
            _ => pos,
        }
    }

    /// `upper* lower+` from `start`, as the regex engine backtracks: the
    /// longest run of upper chars, then lower chars after it; or else, when
    /// no lower char follows the run, the run up to its last char that is
    /// lower too.
    #[inline]
    fn upper_then_lower(&self, start: usize) -> Option<usize> {
        let bytes = self.text.as_bytes();
        // The common case: ASCII capitals (none is lower) then a lowercase.
        let mut p = start;
        while bytes.get(p).is_some_and(|b| b.is_ascii_uppercase()) {
            p += 1;
        }
        if bytes.get(p).is_some_and(|b| b.is_ascii_lowercase()) {
            return Some(self.run(p, Oc::lower));
        }
        let mut last_lower = None;
        while let Some((_, class, l)) = self.at(p) {
            if !class.upper() {
                if class.lower() {
                    return Some(self.run(p, Oc::lower));
                }
                break;
            }
            if class.lower() {
                last_lower = Some(p + l);
            }
            p += l;
        }
        last_lower
    }

    /// `upper+ lower*` from `start`.
    #[inline]
    fn upper_plus(&self, start: usize) -> Option<usize> {
        let end = self.run(start, Oc::upper);
        (end > start).then(|| self.run(end, Oc::lower))
    }
}

impl O200kSplitter {
    /// Calls `f` with every piece of `text`, in order. The pieces cover the
    /// text exactly.
    pub fn split<'t>(&self, text: &'t str, mut f: impl FnMut(&'t str)) {
        let cur = OCursor {
            text,
            table: o200k_table(),
        };
        let mut pos = 0;
        while pos < text.len() {
            let end = Self::match_at(&cur, pos);
            debug_assert!(end > pos);
            f(&text[pos..end]);
            pos = end;
        }
    }

    /// End of the match at `pos`: the first alternative that matches, each
    /// tried in the regex engine's backtracking order.
    fn match_at(cur: &OCursor, pos: usize) -> usize {
        let Some((c, class, len)) = cur.at(pos) else {
            return pos;
        };
        let lead = class.lead();
        // 1. lead? upper* lower+ contraction?
        if lead {
            if let Some(end) = cur.upper_then_lower(pos + len) {
                return cur.contraction(end);
            }
        }
        if class.upper() || class.lower() {
            if let Some(end) = cur.upper_then_lower(pos) {
                return cur.contraction(end);
            }
        }
        // 2. lead? upper+ lower* contraction?
        if lead {
            if let Some(end) = cur.upper_plus(pos + len) {
                return cur.contraction(end);
            }
        }
        if let Some(end) = cur.upper_plus(pos) {
            return cur.contraction(end);
        }
        // 3. \p{N}{1,3}
        if class == Oc::Number {
            let mut end = pos + len;
            for _ in 0..2 {
                match cur.at(end) {
                    Some((_, Oc::Number, l)) => end += l,
                    _ => break,
                }
            }
            return end;
        }
        // 4. ` ?[^\s\p{L}\p{N}]+[\r\n/]*`
        let punct_from = if class.punct() {
            Some(pos)
        } else if c == ' ' && cur.at(pos + 1).is_some_and(|(_, k, _)| k.punct()) {
            Some(pos + 1)
        } else {
            None
        };
        if let Some(from) = punct_from {
            let end = cur.run(from, Oc::punct);
            let bytes = cur.text.as_bytes();
            let mut end = end;
            while bytes
                .get(end)
                .is_some_and(|&b| matches!(b, b'\r' | b'\n' | b'/'))
            {
                end += 1;
            }
            return end;
        }
        // Whitespace: 5. \s*[\r\n]+  6. \s+(?!\S)  7. \s+
        let kind = |at: usize| match cur.at(at) {
            Some((_, Oc::Space, l)) => Some((false, l)),
            Some((_, Oc::Newline, l)) => Some((true, l)),
            _ => None,
        };
        whitespace_end(pos, cur.text.len(), false, kind)
    }
}

/// cl100k_base's split pattern as tiktoken spells it. It splits like
/// [`CL100K_PATTERN`] except at the end of the text, where `\s++$` keeps a
/// whitespace run with newlines in one piece.
pub const CL100K_TIKTOKEN_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";

/// The GPT-4 pattern as it is commonly written elsewhere (no possessive
/// quantifiers, the contractions spelled out): the same splits as
/// [`CL100K_PATTERN`].
pub const GPT4_PATTERN_PLAIN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen 2's (and Qwen 2.5's, Qwen 3's) spelling in `tokenizer.json`: GPT-4's
/// plain spelling with one digit per number piece.
pub const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Spellings the hand-written scanner serves: (pattern, name, digits per
/// number piece, `\s++$`). Each is proven equal to the general regex engine
/// on the same string by the tests below; any other pattern uses the engine.
const FAST_PATTERNS: [(&str, &str, usize, bool); 5] = [
    (SPLIT_PATTERN, "nanochat", 2, false),
    (CL100K_PATTERN, "gpt4", 3, false),
    (GPT4_PATTERN_PLAIN, "gpt4", 3, false),
    (CL100K_TIKTOKEN_PATTERN, "cl100k_base", 3, true),
    (QWEN2_PATTERN, "qwen2", 1, false),
];

/// Splits text with a pattern: the hand-written scanner where the pattern is
/// one it implements, the general regex engine otherwise.
#[derive(Clone, Debug)]
pub enum Splitter {
    /// The scanner, with the name of the pattern family it implements.
    Gpt(GptSplitter, &'static str),
    /// The o200k scanner.
    O200k(O200kSplitter),
    Regex(Box<Regex>),
}

impl Splitter {
    pub fn new(pattern: &str) -> Result<Self, CoreError> {
        match FAST_PATTERNS.iter().find(|p| p.0 == pattern) {
            Some(&(_, name, digits, run_to_end)) => {
                Ok(Splitter::Gpt(GptSplitter::new(digits, run_to_end), name))
            }
            None if pattern == O200K_PATTERN => Ok(Splitter::O200k(O200kSplitter)),
            None => Self::new_regex(pattern),
        }
    }

    /// Which path splits text: `"fast:<name>"` for the scanner, `"regex"`
    /// for the general engine.
    pub fn path(&self) -> String {
        match self {
            Splitter::Gpt(_, name) => format!("fast:{name}"),
            Splitter::O200k(_) => "fast:o200k".to_string(),
            Splitter::Regex(_) => "regex".to_string(),
        }
    }

    /// Always uses the general regex engine (for tests and odd patterns).
    pub fn new_regex(pattern: &str) -> Result<Self, CoreError> {
        Regex::new(pattern)
            .map(|r| Splitter::Regex(Box::new(r)))
            .map_err(|e| CoreError::Pattern(format!("invalid split pattern: {e}")))
    }

    /// Calls `f` with every piece. Text the regex does not match is skipped,
    /// as `find_iter` skips it.
    pub fn split<'t>(&self, text: &'t str, mut f: impl FnMut(&'t str)) -> Result<(), CoreError> {
        match self {
            Splitter::Gpt(s, _) => {
                s.split(text, f);
                Ok(())
            }
            Splitter::O200k(s) => {
                s.split(text, f);
                Ok(())
            }
            Splitter::Regex(re) => {
                for m in re.find_iter(text) {
                    let m =
                        m.map_err(|e| CoreError::Pattern(format!("split pattern failed: {e}")))?;
                    f(m.as_str());
                }
                Ok(())
            }
        }
    }

    pub fn pieces<'t>(&self, text: &'t str) -> Result<Vec<&'t str>, CoreError> {
        let mut out = Vec::new();
        self.split(text, |p| out.push(p))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every pattern a scanner serves.
    fn scanned() -> Vec<&'static str> {
        let mut all: Vec<&str> = FAST_PATTERNS.iter().map(|p| p.0).collect();
        all.push(O200K_PATTERN);
        all
    }

    fn pair(pattern: &str) -> (Splitter, Splitter) {
        let fast = Splitter::new(pattern).unwrap();
        assert!(!matches!(fast, Splitter::Regex(..)), "{pattern}");
        (fast, Splitter::new_regex(pattern).unwrap())
    }

    fn check((fast, slow): &(Splitter, Splitter), text: &str) {
        assert_eq!(
            fast.pieces(text).unwrap(),
            slow.pieces(text).unwrap(),
            "text {text:?}"
        );
    }

    #[test]
    fn ascii_letters_prefix_counts_like_byte_by_byte() {
        // Every byte value at every position, after a prefix of letters.
        for at in 0..8 {
            for b in 0..=255u8 {
                let mut w = *b"abcXYZqz";
                w[at] = b;
                let expected = w.iter().take_while(|c| c.is_ascii_alphabetic()).count();
                assert_eq!(
                    ascii_letters_prefix(u64::from_le_bytes(w)),
                    expected,
                    "byte {b:#04x} at {at}"
                );
            }
        }
    }

    #[test]
    fn matches_regex_on_tricky_strings() {
        let cases = [
            "Hello world",
            "I'm here, they'LL go; we'Ve 'RE 'd 'ſ",
            "  leading and trailing   ",
            "a\r\n\r\nb \n c\t\t\nd",
            "12345 678 9\u{0663}\u{0664}\u{0665}",
            "x   y",
            "   \u{a0}\u{3000}z",
            "!!!\n\n??? ...",
            " !\r\n",
            "'hello 'x 's",
            "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467} \u{1F44D}\u{1F3FD}",
            "e\u{301}\u{301}a",
            "日本語のテキスト、漢字。",
            "مرحبا بالعالم",
            "नमस्ते दुनिया",
            "def f(x):\n    return x ** 2\n\n\n",
            " ",
            "\n",
            "",
            "a ",
            " \u{1D400}\u{1D7CE}",
            "a \n ",
            "x\r\n\t ",
            "end \n\n",
            "y \n z",
            "HELLOworld HelloWorld HELLO'S don'T ǅemal ʰa ABCʰ Ɐ\u{301}x",
            "a/b //\n/ c\r\n/ ./\n\n x \u{301}\u{301}A \u{301}abc",
            "'Ll 'VE 'ſ I'M\u{301}'re",
        ];
        for pattern in scanned() {
            let splitters = pair(pattern);
            for t in cases {
                check(&splitters, t);
            }
        }
    }

    #[test]
    fn matches_regex_on_random_text() {
        // A small deterministic generator over an alphabet that hits every
        // class boundary the scanner handles.
        let alphabet: Vec<char> = "aZ'sSdmtlLvVerR ſ\t\r\n\u{a0}\u{3000}09\u{663}\u{2167}.,!?-_/\u{301}\u{1F600}\u{200D}日é\u{10400}\u{1D7CE}\u{85}\u{2028}ǅʰÉ\u{1E900}\u{1E922}\u{16F93}"
            .chars()
            .collect();
        let mut state: u64 = 0x9E3779B97F4A7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let splitters: Vec<_> = scanned().into_iter().map(pair).collect();
        for _ in 0..5000 {
            let len = (next() % 24) as usize;
            let s: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            for sp in &splitters {
                check(sp, &s);
            }
        }
    }
}

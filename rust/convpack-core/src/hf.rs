//! Hugging Face `tokenizer.json` BPE models on the rank encoder.
//!
//! `tokenizers` merges only the pairs its merges list names, lowest list
//! index first (leftmost among occurrences of that pair); the rank encoder
//! merges any two tokens that concatenate to a token, lowest id of the
//! result first, leftmost on a tie. Call `t`'s *rank split* the parts that
//! rank-merging `t`'s bytes with only the tokens of lower id ends in. The
//! two encoders agree when
//!
//! 1. the merges' results have non-decreasing ids in list order (all the
//!    merges making one token are consecutive, as in files converted from
//!    tiktoken ranks, which list every split of a token);
//! 2. every token of two or more bytes has a rank split of exactly two
//!    parts `(a, b)`, and that pair is listed;
//! 3. no split `(b, c)` of a token `t = a + b` is listed before `t`'s rank
//!    split `(a, b)` when rank-merging the bytes of `a + b + c` passes
//!    through the parts `[a, b, c]`.
//!
//! Why. (i) The rank encoder builds a token only from its rank split:
//! while it builds `t` of id `r`, no merge crosses `t`'s span, and every
//! merge inside it was the lowest at its time, so the parts inside evolve
//! as `t`'s bytes alone would; until they are the rank split every inside
//! pair below `r` is merged first, and the rank split's only pair is `t`.
//! (ii) Once the lowest pair present makes `t`, no later merge is below
//! `r`: such a merge would join a part built since (id at least `r`) into
//! a token of lower id, which (i) and the rank split's lower ids exclude.
//! (iii) So if another split `(x, y)` of `t` is present when the rank
//! encoder merges `t`'s rank split, it can only disappear by merging `x`
//! with its left neighbour into `t` again, by the rank split: the parts
//! are `[a, b, c]` with `x = b`, which (3) rules out for splits listed
//! before the rank split (the rank split wins `tokenizers`' order
//! otherwise). Every state of a piece holding `[a, b, c]` passes through
//! it when rank-merging `a + b + c` alone (the argument of (i) for that
//! span). (iv) At each step, then, the pair `tokenizers` picks (lowest
//! index, by (1) among the splits of the lowest result id, by (iii) the
//! rank split, listed by (2)) is the rank encoder's pick, at the same
//! (leftmost) place. Under (2) a token's own bytes merge to the token, so
//! a whole-piece lookup first changes nothing even without
//! `ignore_merges`.
//!
//! [`check_merges_follow_ranks`] decides (1)-(3) at load time; a file that
//! fails merges by its list ([`crate::bpe::Tokenizer::with_merge_list`]),
//! never by rank with other ids than `tokenizers`'.

use rustc_hash::FxHashMap;

use crate::bpe::Rank;

/// Longest token the load-time check merges (the check is quadratic in a
/// token's length; real vocabularies stay far below this).
pub const MAX_CHECKED_TOKEN_LEN: usize = 1024;

/// The bytes GPT-2's ByteLevel alphabet does not spell as themselves (the
/// controls, space, DEL to NBSP and the soft hyphen), in byte order: the
/// `n`th of them is spelled `U+0100 + n`.
const BYTE_LEVEL_SHIFTED: [u8; 68] = {
    let mut out = [0u8; 68];
    let (mut b, mut n) = (0usize, 0usize);
    while b < 256 {
        if !byte_level_printable(b as u32) {
            out[n] = b as u8;
            n += 1;
        }
        b += 1;
    }
    out
};

/// Bytes that a ByteLevel vocabulary spells as the character of the same
/// code point.
const fn byte_level_printable(c: u32) -> bool {
    matches!(c, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The byte that the character `c` spells in a ByteLevel vocabulary
/// (`tokenizer.json` files of GPT-2's lineage), or `None` for a character
/// outside that alphabet.
#[inline]
pub fn byte_level_byte(c: char) -> Option<u8> {
    let c = c as u32;
    if byte_level_printable(c) {
        return Some(c as u8);
    }
    BYTE_LEVEL_SHIFTED
        .get(c.checked_sub(0x100)? as usize)
        .copied()
}

/// The character that spells the byte `b` in a ByteLevel vocabulary (the
/// inverse of [`byte_level_byte`]).
pub fn byte_level_char(b: u8) -> char {
    if byte_level_printable(b as u32) {
        return b as char;
    }
    // Every byte that is not printable is in the table.
    let n = BYTE_LEVEL_SHIFTED.iter().position(|&x| x == b).unwrap_or(0);
    char::from_u32(0x100 + n as u32).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// A ByteLevel token's bytes, written over `out`; false (with `out`
/// unspecified) when a character is outside the alphabet.
pub fn byte_level_bytes(token: &str, out: &mut Vec<u8>) -> bool {
    out.clear();
    for c in token.chars() {
        match byte_level_byte(c) {
            Some(b) => out.push(b),
            None => return false,
        }
    }
    true
}

/// Rank-merges `bytes` with only the tokens of id below `limit`, calling
/// `seen` with the part boundaries (parts are `bytes[b[i]..b[i + 1]]`)
/// before each merge and at the end; stops early when `seen` returns true.
/// Returns the final boundaries.
fn merge_below(
    bytes: &[u8],
    limit: Rank,
    encoder: &FxHashMap<&[u8], Rank>,
    mut seen: impl FnMut(&[usize]) -> bool,
) -> Vec<usize> {
    let mut bounds: Vec<usize> = (0..=bytes.len()).collect();
    loop {
        if seen(&bounds) {
            break;
        }
        let mut best: Option<(Rank, usize)> = None;
        for i in 0..bounds.len().saturating_sub(2) {
            if let Some(&r) = encoder.get(&bytes[bounds[i]..bounds[i + 2]]) {
                if r < limit && best.is_none_or(|(b, _)| r < b) {
                    best = Some((r, i));
                }
            }
        }
        match best {
            Some((_, i)) => {
                bounds.remove(i + 1);
            }
            None => break,
        }
    }
    bounds
}

/// Checks that a merges list is equivalent to merging by rank (conditions
/// (1)-(3) of the module docs). `ranks[i]` are the bytes of token `i`
/// (empty: no token); `merges` are `(left id, right id)` in list order. The
/// error names the merge or token that breaks the equivalence.
pub fn check_merges_follow_ranks(ranks: &[Vec<u8>], merges: &[(Rank, Rank)]) -> Result<(), String> {
    let mut encoder: FxHashMap<&[u8], Rank> = FxHashMap::default();
    for (id, bytes) in ranks.iter().enumerate() {
        if !bytes.is_empty() {
            encoder.insert(bytes.as_slice(), id as Rank);
        }
    }
    let token = |id: Rank, i: usize| -> Result<&[u8], String> {
        match ranks.get(id as usize) {
            Some(b) if !b.is_empty() => Ok(b.as_slice()),
            _ => Err(format!(
                "merge {i} names id {id}, which is not a token of the vocabulary"
            )),
        }
    };
    // Condition (1), and each merge's result.
    let mut results: Vec<Rank> = Vec::with_capacity(merges.len());
    let mut joined = Vec::new();
    for (i, &(a, b)) in merges.iter().enumerate() {
        joined.clear();
        joined.extend_from_slice(token(a, i)?);
        joined.extend_from_slice(token(b, i)?);
        let Some(&r) = encoder.get(joined.as_slice()) else {
            return Err(format!(
                "merge {i} ({a}, {b}) makes {joined:?}, which is not a token of the vocabulary"
            ));
        };
        if let Some(&l) = results.last() {
            if r < l {
                return Err(format!(
                    "merge {i} makes token {r} after an earlier merge made token {l}: \
                     the merges are not in the order of their results' ids"
                ));
            }
        }
        results.push(r);
    }
    // Condition (2): each token's rank split, tokens on every core (the
    // longest part of the check); the first failure by id is reported.
    let ids: Vec<Rank> = (0..ranks.len() as Rank).collect();
    let splits = crate::parallel::map_chunked(&ids, 0, |&id| {
        let bytes = &ranks[id as usize];
        if bytes.len() < 2 {
            return Ok(None);
        }
        if bytes.len() > MAX_CHECKED_TOKEN_LEN {
            return Err(format!(
                "is {} bytes long; tokens of more than {MAX_CHECKED_TOKEN_LEN} bytes are not supported",
                bytes.len()
            ));
        }
        let bounds = merge_below(bytes, id, &encoder, |_| false);
        if let [0, k, _] = bounds[..] {
            Ok(Some((encoder[&bytes[..k]], encoder[&bytes[k..]])))
        } else {
            // The rank encoder may still build it inside a longer piece,
            // after merges of higher id: (i) of the module docs fails.
            Err(format!(
                "({bytes:?}) is not made of two tokens of lower id \
                 (its bytes merge by rank into {} parts)",
                bounds.len() - 1
            ))
        }
    });
    let mut rank_split: FxHashMap<Rank, (Rank, Rank)> = FxHashMap::default();
    for (id, split) in ids.into_iter().zip(splits) {
        match split {
            Ok(Some(pair)) => {
                rank_split.insert(id, pair);
            }
            Ok(None) => {}
            Err(why) => return Err(format!("token {id} {why}")),
        }
    }
    // Walk each token's consecutive merges up to its rank split: condition
    // (2)'s listing and condition (3).
    let mut i = 0;
    while i < merges.len() {
        let t = results[i];
        let group = i..i + results[i..].iter().take_while(|&&r| r == t).count();
        i = group.end;
        let (a, b) = rank_split[&t];
        let Some(at) = group.clone().find(|&k| merges[k] == (a, b)) else {
            return Err(format!(
                "token {t} ({:?}) is listed without its rank split ({a}, {b})",
                ranks[t as usize]
            ));
        };
        for (k, &(x, c)) in merges.iter().enumerate().take(at).skip(group.start) {
            if x != b {
                continue;
            }
            // Could the parts [a, b, c] occur? They would while rank-merging
            // the bytes of a + b + c alone.
            let (la, lb) = (ranks[a as usize].len(), ranks[b as usize].len());
            joined.clear();
            joined.extend_from_slice(&ranks[a as usize]);
            joined.extend_from_slice(&ranks[b as usize]);
            joined.extend_from_slice(&ranks[c as usize]);
            let target = [0, la, la + lb, joined.len()];
            let mut reached = false;
            merge_below(&joined, Rank::MAX, &encoder, |bounds| {
                reached = bounds == target;
                // Merges only remove boundaries: once one is gone, never.
                reached
                    || bounds.binary_search(&la).is_err()
                    || bounds.binary_search(&(la + lb)).is_err()
            });
            if reached {
                return Err(format!(
                    "merge {k} ({b}, {c}) of token {t} is listed before its rank split ({a}, {b}), \
                     and the parts [{a}, {b}, {c}] occur when merging by rank: the two orders can disagree"
                ));
            }
        }
    }
    for (&t, &(a, b)) in &rank_split {
        if results.binary_search(&t).is_err() {
            return Err(format!(
                "token {t} ({:?}) is made by no merge (its rank split is ({a}, {b}))",
                ranks[t as usize]
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_vocab() -> Vec<Vec<u8>> {
        (0..=255u8).map(|b| vec![b]).collect()
    }

    #[test]
    fn byte_level_alphabet_is_a_bijection_onto_its_256_characters() {
        let mut seen = [false; 256];
        let mut spelled = 0;
        for c in (0..0x200u32).filter_map(char::from_u32) {
            if let Some(b) = byte_level_byte(c) {
                assert!(!seen[b as usize], "byte {b} spelled twice");
                seen[b as usize] = true;
                spelled += 1;
            }
        }
        assert_eq!(spelled, 256);
        for b in 0..=255u8 {
            assert_eq!(byte_level_byte(byte_level_char(b)), Some(b));
        }
        // Printable bytes are themselves; space is the first shifted one.
        assert_eq!(byte_level_byte('a'), Some(b'a'));
        assert_eq!(byte_level_byte('\u{120}'), Some(b' '));
        assert_eq!(byte_level_byte(' '), None);
        let mut out = Vec::new();
        assert!(byte_level_bytes("\u{120}hi", &mut out));
        assert_eq!(out, b" hi");
        assert!(!byte_level_bytes("h\u{144}", &mut out));
    }

    #[test]
    fn rank_built_merges_pass() {
        let mut ranks = bytes_vocab();
        ranks.push(b"ab".to_vec()); // 256
        ranks.push(b"bc".to_vec()); // 257
        ranks.push(b"abc".to_vec()); // 258 = ab + c
        let merges = [(97, 98), (98, 99), (256, 99)];
        assert_eq!(check_merges_follow_ranks(&ranks, &merges), Ok(()));
    }

    #[test]
    fn disagreements_are_refused() {
        let mut ranks = bytes_vocab();
        ranks.push(b"ab".to_vec());
        ranks.push(b"bc".to_vec());
        ranks.push(b"abc".to_vec());
        // Listed as a + bc, but by rank "ab" forms first.
        let err = check_merges_follow_ranks(&ranks, &[(97, 98), (98, 99), (97, 257)]).unwrap_err();
        assert!(err.contains("token 258"), "{err}");
        // Out of order.
        let err = check_merges_follow_ranks(&ranks, &[(98, 99), (97, 98), (256, 99)]).unwrap_err();
        assert!(err.contains("not in the order"), "{err}");
        // A token no merge makes.
        let err = check_merges_follow_ranks(&ranks, &[(97, 98), (98, 99)]).unwrap_err();
        assert!(err.contains("made by no merge"), "{err}");
        // A merge whose result is not a token, and an unknown id.
        assert!(check_merges_follow_ranks(&ranks, &[(99, 99)]).is_err());
        assert!(check_merges_follow_ranks(&ranks, &[(999, 99)]).is_err());
    }

    #[test]
    fn every_split_in_any_order_passes() {
        // The tiktoken-conversion layout: every split of a token, here with
        // a split other than the rank split (ab, c) listed first.
        let mut ranks = bytes_vocab();
        ranks.push(b"ab".to_vec()); // 256
        ranks.push(b"bc".to_vec()); // 257
        ranks.push(b"abc".to_vec()); // 258
        let merges = [(97, 98), (98, 99), (97, 257), (256, 99)];
        assert_eq!(check_merges_follow_ranks(&ranks, &merges), Ok(()));
        // Without the rank split the list is not equivalent.
        let err = check_merges_follow_ranks(&ranks, &merges[..3]).unwrap_err();
        assert!(err.contains("without its rank split (256, 99)"), "{err}");
    }

    #[test]
    fn tokens_not_made_of_lower_ids_are_refused() {
        // "abc" (257) comes before "bc" (258) and there is no "ab": by rank
        // it forms only inside longer pieces, after "bc", so (i) fails.
        let mut ranks = bytes_vocab();
        ranks.push(b"xy".to_vec()); // 256
        ranks.push(b"abc".to_vec()); // 257
        ranks.push(b"bc".to_vec()); // 258
        let err =
            check_merges_follow_ranks(&ranks, &[(120, 121), (97, 258), (98, 99)]).unwrap_err();
        assert!(
            err.contains("token 257") && err.contains("3 parts"),
            "{err}"
        );
    }
}

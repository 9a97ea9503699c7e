//! Hugging Face `tokenizer.json` BPE models on the rank encoder.
//!
//! `tokenizers` merges only the pairs its merges list names, lowest list
//! index first; the rank encoder merges any two tokens that concatenate to
//! a token, lowest id of the result first. The two agree when
//!
//! 1. the merges' results have strictly increasing ids in list order, and
//! 2. every token of two or more bytes is the result of exactly one merge
//!    `(a, b)`, and rank-merging the token's bytes with only the tokens of
//!    lower id ends in exactly `[a, b]`.
//!
//! Why: while the rank encoder builds a token `t` of id `r` inside a piece,
//! no merge crosses `t`'s span (it would leave a token crossing it) and
//! every merge inside it was the lowest rank at its time, so the parts
//! inside the span evolve as `t`'s bytes alone would with ids below `r`:
//! they end as `[a, b]`, the listed merge. Each merge the rank encoder makes
//! is thus listed, and by (1) the listed pair with the lowest index is the
//! one whose result has the lowest id, which is the rank encoder's choice;
//! both break ties leftmost. Under (2) a token's own bytes merge to the
//! token, so `ignore_merges` (whole-piece lookup first) changes nothing.
//!
//! [`check_merges_follow_ranks`] decides (1) and (2) at load time; a file
//! that fails is refused, never encoded with other ids than `tokenizers`'.

use rustc_hash::FxHashMap;

use crate::bpe::Rank;

/// Longest token the load-time check merges (the check is quadratic in a
/// token's length; real vocabularies stay far below this).
pub const MAX_CHECKED_TOKEN_LEN: usize = 1024;

/// Rank-merges `bytes` with only the tokens of id below `limit`; returns
/// the ids of the parts.
fn merge_below(bytes: &[u8], limit: Rank, encoder: &FxHashMap<&[u8], Rank>) -> Vec<Rank> {
    // Part boundaries: parts are bytes[bounds[i]..bounds[i + 1]].
    let mut bounds: Vec<usize> = (0..=bytes.len()).collect();
    loop {
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
        .windows(2)
        .map(|w| {
            encoder
                .get(&bytes[w[0]..w[1]])
                .copied()
                .unwrap_or(Rank::MAX)
        })
        .collect()
}

/// Checks that a merges list is equivalent to merging by rank (see the
/// module docs). `ranks[i]` are the bytes of token `i` (empty: no token);
/// `merges` are `(left id, right id)` in list order. The error names the
/// merge or token that breaks the equivalence.
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
    let mut merge_of: FxHashMap<Rank, (Rank, Rank)> = FxHashMap::default();
    let mut last: Option<Rank> = None;
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
        if let Some(l) = last {
            if r <= l {
                return Err(format!(
                    "merge {i} makes token {r} after an earlier merge made token {l}: \
                     the merges are not in the order of their results' ids"
                ));
            }
        }
        last = Some(r);
        merge_of.insert(r, (a, b));
    }
    for (id, bytes) in ranks.iter().enumerate() {
        if bytes.len() < 2 {
            continue;
        }
        let id = id as Rank;
        let Some(&(a, b)) = merge_of.get(&id) else {
            return Err(format!("token {id} ({bytes:?}) is made by no merge"));
        };
        if bytes.len() > MAX_CHECKED_TOKEN_LEN {
            return Err(format!(
                "token {id} is {} bytes long; tokens of more than {MAX_CHECKED_TOKEN_LEN} bytes are not supported",
                bytes.len()
            ));
        }
        let parts = merge_below(bytes, id, &encoder);
        if parts != [a, b] {
            return Err(format!(
                "token {id} ({bytes:?}) is listed as merge ({a}, {b}) but merging its bytes by rank gives {parts:?}"
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
}

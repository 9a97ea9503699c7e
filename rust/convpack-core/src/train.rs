//! Training a byte-level BPE vocabulary from text.
//!
//! Texts are split with the pattern, identical pieces are counted once, and
//! the most frequent adjacent pair is merged until the vocabulary has the
//! requested size. Ties go to the smallest pair of ids, so training is
//! deterministic.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

use crate::bpe::Rank;
use crate::error::CoreError;
use crate::pretokenize::Splitter;

type Pair = (Rank, Rank);

/// Counts the pieces of `texts` (split with `splitter`) into `counts`.
pub fn count_pieces(
    splitter: &Splitter,
    texts: &[&str],
    counts: &mut FxHashMap<Vec<u8>, u64>,
) -> Result<(), CoreError> {
    let chunks: Vec<&[&str]> = texts.chunks(64).collect();
    let partial = crate::parallel::map_chunked(&chunks, 0, |chunk| {
        let mut m: FxHashMap<&[u8], u64> = FxHashMap::default();
        for t in chunk.iter() {
            splitter.split(t, |p| *m.entry(p.as_bytes()).or_insert(0) += 1)?;
        }
        Ok::<_, CoreError>(m)
    });
    for m in partial {
        let m = m?;
        for (k, v) in m {
            match counts.get_mut(k) {
                Some(c) => *c += v,
                None => {
                    counts.insert(k.to_vec(), v);
                }
            }
        }
    }
    Ok(())
}

fn pairs_of(word: &[Rank], mut f: impl FnMut(Pair)) {
    for w in word.windows(2) {
        f((w[0], w[1]));
    }
}

/// Learns merges until there are `vocab_size` tokens (the 256 bytes
/// included). Returns the bytes of every token, indexed by rank.
pub fn train(
    counts: &FxHashMap<Vec<u8>, u64>,
    vocab_size: usize,
) -> Result<Vec<Vec<u8>>, CoreError> {
    if vocab_size < 256 {
        return Err(CoreError::Invalid(format!(
            "vocab_size must be at least 256 (one token per byte) plus the special tokens, got {vocab_size}"
        )));
    }
    let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    let mut token_ids: FxHashMap<Vec<u8>, Rank> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as Rank))
        .collect();

    // Words sorted so the result does not depend on hash order.
    let mut entries: Vec<(&Vec<u8>, &u64)> = counts.iter().collect();
    entries.sort_unstable();
    let mut words: Vec<Vec<Rank>> = entries
        .iter()
        .map(|(w, _)| w.iter().map(|&b| b as Rank).collect())
        .collect();
    let freq: Vec<i64> = entries.iter().map(|(_, &c)| c as i64).collect();

    let mut pair_count: FxHashMap<Pair, i64> = FxHashMap::default();
    let mut where_: FxHashMap<Pair, Vec<u32>> = FxHashMap::default();
    for (wi, w) in words.iter().enumerate() {
        pairs_of(w, |p| {
            *pair_count.entry(p).or_insert(0) += freq[wi];
            where_.entry(p).or_default().push(wi as u32);
        });
    }
    let mut heap: BinaryHeap<(i64, Reverse<Pair>)> =
        pair_count.iter().map(|(&p, &c)| (c, Reverse(p))).collect();

    let mut old_pairs: FxHashMap<Pair, i64> = FxHashMap::default();
    while tokens.len() < vocab_size {
        let Some((count, Reverse(pair))) = heap.pop() else {
            return Err(CoreError::Invalid(format!(
                "the training text has too few distinct pairs: it yields only {} ordinary tokens (the 256 bytes and {} merges) where {vocab_size} are needed",
                tokens.len(),
                tokens.len() - 256
            )));
        };
        let current = pair_count.get(&pair).copied().unwrap_or(0);
        if current != count {
            if current > 0 {
                heap.push((current, Reverse(pair)));
            }
            continue;
        }
        if count <= 0 {
            continue;
        }
        let mut merged = tokens[pair.0 as usize].clone();
        merged.extend_from_slice(&tokens[pair.1 as usize]);
        // Two different pairs can spell the same bytes; reuse the token so
        // every rank has distinct bytes.
        let new_id = match token_ids.get(&merged) {
            Some(&id) => id,
            None => {
                let id = tokens.len() as Rank;
                token_ids.insert(merged.clone(), id);
                tokens.push(merged);
                id
            }
        };
        let mut affected = where_.remove(&pair).unwrap_or_default();
        affected.sort_unstable();
        affected.dedup();
        let mut touched: Vec<Pair> = Vec::new();
        for wi in affected {
            let word = &mut words[wi as usize];
            if !word.windows(2).any(|w| (w[0], w[1]) == pair) {
                continue;
            }
            let f = freq[wi as usize];
            old_pairs.clear();
            pairs_of(word, |p| *old_pairs.entry(p).or_insert(0) += 1);
            let mut next = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && (word[i], word[i + 1]) == pair {
                    next.push(new_id);
                    i += 2;
                } else {
                    next.push(word[i]);
                    i += 1;
                }
            }
            *word = next;
            pairs_of(word, |p| *old_pairs.entry(p).or_insert(0) -= 1);
            for (&p, &d) in old_pairs.iter() {
                if d == 0 {
                    continue;
                }
                // d > 0: the pair occurs fewer times now; d < 0: more.
                *pair_count.entry(p).or_insert(0) -= d * f;
                if d < 0 {
                    where_.entry(p).or_default().push(wi);
                }
                touched.push(p);
            }
        }
        pair_count.remove(&pair);
        touched.sort_unstable();
        touched.dedup();
        for p in touched {
            if let Some(&c) = pair_count.get(&p) {
                if c > 0 && p != pair {
                    heap.push((c, Reverse(p)));
                }
            }
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pretokenize::SPLIT_PATTERN;

    #[test]
    fn learns_exact_size_and_frequent_pairs() {
        let splitter = Splitter::new(SPLIT_PATTERN).unwrap();
        let texts = vec!["hello hello hello world", "hello there", "the theme"];
        let mut counts = FxHashMap::default();
        count_pieces(&splitter, &texts, &mut counts).unwrap();
        let tokens = train(&counts, 270).unwrap();
        assert_eq!(tokens.len(), 270);
        assert!(tokens.iter().any(|t| t == b" hello"));
        let mut unique = tokens.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), tokens.len());
        assert!(train(&counts, 100_000).is_err());
    }
}

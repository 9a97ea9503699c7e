//! A cache of rendered conversations for epochs after the first.
//!
//! Rendering is almost all of a loader's time; a conversation renders the
//! same every epoch, so [`RenderCache`] keeps each one's pieces (ids and
//! mask) in a compact arena keyed by dataset index:
//!
//! * ids as `u16` when the vocabulary has at most 65,536 ids, else `u32`;
//! * the mask as run lengths (alternating 0-runs and 1-runs, starting with
//!   a 0-run that may be empty): a rendered mask is a few long runs;
//! * per dataset index a `u32` slot (or none), so the index table costs 4
//!   bytes a conversation.
//!
//! Memory is bounded by a byte budget: once the next conversation would
//! exceed it, caching stops (what is cached stays; nothing fails).

use crate::error::CoreError;
use crate::render::{Rendered, Turns};

const NONE: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Entry {
    /// First id in the id arena.
    ids: usize,
    /// First run in the run arena.
    runs: usize,
    /// First piece in `pieces`, and how many.
    piece: usize,
    n_pieces: u32,
    cut: u64,
    lost: u64,
}

/// Length and run count of one cached piece.
#[derive(Clone, Copy)]
struct PieceShape {
    len: u32,
    runs: u32,
}

/// What the cache holds and has done, for `stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Bytes used (arenas and tables).
    pub bytes: u64,
    /// Conversations cached.
    pub conversations: u64,
    /// Conversations served from the cache.
    pub hits: u64,
    /// True once a conversation did not fit the budget (caching stopped).
    pub full: bool,
}

pub struct RenderCache {
    wide: bool,
    budget: u64,
    slots: Vec<u32>,
    entries: Vec<Entry>,
    pieces: Vec<PieceShape>,
    ids16: Vec<u16>,
    ids32: Vec<u32>,
    runs: Vec<u32>,
    stats: CacheStats,
}

impl RenderCache {
    /// A cache for a dataset of `len` conversations over a vocabulary of
    /// `vocab_size` ids, using at most `budget` bytes. The index table is
    /// allocated only if it fits the budget (else nothing is cached); a
    /// table within the budget that cannot be allocated is an error naming
    /// its size, never an abort.
    pub fn new(len: usize, vocab_size: usize, budget: u64) -> Result<Self, CoreError> {
        // 4 bytes a conversation; a product past u64 is past any budget.
        let table = (len as u64).checked_mul(4).filter(|&t| t <= budget);
        let mut slots = Vec::new();
        if let Some(bytes) = table {
            slots.try_reserve_exact(len).map_err(|_| {
                CoreError::Invalid(format!(
                    "cannot allocate the render cache's index table: {len} conversations \
                     take {bytes} bytes; pass a smaller cache_bytes or cache=False"
                ))
            })?;
            slots.resize(len, NONE);
        }
        Ok(RenderCache {
            wide: vocab_size > 1 << 16,
            budget,
            stats: CacheStats {
                bytes: table.unwrap_or(0),
                full: table.is_none(),
                ..CacheStats::default()
            },
            slots,
            entries: Vec::new(),
            pieces: Vec::new(),
            ids16: Vec::new(),
            ids32: Vec::new(),
            runs: Vec::new(),
        })
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    pub fn contains(&self, index: usize) -> bool {
        self.slots.get(index).is_some_and(|&s| s != NONE)
    }

    fn run_lengths(mask: &[u8], out: &mut Vec<u32>) -> u32 {
        let before = out.len();
        let mut current = 0u8;
        let mut run = 0u32;
        for &m in mask {
            let m = (m != 0) as u8;
            if m != current {
                out.push(run);
                current = m;
                run = 0;
            }
            run += 1;
        }
        out.push(run);
        (out.len() - before) as u32
    }

    /// Caches `turns` for `index` unless it is cached already or the budget
    /// is spent. Returns whether it is cached now.
    pub fn insert(&mut self, index: usize, turns: &Turns) -> bool {
        if self.stats.full || index >= self.slots.len() {
            return false;
        }
        if self.contains(index) {
            return true;
        }
        let tokens: usize = turns.pieces.iter().map(Rendered::len).sum();
        let id_bytes = if self.wide { 4 } else { 2 };
        // Runs are counted exactly below; bound them by the transitions.
        let transitions: usize = turns
            .pieces
            .iter()
            .map(|p| 1 + p.mask.windows(2).filter(|w| w[0] != w[1]).count() + 1)
            .sum();
        let cost = (tokens * id_bytes
            + transitions * 4
            + turns.pieces.len() * std::mem::size_of::<PieceShape>()
            + std::mem::size_of::<Entry>()) as u64;
        if self.stats.bytes + cost > self.budget || self.entries.len() >= NONE as usize {
            self.stats.full = true;
            return false;
        }
        let entry = Entry {
            ids: if self.wide {
                self.ids32.len()
            } else {
                self.ids16.len()
            },
            runs: self.runs.len(),
            piece: self.pieces.len(),
            n_pieces: turns.pieces.len() as u32,
            cut: turns.cut,
            lost: turns.lost,
        };
        for p in &turns.pieces {
            if self.wide {
                self.ids32.extend_from_slice(&p.ids);
            } else {
                self.ids16.extend(p.ids.iter().map(|&i| i as u16));
            }
            let runs = Self::run_lengths(&p.mask, &mut self.runs);
            self.pieces.push(PieceShape {
                len: p.len() as u32,
                runs,
            });
        }
        self.slots[index] = self.entries.len() as u32;
        self.entries.push(entry);
        self.stats.bytes += cost;
        self.stats.conversations += 1;
        true
    }

    /// The cached pieces of `index`, rebuilt.
    pub fn get(&mut self, index: usize) -> Option<Turns> {
        let slot = *self.slots.get(index)?;
        if slot == NONE {
            return None;
        }
        let e = self.entries[slot as usize];
        let mut ids_at = e.ids;
        let mut runs_at = e.runs;
        let mut out = Turns {
            pieces: Vec::with_capacity(e.n_pieces as usize),
            cut: e.cut,
            lost: e.lost,
        };
        for shape in &self.pieces[e.piece..e.piece + e.n_pieces as usize] {
            let n = shape.len as usize;
            let ids = if self.wide {
                self.ids32[ids_at..ids_at + n].to_vec()
            } else {
                self.ids16[ids_at..ids_at + n]
                    .iter()
                    .map(|&i| i as u32)
                    .collect()
            };
            ids_at += n;
            let mut mask = Vec::with_capacity(n);
            for (k, &run) in self.runs[runs_at..runs_at + shape.runs as usize]
                .iter()
                .enumerate()
            {
                mask.resize(mask.len() + run as usize, (k % 2) as u8);
            }
            runs_at += shape.runs as usize;
            out.pieces.push(Rendered { ids, mask });
        }
        self.stats.hits += 1;
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(ids: &[u32], mask: &[u8]) -> Rendered {
        Rendered {
            ids: ids.to_vec(),
            mask: mask.to_vec(),
        }
    }

    #[test]
    fn round_trips_narrow_and_wide_ids_and_any_mask() {
        let turns = Turns {
            pieces: vec![
                doc(&[1, 2, 3, 4, 5], &[0, 1, 1, 0, 1]),
                doc(&[7], &[1]),
                doc(&[], &[]),
                doc(&[9, 9], &[0, 0]),
            ],
            cut: 2,
            lost: 5,
        };
        for vocab in [1000, 1 << 20] {
            let mut c = RenderCache::new(10, vocab, 1 << 20).unwrap();
            assert!(c.get(3).is_none());
            assert!(c.insert(3, &turns));
            assert!(c.contains(3) && !c.contains(4));
            assert_eq!(c.get(3), Some(turns.clone()));
            assert_eq!(c.stats().hits, 1);
        }
        let mut wide = RenderCache::new(1, 1 << 20, 1 << 20).unwrap();
        let big = Turns::from(doc(&[70_000, 1], &[1, 1]));
        wide.insert(0, &big);
        assert_eq!(wide.get(0), Some(big));
    }

    #[test]
    fn stops_at_the_budget_without_failing() {
        let t = Turns::from(doc(&[1; 100], &[1; 100]));
        let mut c = RenderCache::new(1000, 1000, 4000 + 1000).unwrap();
        let mut cached = 0;
        for i in 0..1000 {
            cached += c.insert(i, &t) as usize;
        }
        assert!(cached > 0 && cached < 10);
        assert!(c.stats().full && c.stats().bytes <= 5000);
        assert_eq!(c.stats().conversations, cached as u64);
        // A budget below the index table caches nothing.
        let mut none = RenderCache::new(1000, 1000, 100).unwrap();
        assert!(!none.insert(0, &t) && none.get(0).is_none());
    }

    #[test]
    fn huge_datasets_never_panic() {
        // 4 * 2**62 overflows u64: past any budget, so nothing is cached.
        let mut c = RenderCache::new(1 << 62, 1000, u64::MAX).unwrap();
        assert!(c.stats().full && c.stats().bytes == 0);
        assert!(!c.insert(5, &Turns::from(doc(&[1], &[1]))));
        // Within the budget but past any memory: an error naming the size.
        match RenderCache::new(1 << 61, 1000, u64::MAX) {
            Err(CoreError::Invalid(m)) => assert!(m.contains("9223372036854775808 bytes"), "{m}"),
            Ok(_) => panic!("a table of 2**63 bytes was allocated"),
            Err(e) => panic!("{e:?}"),
        }
    }
}

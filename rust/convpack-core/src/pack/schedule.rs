//! Which conversation a rank reads next, and how far through an epoch it is.
//!
//! Conversations are fetched in a sequence of *ordinals* `k = 0, 1, 2, ...`
//! per rank. Two orders exist, each the one of the nanochat generator a mode
//! replaces:
//!
//! * [`Order::Strided`] (the SFT collate loop): each epoch walks
//!   `rank, rank + world, ...` below the dataset length, then starts again at
//!   `rank`.
//! * [`Order::Rolling`] (the mid-training and best-fit loops): a cursor starts
//!   at `rank`, steps by `world`, and on passing the end wraps by subtracting
//!   the length, so epoch two continues where the stride left off.
//!
//! In both, ranks read disjoint conversations at every step and together
//! cover each conversation once per epoch.
//!
//! Progress is measured like nanochat's `consumed` counter: a *position*
//! that starts at `rank` and advances by `world` for every conversation this
//! rank has used up; an epoch's worth is done once it reaches the length.
//!
//! Every ordinal of every rank names a *global position* `epoch * len +
//! slot`, increasing with the ordinal. After an elastic resume (a state saved
//! under one world size, loaded under another) a schedule first deals the
//! positions the old ranks left unused, an [`Elastic`] remainder, round robin
//! over the new ranks, then continues in its own order from the next epoch.

use std::sync::Arc;

use crate::error::CoreError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Strided,
    Rolling,
}

/// The positions an elastic resume deals to the new ranks before their own
/// order begins: `gap` (ascending, each below `from`), then every position
/// in `from..end`; `end` is a multiple of the dataset length (the next epoch
/// boundary), where the new ranks' own order starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Elastic {
    pub gap: Vec<u64>,
    pub from: u64,
    pub end: u64,
}

impl Elastic {
    /// Positions dealt.
    pub fn total(&self) -> u64 {
        self.gap.len() as u64 + (self.end - self.from)
    }

    /// The `j`-th position dealt (`j < total`).
    fn at(&self, j: u64) -> u64 {
        match self.gap.get(j as usize) {
            Some(&p) => p,
            None => self.from + (j - self.gap.len() as u64),
        }
    }

    /// Checks a remainder read from a state against a dataset of `len`.
    pub fn check(&self, len: usize) -> Result<(), CoreError> {
        let bad = |why: String| Err(CoreError::Invalid(format!("the elastic remainder {why}")));
        let len = len as u64;
        if self.from > self.end || !self.end.is_multiple_of(len.max(1)) {
            return bad(format!(
                "ends at {} (from {}), not at an epoch boundary of {len} conversations",
                self.end, self.from
            ));
        }
        if self.end > super::state::MAX_COUNT {
            return bad(format!("ends at {}, above 2**53", self.end));
        }
        if self.gap.windows(2).any(|w| w[0] >= w[1]) {
            return bad("gap is not strictly ascending".into());
        }
        if let Some(&last) = self.gap.last() {
            if last >= self.from {
                return bad(format!("gap holds {last}, not below {}", self.from));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub len: usize,
    pub rank: usize,
    pub world: usize,
    pub order: Order,
    /// Per-epoch reshuffle: the `j`-th slot of epoch `e` reads conversation
    /// `permute(seed, e, j)` instead of `j` (the same on every rank, so ranks
    /// still cover each epoch once).
    pub seed: Option<u64>,
    /// After an elastic resume: the remainder dealt before the own order.
    pub elastic: Option<Arc<Elastic>>,
}

/// Where consumption stands.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    /// 1-based epoch.
    pub epoch: u64,
    /// Fraction of that epoch consumed, in `0..=1`.
    pub fraction: f64,
    /// True once at least one epoch's worth has been consumed.
    pub epoch_done: bool,
}

impl Schedule {
    pub fn new(len: usize, rank: usize, world: usize, order: Order) -> Result<Self, CoreError> {
        if world == 0 {
            return Err(CoreError::Invalid("world_size must be at least 1".into()));
        }
        if rank >= world {
            return Err(CoreError::Invalid(format!(
                "rank {rank} is out of range for world_size {world}"
            )));
        }
        if len <= rank {
            return Err(CoreError::Invalid(format!(
                "the dataset has {len} conversations, so rank {rank} of {world} would get none"
            )));
        }
        Ok(Schedule {
            len,
            rank,
            world,
            order,
            seed: None,
            elastic: None,
        })
    }

    /// This schedule with each epoch in its own permutation of the dataset.
    pub fn with_shuffle(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// This schedule dealing `elastic` first (an elastic resume).
    pub fn with_elastic(mut self, elastic: Elastic) -> Result<Self, CoreError> {
        elastic.check(self.len)?;
        self.elastic = Some(Arc::new(elastic));
        Ok(self)
    }

    /// Conversations this rank reads per epoch in the strided order.
    fn per_rank(&self) -> u64 {
        (self.len - self.rank).div_ceil(self.world) as u64
    }

    /// Ordinals of the elastic remainder this rank reads, and the position
    /// where its own order starts.
    fn dealt(&self) -> (u64, u64) {
        match &self.elastic {
            Some(e) => {
                let (total, rank) = (e.total(), self.rank as u64);
                let share = if total > rank {
                    (total - rank).div_ceil(self.world as u64)
                } else {
                    0
                };
                (share, e.end)
            }
            None => (0, 0),
        }
    }

    /// The global position (`epoch * len + slot`) of fetch ordinal `k`:
    /// increasing in `k`, and no two ranks share one. (In u128: a huge world
    /// size times an ordinal passes u64.)
    pub fn global(&self, k: u64) -> u128 {
        let (len, rank, world) = (self.len as u128, self.rank as u128, self.world as u128);
        let (share, base) = self.dealt();
        if k < share {
            if let Some(e) = &self.elastic {
                return e.at(self.rank as u64 + k * self.world as u64) as u128;
            }
        }
        let k = (k - share) as u128;
        let per = self.per_rank() as u128;
        base as u128
            + match self.order {
                Order::Strided => (k / per) * len + rank + (k % per) * world,
                Order::Rolling => rank + k * world,
            }
    }

    /// Dataset index of the conversation at global position `p`.
    pub fn index_at(&self, p: u128) -> usize {
        let len = self.len as u128;
        let (epoch, slot) = ((p / len) as u64, (p % len) as u64);
        match self.seed {
            Some(seed) => permute(seed, epoch, slot, len as u64) as usize,
            None => slot as usize,
        }
    }

    /// Dataset index of the conversation with fetch ordinal `k`.
    pub fn index(&self, k: u64) -> usize {
        self.index_at(self.global(k))
    }

    /// The consumption position after `consumed` conversations.
    pub fn position(&self, consumed: u64) -> u64 {
        let (share, base) = self.dealt();
        if consumed < share {
            // Within the remainder: where the next conversation to use lies.
            return self.global(consumed) as u64;
        }
        base + self.own_position(consumed - share)
    }

    /// `position` in the schedule's own order.
    fn own_position(&self, consumed: u64) -> u64 {
        let (len, rank, world) = (self.len as u64, self.rank as u64, self.world as u64);
        match self.order {
            Order::Rolling => rank + consumed * world,
            Order::Strided if consumed == 0 => rank,
            Order::Strided => {
                let per = self.per_rank();
                let (epoch, j) = ((consumed - 1) / per, (consumed - 1) % per);
                epoch * len + rank + j * world + world
            }
        }
    }

    /// Progress after a batch that took consumption from `start` to
    /// `consumed`. The epoch is the one in progress when the batch began; a
    /// batch that completes it reports fraction 1.0 even if it reaches into
    /// the next epoch (so a learning-rate schedule never jumps back at the
    /// last step), and the next batch reports the new epoch.
    pub fn progress(&self, start: u64, consumed: u64) -> Progress {
        let len = self.len as u64;
        let (p0, p1) = (self.position(start), self.position(consumed));
        let epoch = p0 / len + 1;
        let fraction = if p1 >= epoch * len {
            1.0
        } else {
            (p1 - (epoch - 1) * len) as f64 / len as f64
        };
        Progress {
            epoch,
            fraction,
            epoch_done: p1 >= len,
        }
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The image of `j` under epoch `epoch`'s permutation of `0..len`: a
/// four-round Feistel network over the smallest even number of bits that
/// holds `len`, walked until it lands below `len` (a bijection of `0..len`,
/// computed in O(1) expected time without a table, so a resume at any point
/// costs nothing).
pub fn permute(seed: u64, epoch: u64, j: u64, len: u64) -> u64 {
    if len <= 1 {
        return 0;
    }
    let bits = (64 - (len - 1).leading_zeros()).max(2).div_ceil(2) * 2;
    let half = bits / 2;
    let lo_mask = (1u64 << half) - 1;
    let key = splitmix(seed ^ splitmix(epoch));
    let mut x = j;
    loop {
        let (mut l, mut r) = (x >> half, x & lo_mask);
        for round in 0..4u64 {
            let f = splitmix(key ^ splitmix(r ^ (round << 56))) & lo_mask;
            (l, r) = (r, l ^ f);
        }
        x = (l << half) | r;
        if x < len {
            return x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_cover_each_epoch_once() {
        for order in [Order::Strided, Order::Rolling] {
            for (len, world) in [(10usize, 3usize), (7, 1), (9, 3), (5, 5)] {
                let scheds: Vec<Schedule> = (0..world)
                    .map(|r| Schedule::new(len, r, world, order).unwrap())
                    .collect();
                // Consume one epoch per rank (until the position reaches len).
                let mut seen = vec![0u32; len];
                for s in &scheds {
                    let mut k = 0;
                    while !s.progress(0, k).epoch_done {
                        seen[s.index(k)] += 1;
                        k += 1;
                    }
                    assert_eq!(s.progress(0, k).epoch, 1);
                }
                assert!(
                    seen.iter().all(|&c| c == 1),
                    "{order:?} {len} {world}: {seen:?}"
                );
            }
        }
    }

    #[test]
    fn permutations_are_bijections_and_differ_by_epoch() {
        for len in [1u64, 2, 3, 10, 97, 1000] {
            for epoch in 0..3 {
                let mut seen = vec![false; len as usize];
                for j in 0..len {
                    let i = permute(7, epoch, j, len) as usize;
                    assert!(!seen[i], "{len} {epoch}: {i} twice");
                    seen[i] = true;
                }
            }
        }
        let e0: Vec<u64> = (0..1000).map(|j| permute(7, 0, j, 1000)).collect();
        let e1: Vec<u64> = (0..1000).map(|j| permute(7, 1, j, 1000)).collect();
        let s1: Vec<u64> = (0..1000).map(|j| permute(8, 0, j, 1000)).collect();
        assert_ne!(e0, e1);
        assert_ne!(e0, s1);
    }

    #[test]
    fn shuffled_ranks_cover_each_epoch_once() {
        for order in [Order::Strided, Order::Rolling] {
            for (len, world) in [(10usize, 3usize), (7, 1), (9, 3)] {
                let mut seen = vec![0u32; len];
                for r in 0..world {
                    let s = Schedule::new(len, r, world, order).unwrap().with_shuffle(3);
                    let mut k = 0;
                    while !s.progress(0, k).epoch_done {
                        seen[s.index(k)] += 1;
                        k += 1;
                    }
                }
                assert!(
                    seen.iter().all(|&c| c == 1),
                    "{order:?} {len} {world}: {seen:?}"
                );
            }
        }
    }

    #[test]
    fn rolling_wraps_like_a_cursor() {
        let s = Schedule::new(10, 2, 3, Order::Rolling).unwrap();
        let got: Vec<usize> = (0..6).map(|k| s.index(k)).collect();
        assert_eq!(got, vec![2, 5, 8, 1, 4, 7]);
        let s = Schedule::new(10, 2, 3, Order::Strided).unwrap();
        let got: Vec<usize> = (0..6).map(|k| s.index(k)).collect();
        assert_eq!(got, vec![2, 5, 8, 2, 5, 8]);
        assert!(Schedule::new(2, 2, 3, Order::Rolling).is_err());
    }

    #[test]
    fn elastic_deals_the_remainder_once_then_whole_epochs() {
        let e = Elastic {
            gap: vec![3, 8, 12],
            from: 15,
            end: 20,
        };
        for order in [Order::Strided, Order::Rolling] {
            let mut seen = vec![0u32; 40];
            for r in 0..3 {
                let s = Schedule::new(10, r, 3, order)
                    .unwrap()
                    .with_elastic(e.clone())
                    .unwrap();
                let mut k = 0;
                // Positions rise with the ordinal; stop at epoch 3's end.
                while s.global(k) < 40 {
                    assert!(k == 0 || s.global(k) > s.global(k - 1));
                    seen[s.global(k) as usize] += 1;
                    k += 1;
                }
            }
            // The remainder (3, 8 and 15..20), then epochs 2 and 3 whole.
            let mut want = vec![0u32; 40];
            for p in [3, 8, 12, 15, 16, 17, 18, 19] {
                want[p] = 1;
            }
            want[20..].fill(1);
            assert_eq!(seen, want, "{order:?}");
        }
        assert!(Elastic {
            gap: vec![5, 4],
            from: 9,
            end: 10
        }
        .check(10)
        .is_err());
        assert!(Elastic {
            gap: vec![],
            from: 9,
            end: 15
        }
        .check(10)
        .is_err());
    }

    #[test]
    fn merge_frees_what_no_old_rank_used() {
        use super::super::{Mode, PackConfig, PackState};
        let cfg = PackConfig {
            mode: Mode::Padded,
            batch_size: 1,
            seq_len: None,
            bos: 0,
            pad: 0,
            skip_errors: false,
            max_tokens: 8,
            split_turns: false,
            keep_long: false,
        };
        let state = |n: u64| PackState {
            next: n,
            consumed: n,
            batch_start: n.saturating_sub(1),
            batches: n,
            counters: super::super::Counters {
                tokens: n,
                ..Default::default()
            },
            ..Default::default()
        };
        let olds: Vec<(Schedule, PackState)> = [3u64, 5]
            .iter()
            .enumerate()
            .map(|(r, &n)| (Schedule::new(10, r, 2, Order::Strided).unwrap(), state(n)))
            .collect();
        // Rank 0 used 0, 2, 4; rank 1 used 1, 3, 5, 7, 9.
        let e = super::super::merge(&olds, &cfg).unwrap();
        assert_eq!(
            e,
            Elastic {
                gap: vec![6, 8],
                from: 10,
                end: 10
            }
        );
    }
}

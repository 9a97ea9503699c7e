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

use crate::error::CoreError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Strided,
    Rolling,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub len: usize,
    pub rank: usize,
    pub world: usize,
    pub order: Order,
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
        })
    }

    /// Conversations this rank reads per epoch in the strided order.
    fn per_rank(&self) -> u64 {
        (self.len - self.rank).div_ceil(self.world) as u64
    }

    /// Dataset index of the conversation with fetch ordinal `k`.
    pub fn index(&self, k: u64) -> usize {
        let (len, rank, world) = (self.len as u64, self.rank as u64, self.world as u64);
        let i = match self.order {
            Order::Strided => rank + (k % self.per_rank()) * world,
            Order::Rolling => (rank + (k % len) * world) % len,
        };
        i as usize
    }

    /// The consumption position after `consumed` conversations.
    pub fn position(&self, consumed: u64) -> u64 {
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
    fn rolling_wraps_like_a_cursor() {
        let s = Schedule::new(10, 2, 3, Order::Rolling).unwrap();
        let got: Vec<usize> = (0..6).map(|k| s.index(k)).collect();
        assert_eq!(got, vec![2, 5, 8, 1, 4, 7]);
        let s = Schedule::new(10, 2, 3, Order::Strided).unwrap();
        let got: Vec<usize> = (0..6).map(|k| s.index(k)).collect();
        assert_eq!(got, vec![2, 5, 8, 2, 5, 8]);
        assert!(Schedule::new(2, 2, 3, Order::Rolling).is_err());
    }
}

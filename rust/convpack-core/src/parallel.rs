//! Data-parallel helpers over the process-wide rayon pool.
//!
//! There is one pool for the process, never one per call. A caller that asks
//! for fewer threads gets that many tasks in the pool, so no more than that
//! many workers ever run its work.

use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

/// Threads the process-wide pool has.
pub fn max_threads() -> usize {
    rayon::current_num_threads()
}

/// `items.map(f)` in order, on at most `num_threads` threads (`0` = all).
///
/// Exactly that many tasks go to the pool; each takes the next block of
/// items from a shared counter until none is left, so uneven items (a few
/// long documents) do not leave a thread idle while another finishes.
pub fn map_chunked<T: Sync, R: Send>(
    items: &[T],
    num_threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let threads = effective_threads(num_threads, items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    // Blocks small enough to balance, large enough to keep overhead low.
    let block = (items.len() / (threads * 16)).max(1);
    let next = AtomicUsize::new(0);
    let per_task: Vec<Vec<(usize, Vec<R>)>> = (0..threads)
        .into_par_iter()
        .map(|_| {
            let mut done = Vec::new();
            loop {
                let start = next.fetch_add(block, Ordering::Relaxed);
                if start >= items.len() {
                    return done;
                }
                let end = (start + block).min(items.len());
                done.push((start, items[start..end].iter().map(&f).collect()));
            }
        })
        .collect();
    let mut blocks: Vec<(usize, Vec<R>)> = per_task.into_iter().flatten().collect();
    blocks.sort_unstable_by_key(|b| b.0);
    let mut out = Vec::with_capacity(items.len());
    for (_, part) in blocks {
        out.extend(part);
    }
    out
}

fn effective_threads(num_threads: usize, n: usize) -> usize {
    let pool = max_threads();
    let t = if num_threads == 0 {
        pool
    } else {
        num_threads.min(pool)
    };
    t.min(n).max(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_order() {
        let v: Vec<u32> = (0..1000).collect();
        for t in [0, 1, 2, 3, 7] {
            let out = super::map_chunked(&v, t, |x| x * 2);
            assert_eq!(out, v.iter().map(|x| x * 2).collect::<Vec<_>>());
        }
    }
}

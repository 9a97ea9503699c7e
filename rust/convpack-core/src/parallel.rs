//! Data-parallel helpers over the process-wide rayon pool.
//!
//! There is one pool for the process. A caller that asks for fewer threads
//! gets its work cut into that many contiguous chunks, so no more than that
//! many workers ever run it; chunks are coarse so per-item overhead stays low.

use rayon::prelude::*;

/// Threads the process-wide pool has.
pub fn max_threads() -> usize {
    rayon::current_num_threads()
}

/// `items.map(f)` in order, on at most `num_threads` threads (`0` = all).
pub fn map_chunked<T: Sync, R: Send>(
    items: &[T],
    num_threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let threads = effective_threads(num_threads, items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    // A few chunks per thread balance uneven items without fine-grained tasks.
    let chunks = if num_threads == 0 {
        threads * 4
    } else {
        threads
    };
    let chunk_len = items.len().div_ceil(chunks);
    let parts: Vec<Vec<R>> = items
        .par_chunks(chunk_len)
        .map(|c| c.iter().map(&f).collect())
        .collect();
    let mut out = Vec::with_capacity(items.len());
    for p in parts {
        out.extend(p);
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
        for t in [0, 1, 2, 7] {
            let out = super::map_chunked(&v, t, |x| x * 2);
            assert_eq!(out, v.iter().map(|x| x * 2).collect::<Vec<_>>());
        }
    }
}

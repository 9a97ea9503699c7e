//! Writing planned rows into caller-provided buffers.
//!
//! Two layouts cover every mode:
//!
//! * **shifted** (`stream`, `bestfit`): the pieces concatenate to a token
//!   sequence one longer than the output; `inputs[j] = seq[j]` and
//!   `targets[j] = seq[j + 1]`, or -1 where that token's mask is 0.
//! * **segments** (`padded`, `varlen`): each piece is its own span of inputs
//!   whose targets are the next tokens *of the same document*; the rest of the
//!   row is filler with target -1.

use crate::bpe::Rank;
use crate::render::Rendered;
use std::sync::Arc;

/// An output id type (inputs are int32 or int64 depending on the mode).
pub trait OutId: Copy + Send + Sync {
    fn from_rank(r: Rank) -> Self;
}

impl OutId for i32 {
    #[inline]
    fn from_rank(r: Rank) -> Self {
        r as i32
    }
}

impl OutId for i64 {
    #[inline]
    fn from_rank(r: Rank) -> Self {
        r as i64
    }
}

/// A run of tokens placed in a row: `doc.ids[start..start + len]`, or `len`
/// filler tokens when `doc` is `None`.
#[derive(Clone, Debug)]
pub struct Piece {
    pub doc: Option<Arc<Rendered>>,
    pub start: usize,
    pub len: usize,
}

impl Piece {
    pub fn doc(doc: &Arc<Rendered>, start: usize, len: usize) -> Self {
        Piece {
            doc: Some(Arc::clone(doc)),
            start,
            len,
        }
    }

    pub fn filler(len: usize) -> Self {
        Piece {
            doc: None,
            start: 0,
            len,
        }
    }
}

#[inline]
fn copy_ids<I: OutId>(out: &mut [I], ids: &[Rank]) {
    for (o, &t) in out.iter_mut().zip(ids) {
        *o = I::from_rank(t);
    }
}

/// Targets from `ids`, -1 where `mask` is 0 (unless `use_mask` is false).
/// Returns how many targets are supervised (not -1).
#[inline]
fn copy_targets(out: &mut [i64], ids: &[Rank], mask: &[u8], use_mask: bool) -> u64 {
    if !use_mask {
        for (o, &t) in out.iter_mut().zip(ids) {
            *o = t as i64;
        }
        return out.len().min(ids.len()) as u64;
    }
    let mut n = 0u64;
    for ((o, &t), &m) in out.iter_mut().zip(ids).zip(mask) {
        let keep = m != 0;
        *o = if keep { t as i64 } else { -1 };
        n += keep as u64;
    }
    n
}

/// The shifted layout; the pieces must total `inputs.len() + 1` tokens.
/// Returns the number of supervised targets.
pub fn write_shifted<I: OutId>(
    pieces: &[Piece],
    fill: Rank,
    inputs: &mut [I],
    targets: &mut [i64],
    use_mask: bool,
) -> u64 {
    let n = inputs.len();
    let mut sup = 0;
    let mut q = 0usize;
    for p in pieces {
        // Inputs take seq positions q..q+len below n; targets take the
        // positions s in max(q,1)..min(q+len, n+1) at index s - 1.
        let in_hi = (q + p.len).min(n);
        let t_lo = q.max(1);
        let t_hi = (q + p.len).min(n + 1);
        match &p.doc {
            Some(d) => {
                let ids = &d.ids[p.start..p.start + p.len];
                let mask = &d.mask[p.start..p.start + p.len];
                if q < in_hi {
                    copy_ids(&mut inputs[q..in_hi], ids);
                }
                if t_lo < t_hi {
                    sup += copy_targets(
                        &mut targets[t_lo - 1..t_hi - 1],
                        &ids[t_lo - q..],
                        &mask[t_lo - q..],
                        use_mask,
                    );
                }
            }
            None => {
                if q < in_hi {
                    inputs[q..in_hi].fill(I::from_rank(fill));
                }
                if t_lo < t_hi {
                    targets[t_lo - 1..t_hi - 1].fill(-1);
                }
            }
        }
        q += p.len;
    }
    sup
}

/// The segment layout for one row. Positions (when given) count from 0 in
/// every piece and in the trailing filler. Returns the supervised count.
pub fn write_segments<I: OutId>(
    pieces: &[Piece],
    fill: Rank,
    inputs: &mut [I],
    targets: &mut [i64],
    mut positions: Option<&mut [i64]>,
) -> u64 {
    let n = inputs.len();
    let mut sup = 0;
    let mut q = 0usize;
    let mut put_positions = |q: usize, len: usize| {
        if let Some(pos) = positions.as_deref_mut() {
            for (j, o) in pos[q..q + len].iter_mut().enumerate() {
                *o = j as i64;
            }
        }
    };
    for p in pieces {
        let hi = q + p.len;
        match &p.doc {
            Some(d) => {
                copy_ids(&mut inputs[q..hi], &d.ids[p.start..p.start + p.len]);
                let from = p.start + 1;
                sup += copy_targets(
                    &mut targets[q..hi],
                    &d.ids[from..from + p.len],
                    &d.mask[from..from + p.len],
                    true,
                );
            }
            None => {
                inputs[q..hi].fill(I::from_rank(fill));
                targets[q..hi].fill(-1);
            }
        }
        put_positions(q, p.len);
        q = hi;
    }
    if q < n {
        inputs[q..].fill(I::from_rank(fill));
        targets[q..].fill(-1);
        put_positions(q, n - q);
    }
    sup
}

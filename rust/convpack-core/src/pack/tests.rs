//! The packers against small, plainly written reference loops (the nanochat
//! generators' semantics, written from the contract, not from the packer).

use super::*;
use std::collections::VecDeque;

const BOS: Rank = 1000;
const PAD: Rank = 1004;

/// A tiny deterministic generator (xorshift), so tests need no crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `n` conversations: BOS (mask 0) then random tokens and masks; every
/// `bad_every`-th one (if any) fails to render.
fn dataset(
    seed: u64,
    n: usize,
    max_len: u64,
    bad_every: usize,
) -> Vec<Result<Rendered, ConversationError>> {
    let mut rng = Rng(seed | 1);
    (0..n)
        .map(|i| {
            if bad_every > 0 && i % bad_every == bad_every - 1 {
                return Err(ConversationError::at_message(0, "bad on purpose"));
            }
            let len = 1 + rng.below(max_len) as usize;
            let mut r = Rendered {
                ids: vec![BOS],
                mask: vec![0],
            };
            for j in 1..len {
                r.ids.push(rng.below(900) as Rank);
                // The first target is always supervised, which tells a
                // conversation's first segment from filler in the varlen test.
                r.mask.push((j == 1 || rng.below(3) > 0) as u8);
            }
            Ok(r)
        })
        .collect()
}

struct Batch {
    inputs: Vec<i64>,
    targets: Vec<i64>,
    cols: usize,
    cu: Vec<i32>,
    pos: Vec<i64>,
}

/// Drives a packer over `data` with fetch chunks of varying size.
fn run(
    packer: &mut Packer,
    data: &[Result<Rendered, ConversationError>],
    batches: usize,
    seed: u64,
) -> Result<Vec<Batch>, CoreError> {
    let mut rng = Rng(seed | 1);
    let mut out = Vec::new();
    while out.len() < batches {
        match packer.plan()? {
            Fill::NeedMore(n) => {
                let chunk = n + rng.below(5) as usize;
                let idx = packer.wanted(chunk);
                packer.push(idx.iter().map(|&i| data[i].clone()).collect())?;
            }
            Fill::Ready => {
                let s = packer.shape().unwrap();
                let cells = s.rows * s.cols;
                let mut i32s = vec![7i32; cells];
                let mut i64s = vec![7i64; cells];
                let mut targets = vec![7i64; cells];
                let mut cu = vec![7i32; s.seqlens];
                let mut pos = vec![7i64; cells];
                let varlen = s.seqlens > 0;
                packer.write(Outputs {
                    inputs: if s.wide_inputs {
                        Inputs::I64(&mut i64s)
                    } else {
                        Inputs::I32(&mut i32s)
                    },
                    targets: &mut targets,
                    cu_seqlens: varlen.then_some(&mut cu[..]),
                    position_ids: varlen.then_some(&mut pos[..]),
                })?;
                let inputs = if s.wide_inputs {
                    i64s
                } else {
                    i32s.iter().map(|&x| x as i64).collect()
                };
                out.push(Batch {
                    inputs,
                    targets,
                    cols: s.cols,
                    cu,
                    pos,
                });
            }
        }
    }
    Ok(out)
}

fn cfg(mode: Mode, b: usize, t: Option<usize>, skip: bool) -> PackConfig {
    PackConfig {
        mode,
        batch_size: b,
        seq_len: t,
        bos: BOS,
        pad: PAD,
        skip_errors: skip,
        max_tokens: 1 << 20,
        split_turns: false,
        keep_long: false,
    }
}

fn good(data: &[Result<Rendered, ConversationError>], i: usize) -> Option<&Rendered> {
    data[i].as_ref().ok()
}

fn target(r: &Rendered, j: usize) -> i64 {
    if r.mask[j] == 1 {
        r.ids[j] as i64
    } else {
        -1
    }
}

fn ref_padded(
    data: &[Result<Rendered, ConversationError>],
    rank: usize,
    world: usize,
    b: usize,
    cap: Option<usize>,
    n: usize,
) -> Vec<(Vec<i64>, Vec<i64>, usize)> {
    let mut out = Vec::new();
    let mut batch: Vec<Rendered> = Vec::new();
    'outer: loop {
        for i in (rank..data.len()).step_by(world) {
            let Some(r) = good(data, i) else { continue };
            let mut r = r.clone();
            if let Some(c) = cap {
                r.truncate(c);
            }
            batch.push(r);
            if batch.len() == b {
                let ncols = batch.iter().map(|r| r.len()).max().unwrap() - 1;
                let mut inputs = vec![PAD as i64; b * ncols];
                let mut targets = vec![-1i64; b * ncols];
                for (row, r) in batch.iter().enumerate() {
                    for j in 0..r.len() - 1 {
                        inputs[row * ncols + j] = r.ids[j] as i64;
                        targets[row * ncols + j] = target(r, j + 1);
                    }
                }
                out.push((inputs, targets, ncols));
                batch.clear();
                if out.len() == n {
                    break 'outer;
                }
            }
        }
    }
    out
}

fn ref_stream(
    data: &[Result<Rendered, ConversationError>],
    rank: usize,
    world: usize,
    b: usize,
    t: usize,
    n: usize,
) -> Vec<(Vec<i64>, Vec<i64>)> {
    let mut buf: VecDeque<Rank> = VecDeque::new();
    let mut cursor = rank;
    let mut out = Vec::new();
    while out.len() < n {
        while buf.len() < b * t + 1 {
            if let Some(r) = good(data, cursor) {
                buf.extend(&r.ids);
            }
            cursor += world;
            if cursor >= data.len() {
                cursor -= data.len();
            }
        }
        let scratch: Vec<i64> = buf.drain(..b * t + 1).map(|x| x as i64).collect();
        out.push((scratch[..b * t].to_vec(), scratch[1..].to_vec()));
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn ref_bestfit(
    data: &[Result<Rendered, ConversationError>],
    rank: usize,
    world: usize,
    b: usize,
    t: usize,
    buffer_size: usize,
    crop: bool,
    n: usize,
) -> Vec<(Vec<i64>, Vec<i64>)> {
    let cap = t + 1;
    let mut buffer: Vec<Rendered> = Vec::new();
    let mut cursor = rank;
    let mut out = Vec::new();
    while out.len() < n {
        let mut inputs = Vec::new();
        let mut targets = Vec::new();
        for _ in 0..b {
            let mut row = Rendered::default();
            while row.len() < cap {
                while buffer.len() < buffer_size {
                    if let Some(r) = good(data, cursor) {
                        let mut r = r.clone();
                        r.truncate(cap);
                        buffer.push(r);
                    }
                    cursor = (cursor + world) % data.len();
                }
                let remaining = cap - row.len();
                let mut best: Option<usize> = None;
                for i in 0..buffer.len() {
                    if buffer[i].len() <= remaining
                        && best.is_none_or(|j| buffer[i].len() > buffer[j].len())
                    {
                        best = Some(i);
                    }
                }
                if let Some(i) = best {
                    let r = buffer.remove(i);
                    row.ids.extend(&r.ids);
                    row.mask.extend(&r.mask);
                } else if crop {
                    let mut s = 0;
                    for i in 0..buffer.len() {
                        if buffer[i].len() < buffer[s].len() {
                            s = i;
                        }
                    }
                    let r = buffer.remove(s);
                    row.ids.extend(&r.ids[..remaining]);
                    row.mask.extend(&r.mask[..remaining]);
                } else {
                    row.ids.extend(std::iter::repeat_n(BOS, remaining));
                    row.mask.extend(std::iter::repeat_n(0, remaining));
                }
            }
            inputs.extend(row.ids[..t].iter().map(|&x| x as i64));
            targets.extend((1..cap).map(|j| target(&row, j)));
        }
        out.push((inputs, targets));
    }
    out
}

const SHAPES: &[(usize, usize)] = &[(1, 8), (2, 16), (3, 5), (4, 40)];

#[test]
fn padded_matches_reference() {
    for world in 1..=3 {
        for rank in 0..world {
            for &(b, t) in SHAPES {
                for cap in [None, Some(t)] {
                    for bad in [0, 7] {
                        let data = dataset(b as u64 * 31 + t as u64, 23, 30, bad);
                        let sched = Schedule::new(data.len(), rank, world, Order::Strided).unwrap();
                        let mut p = Packer::new(cfg(Mode::Padded, b, cap, bad > 0), sched).unwrap();
                        let got = run(&mut p, &data, 20, 5).unwrap();
                        let want = ref_padded(&data, rank, world, b, cap.map(|t| t + 1), 20);
                        for (g, w) in got.iter().zip(&want) {
                            assert_eq!(g.cols, w.2);
                            assert_eq!(g.inputs, w.0);
                            assert_eq!(g.targets, w.1);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn stream_matches_reference() {
    for world in 1..=3 {
        for rank in 0..world {
            for &(b, t) in SHAPES {
                for bad in [0, 5] {
                    let data = dataset(b as u64 * 17 + t as u64, 19, 50, bad);
                    let sched = Schedule::new(data.len(), rank, world, Order::Rolling).unwrap();
                    let mut p = Packer::new(cfg(Mode::Stream, b, Some(t), bad > 0), sched).unwrap();
                    let got = run(&mut p, &data, 30, 9).unwrap();
                    let want = ref_stream(&data, rank, world, b, t, 30);
                    for (g, w) in got.iter().zip(&want) {
                        assert_eq!(g.inputs, w.0);
                        assert_eq!(g.targets, w.1);
                    }
                }
            }
        }
    }
}

#[test]
fn bestfit_matches_reference() {
    for world in 1..=3 {
        for rank in 0..world {
            for &(b, t) in SHAPES {
                for buffer_size in [1, 4, 10] {
                    for crop in [false, true] {
                        let data = dataset(
                            b as u64 * 13 + t as u64 + buffer_size as u64,
                            29,
                            2 * t as u64,
                            6,
                        );
                        let sched = Schedule::new(data.len(), rank, world, Order::Rolling).unwrap();
                        let overflow = if crop { Overflow::Crop } else { Overflow::Pad };
                        let mode = Mode::BestFit {
                            overflow,
                            buffer_size,
                        };
                        let mut p = Packer::new(cfg(mode, b, Some(t), true), sched).unwrap();
                        let got = run(&mut p, &data, 25, 3).unwrap();
                        let want = ref_bestfit(&data, rank, world, b, t, buffer_size, crop, 25);
                        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                            assert_eq!(
                                g.inputs, w.0,
                                "batch {k} b={b} t={t} buf={buffer_size} crop={crop}"
                            );
                            assert_eq!(g.targets, w.1, "batch {k}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn varlen_layout_and_every_target_once() {
    for &(b, t) in SHAPES {
        for max_seqs in [b + 1, b * 3, b * t + 1] {
            let data = dataset(b as u64 * 7 + t as u64, 11, 3 * t as u64, 0);
            let sched = Schedule::new(data.len(), 0, 1, Order::Rolling).unwrap();
            let mut p =
                Packer::new(cfg(Mode::Varlen { max_seqs }, b, Some(t), false), sched).unwrap();
            let batches = run(&mut p, &data, 40, 1).unwrap();
            // Reconstruct each conversation's (input, target) pairs from the
            // segments and compare with what it should contribute.
            let mut stream: Vec<(i64, i64)> = Vec::new();
            for bt in &batches {
                assert_eq!(bt.cu.len(), max_seqs + 1);
                assert_eq!(bt.cu[0], 0);
                assert!(bt.cu.windows(2).all(|w| w[0] <= w[1]));
                assert_eq!(*bt.cu.last().unwrap() as usize, b * t);
                let bounds: Vec<usize> = bt.cu.iter().map(|&c| c as usize).collect();
                for w in bounds.windows(2) {
                    let (lo, hi) = (w[0], w[1]);
                    if lo == hi {
                        continue;
                    }
                    assert_eq!(lo / t, (hi - 1) / t, "a segment crosses a row");
                    for j in lo..hi {
                        assert_eq!(bt.pos[j], (j - lo) as i64);
                    }
                    let filler = bt.inputs[lo] == BOS as i64 && bt.targets[lo] == -1;
                    if filler {
                        assert!(bt.inputs[lo..hi].iter().all(|&x| x == BOS as i64));
                        assert!(bt.targets[lo..hi].iter().all(|&x| x == -1));
                    } else {
                        stream.extend((lo..hi).map(|j| (bt.inputs[j], bt.targets[j])));
                    }
                }
                let used = bt.cu.windows(2).filter(|w| w[1] > w[0]).count();
                assert!(used <= max_seqs);
            }
            let mut want: Vec<(i64, i64)> = Vec::new();
            let mut k = 0;
            while want.len() < stream.len() {
                let r = data[k % data.len()].as_ref().unwrap();
                want.extend(
                    (0..r.len().saturating_sub(1)).map(|j| (r.ids[j] as i64, target(r, j + 1))),
                );
                k += 1;
            }
            want.truncate(stream.len());
            assert_eq!(stream, want, "b={b} t={t} max_seqs={max_seqs}");
            if max_seqs > b * t {
                assert_eq!(
                    p.state().counters.pad,
                    0,
                    "padding-free when the budget allows"
                );
            }
        }
    }
}

fn all_modes(b: usize) -> Vec<Mode> {
    vec![
        Mode::Padded,
        Mode::Stream,
        Mode::BestFit {
            overflow: Overflow::Pad,
            buffer_size: 5,
        },
        Mode::BestFit {
            overflow: Overflow::Crop,
            buffer_size: 3,
        },
        Mode::Varlen { max_seqs: b * 4 },
    ]
}

#[test]
fn resume_from_state_is_exact() {
    let (b, t) = (3, 12);
    let data = dataset(99, 31, 30, 8);
    for mode in all_modes(b) {
        for k in [0, 1, 4, 9] {
            let c = cfg(mode, b, Some(t), true);
            let sched = Schedule::new(data.len(), 1, 2, c.order()).unwrap();
            let mut a = Packer::new(c, sched.clone()).unwrap();
            run(&mut a, &data, k, 2).unwrap();
            let state = a.state().clone();
            let rest = run(&mut a, &data, 10, 3).unwrap();
            let mut fresh = Packer::new(c, sched).unwrap();
            fresh.load_state(state).unwrap();
            let again = run(&mut fresh, &data, 10, 4).unwrap();
            for (x, y) in rest.iter().zip(&again) {
                assert_eq!(
                    (&x.inputs, &x.targets, &x.cu),
                    (&y.inputs, &y.targets, &y.cu),
                    "{mode:?} k={k}"
                );
            }
            assert_eq!(a.state(), fresh.state());
        }
    }
}

#[test]
fn errors_raise_with_the_index_or_are_skipped() {
    let data = dataset(5, 10, 20, 4); // indices 3 and 7 are bad
    for mode in all_modes(2) {
        let c = cfg(mode, 2, Some(6), false);
        let sched = Schedule::new(data.len(), 0, 1, c.order()).unwrap();
        let mut p = Packer::new(c, sched.clone()).unwrap();
        match run(&mut p, &data, 50, 1) {
            Err(CoreError::Conversation(e)) => {
                assert_eq!(e.conversation_index, Some(3), "{mode:?}")
            }
            other => panic!(
                "{mode:?}: expected the bad conversation's error, got {:?}",
                other.map(|v| v.len())
            ),
        }
        // The error repeats: the bad conversation stays at the front.
        assert!(p.plan().is_err());
        let mut p = Packer::new(cfg(mode, 2, Some(6), true), sched.clone()).unwrap();
        run(&mut p, &data, 30, 1).unwrap();
        let st = p.state();
        assert!(st.skipped >= 2, "{mode:?}");
        // Skips are counted once per time the bad index is read.
        let read = st.next;
        let expected = (0..read)
            .filter(|&k| matches!(sched.index(k), 3 | 7))
            .count() as u64;
        assert_eq!(st.skipped, expected, "{mode:?}");
    }
}

#[test]
fn all_bad_is_an_error_not_a_hang() {
    let data: Vec<Result<Rendered, ConversationError>> = (0..5)
        .map(|_| Err(ConversationError::new(None, "bad")))
        .collect();
    let c = cfg(Mode::Stream, 1, Some(4), true);
    let mut p = Packer::new(c, Schedule::new(5, 0, 1, Order::Rolling).unwrap()).unwrap();
    assert!(matches!(
        run(&mut p, &data, 1, 1),
        Err(CoreError::Invalid(_))
    ));
}

#[test]
fn long_conversations_never_stall_bestfit() {
    // Every conversation is longer than a row: each row is one truncated
    // conversation, never an all-padding row.
    let data = dataset(3, 9, 200, 0)
        .into_iter()
        .map(|r| {
            r.map(|mut r| {
                r.ids.resize(100, 5);
                r.mask.resize(100, 1);
                r
            })
        })
        .collect::<Vec<_>>();
    let c = cfg(
        Mode::BestFit {
            overflow: Overflow::Pad,
            buffer_size: 4,
        },
        2,
        Some(16),
        false,
    );
    let mut p = Packer::new(c, Schedule::new(data.len(), 0, 1, Order::Rolling).unwrap()).unwrap();
    let out = run(&mut p, &data, 5, 1).unwrap();
    for bt in &out {
        assert!(bt.targets.iter().filter(|&&x| x != -1).count() > 0);
    }
    assert_eq!(p.state().counters.pad, 0);
    assert_eq!(p.state().consumed, 10);
}

#[test]
fn progress_reaches_one_at_the_epoch_end() {
    let data = dataset(8, 12, 10, 0);
    let c = cfg(Mode::Padded, 2, None, false);
    let sched = Schedule::new(data.len(), 1, 3, c.order()).unwrap();
    let mut p = Packer::new(c, sched).unwrap();
    run(&mut p, &data, 1, 1).unwrap(); // indices 1, 4
    assert_eq!(
        p.progress(),
        Progress {
            epoch: 1,
            fraction: 7.0 / 12.0,
            epoch_done: false
        }
    );
    run(&mut p, &data, 1, 1).unwrap(); // 7, 10
    assert_eq!(
        p.progress(),
        Progress {
            epoch: 1,
            fraction: 1.0,
            epoch_done: true
        }
    );
    run(&mut p, &data, 1, 1).unwrap(); // 1, 4 of epoch 2
    assert_eq!(p.progress().epoch, 2);
}

#[test]
fn states_that_no_packer_wrote_are_refused() {
    let (b, t) = (2, 10);
    let data = dataset(17, 23, 25, 0);
    for mode in all_modes(b) {
        let c = cfg(mode, b, Some(t), false);
        let sched = Schedule::new(data.len(), 0, 1, c.order()).unwrap();
        let mut a = Packer::new(c, sched.clone()).unwrap();
        run(&mut a, &data, 5, 2).unwrap();
        let good = a.state().clone();
        let mut fresh = Packer::new(c, sched.clone()).unwrap();
        fresh.load_state(good.clone()).unwrap();
        type Tamper = fn(&mut PackState);
        let tampers: [(&str, Tamper); 9] = [
            ("next", |s| s.next += 1),
            ("consumed", |s| s.consumed = 1 << 60),
            ("batch_start", |s| s.batch_start = s.consumed + 1),
            ("skipped", |s| s.skipped = s.consumed + 1),
            ("tokens", |s| s.counters.tokens += 1),
            ("pad", |s| s.counters.pad = s.counters.tokens + 1),
            ("dropped", |s| s.counters.dropped = s.counters.entered + 1),
            ("held", |s| s.held.push(1 << 30)),
            ("batches", |s| s.batches = u64::MAX),
        ];
        for (field, tamper) in tampers {
            let mut bad = good.clone();
            tamper(&mut bad);
            let mut p = Packer::new(c, sched.clone()).unwrap();
            match p.load_state(bad) {
                Err(CoreError::Invalid(m)) => assert!(m.contains('"'), "{mode:?} {field}: {m}"),
                other => panic!("{mode:?}: tampered {field} accepted: {other:?}"),
            }
        }
    }
}

#[test]
fn oversized_configurations_are_refused_before_allocating() {
    let big = [
        cfg(Mode::Stream, 2, Some(1 << 40), false),
        cfg(Mode::Stream, 1_000_000_000, Some(16), false),
        cfg(
            Mode::Varlen { max_seqs: 1 << 20 },
            1 << 16,
            Some(1 << 16),
            false,
        ),
        cfg(
            Mode::BestFit {
                overflow: Overflow::Pad,
                buffer_size: 10_000_000,
            },
            2,
            Some(16),
            false,
        ),
    ];
    for c in big {
        let sched = Schedule::new(10, 0, 1, c.order()).unwrap();
        assert!(
            matches!(Packer::new(c, sched), Err(CoreError::Invalid(_))),
            "{c:?}"
        );
    }
}

#[test]
fn bestfit_keep_long_leaves_over_long_conversations_in_the_buffer() {
    // Conversations longer than a row (tokens 950, which the others never
    // use) stay buffered and are never placed; with the cut they fill rows.
    let (b, t) = (2, 10);
    let mut data = dataset(7, 40, 9, 0);
    for i in [0, 5, 17] {
        data[i] = Ok(Rendered {
            ids: [BOS]
                .into_iter()
                .chain(std::iter::repeat_n(950, 14))
                .collect(),
            mask: [0].into_iter().chain(std::iter::repeat_n(1, 14)).collect(),
        });
    }
    for keep_long in [true, false] {
        let mode = Mode::BestFit {
            overflow: Overflow::Pad,
            buffer_size: 4,
        };
        let c = PackConfig {
            keep_long,
            ..cfg(mode, b, Some(t), false)
        };
        let sched = Schedule::new(data.len(), 0, 1, c.order()).unwrap();
        let mut p = Packer::new(c, sched).unwrap();
        let out = run(&mut p, &data, 30, 3).unwrap();
        let placed = out
            .iter()
            .flat_map(|x| &x.inputs)
            .filter(|&&x| x == 950)
            .count();
        assert_eq!(placed == 0, keep_long);
    }
    let c = PackConfig {
        keep_long: true,
        ..cfg(Mode::Stream, b, Some(t), false)
    };
    assert!(c.validate().is_err());
}

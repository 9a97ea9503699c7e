//! Data-parallel helpers over the process-wide thread pool.
//!
//! There is one pool for the process, never one per call. A caller that asks
//! for fewer threads gets that many workers (itself and that many less one
//! tasks in the pool), so no more than that many ever run its work.
//!
//! The pool survives `fork()`: a forked child inherits the parent's pool
//! object but none of its threads, so work sent there would wait forever.
//! The pool therefore remembers the process that built it, and a child
//! builds its own on first use (or, if it cannot start threads, runs the
//! work on the calling thread).

use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

use rayon::{ThreadPool, ThreadPoolBuilder};

/// The pool of one process: `pool` is `None` with one core, or when its
/// threads could not be started (work then runs on the calling thread).
struct ProcessPool {
    pid: u32,
    pool: Option<ThreadPool>,
}

/// The current process's pool, leaked on purpose: after a fork the parent's
/// entry is still referenced by nothing in the child but cannot be dropped
/// there (dropping would signal threads that do not exist).
static POOL: AtomicPtr<ProcessPool> = AtomicPtr::new(std::ptr::null_mut());

/// The pool of this process, built on first use in each process.
fn process_pool() -> Option<&'static ThreadPool> {
    let pid = std::process::id();
    loop {
        let current = POOL.load(Ordering::Acquire);
        // SAFETY: every pointer stored in POOL comes from `Box::into_raw` and
        // is never freed once published, so it stays valid for 'static.
        if let Some(entry) = unsafe { current.as_ref() } {
            if entry.pid == pid {
                return entry.pool.as_ref();
            }
        }
        // The callers work too (see `map_chunked`): one thread fewer than
        // the cores, so a batch on every core has no pool thread left over
        // to spin for work on a core another one needs.
        let helpers = cores().saturating_sub(1);
        let pool = if helpers == 0 {
            None
        } else {
            ThreadPoolBuilder::new()
                .num_threads(helpers)
                .thread_name(|i| format!("convpack-{i}"))
                .build()
                .ok()
        };
        let fresh = Box::into_raw(Box::new(ProcessPool { pid, pool }));
        match POOL.compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire) {
            // The previous entry (another process's) is deliberately leaked.
            Ok(_) => continue,
            Err(_) => {
                // Another thread of this process published first; ours was
                // never shared, so it can be dropped here.
                // SAFETY: `fresh` came from `Box::into_raw` just above and was
                // not published.
                drop(unsafe { Box::from_raw(fresh) });
            }
        }
    }
}

/// Cores the work of one call may use: `RAYON_NUM_THREADS` when set to a
/// positive number, else every core this process may run on.
fn cores() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Threads one call's work may run on: the pool's and the caller's (1 when
/// the work runs on the caller alone).
pub fn max_threads() -> usize {
    process_pool().map_or(1, |p| p.current_num_threads() + 1)
}

/// `items.map(f)` in order, on at most `num_threads` threads (`0` = all).
///
/// The calling thread is one of them: it starts on the items at once while
/// `num_threads - 1` tasks go to the pool. Each takes the next block of
/// items from a shared counter until none is left, so uneven items (a few
/// long documents) do not leave a thread idle while another finishes, and a
/// pool thread that wakes late takes fewer blocks instead of holding the
/// rest up.
///
/// Why the caller works, and why a pool task first moves off the caller's
/// CPU: traced with `perf record -e sched:sched_switch,sched:sched_migrate_task`
/// on the 2-vCPU VM the benchmarks run on, a 1 MB batch on 2 threads ran
/// at about 1.2x the speed of one thread in half the runs. Linux places a
/// woken thread on its waker's CPU ("wake affine"), so the pool thread the
/// caller woke time-shared the caller's CPU in 4 ms slices while the other
/// CPU stayed idle, and no load balancing moved it within the batch (CPU
/// time 1.1-1.3x the wall time instead of 1.9x). Handing every task to the
/// pool and waiting did the same with two pool threads. Each task now
/// leaves the caller's CPU for the duration of the task (its affinity
/// restored after; nothing changes where that is not possible).
pub fn map_chunked<T: Sync, R: Send>(
    items: &[T],
    num_threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let pool = match process_pool() {
        Some(pool) => pool,
        None => return items.iter().map(f).collect(),
    };
    let threads = effective_threads(num_threads, pool.current_num_threads() + 1, items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    // Blocks small enough to balance, large enough to keep overhead low.
    let block = (items.len() / (threads * 16)).max(1);
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let start = next.fetch_add(block, Ordering::Relaxed);
            if start >= items.len() {
                return done;
            }
            let end = (start + block).min(items.len());
            done.push((start, items[start..end].iter().map(&f).collect::<Vec<R>>()));
        }
    };
    let caller_cpu = placement::current_cpu();
    // What each pool task did: `(first item, results)` per block it took.
    let helpers: Vec<Mutex<Blocks<R>>> = (1..threads).map(|_| Mutex::new(Vec::new())).collect();
    let mine = pool.in_place_scope(|scope| {
        for slot in &helpers {
            let work = &work;
            scope.spawn(move |_| {
                let _off = caller_cpu.map(placement::keep_off);
                let done = work();
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = done;
            });
        }
        work()
    });
    let mut blocks: Blocks<R> = mine;
    for slot in helpers {
        blocks.extend(slot.into_inner().unwrap_or_else(|e| e.into_inner()));
    }
    blocks.sort_unstable_by_key(|b| b.0);
    let mut out = Vec::with_capacity(items.len());
    for (_, part) in blocks {
        out.extend(part);
    }
    out
}

/// [`map_chunked`], but each block's results go to `consume(first item,
/// results)` on the calling thread as soon as they are ready (blocks in no
/// particular order), while the other threads go on with the next blocks.
///
/// For work whose results must be turned into something only the calling
/// thread may make (Python objects): with the whole batch mapped first and
/// consumed after, that last step runs on one thread while the others wait,
/// and bounds the speed-up. Here the calling thread consumes what the pool
/// has finished, maps a block itself only when nothing is ready, and waits
/// only for the last blocks.
///
/// The first error `consume` returns stops the work: no block is started
/// after it, and that error is returned. A panic in `f` on any thread is
/// resumed on the calling thread once every thread has stopped. Called from
/// a task of the pool, it maps on that thread alone (it waits for blocks,
/// and the tasks it would hand out could be queued behind itself).
pub fn map_chunked_each<T: Sync, R: Send, E>(
    items: &[T],
    num_threads: usize,
    f: impl Fn(&T) -> R + Sync,
    mut consume: impl FnMut(usize, Vec<R>) -> Result<(), E>,
) -> Result<(), E> {
    // A pool thread would wait below for tasks queued behind itself.
    let pool = process_pool().filter(|_| rayon::current_thread_index().is_none());
    let threads = pool.map_or(1, |pool| {
        effective_threads(num_threads, pool.current_num_threads() + 1, items.len())
    });
    let (Some(pool), true) = (pool, threads > 1) else {
        return consume(0, items.iter().map(f).collect());
    };
    let block = (items.len() / (threads * 16)).max(1);
    let next = AtomicUsize::new(0);
    let take = || {
        let start = next.fetch_add(block, Ordering::Relaxed);
        (start < items.len()).then(|| start..(start + block).min(items.len()))
    };
    let run = |range: Range<usize>| -> (usize, Vec<R>) {
        (range.start, items[range].iter().map(&f).collect())
    };
    let shared = Mutex::new(Shared::<R> {
        ready: Vec::new(),
        running: threads - 1,
        panic: None,
    });
    let changed = Condvar::new();
    let lock = || shared.lock().unwrap_or_else(PoisonError::into_inner);
    let caller_cpu = placement::current_cpu();
    pool.in_place_scope(|scope| {
        for _ in 1..threads {
            let (take, run, lock, changed) = (&take, &run, &lock, &changed);
            scope.spawn(move |_| {
                let _off = caller_cpu.map(placement::keep_off);
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    while let Some(range) = take() {
                        let done = run(range);
                        lock().ready.push(done);
                        changed.notify_one();
                    }
                }));
                let mut s = lock();
                s.running -= 1;
                if let Err(p) = outcome {
                    s.panic.get_or_insert(p);
                }
                drop(s);
                changed.notify_one();
            });
        }
        let stop = || next.store(items.len(), Ordering::Relaxed);
        let mut result = Ok(());
        loop {
            let ready = {
                let mut s = lock();
                if s.panic.is_some() {
                    break;
                }
                s.ready.pop()
            };
            let (start, rows) = match ready {
                Some(done) => done,
                None => match take() {
                    Some(range) => {
                        match std::panic::catch_unwind(AssertUnwindSafe(|| run(range))) {
                            Ok(done) => done,
                            Err(p) => {
                                lock().panic.get_or_insert(p);
                                break;
                            }
                        }
                    }
                    None => {
                        let mut s = lock();
                        while s.ready.is_empty() && s.running > 0 && s.panic.is_none() {
                            s = changed.wait(s).unwrap_or_else(PoisonError::into_inner);
                        }
                        if s.ready.is_empty() {
                            break; // every block is consumed, or a panic
                        }
                        continue;
                    }
                },
            };
            if let Err(e) = consume(start, rows) {
                result = Err(e);
                break;
            }
        }
        stop();
        result
    })
    .and_then(|()| match lock().panic.take() {
        Some(p) => std::panic::resume_unwind(p),
        None => Ok(()),
    })
}

/// What the threads of [`map_chunked_each`] share.
struct Shared<R> {
    /// Blocks mapped and not yet consumed: `(first item, results)`.
    ready: Blocks<R>,
    /// Pool tasks still taking blocks.
    running: usize,
    /// The first panic of `f`, to resume on the calling thread.
    panic: Option<Box<dyn std::any::Any + Send>>,
}

/// Keeping a pool thread off the CPU of the thread that handed it work.
#[cfg(target_os = "linux")]
mod placement {
    use std::mem::{size_of, zeroed};

    /// The CPU the calling thread runs on now.
    pub fn current_cpu() -> Option<usize> {
        // SAFETY: sched_getcpu takes no arguments and only reads state.
        let cpu = unsafe { libc::sched_getcpu() };
        usize::try_from(cpu).ok()
    }

    /// The calling thread's CPU affinity before [`keep_off`], restored
    /// when dropped.
    pub struct Restore(libc::cpu_set_t);

    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: `self.0` is a cpu_set_t this thread had; the size is
            // that of the type passed.
            unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &self.0) };
        }
    }

    /// Moves the calling thread off `cpu` (the kernel migrates it at once)
    /// until the result is dropped; `None` (nothing changed) when it may
    /// run nowhere else or the system refuses.
    pub fn keep_off(cpu: usize) -> Option<Restore> {
        if cpu >= 8 * size_of::<libc::cpu_set_t>() {
            return None;
        }
        // SAFETY: a zeroed cpu_set_t is an empty set; the calls get a
        // pointer to a live set and its exact size, and CPU_* index it
        // below its size (checked above).
        unsafe {
            let mut had: libc::cpu_set_t = zeroed();
            if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut had) != 0
                || !libc::CPU_ISSET(cpu, &had)
            {
                return None;
            }
            let mut elsewhere = had;
            libc::CPU_CLR(cpu, &mut elsewhere);
            if libc::CPU_COUNT(&elsewhere) == 0
                || libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &elsewhere) != 0
            {
                return None;
            }
            Some(Restore(had))
        }
    }
}

/// Elsewhere threads stay where the system puts them.
#[cfg(not(target_os = "linux"))]
mod placement {
    pub struct Restore;

    pub fn current_cpu() -> Option<usize> {
        None
    }

    pub fn keep_off(_cpu: usize) -> Option<Restore> {
        None
    }
}

/// Blocks of results: `(index of the block's first item, its results)`.
type Blocks<R> = Vec<(usize, Vec<R>)>;

fn effective_threads(num_threads: usize, pool: usize, n: usize) -> usize {
    let t = if num_threads == 0 {
        pool
    } else {
        num_threads.min(pool)
    };
    t.min(n).max(1)
}

/// Runs closures one at a time, in the order their tickets were taken,
/// whichever threads call [`InTurn::run`].
///
/// A data generator renders the chunks it reads ahead on threads of their
/// own; through one `InTurn` they render one after another, each on the
/// threads it is allowed, so a generator never renders on more threads
/// than it was given, however many chunks are in flight.
#[derive(Debug, Default)]
pub struct InTurn {
    next_ticket: AtomicU64,
    /// The ticket whose turn it is.
    now: Mutex<u64>,
    turn_over: Condvar,
}

impl InTurn {
    /// The next ticket. Every ticket taken must be run once: the tickets
    /// after it wait for its turn to end.
    pub fn ticket(&self) -> u64 {
        self.next_ticket.fetch_add(1, Ordering::Relaxed)
    }

    /// Waits for `ticket`'s turn, runs `f`, and ends the turn (also if `f`
    /// panics).
    pub fn run<R>(&self, ticket: u64, f: impl FnOnce() -> R) -> R {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        while *now != ticket {
            now = self
                .turn_over
                .wait(now)
                .unwrap_or_else(PoisonError::into_inner);
        }
        drop(now);
        let _end = EndTurn(self);
        f()
    }
}

/// Ends the running turn when dropped.
struct EndTurn<'a>(&'a InTurn);

impl Drop for EndTurn<'_> {
    fn drop(&mut self) {
        *self.0.now.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.0.turn_over.notify_all();
    }
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

    #[test]
    fn each_block_is_consumed_once() {
        let v: Vec<u32> = (0..1000).collect();
        for t in [0, 1, 2, 3, 7] {
            let mut seen = vec![None; v.len()];
            let done: Result<(), ()> = super::map_chunked_each(
                &v,
                t,
                |x| x * 2,
                |start, rows| {
                    for (k, r) in rows.into_iter().enumerate() {
                        assert!(seen[start + k].is_none(), "item {} twice", start + k);
                        seen[start + k] = Some(r);
                    }
                    Ok(())
                },
            );
            assert_eq!(done, Ok(()));
            let want: Vec<Option<u32>> = v.iter().map(|x| Some(x * 2)).collect();
            assert_eq!(seen, want);
        }
    }

    #[test]
    fn an_error_stops_the_work_and_a_panic_reaches_the_caller() {
        let v: Vec<u32> = (0..1000).collect();
        let mut calls = 0;
        let done = super::map_chunked_each(
            &v,
            2,
            |x| *x,
            |_, _| {
                calls += 1;
                Err("no room")
            },
        );
        assert_eq!((done, calls), (Err("no room"), 1));
        let caught = std::panic::catch_unwind(|| {
            super::map_chunked_each(
                &v,
                2,
                |&x| {
                    assert_ne!(x, 700, "item 700 fails");
                    x
                },
                |_, _| Ok::<(), ()>(()),
            )
        });
        assert!(caught.is_err());
    }

    #[test]
    fn a_pool_task_maps_each_block_on_its_own_thread() {
        // Each item's work runs map_chunked_each from wherever map_chunked
        // put it, pool threads included: none may wait for itself.
        let outer: Vec<u32> = (0..8).collect();
        let inner: Vec<u32> = (0..500).collect();
        let sums = super::map_chunked(&outer, 2, |&k| {
            let mut sum = 0;
            let done = super::map_chunked_each(
                &inner,
                2,
                |x| x + k,
                |_, rows| {
                    sum += rows.iter().sum::<u32>();
                    Ok::<(), ()>(())
                },
            );
            done.map(|()| sum)
        });
        let want: Vec<Result<u32, ()>> = outer.iter().map(|k| Ok(124_750 + 500 * k)).collect();
        assert_eq!(sums, want);
    }

    #[test]
    fn turns_run_alone_in_ticket_order() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        let turns = Arc::new(super::InTurn::default());
        let tickets: Vec<u64> = (0..8).map(|_| turns.ticket()).collect();
        let running = Arc::new(AtomicUsize::new(0));
        let order = Arc::new(Mutex::new(Vec::new()));
        // Started last ticket first: each must still wait for its turn.
        let handles: Vec<_> = tickets
            .iter()
            .rev()
            .map(|&t| {
                let (turns, running, order) = (turns.clone(), running.clone(), order.clone());
                std::thread::spawn(move || {
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        turns.run(t, || {
                            assert_eq!(
                                running.fetch_add(1, Ordering::SeqCst),
                                0,
                                "two turns at once"
                            );
                            order.lock().unwrap().push(t);
                            std::thread::yield_now();
                            running.fetch_sub(1, Ordering::SeqCst);
                            // A turn that panics must still end.
                            assert_ne!(t, 3, "ticket 3 fails");
                        })
                    }));
                    result.is_ok()
                })
            })
            .collect();
        let ok: Vec<bool> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(ok.iter().filter(|&&o| !o).count(), 1);
        assert_eq!(*order.lock().unwrap(), tickets);
    }

    #[test]
    fn one_pool_per_process() {
        let a = super::process_pool().map(|p| p as *const _);
        let b = super::process_pool().map(|p| p as *const _);
        assert_eq!(a, b);
    }
}

//! Categories worked on side by side: fitting one category leaves cores idle (gaps between
//! chunks, the single-threaded parts of a fit's `finish`, cache writes) that another
//! category's work fills.
//!
//! The categories run as tasks on the global rayon pool, so the stages' own parallel work
//! (each chunk's samples) shares the same threads instead of adding a pool. A bounded number
//! are in flight at once, as each holds its own fit state.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Mutex,
};

/// Categories in flight when the run options do not say: two from two threads up (one fills
/// the other's idle gaps), one on a single thread.
pub fn default_in_flight(threads: usize) -> usize {
    threads.clamp(1, 2)
}

/// Runs `work(i)` for every `i < count`, at most `in_flight` at a time, and returns the
/// results in index order. Indices start in order; once one fails, no later index starts, and
/// the error returned is that of the lowest failing index: the one a run doing one index at a
/// time reports, whichever finished first. With `in_flight` 1 everything runs on the calling
/// thread, one index after the other.
pub fn run_in_order<T: Send, E: Send>(
    count: usize,
    in_flight: usize,
    work: impl Fn(usize) -> Result<T, E> + Sync,
) -> Result<Vec<T>, E> {
    let next = AtomicUsize::new(0);
    let first_failed = AtomicUsize::new(usize::MAX);
    let results: Vec<Mutex<Option<Result<T, E>>>> = (0..count).map(|_| Mutex::new(None)).collect();
    let worker = || loop {
        let i = next.fetch_add(1, Ordering::SeqCst);
        if i >= count || i > first_failed.load(Ordering::SeqCst) {
            break;
        }
        let result = work(i);
        if result.is_err() {
            first_failed.fetch_min(i, Ordering::SeqCst);
        }
        if let Ok(mut slot) = results[i].lock() {
            *slot = Some(result);
        }
    };
    let workers = in_flight.clamp(1, count.max(1));
    if workers == 1 {
        worker();
    } else {
        rayon::scope(|s| {
            for _ in 0..workers {
                s.spawn(|_| worker());
            }
        });
    }
    // Every index below the lowest failing one ran (indices start in order and a failure only
    // stops later ones), so the scan meets that failure before any index that did not run.
    let mut out = Vec::with_capacity(count);
    for slot in results {
        match slot.into_inner().ok().flatten() {
            Some(Ok(value)) => out.push(value),
            Some(Err(e)) => return Err(e),
            None => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::AtomicUsize,
        time::{Duration, Instant},
    };

    use super::*;

    #[test]
    fn the_default_follows_the_thread_count() {
        assert_eq!(default_in_flight(0), 1);
        assert_eq!(default_in_flight(1), 1);
        assert_eq!(default_in_flight(2), 2);
        assert_eq!(default_in_flight(64), 2);
    }

    #[test]
    fn results_come_back_in_index_order() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        for in_flight in [1, 2, 3, 8] {
            // Early indices are slow, so later ones finish first.
            let out = pool
                .install(|| {
                    run_in_order(6, in_flight, |i| {
                        std::thread::sleep(Duration::from_millis(30 - 5 * i as u64));
                        Ok::<_, String>(i * 10)
                    })
                })
                .unwrap();
            assert_eq!(out, vec![0, 10, 20, 30, 40, 50], "in flight {in_flight}");
        }
        assert_eq!(run_in_order(0, 2, Ok::<_, ()>).unwrap(), Vec::<usize>::new());
    }

    #[test]
    fn at_most_in_flight_run_at_once() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
        let (running, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        pool.install(|| {
            run_in_order(12, 2, |_| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, ()>(())
            })
        })
        .unwrap();
        assert_eq!(most.load(Ordering::SeqCst), 2, "two in flight on four threads");
    }

    #[test]
    fn the_lowest_failing_index_is_reported_whichever_fails_first() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let started = Mutex::new(Vec::new());
        let t = Instant::now();
        // Index 1 fails late, index 2 at once: 2 fails first, 1 is still the one reported.
        let result = pool.install(|| {
            run_in_order(8, 2, |i| {
                started.lock().unwrap().push(i);
                match i {
                    1 => {
                        std::thread::sleep(Duration::from_millis(200));
                        Err(format!("category {i}"))
                    }
                    2 => Err(format!("category {i}")),
                    _ => Ok(i),
                }
            })
        });
        assert_eq!(result, Err("category 1".to_string()));
        let mut started = started.into_inner().unwrap();
        started.sort_unstable();
        assert_eq!(started, vec![0, 1, 2], "nothing after a failure starts");
        assert!(t.elapsed() >= Duration::from_millis(200), "the slower, earlier failure was awaited");
        // One at a time: the first failure stops the rest.
        let calls = AtomicUsize::new(0);
        let serial = run_in_order(8, 1, |i| {
            calls.fetch_add(1, Ordering::SeqCst);
            if i >= 1 {
                Err(i)
            } else {
                Ok(i)
            }
        });
        assert_eq!(serial, Err(1));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}

//! A budget for decoded pixels in flight, shared by every read in the process.
//!
//! The per-image cap ([`crate::io::MAX_DECODED_BYTES`]) alone does not bound memory: a source
//! decodes up to `--in-flight` images at once, and a 746 KB PNG can claim 16000 x 16000
//! pixels. Each read reserves the bytes its decode needs (learnt from the header, before
//! anything that size is allocated) and gives them back when it returns. A reservation that
//! does not fit waits until others are released; one larger than the whole budget fails at
//! once with an error naming the file. Reads never hold two reservations, so waiting cannot
//! deadlock.
//!
//! The budget is [`DEFAULT_BUDGET`] (4 GiB), or `ANOFLOW_DECODE_BUDGET` (bytes, or with a
//! `K`/`M`/`G` suffix: `512M`, `8G`). "Process-wide" means per library that links this crate:
//! each plugin library has its own copy (the image readers are the dataset sources').

use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

/// The environment variable that sets the budget.
pub const BUDGET_ENV: &str = "ANOFLOW_DECODE_BUDGET";

/// The default budget: 4 GiB, which a 24 GiB machine survives with a run's other memory.
pub const DEFAULT_BUDGET: u64 = 4 << 30;

/// A counter of reserved bytes with an upper limit.
#[derive(Debug)]
pub struct DecodeBudget {
    limit: u64,
    reserved: Mutex<u64>,
    released: Condvar,
}

/// Bytes held against a [`DecodeBudget`]; given back when dropped (also on a panic).
#[derive(Debug)]
pub struct Reservation<'a> {
    budget: &'a DecodeBudget,
    bytes: u64,
}

/// A reservation larger than the whole budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    pub needed: u64,
    pub limit: u64,
}

impl DecodeBudget {
    pub const fn new(limit: u64) -> Self {
        Self { limit, reserved: Mutex::new(0), released: Condvar::new() }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes reserved now.
    pub fn reserved(&self) -> u64 {
        *self.lock()
    }

    /// Reserves `bytes`, waiting while they do not fit beside the reservations held by
    /// others. More than the whole budget is refused at once.
    pub fn reserve(&self, bytes: u64) -> Result<Reservation<'_>, OverBudget> {
        if bytes > self.limit {
            return Err(OverBudget { needed: bytes, limit: self.limit });
        }
        let mut reserved = self.lock();
        while *reserved + bytes > self.limit {
            reserved = self.released.wait(reserved).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        *reserved += bytes;
        Ok(Reservation { budget: self, bytes })
    }

    fn lock(&self) -> MutexGuard<'_, u64> {
        // The counter stays consistent even if a holder panicked: recover it.
        self.reserved.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Reservation<'_> {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut reserved = self.budget.lock();
        *reserved -= self.bytes;
        drop(reserved);
        self.budget.released.notify_all();
    }
}

/// Parses a size: plain bytes, or a number with `K`, `M`, `G` or `T` (powers of 1024; an
/// optional `iB` or `B` after it).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let t = t.strip_suffix("iB").or_else(|| t.strip_suffix('B')).unwrap_or(t);
    let (digits, shift) = match t.char_indices().last()? {
        (i, 'k' | 'K') => (&t[..i], 10),
        (i, 'm' | 'M') => (&t[..i], 20),
        (i, 'g' | 'G') => (&t[..i], 30),
        (i, 't' | 'T') => (&t[..i], 40),
        _ => (t, 0),
    };
    let n: u64 = digits.trim().parse().ok()?;
    n.checked_mul(1u64 << shift)
}

/// The budget from `ANOFLOW_DECODE_BUDGET`'s value (`None`: the default).
pub fn budget_from(value: Option<&str>) -> Result<u64, String> {
    match value {
        None => Ok(DEFAULT_BUDGET),
        Some(v) => match parse_size(v) {
            Some(n) if n > 0 => Ok(n),
            _ => Err(format!("{BUDGET_ENV}=`{v}` is not a size; expected bytes or e.g. `512M`, `4G`")),
        },
    }
}

/// The process's budget, read from the environment on first use.
pub fn global() -> Result<&'static DecodeBudget, String> {
    static GLOBAL: OnceLock<Result<DecodeBudget, String>> = OnceLock::new();
    GLOBAL
        .get_or_init(|| {
            let value = std::env::var(BUDGET_ENV).ok();
            budget_from(value.as_deref()).map(DecodeBudget::new)
        })
        .as_ref()
        .map_err(Clone::clone)
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{mpsc, Arc},
        time::Duration,
    };

    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("1073741824"), Some(1 << 30));
        assert_eq!(parse_size("4G"), Some(4 << 30));
        assert_eq!(parse_size("4GiB"), Some(4 << 30));
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size(" 64k "), Some(64 << 10));
        assert_eq!(parse_size("2T"), Some(2 << 40));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("-1G"), None);
        assert_eq!(parse_size("99999999999999999999G"), None);
        assert_eq!(budget_from(None), Ok(DEFAULT_BUDGET));
        assert_eq!(budget_from(Some("1G")), Ok(1 << 30));
        assert!(budget_from(Some("0")).unwrap_err().contains("ANOFLOW_DECODE_BUDGET=`0` is not a size"));
    }

    #[test]
    fn more_than_the_whole_budget_fails_at_once() {
        let budget = DecodeBudget::new(1000);
        assert_eq!(budget.reserve(1001).unwrap_err(), OverBudget { needed: 1001, limit: 1000 });
        let whole = budget.reserve(1000).unwrap();
        assert_eq!(budget.reserved(), 1000);
        drop(whole);
        assert_eq!(budget.reserved(), 0);
    }

    #[test]
    fn admission_waits_until_memory_is_released() {
        let budget = Arc::new(DecodeBudget::new(1000));
        let held = budget.reserve(700).unwrap();
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let budget = Arc::clone(&budget);
            std::thread::spawn(move || {
                let r = budget.reserve(400).unwrap();
                tx.send(budget.reserved()).unwrap();
                drop(r);
            })
        };
        // 700 + 400 does not fit: the second reservation waits...
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "admitted over the budget");
        // ...until the first one is released.
        drop(held);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), 400);
        waiter.join().unwrap();
        assert_eq!(budget.reserved(), 0);
    }

    #[test]
    fn a_panicking_holder_gives_its_bytes_back() {
        let budget = Arc::new(DecodeBudget::new(1000));
        let b = Arc::clone(&budget);
        let outcome = std::thread::spawn(move || {
            let _r = b.reserve(900).unwrap();
            panic!("decoder bug");
        })
        .join();
        assert!(outcome.is_err());
        assert_eq!(budget.reserved(), 0);
        assert!(budget.reserve(1000).is_ok());
    }
}

//! Per-phase utilization: how much of `wall x threads` the stages kept busy in each phase of
//! a run (fit, calibrate, test, finish), so a run says where cores sat idle.

use std::{fmt::Write, time::Instant};

use serde::{Deserialize, Serialize};

/// One phase of a run, as written in `run.json` (`run.phases`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseStats {
    /// `fit`, `calibrate`, `test` or `finish`.
    pub name: String,
    /// Wall time of the phase.
    pub wall_seconds: f64,
    /// Time spent inside stages during the phase, summed over worker threads (the nodes'
    /// `busy_seconds` accrued in it).
    pub busy_seconds: f64,
    /// Worker threads of the run.
    pub threads: usize,
    /// `busy_seconds / (wall_seconds x threads)`: 1 when every worker thread was inside a
    /// stage all the time. A stage that spreads one call over several threads of its own
    /// counts once, so process CPU time (`cpu_seconds`) is the other half of the picture.
    pub utilization: f64,
    /// User + system CPU time of the whole process during the phase (every thread, those of
    /// the plugins' own pools and ONNX Runtime included); absent where it cannot be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<f64>,
}

/// `busy / (wall x threads)`, 0 for an empty phase.
pub fn utilization(busy_seconds: f64, wall_seconds: f64, threads: usize) -> f64 {
    let capacity = wall_seconds * threads.max(1) as f64;
    if capacity > 0.0 {
        busy_seconds / capacity
    } else {
        0.0
    }
}

/// A phase being timed: started with the run's busy total so far.
pub struct PhaseClock {
    name: &'static str,
    started: Instant,
    busy_before: f64,
    cpu_before: Option<f64>,
}

impl PhaseClock {
    pub fn start(name: &'static str, busy_so_far: f64) -> Self {
        PhaseClock { name, started: Instant::now(), busy_before: busy_so_far, cpu_before: process_cpu_seconds() }
    }

    pub fn stop(self, busy_so_far: f64, threads: usize) -> PhaseStats {
        let wall_seconds = self.started.elapsed().as_secs_f64();
        let busy_seconds = (busy_so_far - self.busy_before).max(0.0);
        let cpu_seconds = match (self.cpu_before, process_cpu_seconds()) {
            (Some(before), Some(after)) => Some((after - before).max(0.0)),
            _ => None,
        };
        PhaseStats {
            name: self.name.to_string(),
            wall_seconds,
            busy_seconds,
            threads,
            utilization: utilization(busy_seconds, wall_seconds, threads),
            cpu_seconds,
        }
    }
}

/// The phases for the run's summary line:
/// `busy/(wall x 2 threads): fit 0.62 of 12.1 s, test 0.91 of 9.0 s`.
pub fn summary_line(phases: &[PhaseStats]) -> String {
    let Some(threads) = phases.first().map(|p| p.threads) else {
        return String::new();
    };
    let mut s = format!("busy/(wall x {threads} thread{})", if threads == 1 { "" } else { "s" });
    for (i, p) in phases.iter().enumerate() {
        let sep = if i == 0 { ": " } else { ", " };
        let _ = write!(s, "{sep}{} {:.2} of {:.1} s", p.name, p.utilization, p.wall_seconds);
    }
    s
}

/// User + system CPU time of this process so far.
#[cfg(unix)]
fn process_cpu_seconds() -> Option<f64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the whole `rusage` on success (return 0); it is read only then.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return None;
        }
        usage.assume_init()
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    Some(secs(usage.ru_utime) + secs(usage.ru_stime))
}

#[cfg(not(unix))]
fn process_cpu_seconds() -> Option<f64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utilization_is_busy_over_capacity() {
        assert!((utilization(3.0, 2.0, 2) - 0.75).abs() < 1e-12);
        assert_eq!(utilization(1.0, 0.0, 2), 0.0);
        // Zero threads never divides by zero: it counts as one.
        assert!((utilization(1.0, 2.0, 0) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn a_clock_counts_only_the_busy_time_of_its_phase() {
        let clock = PhaseClock::start("test", 10.0);
        let spin = Instant::now();
        while spin.elapsed().as_millis() < 20 {}
        let p = clock.stop(10.015, 1);
        assert_eq!(p.name, "test");
        assert!((p.busy_seconds - 0.015).abs() < 1e-9);
        assert!(p.wall_seconds >= 0.02);
        assert!(p.utilization > 0.0 && p.utilization < 0.75, "{p:?}");
        #[cfg(unix)]
        assert!(p.cpu_seconds.is_some_and(|c| c > 0.0), "{p:?}");
    }

    #[test]
    fn the_summary_line_names_each_phase() {
        let p = |name: &str, wall, u| PhaseStats {
            name: name.into(),
            wall_seconds: wall,
            busy_seconds: 0.0,
            threads: 2,
            utilization: u,
            cpu_seconds: None,
        };
        assert_eq!(
            summary_line(&[p("fit", 12.06, 0.618), p("test", 9.0, 0.914)]),
            "busy/(wall x 2 threads): fit 0.62 of 12.1 s, test 0.91 of 9.0 s"
        );
        assert_eq!(summary_line(&[]), "");
    }
}

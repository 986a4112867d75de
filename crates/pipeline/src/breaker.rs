//! Circuit breakers around the online path's dependencies: after `threshold` consecutive
//! failures a dependency is skipped outright (no timeout paid per request) for a cool-down,
//! then one trial call decides whether it is back.

use crate::faults::Dependency;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What a breaker lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Closed: call it.
    Call,
    /// Half-open: this call is the one trial after the cool-down.
    Trial,
    /// Open: skip the dependency.
    Skip,
}

/// One dependency's breaker; lock-free, read on every request.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cool_down: Duration,
    failures: AtomicU32,
    /// Microseconds since `epoch` until which the breaker is open (0: closed).
    open_until: AtomicU64,
    trial: AtomicBool,
    epoch: Instant,
}

impl Breaker {
    pub fn new(threshold: u32, cool_down: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cool_down,
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            trial: AtomicBool::new(false),
            epoch: Instant::now(),
        }
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    pub fn admit(&self) -> Admit {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Admit::Call;
        }
        if self.now_us() < until {
            return Admit::Skip;
        }
        // Cool-down over: exactly one caller tries.
        if self
            .trial
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            Admit::Trial
        } else {
            Admit::Skip
        }
    }

    /// Records a call's outcome (`admit` said `Call` or `Trial`).
    pub fn record(&self, ok: bool) {
        if ok {
            self.failures.store(0, Ordering::Release);
            self.open_until.store(0, Ordering::Release);
            self.trial.store(false, Ordering::Release);
            return;
        }
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= self.threshold || self.trial.load(Ordering::Acquire) {
            let until = self.now_us() + self.cool_down.as_micros() as u64;
            self.open_until.store(until.max(1), Ordering::Release);
            self.trial.store(false, Ordering::Release);
        }
    }

    pub fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }
}

/// One breaker per dependency.
#[derive(Debug)]
pub struct Breakers {
    slots: [Breaker; 4],
}

impl Breakers {
    pub fn new(threshold: u32, cool_down: Duration) -> Self {
        Self {
            slots: std::array::from_fn(|_| Breaker::new(threshold, cool_down)),
        }
    }

    pub fn get(&self, dep: Dependency) -> &Breaker {
        &self.slots[dep as usize]
    }
}

impl Default for Breakers {
    /// Five failures in a row open a breaker for one second.
    fn default() -> Self {
        Self::new(5, Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_recovers_through_one_trial() {
        let b = Breaker::new(3, Duration::from_millis(30));
        assert_eq!(b.admit(), Admit::Call);
        b.record(false);
        b.record(false);
        b.record(true); // a success resets the count
        b.record(false);
        b.record(false);
        assert_eq!(b.admit(), Admit::Call);
        b.record(false);
        assert_eq!(b.admit(), Admit::Skip, "three in a row open it");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.admit(), Admit::Trial);
        assert_eq!(b.admit(), Admit::Skip, "one trial at a time");
        b.record(false);
        assert_eq!(b.admit(), Admit::Skip, "a failed trial reopens it");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.admit(), Admit::Trial);
        b.record(true);
        assert_eq!(b.admit(), Admit::Call, "a good trial closes it");
        assert!(!b.is_open());
    }
}

//! Injected faults of the online path's dependencies, for chaos tests and game days: each
//! dependency can be made to fail or to slow down. Read on every request, so a lookup is one
//! atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A dependency of the online path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dependency {
    /// The feature store behind hydration.
    Features,
    /// The ANN index of the embedding source.
    Ann,
    /// The heavy ranker.
    Ranker,
    /// The event bus / log that takes events and impressions.
    Bus,
}

impl Dependency {
    pub const ALL: [Dependency; 4] = [
        Dependency::Features,
        Dependency::Ann,
        Dependency::Ranker,
        Dependency::Bus,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Dependency::Features => "features",
            Dependency::Ann => "ann",
            Dependency::Ranker => "ranker",
            Dependency::Bus => "bus",
        }
    }
}

/// What an injected fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every call fails.
    Error,
    /// Every call takes this long first.
    Latency(Duration),
}

/// The faults in force, one slot per dependency: 0 = none, 1 = error, 2 + ms = latency.
#[derive(Debug, Default)]
pub struct Faults {
    slots: [AtomicU64; 4],
}

impl Faults {
    pub fn set(&self, dep: Dependency, fault: Fault) {
        let v = match fault {
            Fault::Error => 1,
            Fault::Latency(d) => 2 + d.as_millis().min(u128::from(u32::MAX)) as u64,
        };
        self.slots[dep as usize].store(v, Ordering::Relaxed);
    }

    pub fn clear(&self) {
        for s in &self.slots {
            s.store(0, Ordering::Relaxed);
        }
    }

    pub fn get(&self, dep: Dependency) -> Option<Fault> {
        match self.slots[dep as usize].load(Ordering::Relaxed) {
            0 => None,
            1 => Some(Fault::Error),
            v => Some(Fault::Latency(Duration::from_millis(v - 2))),
        }
    }

    /// The faults in force.
    pub fn active(&self) -> Vec<(Dependency, Fault)> {
        Dependency::ALL
            .iter()
            .filter_map(|&d| self.get(d).map(|f| (d, f)))
            .collect()
    }

    /// For an async call to `dep`: fails, or waits the injected latency.
    pub async fn before_async(&self, dep: Dependency) -> Result<(), FaultError> {
        match self.get(dep) {
            None => Ok(()),
            Some(Fault::Error) => Err(FaultError(dep)),
            Some(Fault::Latency(d)) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
        }
    }

    /// For a synchronous call to `dep` on a CPU-pool thread with `budget` left: fails, or
    /// blocks for the injected latency — at most `budget`, after which it fails as a call that
    /// timed out would (a slow remote call holds its thread too).
    pub fn before_blocking(&self, dep: Dependency, budget: Duration) -> Result<(), FaultError> {
        match self.get(dep) {
            None => Ok(()),
            Some(Fault::Error) => Err(FaultError(dep)),
            Some(Fault::Latency(d)) => {
                std::thread::sleep(d.min(budget));
                if d > budget {
                    Err(FaultError(dep))
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// An injected failure of a dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("injected fault: {} unavailable", .0.as_str())]
pub struct FaultError(pub Dependency);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_set_read_and_clear() {
        let f = Faults::default();
        assert_eq!(f.get(Dependency::Ann), None);
        f.set(Dependency::Ann, Fault::Error);
        f.set(
            Dependency::Ranker,
            Fault::Latency(Duration::from_millis(30)),
        );
        assert_eq!(f.get(Dependency::Ann), Some(Fault::Error));
        assert_eq!(
            f.get(Dependency::Ranker),
            Some(Fault::Latency(Duration::from_millis(30)))
        );
        assert_eq!(f.active().len(), 2);
        assert!(f.before_blocking(Dependency::Ann, Duration::ZERO).is_err());
        let t = std::time::Instant::now();
        assert!(
            f.before_blocking(Dependency::Ranker, Duration::from_millis(5))
                .is_err()
        );
        assert!(t.elapsed() < Duration::from_millis(25));
        f.clear();
        assert!(f.active().is_empty());
    }
}

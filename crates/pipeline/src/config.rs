//! The `[pipeline]` and `[faults]` sections: the executor's CPU pool and circuit breakers, and
//! whether faults may be injected.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSection {
    /// Threads of the CPU pool for pipeline stages (0 = number of cores).
    pub cpu_threads: usize,
    /// Consecutive failures of a dependency that open its circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker skips its dependency before one trial call.
    pub breaker_cooldown_ms: u64,
}

impl Default for PipelineSection {
    fn default() -> Self {
        Self {
            cpu_threads: 0,
            breaker_failures: 5,
            breaker_cooldown_ms: 1000,
        }
    }
}

impl PipelineSection {
    /// Threads the CPU pool gets: as configured, or one per core.
    pub fn threads(&self) -> usize {
        match self.cpu_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }
}

/// Fault injection (`/v1/admin/faults`), for chaos tests and game days; off unless enabled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultsSection {
    pub enabled: bool,
}

//! The scaling profiles: the one table of per-environment numbers (replicas, scale-down pace,
//! disruption budget) and the targets derived from the pod's limits and its [`Budget`].
//!
//! Owns the numbers, not the objects: [`super::objects`] turns them into an HPA and a PDB.
//! The same table lives in `docs/scaling-profiles.md` and in the chart's `values-<env>.yaml`;
//! a test compares the chart's rendering with `deploy --print`, so change all three together.

use std::fmt;
use std::time::Duration;

use mt_budget::{Budget, ByteSize};

/// A Monkeytown environment: each has its own release, namespace and profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Environment {
    Dev,
    Staging,
    Prod,
}

impl Environment {
    /// Every environment, in promotion order.
    pub const ALL: [Environment; 3] = [Environment::Dev, Environment::Staging, Environment::Prod];

    /// The name used in the release, the namespace and the chart's `environment` value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Environment::Dev => "dev",
            Environment::Staging => "staging",
            Environment::Prod => "prod",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The event-stream container's CPU limit in millicores (the chart's
/// `eventStream.resources.limits.cpu`, 500m). CPU is not part of the [`Budget`]: the hub is
/// bounded by memory and connections, and CPU only decides when to add pods.
pub const POD_CPU_LIMIT_MILLICORES: u32 = 500;

/// CPU target as a share of the CPU limit: 70% leaves headroom for the burst of reconnects a
/// scale-down or a rollout sends to the remaining pods before the HPA reacts.
pub const CPU_TARGET_PERCENT: u32 = 70;

/// Memory target as a share of [`Budget::memory_limit`]: 75%. The budget already keeps half the
/// limit free at full load, so reaching 75% means the pod is close to its connection cap.
pub const MEMORY_TARGET_PERCENT: u64 = 75;

/// Connections-metric target as a share of [`Budget::max_connections`]: 70%, so pods scale out
/// before the cap turns upgrades away with 503.
pub const CONNECTIONS_TARGET_PERCENT: u64 = 70;

/// Name of the Prometheus gauge the optional Pods metric reads (through a custom-metrics adapter).
pub const CONNECTIONS_METRIC: &str = "mt_stream_connections";

/// Scale up at once: no stabilization window, a new pod is cheap and a full pod refuses clients.
pub const SCALE_UP_WINDOW: Duration = Duration::ZERO;
/// Scale up by up to 100% of the current replicas per period (doubling under a surge)…
pub const SCALE_UP_PERCENT: i32 = 100;
/// …or by 2 pods per period, whichever is more (`selectPolicy: Max`), so 1 → 3 in one step.
pub const SCALE_UP_PODS: i32 = 2;
/// Period of both scale-up policies: one minute, the metrics pipeline's usual resolution.
pub const SCALE_UP_PERIOD: Duration = Duration::from_secs(60);

/// Pods a voluntary disruption may take at once: 1, so a drain always progresses (even on a
/// one-replica dev deployment) and never takes more than one pod's connections at a time.
pub const PDB_MAX_UNAVAILABLE: i32 = 1;

/// The per-environment numbers. Everything not here is common to every environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Fewest pods the HPA keeps.
    pub min_replicas: i32,
    /// Most pods the HPA may run.
    pub max_replicas: i32,
    /// How long the HPA waits on lower recommendations before scaling down.
    pub scale_down_window: Duration,
    /// Scale-down removes at most one pod per this period (`Pods 1 / period`).
    pub scale_down_period: Duration,
}

impl Profile {
    /// The profile of `environment`.
    pub const fn of(environment: Environment) -> Profile {
        match environment {
            // dev: 1 pod is enough for developers; 2 lets a developer see scaling happen.
            // Scale down after 2 minutes, 1 pod a minute: nobody's session matters much here.
            Environment::Dev => Profile {
                min_replicas: 1,
                max_replicas: 2,
                scale_down_window: Duration::from_secs(120),
                scale_down_period: Duration::from_secs(60),
            },
            // staging: 2 pods so a drain or a crash never takes the stream away from the
            // testers; 4 is enough for staging load tests. 5 minutes' window, 1 pod / 2 min.
            Environment::Staging => Profile {
                min_replicas: 2,
                max_replicas: 4,
                scale_down_window: Duration::from_secs(300),
                scale_down_period: Duration::from_secs(120),
            },
            // prod: 3 pods survive a zone or node loss with capacity left; 10 pods hold 10 000
            // connections. 10 minutes' window (rides out a traffic dip), then 1 pod / 5 min so
            // each pod's reconnect storm settles before the next pod goes.
            Environment::Prod => Profile {
                min_replicas: 3,
                max_replicas: 10,
                scale_down_window: Duration::from_secs(600),
                scale_down_period: Duration::from_secs(300),
            },
        }
    }
}

/// CPU in millicores (Kubernetes quantity `350m`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Millicores(pub u32);

impl fmt::Display for Millicores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}m", self.0)
    }
}

/// The per-pod average values the HPA aims for, derived from the pod's limits and budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Targets {
    /// 70% of the CPU limit: 350m.
    pub cpu: Millicores,
    /// 75% of the budget's memory limit: 768Mi for 1Gi.
    pub memory: ByteSize,
    /// 70% of the budget's connection cap: 700 for 1000 (used only with the connections metric).
    pub connections: u64,
}

impl Targets {
    /// Derives the targets from `budget` (rounding down, never below 1).
    pub fn from_budget(budget: &Budget) -> Targets {
        let memory = budget.memory_limit.bytes() / 100 * MEMORY_TARGET_PERCENT
            + budget.memory_limit.bytes() % 100 * MEMORY_TARGET_PERCENT / 100;
        let connections = budget.max_connections.get() as u64 * CONNECTIONS_TARGET_PERCENT / 100;
        Targets {
            cpu: Millicores(POD_CPU_LIMIT_MILLICORES * CPU_TARGET_PERCENT / 100),
            memory: ByteSize(memory.max(1)),
            connections: connections.max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use super::*;

    /// The table has exactly the numbers of docs/scaling-profiles.md.
    #[test]
    fn profiles_match_the_documented_table() {
        let rows: Vec<_> = Environment::ALL
            .iter()
            .map(|&env| {
                let p = Profile::of(env);
                (
                    env.as_str(),
                    p.min_replicas,
                    p.max_replicas,
                    p.scale_down_window.as_secs(),
                    p.scale_down_period.as_secs(),
                )
            })
            .collect();
        assert_eq!(rows, [("dev", 1, 2, 120, 60), ("staging", 2, 4, 300, 120), ("prod", 3, 10, 600, 300),]);
    }

    /// The default budget gives 350m CPU, 768Mi memory and 700 connections.
    #[test]
    fn default_budget_targets() {
        let targets = Targets::from_budget(&Budget::default());
        assert_eq!(targets.cpu.to_string(), "350m");
        assert_eq!(targets.memory, ByteSize(768 << 20));
        assert_eq!(targets.memory.to_string(), "768Mi");
        assert_eq!(targets.connections, 700);
    }

    /// Memory and connection targets follow the budget; the CPU target does not.
    #[test]
    fn targets_follow_the_budget() {
        let budget = Budget {
            max_connections: NonZeroUsize::new(2000).expect("non-zero"),
            memory_limit: ByteSize(2 << 30),
            ..Budget::default()
        };
        let targets = Targets::from_budget(&budget);
        assert_eq!(targets.memory.to_string(), "1536Mi");
        assert_eq!(targets.connections, 1400);
        assert_eq!(targets.cpu, Millicores(350));
        // A decimal limit that is not a multiple of 100 bytes rounds down, never up.
        let odd = Budget { memory_limit: ByteSize(1_000_000_001), ..Budget::default() };
        assert_eq!(Targets::from_budget(&odd).memory, ByteSize(750_000_000));
        // Huge limits do not overflow.
        let huge = Budget { memory_limit: ByteSize(u64::MAX), ..Budget::default() };
        assert!(Targets::from_budget(&huge).memory.bytes() < u64::MAX);
    }

    /// A one-connection budget still gives a target of at least one connection.
    #[test]
    fn tiny_budget_targets_stay_positive() {
        let budget = Budget { max_connections: NonZeroUsize::MIN, ..Budget::default() };
        assert_eq!(Targets::from_budget(&budget).connections, 1);
    }
}

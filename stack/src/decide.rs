//! The autoscaler's decision for one app service, made every second from what it sees: the app's
//! backlog in Redis, its replicas, their CPU, and what the swarm's nodes have free. No Docker and
//! no Redis here: the caller observes, this decides, the caller acts and logs the reason.

use std::time::{Duration, Instant};

use crate::policy::{Resources, ScalePolicy};

/// One task's use of what it may use, from Docker's stats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskUsage {
    /// CPU used over the last sample as a fraction of the task's CPU limit (1.0 = all of it).
    pub cpu_of_limit: f64,
    pub memory_bytes: i64,
}

/// What the autoscaler sees of one service at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Requests waiting for an executor plus those one holds unfinished.
    pub backlog: u64,
    /// Replicas the service is set to now.
    pub replicas: u32,
    /// Its running tasks' usage (fewer than `replicas` while tasks start).
    pub tasks: Vec<TaskUsage>,
    /// CPU and memory the swarm's nodes have not reserved for any task (Swarm places a task
    /// only where its reservation fits).
    pub free: Resources,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Hold { reason: String },
    Scale { from: u32, to: u32, reason: String },
}

impl Decision {
    pub fn reason(&self) -> &str {
        match self {
            Decision::Hold { reason } | Decision::Scale { reason, .. } => reason,
        }
    }
}

/// Running tasks busier than this on average, with work waiting, get another replica even when the
/// backlog alone would not ask for one (their actions take long rather than come often).
const BUSY: f64 = 0.9;

/// The autoscaler of one service: its policy and what it remembers between decisions.
#[derive(Debug, Clone)]
pub struct Autoscaler {
    pub policy: ScalePolicy,
    /// Since when the backlog has wanted fewer replicas than the service has.
    wanted_fewer_since: Option<Instant>,
}

impl Autoscaler {
    pub fn new(policy: ScalePolicy) -> Autoscaler {
        Autoscaler {
            policy,
            wanted_fewer_since: None,
        }
    }

    /// Replicas the backlog asks for: one per `backlog_per_replica` waiting requests, at least one
    /// while any waits, within the policy's bounds.
    fn wanted(&self, seen: &Observation) -> (u32, String) {
        let p = &self.policy;
        let by_backlog = seen.backlog.div_ceil(p.backlog_per_replica as u64);
        let mut wanted = u32::try_from(by_backlog).unwrap_or(u32::MAX);
        let mut why = format!(
            "backlog {} at {} per replica wants {}",
            seen.backlog, p.backlog_per_replica, wanted
        );
        let running = seen.tasks.len();
        if seen.backlog > 0 && running > 0 && running as u32 >= seen.replicas {
            let busy = seen.tasks.iter().map(|t| t.cpu_of_limit).sum::<f64>() / running as f64;
            if busy >= BUSY && wanted <= seen.replicas {
                wanted = seen.replicas + 1;
                why = format!(
                    "backlog {} waits while the {} running use {:.0} % of their CPU",
                    seen.backlog,
                    running,
                    busy * 100.0
                );
            }
        }
        (wanted.clamp(p.min, p.max), why)
    }

    /// What to do now. Up at once, as far as the backlog asks and the nodes have room for; down
    /// only once the backlog has asked for fewer for the whole quiet period (stopped executors
    /// finish the actions they hold first), and never below `min`.
    pub fn decide(&mut self, seen: &Observation, now: Instant) -> Decision {
        let (wanted, why) = self.wanted(seen);
        let have = seen.replicas;
        if wanted > have {
            self.wanted_fewer_since = None;
            let room = seen.free.how_many_fit(self.policy.reservation);
            let to = have + (wanted - have).min(room);
            if to == have {
                return Decision::Hold {
                    reason: format!(
                        "{why}, but no node has room for another (each reserves {}; free {})",
                        self.policy.reservation, seen.free
                    ),
                };
            }
            let limited = if to < wanted {
                format!(" (room for {} more only: free {})", to - have, seen.free)
            } else {
                String::new()
            };
            return Decision::Scale {
                from: have,
                to,
                reason: format!("{why}{limited}"),
            };
        }
        if wanted < have {
            let since = *self.wanted_fewer_since.get_or_insert(now);
            let quiet = now.saturating_duration_since(since);
            if quiet >= self.policy.quiet {
                self.wanted_fewer_since = None;
                return Decision::Scale {
                    from: have,
                    to: wanted,
                    reason: format!("{why} for {}", seconds(quiet)),
                };
            }
            return Decision::Hold {
                reason: format!(
                    "{why}; down after {} of it ({} so far)",
                    seconds(self.policy.quiet),
                    seconds(quiet)
                ),
            };
        }
        self.wanted_fewer_since = None;
        Decision::Hold {
            reason: format!("{why}: as it is"),
        }
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.0} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ScalePolicy {
        ScalePolicy {
            min: 1,
            max: 5,
            backlog_per_replica: 10,
            quiet: Duration::from_secs(30),
            reservation: Resources {
                nano_cpus: 500_000_000,
                memory_bytes: 64 << 20,
            },
            limit: Resources {
                nano_cpus: 1_000_000_000,
                memory_bytes: 256 << 20,
            },
        }
    }

    const PLENTY: Resources = Resources {
        nano_cpus: 16_000_000_000,
        memory_bytes: 64 << 30,
    };

    fn seen(backlog: u64, replicas: u32, cpu: f64, free: Resources) -> Observation {
        Observation {
            backlog,
            replicas,
            tasks: (0..replicas)
                .map(|_| TaskUsage {
                    cpu_of_limit: cpu,
                    memory_bytes: 50 << 20,
                })
                .collect(),
            free,
        }
    }

    fn to(decision: &Decision) -> Option<u32> {
        match decision {
            Decision::Scale { to, .. } => Some(*to),
            Decision::Hold { .. } => None,
        }
    }

    #[test]
    fn a_backlog_scales_up_at_once_one_replica_per_target_within_max() {
        let mut scaler = Autoscaler::new(policy());
        let now = Instant::now();
        let d = scaler.decide(&seen(35, 1, 0.2, PLENTY), now);
        assert_eq!(to(&d), Some(4), "{d:?}");
        assert!(d.reason().contains("backlog 35 at 10 per replica wants 4"));
        // Never past max, however long the backlog.
        assert_eq!(
            to(&scaler.decide(&seen(10_000, 4, 0.2, PLENTY), now)),
            Some(5)
        );
        assert_eq!(to(&scaler.decide(&seen(10_000, 5, 0.2, PLENTY), now)), None);
    }

    #[test]
    fn scaling_up_stops_at_what_the_nodes_have_free() {
        let mut scaler = Autoscaler::new(policy());
        let now = Instant::now();
        // Room for one more by CPU (0.7 free, 0.5 each), plenty of memory.
        let free = Resources {
            nano_cpus: 700_000_000,
            memory_bytes: 8 << 30,
        };
        let d = scaler.decide(&seen(50, 1, 0.2, free), now);
        assert_eq!(to(&d), Some(2), "{d:?}");
        assert!(d.reason().contains("room for 1 more only"), "{d:?}");
        // No room at all by memory: hold, and say why.
        let full = Resources {
            nano_cpus: 8_000_000_000,
            memory_bytes: 10 << 20,
        };
        let d = scaler.decide(&seen(50, 2, 0.2, full), now);
        assert_eq!(to(&d), None);
        assert!(d.reason().contains("no node has room"), "{d:?}");
    }

    #[test]
    fn scaling_down_waits_for_the_quiet_period_and_stops_at_min() {
        let mut scaler = Autoscaler::new(policy());
        let start = Instant::now();
        assert_eq!(to(&scaler.decide(&seen(0, 4, 0.0, PLENTY), start)), None);
        let d = scaler.decide(&seen(0, 4, 0.0, PLENTY), start + Duration::from_secs(29));
        assert_eq!(to(&d), None);
        assert!(d.reason().contains("down after 30 s"), "{d:?}");
        let d = scaler.decide(&seen(0, 4, 0.0, PLENTY), start + Duration::from_secs(30));
        assert_eq!(to(&d), Some(1), "{d:?}");
    }

    #[test]
    fn a_burst_in_the_quiet_period_starts_it_again() {
        let mut scaler = Autoscaler::new(policy());
        let start = Instant::now();
        scaler.decide(&seen(0, 3, 0.0, PLENTY), start);
        // Work comes back: the service keeps its replicas, and the quiet period restarts after.
        let d = scaler.decide(&seen(30, 3, 0.5, PLENTY), start + Duration::from_secs(20));
        assert_eq!(to(&d), None);
        assert!(d.reason().contains("as it is"));
        let later = start + Duration::from_secs(40);
        assert_eq!(to(&scaler.decide(&seen(0, 3, 0.0, PLENTY), later)), None);
        assert_eq!(
            to(&scaler.decide(&seen(0, 3, 0.0, PLENTY), later + Duration::from_secs(30))),
            Some(1)
        );
    }

    #[test]
    fn busy_replicas_with_work_waiting_get_one_more() {
        let mut scaler = Autoscaler::new(policy());
        let now = Instant::now();
        // 15 waiting wants 2, and 2 run: as they are, unless their CPU is spent.
        assert_eq!(to(&scaler.decide(&seen(15, 2, 0.5, PLENTY), now)), None);
        let d = scaler.decide(&seen(15, 2, 0.95, PLENTY), now);
        assert_eq!(to(&d), Some(3), "{d:?}");
        assert!(d.reason().contains("95 % of their CPU"), "{d:?}");
        // Busy with nothing waiting is not a reason.
        assert_eq!(to(&scaler.decide(&seen(0, 1, 1.0, PLENTY), now)), None);
    }

    #[test]
    fn min_is_kept_even_with_nothing_to_do_and_restored_when_below() {
        let mut scaler = Autoscaler::new(ScalePolicy { min: 2, ..policy() });
        let now = Instant::now();
        assert_eq!(to(&scaler.decide(&seen(0, 2, 0.0, PLENTY), now)), None);
        // Someone scaled it to 0 by hand: back to min at once.
        assert_eq!(to(&scaler.decide(&seen(0, 0, 0.0, PLENTY), now)), Some(2));
    }
}

//! Every Redis key walkoff uses, named in one place (`docs/redis-contract.md` describes each). The
//! load-test harness and the tests read a deployment's state through these names too.

use walkoff_schema::AppRef;

use crate::bus::{partition_of, Partition};

/// The keys of one deployment: everything under its prefix (`walkoff` by default).
#[derive(Debug, Clone)]
pub struct RedisKeys {
    prefix: String,
}

impl RedisKeys {
    pub fn new(prefix: &str) -> RedisKeys {
        RedisKeys {
            prefix: prefix.to_string(),
        }
    }

    fn key(&self, rest: std::fmt::Arguments<'_>) -> String {
        format!("{}:{rest}", self.prefix)
    }

    /// The stream of an app version's action requests of one priority (1–5), group `executors`.
    pub fn action_stream(&self, app: &AppRef, priority: u8) -> String {
        self.key(format_args!(
            "actions:{}@{}:p{}",
            app.name,
            app.version,
            priority.clamp(1, 5)
        ))
    }

    /// A partition's control stream (starts, results, trigger data, aborts, timers), group
    /// `workers`.
    pub fn control_stream(&self, partition: Partition) -> String {
        self.key(format_args!("control:{partition}"))
    }

    /// The control stream of the partition an execution belongs to.
    pub fn control_stream_of(&self, execution_id: &str, partitions: u32) -> String {
        self.control_stream(partition_of(execution_id, partitions))
    }

    /// The worker owning a partition: a token, with a TTL it renews.
    pub fn lease(&self, partition: Partition) -> String {
        self.key(format_args!("lease:{partition}"))
    }

    /// The token of the partition's latest owner, set when a lease is taken (never renewed).
    pub fn fence(&self, partition: Partition) -> String {
        self.key(format_args!("fence:{partition}"))
    }

    /// An execution's log: its start, then every control message applied.
    pub fn log(&self, execution_id: &str) -> String {
        self.key(format_args!("exec:{execution_id}"))
    }

    /// The running executions of a partition.
    pub fn running(&self, partition: Partition) -> String {
        self.key(format_args!("running:{partition}"))
    }

    /// An execution's events, entry id `0-{seq}`.
    pub fn events(&self, execution_id: &str) -> String {
        self.key(format_args!("events:{execution_id}"))
    }

    /// Worker heartbeats: a sorted set scored by Redis time in milliseconds.
    pub fn workers(&self) -> String {
        self.key(format_args!("workers"))
    }

    /// An app version's executor heartbeats, as `workers`.
    pub fn executors(&self, app: &AppRef) -> String {
        self.key(format_args!("executors:{app}"))
    }

    /// The set of app versions that have action streams (so nothing ever needs `KEYS`).
    pub fn apps(&self) -> String {
        self.key(format_args!("apps"))
    }

    /// Each registered app version's `api.yaml`.
    pub fn app_apis(&self) -> String {
        self.key(format_args!("app-apis"))
    }

    /// Raised with every registration, so caches of the catalogue know when to reload.
    pub fn app_apis_version(&self) -> String {
        self.key(format_args!("app-apis:version"))
    }

    /// Messages that could not be decoded or delivered, with the reason.
    pub fn dead_letters(&self) -> String {
        self.key(format_args!("dead"))
    }

    /// Counters of what housekeeping did (`STAT_*`).
    pub fn stats(&self) -> String {
        self.key(format_args!("stats"))
    }

    /// The deployment's settings fixed by the first process (the partition count).
    pub fn config(&self) -> String {
        self.key(format_args!("config"))
    }

    /// The feed of finished executions' final events, read by gateways' consumer group.
    pub fn finished(&self) -> String {
        self.key(format_args!("finished"))
    }

    /// A reading process's wake stream.
    pub fn wake(&self, name: &str) -> String {
        self.key(format_args!("wake:{name}"))
    }

    /// A pub/sub channel.
    pub fn channel(&self, name: &str) -> String {
        self.key(format_args!("{name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys named here are the keys `docs/redis-contract.md` lists, no more and no fewer.
    #[test]
    fn the_contracts_table_lists_every_key_and_only_these() {
        let contract = include_str!("../../../../docs/redis-contract.md");
        let table = &contract[contract.find("## Keys").expect("a Keys section")..];
        let documented: std::collections::BTreeSet<&str> = table
            .lines()
            .take_while(|line| line.is_empty() || line.starts_with('|') || line.starts_with('#'))
            .filter_map(|line| line.strip_prefix("| `")?.split('`').next())
            .collect();
        let keys = RedisKeys::new("walkoff");
        let app = AppRef {
            name: "{app}".into(),
            version: "{version}".into(),
        };
        let by_partition = |key: String| key.replace(":7", ":{partition}");
        let ours: std::collections::BTreeSet<String> = [
            keys.config(),
            keys.action_stream(&app, 1).replace(":p1", ":p{1..5}"),
            by_partition(keys.control_stream(7)),
            by_partition(keys.lease(7)),
            by_partition(keys.fence(7)),
            keys.workers(),
            keys.log("{execution_id}"),
            by_partition(keys.running(7)),
            keys.events("{execution_id}"),
            keys.finished(),
            keys.executors(&app),
            keys.apps(),
            keys.app_apis(),
            keys.app_apis_version(),
            keys.wake("{gateway}"),
            keys.channel("gateway:statuses"),
            keys.channel("gateway:auth"),
            keys.dead_letters(),
            keys.stats(),
        ]
        .into_iter()
        .collect();
        let ours: std::collections::BTreeSet<&str> = ours.iter().map(String::as_str).collect();
        assert_eq!(documented, ours);
    }
}

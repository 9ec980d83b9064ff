//! The Redis Streams bus: the distributed mode's transport and its store of execution state.
//!
//! Keys (all under a prefix, `walkoff` by default, named in `keys.rs`; `docs/redis-contract.md` is
//! the full contract):
//! - `{prefix}:actions:{app}@{version}:p{1..5}` — one stream per app version and priority, read by
//!   the consumer group `executors`; a higher priority stream is served first.
//! - `{prefix}:control:{partition}` — starts, results, trigger data, aborts and retries, group
//!   `workers`; an execution's messages all go to partition `fnv1a(execution id) % partitions`.
//! - `{prefix}:lease:{partition}` — the worker owning a partition (a token, with a TTL it renews).
//! - `{prefix}:fence:{partition}` — the token of the partition's latest owner, changed only when
//!   a worker takes the lease (so a watch on it fences commits without a script).
//! - `{prefix}:exec:{execution}` — the execution's log: its start, then every message applied.
//! - `{prefix}:running:{partition}` — the running executions of a partition.
//! - `{prefix}:events:{execution}` — an execution's events, entry id `0-{seq}`, so a republished
//!   event is stored once and a reader resumes from any sequence number.
//! - `{prefix}:workers`, `{prefix}:executors:{app}@{version}` — heartbeats (sorted sets scored by
//!   Redis time in milliseconds).
//! - `{prefix}:apps` — the set of app versions that have action streams (no `KEYS`, ever);
//!   `{prefix}:app-apis` — each app version's `api.yaml`, registered by its executors.
//! - `{prefix}:dead` — messages that could not be decoded or delivered, with the reason.
//! - `{prefix}:config` — the partition count, fixed by the first process to connect.
//!
//! Every message is JSON in the field `m`. Blocking reads use dedicated connections whose response
//! timeout is off (redis-rs' default would cut a `BLOCK` short); writes share one reconnecting
//! connection and go out in pipelines or one script. `close` unblocks readers with `CLIENT UNBLOCK`.

mod actions;
mod commit;
mod connection;
mod control;
mod events;
mod feeds;
mod keys;
mod leases;
mod maintenance;
mod messages;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::Client;
use walkoff_schema::{ActionRequest, AppRef, ControlMessage, Event, ExecutionId, NodeResult};

use super::{
    partition_of, Bus, BusError, Commit, ControlBatch, Delivery, DeliveryId, ExecutionRecord,
    Partition,
};

pub use feeds::{FinishedEntry, Wake};
pub use keys::RedisKeys;

/// The consumer group of every action stream: an app's executors.
pub const EXECUTORS: &str = "executors";
const WORKERS: &str = "workers";
const PRIORITIES: [u8; 5] = [5, 4, 3, 2, 1];

/// Counters in `{prefix}:stats` (a hash), raised in the same transaction as what they count:
/// action requests handed out again after their executor died (at-least-once delivery at work),
/// and requests and control messages dead-lettered.
pub const STAT_ACTIONS_HANDED_OUT_AGAIN: &str = "actions_handed_out_again";
pub const STAT_ACTIONS_DEAD_LETTERED: &str = "actions_dead_lettered";
pub const STAT_CONTROL_DEAD_LETTERED: &str = "control_messages_dead_lettered";

/// A control message taken by this many workers without being committed by any (each took it
/// and died, or lost its partition, before committing it) is dead-lettered when one more takes
/// its partition, rather than handed to the next worker in turn: it may be what kills them.
pub const MAX_CONTROL_DELIVERIES: usize = 5;

/// How long `close` waits for Redis to take its goodbye (leases released, readers unblocked).
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Scores a heartbeat with Redis's clock, so hosts with skewed clocks agree on who is alive.
const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
return now
"#;

/// Timings and names of the Redis bus; every process of a deployment should use the same.
#[derive(Debug, Clone)]
pub struct RedisBusConfig {
    /// Every key starts with this.
    pub prefix: String,
    /// Control partitions, used when Redis does not know the count yet (the first process sets it).
    pub partitions: u32,
    /// How often workers renew their leases and executors beat.
    pub heartbeat: Duration,
    /// A worker that has not renewed its lease for this long loses its partitions.
    pub lease_ttl: Duration,
    /// An executor silent for this long is presumed dead and its requests are handed out again.
    pub executor_ttl: Duration,
    /// How long a finished execution's log and events are kept.
    pub retention: Duration,
    /// A control message left pending this long under a worker that no longer owns its partition
    /// (it read the message as it lost the partition) is taken over by the owner.
    pub stranded_after: Duration,
    /// A worker whose control loop has not come back for messages (or to commit) for this long
    /// is stuck: it stops beating and renewing its leases, so its partitions move to the other
    /// workers within this plus the lease TTL. Longer than the loop's longest pause (a receive's
    /// wait, a batch, the back-off after failures).
    pub stall_limit: Duration,
}

impl Default for RedisBusConfig {
    fn default() -> Self {
        RedisBusConfig {
            prefix: "walkoff".into(),
            partitions: 8,
            heartbeat: Duration::from_millis(500),
            lease_ttl: Duration::from_millis(2500),
            executor_ttl: Duration::from_secs(3),
            retention: Duration::from_secs(24 * 3600),
            stranded_after: Duration::from_secs(5),
            stall_limit: Duration::from_secs(5),
        }
    }
}

pub struct RedisBus {
    me: Weak<RedisBus>,
    keys: RedisKeys,
    client: Client,
    writer: ConnectionManager,
    config: RedisBusConfig,
    partitions: u32,
    /// Idle connections for blocking reads, with their Redis client ids.
    readers: Mutex<Vec<(MultiplexedConnection, i64)>>,
    /// Client ids of connections inside a blocking read, for `close`.
    blocked: Mutex<HashSet<i64>>,
    /// The worker's reading connection between two commits, with the fences it watches, each of
    /// which held our token right after the watch began: a commit touching only those partitions
    /// needs no script to be fenced, a transaction is (`EXEC` fails if any fence changed).
    watching: Mutex<Option<WatchingReader>>,
    groups: Mutex<HashSet<String>>,
    /// Deliveries read beyond what a receiver asked for, handed out first next time.
    overflow: Mutex<HashMap<(AppRef, String), Overflow>>,
    closed: AtomicBool,
    leases: leases::Leases,
    /// When owned partitions last had their upkeep (trimming, stranded messages).
    upkept_at: Mutex<Instant>,
    /// When the worker's control loop last came for messages or to commit.
    loop_seen: Mutex<Instant>,
}

/// A reading connection, its Redis client id, and the (partition, token) fences it watches.
type WatchingReader = (MultiplexedConnection, i64, Vec<(Partition, String)>);

/// Action deliveries held for one (app, consumer).
type Overflow = VecDeque<Delivery<ActionRequest>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unavailable(e: redis::RedisError) -> BusError {
    BusError::Unavailable(e.to_string())
}

impl RedisBus {
    /// The names of this deployment's keys.
    pub fn keys(&self) -> &RedisKeys {
        &self.keys
    }

    /// Connect to `url` (`redis://127.0.0.1:6379`), keeping every key under `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Arc<RedisBus>, BusError> {
        RedisBus::connect_with(
            url,
            RedisBusConfig {
                prefix: prefix.to_string(),
                ..RedisBusConfig::default()
            },
        )
        .await
    }

    pub async fn connect_with(
        url: &str,
        config: RedisBusConfig,
    ) -> Result<Arc<RedisBus>, BusError> {
        let client = connection::client_for(url)?;
        // Reconnects by itself with exponential back-off when Redis goes away.
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(8)
            .set_max_delay(Duration::from_secs(2));
        let mut writer = ConnectionManager::new_with_config(client.clone(), manager_config)
            .await
            .map_err(unavailable)?;
        let keys = RedisKeys::new(&config.prefix);
        let config_key = keys.config();
        let (partitions,): (u32,) = redis::pipe()
            .cmd("HSETNX")
            .arg(&config_key)
            .arg("partitions")
            .arg(config.partitions.max(1))
            .ignore()
            .cmd("HGET")
            .arg(&config_key)
            .arg("partitions")
            .query_async(&mut writer)
            .await
            .map_err(unavailable)?;
        Ok(Arc::new_cyclic(|me| RedisBus {
            me: me.clone(),
            keys,
            client,
            writer,
            partitions: partitions.max(1),
            config,
            readers: Mutex::new(Vec::new()),
            blocked: Mutex::new(HashSet::new()),
            watching: Mutex::new(None),
            groups: Mutex::new(HashSet::new()),
            overflow: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            leases: leases::Leases::default(),
            upkept_at: Mutex::new(Instant::now()),
            loop_seen: Mutex::new(Instant::now()),
        }))
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn send_actions(&self, requests: Vec<ActionRequest>) -> Result<(), BusError> {
        self.queue_actions(requests).await
    }

    async fn recv_actions(
        &self,
        app: &AppRef,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery<ActionRequest>>, BusError> {
        self.take_actions(app, consumer, max, wait).await
    }

    async fn complete_actions(
        &self,
        app: &AppRef,
        done: Vec<(DeliveryId, NodeResult)>,
    ) -> Result<(), BusError> {
        self.report_results(app, done).await
    }

    async fn complete_and_recv_actions(
        &self,
        app: &AppRef,
        consumer: &str,
        done: Vec<(DeliveryId, NodeResult)>,
        max: usize,
        wait: Duration,
    ) -> (
        Result<(), BusError>,
        Result<Vec<Delivery<ActionRequest>>, BusError>,
    ) {
        self.report_and_take_actions(app, consumer, done, max, wait)
            .await
    }

    async fn send_control(&self, messages: Vec<ControlMessage>) -> Result<(), BusError> {
        self.send_control_messages(messages).await
    }

    async fn recv_control(
        &self,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<ControlBatch, BusError> {
        self.take_control(consumer, max, wait).await
    }

    async fn ack_control(&self, ids: Vec<DeliveryId>) -> Result<(), BusError> {
        self.ack_control_messages(ids).await
    }

    fn durable(&self) -> bool {
        true
    }

    fn partitions(&self) -> u32 {
        self.partitions
    }

    async fn commit(&self, _consumer: &str, commit: Commit) -> Result<(), BusError> {
        self.check_open()?;
        self.loop_came_back();
        self.commit_batch(commit).await
    }

    async fn commit_and_recv(
        &self,
        consumer: &str,
        commit: Commit,
        max: usize,
        wait: Duration,
    ) -> (Result<(), BusError>, Option<Result<ControlBatch, BusError>>) {
        if let Err(e) = self.check_open() {
            return (Err(e), None);
        }
        self.loop_came_back();
        let owned = self.leases.owned();
        if self.leases.has_changes() || owned.is_empty() || self.upkeep_due() {
            let committed = self.commit_batch(commit).await;
            let next = match &committed {
                Ok(()) => Some(self.take_control(consumer, max, wait).await),
                Err(_) => None,
            };
            return (committed, next);
        }
        self.commit_then_read(commit, &owned, consumer, max, wait)
            .await
    }

    async fn lookup_executions(
        &self,
        ids: &[ExecutionId],
    ) -> Result<Vec<ExecutionRecord>, BusError> {
        self.look_up_executions(ids).await
    }

    async fn load_partition(
        &self,
        partition: Partition,
    ) -> Result<Vec<(ExecutionId, Vec<ControlMessage>)>, BusError> {
        self.running_of_partition(partition).await
    }

    async fn resync(&self, _consumer: &str) {
        let owned = self.leases.owned();
        self.leases.regain(&owned);
    }

    async fn executor_heartbeat(&self, app: &AppRef, consumer: &str) -> Result<(), BusError> {
        self.beat_as_executor(app, consumer).await
    }

    async fn maintain(&self, consumer: &str, executor_wait: Duration) -> Result<(), BusError> {
        self.check_open()?;
        self.maintain_streams(consumer, executor_wait).await
    }

    async fn publish_events(&self, events: Vec<Event>) -> Result<(), BusError> {
        self.append_events(events).await
    }

    async fn read_events(
        &self,
        execution_id: &str,
        from_seq: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Event>, BusError> {
        self.events_from(execution_id, from_seq, max, wait).await
    }

    async fn pending(&self) -> Result<usize, BusError> {
        let apps: Vec<String> = self
            .query(redis::cmd("SMEMBERS").arg(self.keys.apps()))
            .await?;
        let mut streams = Vec::new();
        for app in apps {
            let Some(app) = actions::parse_app(&app) else {
                continue;
            };
            for p in PRIORITIES {
                streams.push((self.keys.action_stream(&app, p), EXECUTORS));
            }
        }
        for partition in 0..self.partitions {
            streams.push((self.keys.control_stream(partition), WORKERS));
        }
        let mut pipe = redis::pipe();
        for (stream, group) in &streams {
            self.ensure_group(stream, group).await?;
            pipe.cmd("XPENDING").arg(stream).arg(*group);
        }
        let summaries: Vec<(usize, Option<String>, Option<String>, redis::Value)> = pipe
            .query_async(&mut self.writer.clone())
            .await
            .map_err(unavailable)?;
        Ok(summaries.iter().map(|s| s.0).sum())
    }

    async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let goodbye = async {
            self.leave().await;
            let blocked: Vec<i64> = lock(&self.blocked).iter().copied().collect();
            for id in blocked {
                let unblocked: Result<i64, _> = redis::cmd("CLIENT")
                    .arg("UNBLOCK")
                    .arg(id)
                    .query_async(&mut self.writer.clone())
                    .await;
                if let Err(e) = unblocked {
                    tracing::warn!(error = %e, "could not unblock a reader");
                }
            }
        };
        // Without Redis there is no one to say goodbye to: leases and heartbeats expire by
        // themselves, and blocked reads end with their connections.
        if tokio::time::timeout(CLOSE_GRACE, goodbye).await.is_err() {
            tracing::warn!("Redis did not answer while closing; leases will expire on their own");
        }
    }
}

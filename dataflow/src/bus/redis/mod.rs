//! The Redis Streams bus: the distributed mode's transport and its store of execution state.
//!
//! Keys (all under a prefix, `walkoff` by default; `docs/redis-contract.md` is the full contract):
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

mod commit;
mod feeds;
mod leases;
mod maintenance;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamId, StreamReadReply};
use redis::{AsyncConnectionConfig, Client, Cmd, FromRedisValue, Pipeline};
use serde::de::DeserializeOwned;
use serde::Serialize;
use walkoff_schema::{
    ActionRequest, AppApi, AppCatalog, AppRef, ControlMessage, Event, ExecutionId, NodeResult,
};

use super::{
    partition_of, Bus, BusError, Commit, ControlBatch, Delivery, DeliveryId, ExecutionRecord,
    Partition,
};

pub use feeds::{FinishedEntry, Wake};

const EXECUTORS: &str = "executors";
const WORKERS: &str = "workers";
const PRIORITIES: [u8; 5] = [5, 4, 3, 2, 1];

/// The dead-letter stream keeps about this many of the latest entries for operators.
const DEAD_MAXLEN: usize = 100_000;

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

/// How much longer than its `BLOCK` a blocking read may take to answer before it counts as
/// failed (a frozen server, a half-open connection); the reader then opens a fresh connection.
const RESPONSE_MARGIN: Duration = Duration::from_secs(5);

/// Reading connections kept open between reads; more are opened for a burst and then closed.
const MAX_IDLE_READERS: usize = 16;

/// How long `close` waits for Redis to take its goodbye (leases released, readers unblocked).
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Appends events whose sequence number is above the stream's last one, in order.
const PUBLISH_EVENTS: &str = r#"
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local seq = 0
if #last > 0 then seq = tonumber(string.match(last[1][1], '%-(%d+)$')) end
for i = 1, #ARGV, 2 do
  local next = tonumber(ARGV[i])
  if next > seq then
    redis.call('XADD', KEYS[1], '0-' .. next, 'm', ARGV[i + 1])
    seq = next
  end
end
return seq
"#;

/// Reads up to ARGV[3] new entries for consumer ARGV[2] of group ARGV[1], from the streams in KEYS
/// in order (highest priority first): one round trip, and never more than asked for.
const READ_BY_PRIORITY: &str = r#"
local out = {}
local wanted = tonumber(ARGV[3])
for i = 1, #KEYS do
  if wanted <= 0 then break end
  local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', wanted, 'STREAMS', KEYS[i], '>')
  if reply then
    for _, entry in ipairs(reply[1][2]) do
      if entry[2] then
        table.insert(out, {KEYS[i], entry[1], entry[2]})
        wanted = wanted - 1
      end
    end
  end
end
return out
"#;

fn read_by_priority_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(READ_BY_PRIORITY))
}

/// Scores a heartbeat with Redis's clock, so hosts with skewed clocks agree on who is alive.
const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
return now
"#;

/// A connection idle this long is probed, every interval, and closed after this many
/// unanswered probes: a dead peer is noticed in about 25 s even on a connection nothing uses.
const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const TCP_KEEPALIVE_PROBES: u32 = 3;
/// Data sent and unacknowledged this long closes the connection (`TCP_USER_TIMEOUT`).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(20);

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

fn publish_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(PUBLISH_EVENTS))
}

/// The executions a control message is about (a batch of results may span several).
fn executions_of(message: &ControlMessage) -> Vec<String> {
    let mut ids: Vec<String> = match message {
        ControlMessage::Results { results } => {
            results.iter().map(|r| r.execution_id.clone()).collect()
        }
        other => vec![other.execution_id().to_string()],
    };
    ids.sort();
    ids.dedup();
    ids
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unavailable(e: redis::RedisError) -> BusError {
    BusError::Unavailable(e.to_string())
}

fn encode<T: Serialize>(message: &T) -> String {
    serde_json::to_string(message).expect("wire messages serialise")
}

/// Append `XADD stream * m <json>` to a pipeline.
fn add_message<T: Serialize>(pipe: &mut Pipeline, stream: &str, message: &T) {
    pipe.cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("m")
        .arg(encode(message))
        .ignore();
}

/// Split a delivery id `"{n}|{entry}"` (n: a priority or a partition).
fn split_delivery(id: &str) -> (u32, &str) {
    match id.split_once('|') {
        Some((n, entry)) => (n.parse().unwrap_or(0), entry),
        None => (0, id),
    }
}

/// A stream entry id (`{ms}-{seq}`) as numbers, to sort entries in stream order.
fn entry_order(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// The milliseconds part of a stream entry id (`{ms}-{seq}`): when it was added, by Redis's clock.
fn entry_millis(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
}

impl RedisBus {
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
        // Small messages both ways: without TCP_NODELAY, Nagle's algorithm holds writes back.
        // Keepalive probes and a user timeout close a connection whose peer vanished (a host
        // gone, a partition) instead of leaving it half-open until a read's own timeout.
        let info = redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(unavailable)?
            .set_tcp_settings(
                redis::io::tcp::TcpSettings::default()
                    .set_nodelay(true)
                    .set_keepalive(
                        socket2::TcpKeepalive::new()
                            .with_time(TCP_KEEPALIVE_IDLE)
                            .with_interval(TCP_KEEPALIVE_INTERVAL)
                            .with_retries(TCP_KEEPALIVE_PROBES),
                    )
                    .set_user_timeout(TCP_USER_TIMEOUT),
            );
        let client = Client::open(info).map_err(unavailable)?;
        // Reconnects by itself with exponential back-off when Redis goes away.
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(8)
            .set_max_delay(Duration::from_secs(2));
        let mut writer = ConnectionManager::new_with_config(client.clone(), manager_config)
            .await
            .map_err(unavailable)?;
        let config_key = format!("{}:config", config.prefix);
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

    fn key(&self, rest: std::fmt::Arguments<'_>) -> String {
        format!("{}:{rest}", self.config.prefix)
    }

    fn action_stream(&self, app: &AppRef, priority: u8) -> String {
        self.key(format_args!(
            "actions:{}@{}:p{}",
            app.name,
            app.version,
            priority.clamp(1, 5)
        ))
    }

    fn control_stream(&self, partition: Partition) -> String {
        self.key(format_args!("control:{partition}"))
    }

    fn control_stream_of(&self, execution_id: &str) -> String {
        self.control_stream(partition_of(execution_id, self.partitions))
    }

    fn events_stream(&self, execution_id: &str) -> String {
        self.key(format_args!("events:{execution_id}"))
    }

    fn log_key(&self, execution_id: &str) -> String {
        self.key(format_args!("exec:{execution_id}"))
    }

    fn running_key(&self, partition: Partition) -> String {
        self.key(format_args!("running:{partition}"))
    }

    fn executors_key(&self, app: &AppRef) -> String {
        self.key(format_args!("executors:{app}"))
    }

    fn check_open(&self) -> Result<(), BusError> {
        if self.closed.load(Ordering::Acquire) {
            Err(BusError::Closed)
        } else {
            Ok(())
        }
    }

    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, BusError> {
        cmd.query_async(&mut self.writer.clone())
            .await
            .map_err(|e| self.failed(e))
    }

    /// A failed command; a missing group (Redis restarted without its data) is created again on
    /// the next call.
    fn failed(&self, e: redis::RedisError) -> BusError {
        if e.code() == Some("NOGROUP") {
            lock(&self.groups).clear();
        }
        unavailable(e)
    }

    /// The first error among a pipeline's replies, including those of commands inside a
    /// `MULTI`/`EXEC` (which come back inside `EXEC`'s answer).
    fn first_failure(
        &self,
        replies: Vec<redis::RedisResult<redis::Value>>,
    ) -> Result<(), BusError> {
        for reply in replies {
            if let Err(e) = reply.and_then(redis::Value::extract_error) {
                return Err(self.failed(e));
            }
        }
        Ok(())
    }

    async fn run(&self, pipe: &Pipeline) -> Result<(), BusError> {
        pipe.query_async::<()>(&mut self.writer.clone())
            .await
            .map_err(|e| self.failed(e))
    }

    /// Redis's clock, in milliseconds since the epoch.
    async fn now_ms(&self) -> Result<u64, BusError> {
        let (secs, micros): (u64, u64) = self.query(&redis::cmd("TIME")).await?;
        Ok(secs * 1000 + micros / 1000)
    }

    /// Create the consumer group of `stream` (and the stream) once; it starts at the beginning so
    /// entries written before it existed are delivered too.
    async fn ensure_group(&self, stream: &str, group: &str) -> Result<(), BusError> {
        let key = format!("{stream}\u{0}{group}");
        if lock(&self.groups).contains(&key) {
            return Ok(());
        }
        let created: Result<(), BusError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.writer.clone())
            .await
            .or_else(|e: redis::RedisError| {
                if e.code() == Some("BUSYGROUP") {
                    Ok(())
                } else {
                    Err(unavailable(e))
                }
            });
        created?;
        lock(&self.groups).insert(key);
        Ok(())
    }

    /// Create the app's five streams and groups once; true when this call created them.
    async fn ensure_action_groups(&self, app: &AppRef) -> Result<bool, BusError> {
        let known =
            lock(&self.groups).contains(&format!("{}\u{0}{EXECUTORS}", self.action_stream(app, 1)));
        if known {
            return Ok(false);
        }
        for p in PRIORITIES {
            self.ensure_group(&self.action_stream(app, p), EXECUTORS)
                .await?;
        }
        Ok(true)
    }

    /// Run a blocking command (which blocks up to `block`) on a dedicated connection, which
    /// `close` can unblock. An answer later than `block` + [`RESPONSE_MARGIN`] is an error: a
    /// frozen server or a half-open connection cannot hang the reader.
    async fn blocking<T: FromRedisValue>(&self, cmd: &Cmd, block: Duration) -> Result<T, BusError> {
        let (mut conn, id) = self.reader().await?;
        conn.set_response_timeout(block + RESPONSE_MARGIN);
        let result = cmd.query_async(&mut conn).await;
        self.return_reader(conn, id, result.map_err(|e| self.failed(e)))
    }

    /// Run a pipeline ending in a blocking command on a dedicated connection; each command's own
    /// result (the pipeline ignores errors).
    async fn blocking_pipe(
        &self,
        pipe: &Pipeline,
        block: Duration,
    ) -> Result<Vec<redis::RedisResult<redis::Value>>, BusError> {
        let (mut conn, id) = self.reader().await?;
        conn.set_response_timeout(block + RESPONSE_MARGIN);
        let result = pipe.query_async(&mut conn).await;
        self.return_reader(conn, id, result.map_err(|e| self.failed(e)))
    }

    /// A reading connection, registered as blocked so `close` can unblock it.
    async fn reader(&self) -> Result<(MultiplexedConnection, i64), BusError> {
        let pooled = lock(&self.readers).pop();
        let (conn, id) = match pooled {
            Some(reader) => reader,
            None => {
                // Each read sets its response timeout: its BLOCK plus a margin.
                let config = AsyncConnectionConfig::new()
                    .set_response_timeout(None)
                    .set_connection_timeout(Some(Duration::from_secs(5)));
                let mut conn = self
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(unavailable)?;
                let id: i64 = redis::cmd("CLIENT")
                    .arg("ID")
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                (conn, id)
            }
        };
        self.mark_blocked(id)?;
        Ok((conn, id))
    }

    /// The worker's watching reader (a fresh reader watching nothing the first time).
    async fn watching_reader(&self) -> Result<WatchingReader, BusError> {
        let kept = lock(&self.watching).take();
        match kept {
            Some((conn, id, watched)) => {
                self.mark_blocked(id)?;
                Ok((conn, id, watched))
            }
            None => {
                let (conn, id) = self.reader().await?;
                Ok((conn, id, Vec::new()))
            }
        }
    }

    fn mark_blocked(&self, id: i64) -> Result<(), BusError> {
        lock(&self.blocked).insert(id);
        // Checked after registering, so a concurrent close either sees this reader or is seen here.
        if let Err(e) = self.check_open() {
            lock(&self.blocked).remove(&id);
            return Err(e);
        }
        Ok(())
    }

    /// Pool the connection again after a read that worked; one that failed is dropped, and the
    /// next read opens a fresh one.
    fn return_reader<T>(
        &self,
        conn: MultiplexedConnection,
        id: i64,
        result: Result<T, BusError>,
    ) -> Result<T, BusError> {
        lock(&self.blocked).remove(&id);
        self.check_open()?;
        let value = result?;
        let mut readers = lock(&self.readers);
        // A burst of reads opens as many connections; afterwards only a few are kept.
        if readers.len() < MAX_IDLE_READERS {
            readers.push((conn, id));
        }
        Ok(value)
    }

    /// Move an entry that cannot be served to the dead-letter stream and acknowledge it.
    async fn dead_letter(&self, stream: &str, group: &str, entry: &StreamId, reason: &str) {
        tracing::warn!(%stream, id = %entry.id, %reason, "message dead-lettered");
        let raw: String = entry.get("m").unwrap_or_default();
        let mut pipe = redis::pipe();
        self.add_dead_letter(&mut pipe, stream, &entry.id, reason, &raw);
        pipe.cmd("XACK")
            .arg(stream)
            .arg(group)
            .arg(&entry.id)
            .ignore();
        if let Err(e) = self.run(&pipe).await {
            tracing::warn!(error = %e, "could not dead-letter a message");
        }
    }

    fn add_dead_letter(
        &self,
        pipe: &mut Pipeline,
        stream: &str,
        id: &str,
        reason: &str,
        raw: &str,
    ) {
        pipe.cmd("XADD")
            .arg(self.key(format_args!("dead")))
            .arg("MAXLEN")
            .arg("~")
            .arg(DEAD_MAXLEN)
            .arg("*")
            .arg("stream")
            .arg(stream)
            .arg("id")
            .arg(id)
            .arg("reason")
            .arg(reason)
            .arg("m")
            .arg(raw)
            .ignore();
    }

    /// Decode the entries of a group read; undecodable ones are dead-lettered.
    async fn decode_entries<T: DeserializeOwned>(
        &self,
        stream: &str,
        group: &str,
        entries: Vec<StreamId>,
    ) -> Vec<(String, T)> {
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            match decode_entry::<T>(&entry) {
                Ok(message) => out.push((entry.id, message)),
                Err(reason) => self.dead_letter(stream, group, &entry, &reason).await,
            }
        }
        out
    }

    /// One `XREADGROUP` on the given priority streams of `app`; blocking when `block` is set.
    async fn read_actions(
        &self,
        app: &AppRef,
        consumer: &str,
        priorities: &[u8],
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<Delivery<ActionRequest>>, BusError> {
        let cmd = self.read_actions_cmd(app, consumer, priorities, count, block);
        let reply: Option<StreamReadReply> = match block {
            Some(block) => self.blocking(&cmd, block).await?,
            None => self.query(&cmd).await?,
        };
        Ok(self.action_deliveries(reply).await)
    }

    fn read_actions_cmd(
        &self,
        app: &AppRef,
        consumer: &str,
        priorities: &[u8],
        count: usize,
        block: Option<Duration>,
    ) -> Cmd {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(EXECUTORS)
            .arg(consumer)
            .arg("COUNT")
            .arg(count.max(1));
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS");
        for &p in priorities {
            cmd.arg(self.action_stream(app, p));
        }
        for _ in priorities {
            cmd.arg(">");
        }
        cmd
    }

    /// The requests of a read of action streams, highest priority first, then in stream order;
    /// undecodable entries are dead-lettered.
    async fn action_deliveries(
        &self,
        reply: Option<StreamReadReply>,
    ) -> Vec<Delivery<ActionRequest>> {
        let mut deliveries = Vec::new();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            let priority = key
                .key
                .rsplit(":p")
                .next()
                .and_then(|p| p.parse::<u8>().ok())
                .unwrap_or(3);
            for (id, request) in self
                .decode_entries::<ActionRequest>(&key.key, EXECUTORS, key.ids)
                .await
            {
                deliveries.push(Delivery {
                    id: format!("{priority}|{id}"),
                    deliveries: request.delivery.max(1),
                    message: request,
                });
            }
        }
        deliveries.sort_by_key(|d| std::cmp::Reverse(d.message.priority));
        deliveries
    }

    /// The writes reporting `done`, in one `MULTI`/`EXEC`: each result on its execution's control
    /// partition (one entry per partition: a batch is one entry to read and acknowledge, not one per
    /// result), then one `XACK` per priority stream. A request is acknowledged only with its result:
    /// when Redis refuses the `XADD` (out of memory), the transaction is dropped whole and the
    /// request stays pending, to be handed out again if this executor dies before it reports.
    fn add_completions(
        &self,
        pipe: &mut Pipeline,
        app: &AppRef,
        done: Vec<(DeliveryId, NodeResult)>,
    ) {
        pipe.cmd("MULTI");
        let mut acks = Vec::with_capacity(done.len());
        let mut by_partition: BTreeMap<Partition, Vec<NodeResult>> = BTreeMap::new();
        for (id, result) in done {
            by_partition
                .entry(partition_of(&result.execution_id, self.partitions))
                .or_default()
                .push(result);
            acks.push(id);
        }
        for (partition, mut results) in by_partition {
            let message = if results.len() == 1 {
                ControlMessage::Result(results.remove(0))
            } else {
                ControlMessage::Results { results }
            };
            pipe.cmd("XADD")
                .arg(self.control_stream(partition))
                .arg("*")
                .arg("m")
                .arg(encode(&message));
        }
        let mut by_priority: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
        for id in &acks {
            let (priority, entry) = split_delivery(id);
            by_priority.entry(priority).or_default().push(entry);
        }
        for (priority, entries) in by_priority {
            pipe.cmd("XACK")
                .arg(self.action_stream(app, priority as u8))
                .arg(EXECUTORS)
                .arg(entries);
        }
        pipe.cmd("EXEC");
    }

    async fn read_by_priority(
        &self,
        app: &AppRef,
        consumer: &str,
        max: usize,
    ) -> Result<Vec<Delivery<ActionRequest>>, BusError> {
        let mut invocation = read_by_priority_script().prepare_invoke();
        for p in PRIORITIES {
            invocation.key(self.action_stream(app, p));
        }
        invocation.arg(EXECUTORS).arg(consumer).arg(max);
        let entries: Vec<(String, String, Vec<String>)> = invocation
            .invoke_async(&mut self.writer.clone())
            .await
            .map_err(|e| self.failed(e))?;
        let mut deliveries = Vec::with_capacity(entries.len());
        for (stream, id, fields) in entries {
            let raw = fields
                .chunks(2)
                .find(|pair| pair[0] == "m")
                .and_then(|pair| pair.get(1).cloned());
            let decoded = raw
                .as_deref()
                .ok_or_else(|| "no field 'm'".to_string())
                .and_then(|m| serde_json::from_str::<ActionRequest>(m).map_err(|e| e.to_string()));
            match decoded {
                Ok(request) => {
                    let priority = stream
                        .rsplit(":p")
                        .next()
                        .and_then(|p| p.parse::<u8>().ok())
                        .unwrap_or(3);
                    deliveries.push(Delivery {
                        id: format!("{priority}|{id}"),
                        deliveries: request.delivery.max(1),
                        message: request,
                    });
                }
                Err(reason) => {
                    let entry = StreamId {
                        id,
                        map: HashMap::from([(
                            "m".to_string(),
                            redis::Value::BulkString(raw.unwrap_or_default().into_bytes()),
                        )]),
                        milliseconds_elapsed_from_delivery: None,
                        delivered_count: None,
                    };
                    self.dead_letter(&stream, EXECUTORS, &entry, &reason).await;
                }
            }
        }
        Ok(deliveries)
    }

    /// Append `XADD` of action requests, each telling its executor where the result goes.
    fn add_actions(&self, pipe: &mut Pipeline, requests: Vec<ActionRequest>) {
        for mut request in requests {
            request.reply_to = Some(self.control_stream_of(&request.execution_id));
            pipe.cmd("XADD")
                .arg(self.action_stream(&request.app, request.priority))
                .arg("*")
                .arg("m")
                .arg(encode(&request))
                .ignore();
        }
    }

    /// Register an app version's `api.yaml`, so submitters and workers validate against it.
    /// The version counter goes up with it, so gateways see the new catalogue at once.
    pub async fn register_app(&self, app: &AppRef, api_yaml: &str) -> Result<(), BusError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(self.key(format_args!("app-apis")))
            .arg(app.to_string())
            .arg(api_yaml)
            .ignore()
            .cmd("INCR")
            .arg(self.key(format_args!("app-apis:version")))
            .ignore();
        self.run(&pipe).await
    }

    /// The counter of app registrations (0 before the first): a cache of the catalogue is
    /// right for as long as it stays the same.
    pub async fn app_apis_version(&self) -> Result<u64, BusError> {
        let version: Option<u64> = self
            .query(redis::cmd("GET").arg(self.key(format_args!("app-apis:version"))))
            .await?;
        Ok(version.unwrap_or(0))
    }

    /// The `api.yaml` of every registered app version.
    pub async fn registered_apps(&self) -> Result<Vec<String>, BusError> {
        self.query(redis::cmd("HVALS").arg(self.key(format_args!("app-apis"))))
            .await
    }

    /// `base` (the built-in apps) with every registered app version's API added; one that does
    /// not parse is skipped with a warning.
    pub async fn app_catalog(&self, base: &AppCatalog) -> Result<AppCatalog, BusError> {
        let mut catalog = base.clone();
        for text in self.registered_apps().await? {
            match AppApi::from_yaml(&text) {
                Ok(api) => catalog.insert(api),
                Err(e) => tracing::warn!(error = %e, "a registered app API does not parse"),
            }
        }
        Ok(catalog)
    }

    /// Read every entry of `partition` still pending (with any consumer) into `consumer`.
    /// Whether owned partitions are due their upkeep (twice per `stranded_after`).
    fn upkeep_due(&self) -> bool {
        lock(&self.upkept_at).elapsed() >= self.config.stranded_after / 2
    }

    /// Drop from each (stream, group) what the group is done with: entries older than the oldest
    /// one still pending, or when none is, than the last one delivered. Nothing pending or not yet
    /// delivered is touched, however long the backlog. (Entries are added with growing ids, so one
    /// delivered or claimed after the look is never below the bound.)
    pub(super) async fn trim_consumed(&self, streams: &[(String, &str)]) -> Result<(), BusError> {
        let mut look = redis::pipe();
        for (stream, group) in streams {
            look.cmd("XINFO").arg("GROUPS").arg(stream);
            look.cmd("XPENDING").arg(stream).arg(*group);
        }
        let replies: Vec<redis::Value> = look
            .query_async(&mut self.writer.clone())
            .await
            .map_err(|e| self.failed(e))?;
        let mut trims = redis::pipe();
        for ((stream, group), pair) in streams.iter().zip(replies.chunks(2)) {
            let [groups, pending] = pair else { continue };
            let groups: redis::streams::StreamInfoGroupsReply =
                redis::FromRedisValue::from_redis_value(groups.clone())
                    .map_err(|e| self.failed(e.into()))?;
            let pending: redis::streams::StreamPendingReply =
                redis::FromRedisValue::from_redis_value(pending.clone())
                    .map_err(|e| self.failed(e.into()))?;
            let delivered = groups
                .groups
                .iter()
                .find(|g| g.name == *group)
                .map(|g| g.last_delivered_id.clone());
            let keep_from = match pending {
                redis::streams::StreamPendingReply::Data(data) if data.count > 0 => {
                    Some(data.start_id)
                }
                _ => delivered,
            };
            // "0-0": the group has delivered nothing yet, so there is nothing to trim.
            if let Some(id) = keep_from.filter(|id| id != "0-0") {
                trims.cmd("XTRIM").arg(stream).arg("MINID").arg(id).ignore();
            }
        }
        if trims.is_empty() {
            return Ok(());
        }
        self.run(&trims).await
    }

    /// Control messages of `partitions` pending for `stranded_after` under other consumers, claimed
    /// for `consumer`. A worker reading as it loses a partition (its read pipelined with a commit
    /// that is then fenced) leaves what it read pending under its name, where nothing else would
    /// look; only the owner applies a partition's messages, so those are the owner's to take.
    async fn adopt_stranded(
        &self,
        partitions: &[Partition],
        consumer: &str,
    ) -> Result<Vec<Delivery<ControlMessage>>, BusError> {
        let idle = self.config.stranded_after.as_millis() as u64;
        let mut pending = redis::pipe();
        for &p in partitions {
            pending
                .cmd("XPENDING")
                .arg(self.control_stream(p))
                .arg(WORKERS)
                .arg("IDLE")
                .arg(idle)
                .arg("-")
                .arg("+")
                .arg(1000);
        }
        let replies: Vec<redis::streams::StreamPendingCountReply> = pending
            .query_async(&mut self.writer.clone())
            .await
            .map_err(|e| self.failed(e))?;
        let mut deliveries = Vec::new();
        for (&p, reply) in partitions.iter().zip(replies) {
            let stranded: Vec<_> = reply
                .ids
                .into_iter()
                .filter(|pending| pending.consumer != consumer)
                .collect();
            if stranded.is_empty() {
                continue;
            }
            let stream = self.control_stream(p);
            tracing::warn!(
                partition = p,
                count = stranded.len(),
                "taking over control messages left pending by a former owner"
            );
            let claimed: redis::streams::StreamClaimReply = self
                .query(
                    redis::cmd("XCLAIM")
                        .arg(&stream)
                        .arg(WORKERS)
                        .arg(consumer)
                        .arg(idle)
                        .arg(stranded.iter().map(|s| &s.id).collect::<Vec<_>>()),
                )
                .await?;
            for (id, message) in self
                .decode_entries::<ControlMessage>(&stream, WORKERS, claimed.ids)
                .await
            {
                let times = stranded
                    .iter()
                    .find(|s| s.id == id)
                    .map_or(2, |s| s.times_delivered + 1);
                deliveries.push(Delivery {
                    id: format!("{p}|{id}"),
                    deliveries: times as u32,
                    message,
                });
            }
        }
        Ok(deliveries)
    }

    /// Everything pending on a partition just gained (or gained again after a failed commit),
    /// in stream order. Another worker's messages are claimed, which counts a delivery; this
    /// worker's own (read before a commit failed) are read again as they are, which does not:
    /// so the count says how many workers took a message without committing it, and past
    /// [`MAX_CONTROL_DELIVERIES`] the message is dead-lettered instead of handed on.
    async fn claim_all_pending(
        &self,
        partition: Partition,
        consumer: &str,
    ) -> Result<Vec<Delivery<ControlMessage>>, BusError> {
        let stream = self.control_stream(partition);
        self.ensure_group(&stream, WORKERS).await?;
        let pending = self.pending_entries(&stream).await?;
        let (mine, others): (Vec<_>, Vec<_>) =
            pending.into_iter().partition(|p| p.consumer == consumer);
        let (overdelivered, others): (Vec<_>, Vec<_>) = others
            .into_iter()
            .partition(|p| p.times_delivered >= MAX_CONTROL_DELIVERIES);
        if !overdelivered.is_empty() {
            let ids: Vec<String> = overdelivered.into_iter().map(|p| p.id).collect();
            self.dead_letter_control(&stream, &ids).await?;
        }
        let mut entries: Vec<(StreamId, usize)> = Vec::new();
        for chunk in mine.chunks(1000) {
            let mut pipe = redis::pipe();
            for p in chunk {
                pipe.cmd("XRANGE").arg(&stream).arg(&p.id).arg(&p.id);
            }
            let replies: Vec<redis::streams::StreamRangeReply> = pipe
                .query_async(&mut self.writer.clone())
                .await
                .map_err(|e| self.failed(e))?;
            for (reply, p) in replies.into_iter().zip(chunk) {
                entries.extend(reply.ids.into_iter().map(|e| (e, p.times_delivered)));
            }
        }
        for chunk in others.chunks(1000) {
            let claimed: redis::streams::StreamClaimReply = self
                .query(
                    redis::cmd("XCLAIM")
                        .arg(&stream)
                        .arg(WORKERS)
                        .arg(consumer)
                        .arg(0)
                        .arg(chunk.iter().map(|p| p.id.as_str()).collect::<Vec<_>>()),
                )
                .await?;
            for entry in claimed.ids {
                let times = chunk
                    .iter()
                    .find(|p| p.id == entry.id)
                    .map_or(2, |p| p.times_delivered + 1);
                entries.push((entry, times));
            }
        }
        entries.sort_by_key(|(entry, _)| entry_order(&entry.id));
        let times: HashMap<String, usize> = entries
            .iter()
            .map(|(entry, times)| (entry.id.clone(), *times))
            .collect();
        let entries = entries.into_iter().map(|(entry, _)| entry).collect();
        Ok(self
            .decode_entries::<ControlMessage>(&stream, WORKERS, entries)
            .await
            .into_iter()
            .map(|(id, message)| Delivery {
                deliveries: times.get(&id).copied().unwrap_or(2).max(1) as u32,
                id: format!("{partition}|{id}"),
                message,
            })
            .collect())
    }

    /// Every entry pending in `stream`'s worker group: id, holder and delivery count.
    async fn pending_entries(
        &self,
        stream: &str,
    ) -> Result<Vec<redis::streams::StreamPendingId>, BusError> {
        let mut pending = Vec::new();
        let mut start = "-".to_string();
        loop {
            let page: redis::streams::StreamPendingCountReply = self
                .query(
                    redis::cmd("XPENDING")
                        .arg(stream)
                        .arg(WORKERS)
                        .arg(&start)
                        .arg("+")
                        .arg(1000),
                )
                .await?;
            let full = page.ids.len() == 1000;
            if let Some(last) = page.ids.last() {
                start = format!("({}", last.id);
            }
            pending.extend(page.ids);
            if !full {
                return Ok(pending);
            }
        }
    }

    /// Dead-letter these control messages of `stream` and abort their executions (an abort
    /// itself is only dead-lettered): the execution ends instead of taking every worker down in
    /// turn, or hanging.
    async fn dead_letter_control(&self, stream: &str, ids: &[String]) -> Result<(), BusError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for id in ids {
            let entries: redis::streams::StreamRangeReply = self
                .query(redis::cmd("XRANGE").arg(stream).arg(id).arg(id))
                .await?;
            let raw: String = entries
                .ids
                .first()
                .and_then(|entry| entry.get("m"))
                .unwrap_or_default();
            let message = serde_json::from_str::<ControlMessage>(&raw).ok();
            let executions = message.as_ref().map(executions_of).unwrap_or_default();
            let reason = format!(
                "taken by {MAX_CONTROL_DELIVERIES} workers and committed by none (each stopped \
                 before committing it): dead-lettered, and its executions ({}) aborted",
                executions.join(", ")
            );
            tracing::error!(stream, id, executions = ?executions, "a control message no worker could commit is dead-lettered");
            self.add_dead_letter(&mut pipe, stream, id, &reason, &raw);
            if !matches!(message, Some(ControlMessage::Abort { .. })) {
                for execution_id in executions {
                    add_message(&mut pipe, stream, &ControlMessage::Abort { execution_id });
                }
            }
            pipe.cmd("XACK").arg(stream).arg(WORKERS).arg(id).ignore();
        }
        self.count(&mut pipe, STAT_CONTROL_DEAD_LETTERED, ids.len() as u64);
        self.run(&pipe).await
    }

    /// Raise a counter of `{prefix}:stats` by `by` within `pipe`.
    pub(super) fn count(&self, pipe: &mut Pipeline, stat: &str, by: u64) {
        if by > 0 {
            pipe.cmd("HINCRBY")
                .arg(self.key(format_args!("stats")))
                .arg(stat)
                .arg(by)
                .ignore();
        }
    }

    /// The blocking (or, with no wait, immediate) read of the worker's partitions.
    async fn control_read_cmd(
        &self,
        partitions: &[Partition],
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Cmd, BusError> {
        let streams: Vec<String> = partitions.iter().map(|&p| self.control_stream(p)).collect();
        for stream in &streams {
            self.ensure_group(stream, WORKERS).await?;
        }
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(WORKERS)
            .arg(consumer)
            .arg("COUNT")
            .arg(max.max(1));
        if !wait.is_zero() {
            cmd.arg("BLOCK").arg(wait.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS").arg(&streams);
        for _ in &streams {
            cmd.arg(">");
        }
        Ok(cmd)
    }

    /// Decode a control read; undecodable entries are dead-lettered.
    async fn control_deliveries(
        &self,
        reply: Option<StreamReadReply>,
    ) -> Vec<Delivery<ControlMessage>> {
        let mut deliveries = Vec::new();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            let partition = key
                .key
                .rsplit(':')
                .next()
                .and_then(|p| p.parse::<Partition>().ok())
                .unwrap_or(0);
            for (id, message) in self
                .decode_entries::<ControlMessage>(&key.key, WORKERS, key.ids)
                .await
            {
                deliveries.push(Delivery {
                    id: format!("{partition}|{id}"),
                    deliveries: 1,
                    message,
                });
            }
        }
        deliveries
    }

    async fn read_control(
        &self,
        partitions: &[Partition],
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery<ControlMessage>>, BusError> {
        let cmd = self
            .control_read_cmd(partitions, consumer, max, wait)
            .await?;
        let reply: Option<StreamReadReply> = if wait.is_zero() {
            self.query(&cmd).await?
        } else {
            self.blocking(&cmd, wait).await?
        };
        Ok(self.control_deliveries(reply).await)
    }

    async fn load_logs(&self, ids: &[ExecutionId]) -> Result<Vec<Vec<ControlMessage>>, BusError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("LRANGE").arg(self.log_key(id)).arg(0).arg(-1);
        }
        let raw: Vec<Vec<String>> = pipe
            .query_async(&mut self.writer.clone())
            .await
            .map_err(unavailable)?;
        Ok(raw
            .into_iter()
            .zip(ids)
            .map(|(entries, id)| {
                entries
                    .iter()
                    .filter_map(|m| match serde_json::from_str(m) {
                        Ok(message) => Some(message),
                        Err(e) => {
                            tracing::error!(execution = %id, error = %e, "undecodable log entry skipped");
                            None
                        }
                    })
                    .collect()
            })
            .collect())
    }
}

impl RedisBus {
    /// The commit and the next blocking read of the worker's partitions in one pipeline on the
    /// watching reader: Redis runs the read right after the commit, so the worker waits one round
    /// trip per batch instead of two. Between the two, the pipeline watches the owned partitions'
    /// fences and reads them, which fences the next commit without a script: it goes as
    /// `MULTI`…`EXEC` (Redis: about 18 µs a chain step instead of 65), and `EXEC` fails if another
    /// worker took a partition since. Then the script runs, finding the lease taken.
    ///
    /// A lease that expired with nobody taking it over does not stop the transaction, as it
    /// stops the script: harmless, as a worker taking the partition later changes the fence
    /// first and then loads what was committed.
    async fn commit_then_read(
        &self,
        commit: Commit,
        owned: &[Partition],
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> (Result<(), BusError>, Option<Result<ControlBatch, BusError>>) {
        let prepared = match self.prepare_commit(commit).await {
            Ok(Some(prepared)) => prepared,
            Ok(None) => return (Ok(()), Some(self.recv_control(consumer, max, wait).await)),
            Err(e) => return (Err(e), None),
        };
        let read = match self.control_read_cmd(owned, consumer, max, wait).await {
            Ok(read) => read,
            Err(e) => return (Err(e), None),
        };
        let (mut conn, id, watched) = match self.watching_reader().await {
            Ok(reader) => reader,
            Err(e) => return (Err(e), None),
        };
        conn.set_response_timeout(wait + RESPONSE_MARGIN);
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let as_transaction = prepared.fenced_by(&watched);
        let commit_replies = if as_transaction {
            prepared.add_transaction(&mut pipe)
        } else {
            pipe.add_command(commit::commit_cmd(&prepared.script_args()));
            1
        };
        let tokens: Vec<(Partition, Option<String>)> =
            owned.iter().map(|&p| (p, self.leases.token(p))).collect();
        let fence_keys: Vec<String> = owned.iter().map(|&p| self.fence_key(p)).collect();
        pipe.cmd("WATCH").arg(&fence_keys);
        pipe.cmd("MGET").arg(&fence_keys);
        pipe.add_command(read);

        let result = pipe
            .query_async::<Vec<redis::RedisResult<redis::Value>>>(&mut conn)
            .await;
        lock(&self.blocked).remove(&id);
        if let Err(e) = self.check_open() {
            return (Err(e), None);
        }
        let replies = match result {
            Ok(replies) if replies.len() == commit_replies + 3 => replies,
            Ok(replies) => {
                let e = BusError::Unavailable(format!(
                    "{} replies to a commit pipeline of {}",
                    replies.len(),
                    commit_replies + 3
                ));
                return (Err(e), None);
            }
            Err(e) => return (Err(self.failed(e)), None),
        };
        let mut replies = replies.into_iter().skip(commit_replies - 1);
        let commit_reply = replies.next().unwrap_or(Ok(redis::Value::Nil));
        let committed = if as_transaction {
            match prepared.transaction_outcome(commit_reply) {
                commit::TransactionOutcome::Done(failures) => self.commit_outcome(Ok(failures)),
                // Another worker took a partition since the watch: the script finds out which
                // (and commits if that was none this commit touches).
                commit::TransactionOutcome::Aborted => {
                    self.commit_with_script(&prepared.script_args()).await
                }
                commit::TransactionOutcome::Refused(e) => self.commit_outcome(Err(e)),
            }
        } else {
            match commit_reply {
                // Commit on its own after reloading the script; what the read delivered is ours
                // and is applied next.
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    self.commit_after_reload(&prepared.script_args()).await
                }
                other => self.commit_outcome(
                    other.and_then(|v| FromRedisValue::from_redis_value(v).map_err(Into::into)),
                ),
            }
        };
        if committed.is_err() {
            // Whatever the read delivered stays pending: the worker reloads and claims it again.
            return (committed, None);
        }
        let watch = replies.next().unwrap_or(Ok(redis::Value::Nil));
        let holders: Vec<Option<String>> = replies
            .next()
            .and_then(|reply| reply.ok())
            .and_then(|v| FromRedisValue::from_redis_value(v).ok())
            .unwrap_or_default();
        let watched = if watch.is_ok() {
            tokens
                .into_iter()
                .zip(holders)
                .filter_map(|((p, token), holder)| {
                    let token = token?;
                    (holder.as_ref() == Some(&token)).then_some((p, token))
                })
                .collect()
        } else {
            Vec::new()
        };
        let next = replies
            .next()
            .unwrap_or(Ok(redis::Value::Nil))
            .and_then(|v| FromRedisValue::from_redis_value(v).map_err(Into::into));
        let next = match next {
            Ok(reply) => {
                *lock(&self.watching) = Some((conn, id, watched));
                Ok(ControlBatch {
                    deliveries: self.control_deliveries(reply).await,
                    ..ControlBatch::default()
                })
            }
            Err(e) => Err(self.failed(e)),
        };
        (committed, Some(next))
    }
}

fn decode_entry<T: DeserializeOwned>(entry: &StreamId) -> Result<T, String> {
    entry
        .get::<String>("m")
        .ok_or_else(|| "no field 'm'".to_string())
        .and_then(|m| serde_json::from_str::<T>(&m).map_err(|e| e.to_string()))
}

#[async_trait]
impl Bus for RedisBus {
    async fn send_actions(&self, requests: Vec<ActionRequest>) -> Result<(), BusError> {
        self.check_open()?;
        if requests.is_empty() {
            return Ok(());
        }
        let apps: BTreeMap<AppRef, ()> = requests.iter().map(|r| (r.app.clone(), ())).collect();
        let mut pipe = redis::pipe();
        for app in apps.keys() {
            self.ensure_action_groups(app).await?;
            pipe.cmd("SADD")
                .arg(self.key(format_args!("apps")))
                .arg(app.to_string())
                .ignore();
        }
        self.add_actions(&mut pipe, requests);
        self.run(&pipe).await
    }

    async fn recv_actions(
        &self,
        app: &AppRef,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery<ActionRequest>>, BusError> {
        self.check_open()?;
        let max = max.max(1);
        let slot = (app.clone(), consumer.to_string());
        self.ensure_action_groups(app).await?;
        let held: Vec<_> = lock(&self.overflow)
            .get_mut(&slot)
            .map(|q| q.drain(..).collect())
            .unwrap_or_default();
        let mut got = if held.is_empty() {
            // One read on every priority at once, waiting when all are empty. Usually one stream
            // answers and this is all; when several do, the surplus is held below.
            self.read_actions(
                app,
                consumer,
                &PRIORITIES,
                max,
                (!wait.is_zero()).then_some(wait),
            )
            .await?
        } else {
            // Entries held from an earlier read: higher priorities may have queued behind the
            // ones read then, so read by priority first and merge.
            let mut merged = held;
            merged.extend(self.read_by_priority(app, consumer, max).await?);
            merged
        };
        // Highest priority first; within a priority, in stream order (the sort is stable).
        got.sort_by_key(|d| std::cmp::Reverse(d.message.priority));
        if got.len() > max {
            let extra: Vec<_> = got.drain(max..).collect();
            lock(&self.overflow).entry(slot).or_default().extend(extra);
        }
        Ok(got)
    }

    async fn complete_actions(
        &self,
        app: &AppRef,
        done: Vec<(DeliveryId, NodeResult)>,
    ) -> Result<(), BusError> {
        if done.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        self.add_completions(&mut pipe, app, done);
        let replies: Vec<redis::RedisResult<redis::Value>> = pipe
            .query_async(&mut self.writer.clone())
            .await
            .map_err(|e| self.failed(e))?;
        self.first_failure(replies)
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
        let slot = (app.clone(), consumer.to_string());
        let held = lock(&self.overflow)
            .get(&slot)
            .is_some_and(|q| !q.is_empty());
        if done.is_empty() || wait.is_zero() || held || self.check_open().is_err() {
            let reported = self.complete_actions(app, done).await;
            return (reported, self.recv_actions(app, consumer, max, wait).await);
        }
        if let Err(e) = self.ensure_action_groups(app).await {
            return (Err(e.clone()), Err(e));
        }
        // The report, then the next blocking read, in one write on a reading connection: Redis
        // takes the results before the read waits, and the executor sends one message per action.
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        self.add_completions(&mut pipe, app, done);
        let writes = pipe.len();
        pipe.add_command(self.read_actions_cmd(app, consumer, &PRIORITIES, max.max(1), Some(wait)));
        let replies = match self.blocking_pipe(&pipe, wait).await {
            Ok(replies) => replies,
            Err(e) => return (Err(e.clone()), Err(e)),
        };
        let mut replies = replies.into_iter();
        let reported = self.first_failure(replies.by_ref().take(writes).collect());
        let received = match replies.next().map(|reply| {
            reply.and_then(|v| redis::FromRedisValue::from_redis_value(v).map_err(Into::into))
        }) {
            Some(Ok(reply)) => Ok(self.action_deliveries(reply).await),
            Some(Err(e)) => Err(self.failed(e)),
            None => Err(BusError::Unavailable("no reply to the read".into())),
        };
        (reported, received)
    }

    async fn send_control(&self, messages: Vec<ControlMessage>) -> Result<(), BusError> {
        self.check_open()?;
        if messages.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for message in &messages {
            add_message(
                &mut pipe,
                &self.control_stream_of(message.execution_id()),
                message,
            );
        }
        self.run(&pipe).await
    }

    async fn recv_control(
        &self,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<ControlBatch, BusError> {
        self.check_open()?;
        self.loop_came_back();
        self.become_worker(consumer).await?;
        let changes = self.take_lease_changes().await;
        if !changes.gained.is_empty() || !changes.lost.is_empty() {
            let mut deliveries = Vec::new();
            for &partition in &changes.gained {
                match self.claim_all_pending(partition, consumer).await {
                    Ok(claimed) => deliveries.extend(claimed),
                    Err(e) => {
                        // Reported again next time, with whatever is pending then.
                        self.leases.regain(&changes.gained);
                        return Err(e);
                    }
                }
            }
            return Ok(ControlBatch {
                deliveries,
                gained: changes.gained,
                lost: changes.lost,
            });
        }
        let owned = self.leases.owned();
        if owned.is_empty() {
            // Nothing to read until a partition comes our way.
            let _ = tokio::time::timeout(wait, self.leases.changed.notified()).await;
            self.check_open()?;
            return Ok(ControlBatch::default());
        }
        if self.upkeep_due() {
            *lock(&self.upkept_at) = Instant::now();
            // Upkeep is worth a warning, not a stop: the next one comes in a few seconds.
            let controls: Vec<(String, &str)> = owned
                .iter()
                .map(|&p| (self.control_stream(p), WORKERS))
                .collect();
            if let Err(e) = self.trim_consumed(&controls).await {
                tracing::warn!(error = %e, "could not trim the control streams");
            }
            match self.adopt_stranded(&owned, consumer).await {
                Ok(adopted) if !adopted.is_empty() => {
                    return Ok(ControlBatch {
                        deliveries: adopted,
                        ..ControlBatch::default()
                    })
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not look for stranded messages"),
            }
        }
        Ok(ControlBatch {
            deliveries: self.read_control(&owned, consumer, max, wait).await?,
            ..ControlBatch::default()
        })
    }

    async fn ack_control(&self, ids: Vec<DeliveryId>) -> Result<(), BusError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut by_partition: BTreeMap<Partition, Vec<&str>> = BTreeMap::new();
        for id in &ids {
            let (partition, entry) = split_delivery(id);
            by_partition.entry(partition).or_default().push(entry);
        }
        let mut pipe = redis::pipe();
        for (partition, entries) in by_partition {
            pipe.cmd("XACK")
                .arg(self.control_stream(partition))
                .arg(WORKERS)
                .arg(entries)
                .ignore();
        }
        self.run(&pipe).await
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
                Ok(()) => Some(self.recv_control(consumer, max, wait).await),
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
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("SISMEMBER")
                .arg(self.running_key(partition_of(id, self.partitions)))
                .arg(id);
            pipe.cmd("EXISTS").arg(self.log_key(id));
        }
        let flags: Vec<bool> = pipe
            .query_async(&mut self.writer.clone())
            .await
            .map_err(unavailable)?;
        let running: Vec<ExecutionId> = ids
            .iter()
            .zip(flags.chunks(2))
            .filter(|(_, f)| f[0])
            .map(|(id, _)| id.clone())
            .collect();
        let mut logs = self.load_logs(&running).await?.into_iter();
        Ok(flags
            .chunks(2)
            .map(|f| match (f[0], f[1]) {
                (true, _) => ExecutionRecord::Running(logs.next().unwrap_or_default()),
                (false, true) => ExecutionRecord::Finished,
                (false, false) => ExecutionRecord::Absent,
            })
            .collect())
    }

    async fn load_partition(
        &self,
        partition: Partition,
    ) -> Result<Vec<(ExecutionId, Vec<ControlMessage>)>, BusError> {
        let ids: Vec<ExecutionId> = self
            .query(redis::cmd("SMEMBERS").arg(self.running_key(partition)))
            .await?;
        let logs = self.load_logs(&ids).await?;
        Ok(ids.into_iter().zip(logs).collect())
    }

    async fn resync(&self, _consumer: &str) {
        let owned = self.leases.owned();
        self.leases.regain(&owned);
    }

    async fn executor_heartbeat(&self, app: &AppRef, consumer: &str) -> Result<(), BusError> {
        self.query::<u64>(
            redis::cmd("EVAL")
                .arg(HEARTBEAT)
                .arg(1)
                .arg(self.executors_key(app))
                .arg(consumer),
        )
        .await?;
        Ok(())
    }

    async fn maintain(&self, consumer: &str, executor_wait: Duration) -> Result<(), BusError> {
        self.check_open()?;
        self.maintain_streams(consumer, executor_wait).await
    }

    async fn publish_events(&self, events: Vec<Event>) -> Result<(), BusError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut by_execution: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
        for event in &events {
            by_execution
                .entry(&event.execution_id)
                .or_default()
                .push(event);
        }
        let script = publish_script();
        for (execution, events) in by_execution {
            let mut invocation = script.key(self.events_stream(execution));
            for event in events {
                invocation.arg(event.seq).arg(encode(event));
            }
            // `invoke_async` loads the script again when Redis has forgotten it (a restart).
            invocation
                .invoke_async::<u64>(&mut self.writer.clone())
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn read_events(
        &self,
        execution_id: &str,
        from_seq: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Event>, BusError> {
        let stream = self.events_stream(execution_id);
        let from_seq = from_seq.max(1);
        let entries: Vec<StreamId> = {
            let reply: redis::streams::StreamRangeReply = self
                .query(
                    redis::cmd("XRANGE")
                        .arg(&stream)
                        .arg(format!("0-{from_seq}"))
                        .arg("+")
                        .arg("COUNT")
                        .arg(max.max(1)),
                )
                .await?;
            reply.ids
        };
        let entries = if entries.is_empty() && !wait.is_zero() {
            if self.closed.load(Ordering::Acquire) {
                return Err(BusError::Closed);
            }
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(max.max(1))
                .arg("BLOCK")
                .arg(wait.as_millis().max(1) as u64)
                .arg("STREAMS")
                .arg(&stream)
                .arg(format!("0-{}", from_seq - 1));
            let reply: Option<StreamReadReply> = self.blocking(&cmd, wait).await?;
            reply
                .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
                .unwrap_or_default()
        } else {
            entries
        };
        Ok(feeds::decode_events(&stream, entries))
    }

    async fn pending(&self) -> Result<usize, BusError> {
        let apps: Vec<String> = self
            .query(redis::cmd("SMEMBERS").arg(self.key(format_args!("apps"))))
            .await?;
        let mut streams = Vec::new();
        for app in apps {
            let Some(app) = parse_app(&app) else {
                continue;
            };
            for p in PRIORITIES {
                streams.push((self.action_stream(&app, p), EXECUTORS));
            }
        }
        for partition in 0..self.partitions {
            streams.push((self.control_stream(partition), WORKERS));
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

/// `name@version` as stored in the apps set.
fn parse_app(text: &str) -> Option<AppRef> {
    let (name, version) = text.rsplit_once('@')?;
    Some(AppRef {
        name: name.to_string(),
        version: version.to_string(),
    })
}

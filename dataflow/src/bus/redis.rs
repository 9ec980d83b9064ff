//! The Redis Streams bus: the distributed mode's transport.
//!
//! Keys (all under a prefix, `walkoff` by default):
//! - `{prefix}:actions:{app}@{version}:p{1..5}` — one stream per app version and priority, read by
//!   the consumer group `executors`; a higher priority stream is served first.
//! - `{prefix}:control` — starts, results, trigger data, aborts and retries, group `workers`.
//! - `{prefix}:events:{execution}` — an execution's events, entry id `0-{seq}`, so a republished
//!   event is stored once and a reader resumes from any sequence number.
//! - `{prefix}:apps` — the set of app versions that have action streams (no `KEYS`, ever).
//! - `{prefix}:dead` — messages that could not be decoded, with the reason.
//!
//! Every message is JSON in the field `m`. Blocking reads use dedicated connections whose response
//! timeout is off (redis-rs' default would cut a `BLOCK` short); writes share one multiplexed
//! connection and go out in pipelines. `close` unblocks waiting readers with `CLIENT UNBLOCK`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamReadReply};
use redis::{AsyncConnectionConfig, Client, Cmd, FromRedisValue, Pipeline};
use serde::de::DeserializeOwned;
use serde::Serialize;
use walkoff_schema::{ActionRequest, AppRef, ControlMessage, Event, NodeResult};

use super::{Bus, BusError, Delivery, DeliveryId};

const EXECUTORS: &str = "executors";
const WORKERS: &str = "workers";
const PRIORITIES: [u8; 5] = [5, 4, 3, 2, 1];
/// Action streams are trimmed approximately to this many entries, far above any pending backlog.
const ACTION_STREAM_MAXLEN: usize = 1_000_000;

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

pub struct RedisBus {
    client: Client,
    writer: MultiplexedConnection,
    prefix: String,
    /// Idle connections for blocking reads, with their Redis client ids.
    readers: Mutex<Vec<(MultiplexedConnection, i64)>>,
    /// Client ids of connections inside a blocking read, for `close`.
    blocked: Mutex<HashSet<i64>>,
    groups: Mutex<HashSet<String>>,
    /// Deliveries read beyond what a receiver asked for, handed out first next time.
    overflow: Mutex<HashMap<(AppRef, String), Overflow>>,
    closed: AtomicBool,
    script_loaded: AtomicBool,
}

/// Action deliveries held for one (app, consumer).
type Overflow = VecDeque<Delivery<ActionRequest>>;

fn publish_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(PUBLISH_EVENTS))
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

impl RedisBus {
    /// Connect to `url` (`redis://127.0.0.1:6379`), keeping every key under `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Arc<RedisBus>, BusError> {
        let client = Client::open(url).map_err(unavailable)?;
        let config = AsyncConnectionConfig::new()
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_connection_timeout(Some(Duration::from_secs(5)));
        let writer = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(unavailable)?;
        Ok(Arc::new(RedisBus {
            client,
            writer,
            prefix: prefix.to_string(),
            readers: Mutex::new(Vec::new()),
            blocked: Mutex::new(HashSet::new()),
            groups: Mutex::new(HashSet::new()),
            overflow: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            script_loaded: AtomicBool::new(false),
        }))
    }

    fn action_stream(&self, app: &AppRef, priority: u8) -> String {
        format!(
            "{}:actions:{}@{}:p{}",
            self.prefix,
            app.name,
            app.version,
            priority.clamp(1, 5)
        )
    }

    fn control_stream(&self) -> String {
        format!("{}:control", self.prefix)
    }

    fn events_stream(&self, execution_id: &str) -> String {
        format!("{}:events:{execution_id}", self.prefix)
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

    async fn run(&self, pipe: &Pipeline) -> Result<(), BusError> {
        pipe.query_async::<()>(&mut self.writer.clone())
            .await
            .map_err(unavailable)
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

    /// Run a blocking command on a dedicated connection, which `close` can unblock.
    async fn blocking<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, BusError> {
        let pooled = lock(&self.readers).pop();
        let (mut conn, id) = match pooled {
            Some(reader) => reader,
            None => {
                // No response timeout: the command's own BLOCK bounds the wait.
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
        lock(&self.blocked).insert(id);
        // Checked after registering, so a concurrent close either sees this reader or is seen here.
        if let Err(e) = self.check_open() {
            lock(&self.blocked).remove(&id);
            return Err(e);
        }
        let result = cmd.query_async(&mut conn).await;
        lock(&self.blocked).remove(&id);
        self.check_open()?;
        let value = result.map_err(|e| self.failed(e))?;
        lock(&self.readers).push((conn, id));
        Ok(value)
    }

    async fn load_script(&self, script: &redis::Script) -> Result<(), BusError> {
        script
            .load_async(&mut self.writer.clone())
            .await
            .map_err(unavailable)?;
        self.script_loaded.store(true, Ordering::Release);
        Ok(())
    }

    /// Move an undecodable entry to the dead-letter stream and acknowledge it.
    async fn dead_letter(&self, stream: &str, group: &str, entry: &StreamId, reason: &str) {
        tracing::warn!(%stream, id = %entry.id, %reason, "malformed message dead-lettered");
        let raw: String = entry.get("m").unwrap_or_default();
        let mut pipe = redis::pipe();
        pipe.cmd("XADD")
            .arg(format!("{}:dead", self.prefix))
            .arg("*")
            .arg("stream")
            .arg(stream)
            .arg("id")
            .arg(&entry.id)
            .arg("reason")
            .arg(reason)
            .arg("m")
            .arg(raw)
            .ignore();
        pipe.cmd("XACK")
            .arg(stream)
            .arg(group)
            .arg(&entry.id)
            .ignore();
        if let Err(e) = self.run(&pipe).await {
            tracing::warn!(error = %e, "could not dead-letter a message");
        }
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
            let decoded = entry
                .get::<String>("m")
                .ok_or_else(|| "no field 'm'".to_string())
                .and_then(|m| serde_json::from_str::<T>(&m).map_err(|e| e.to_string()));
            match decoded {
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
        let streams: Vec<String> = priorities
            .iter()
            .map(|&p| self.action_stream(app, p))
            .collect();
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(EXECUTORS)
            .arg(consumer)
            .arg("COUNT")
            .arg(count.max(1));
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS").arg(&streams);
        for _ in &streams {
            cmd.arg(">");
        }
        let reply: Option<StreamReadReply> = match block {
            Some(_) => self.blocking(&cmd).await?,
            None => self.query(&cmd).await?,
        };
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
                    deliveries: 1,
                    message: request,
                });
            }
        }
        // Highest priority first, then in stream order.
        deliveries.sort_by_key(|d| std::cmp::Reverse(d.message.priority));
        Ok(deliveries)
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn send_actions(&self, requests: Vec<ActionRequest>) -> Result<(), BusError> {
        self.check_open()?;
        if requests.is_empty() {
            return Ok(());
        }
        let apps: BTreeMap<AppRef, ()> = requests.iter().map(|r| (r.app.clone(), ())).collect();
        for app in apps.keys() {
            for p in PRIORITIES {
                self.ensure_group(&self.action_stream(app, p), EXECUTORS)
                    .await?;
            }
        }
        let mut pipe = redis::pipe();
        for app in apps.keys() {
            pipe.cmd("SADD")
                .arg(format!("{}:apps", self.prefix))
                .arg(app.to_string())
                .ignore();
        }
        for request in &requests {
            pipe.cmd("XADD")
                .arg(self.action_stream(&request.app, request.priority))
                .arg("MAXLEN")
                .arg("~")
                .arg(ACTION_STREAM_MAXLEN)
                .arg("*")
                .arg("m")
                .arg(encode(request))
                .ignore();
        }
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
        {
            let mut overflow = lock(&self.overflow);
            if let Some(queued) = overflow.get_mut(&slot).filter(|q| !q.is_empty()) {
                let n = queued.len().min(max);
                return Ok(queued.drain(..n).collect());
            }
        }
        for p in PRIORITIES {
            self.ensure_group(&self.action_stream(app, p), EXECUTORS)
                .await?;
        }
        // Take only what was asked for, highest priority stream first, so no more entries than
        // this consumer can run sit in its pending list.
        let mut got = Vec::new();
        for p in PRIORITIES {
            if got.len() >= max {
                break;
            }
            got.extend(
                self.read_actions(app, consumer, &[p], max - got.len(), None)
                    .await?,
            );
        }
        if got.is_empty() && !wait.is_zero() {
            // Wait on every priority at once, one entry per stream.
            got = self
                .read_actions(app, consumer, &PRIORITIES, 1, Some(wait))
                .await?;
        }
        if got.len() > max {
            // Several streams answered at once: what was read is ours, handed out next time.
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
        let control = self.control_stream();
        let mut pipe = redis::pipe();
        let mut acks = Vec::with_capacity(done.len());
        // Results first: a request is acknowledged only after its result is written.
        for (id, result) in done {
            add_message(&mut pipe, &control, &ControlMessage::Result(result));
            acks.push(id);
        }
        for id in &acks {
            let (priority, entry) = id.split_once('|').unwrap_or(("3", id.as_str()));
            let priority = priority.parse::<u8>().unwrap_or(3);
            pipe.cmd("XACK")
                .arg(self.action_stream(app, priority))
                .arg(EXECUTORS)
                .arg(entry)
                .ignore();
        }
        self.run(&pipe).await
    }

    async fn send_control(&self, messages: Vec<ControlMessage>) -> Result<(), BusError> {
        self.check_open()?;
        if messages.is_empty() {
            return Ok(());
        }
        let control = self.control_stream();
        let mut pipe = redis::pipe();
        for message in &messages {
            add_message(&mut pipe, &control, message);
        }
        self.run(&pipe).await
    }

    async fn recv_control(
        &self,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery<ControlMessage>>, BusError> {
        self.check_open()?;
        let control = self.control_stream();
        self.ensure_group(&control, WORKERS).await?;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(WORKERS)
            .arg(consumer)
            .arg("COUNT")
            .arg(max.max(1));
        let reply: Option<StreamReadReply> = if wait.is_zero() {
            cmd.arg("STREAMS").arg(&control).arg(">");
            self.query(&cmd).await?
        } else {
            cmd.arg("BLOCK").arg(wait.as_millis().max(1) as u64);
            cmd.arg("STREAMS").arg(&control).arg(">");
            self.blocking(&cmd).await?
        };
        let entries = reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default();
        Ok(self
            .decode_entries::<ControlMessage>(&control, WORKERS, entries)
            .await
            .into_iter()
            .map(|(id, message)| Delivery {
                id,
                deliveries: 1,
                message,
            })
            .collect())
    }

    async fn ack_control(&self, ids: Vec<DeliveryId>) -> Result<(), BusError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.query::<()>(
            redis::cmd("XACK")
                .arg(self.control_stream())
                .arg(WORKERS)
                .arg(&ids),
        )
        .await
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
        let mut pipe = redis::pipe();
        for (execution, events) in by_execution {
            let mut invocation = script.key(self.events_stream(execution));
            for event in events {
                invocation.arg(event.seq).arg(encode(event));
            }
            pipe.invoke_script(&invocation).ignore();
        }
        // A pipeline runs scripts by hash only: load the script once, and again after a Redis
        // restart emptied its script cache.
        if !self.script_loaded.load(Ordering::Acquire) {
            self.load_script(script).await?;
        }
        match pipe.query_async::<()>(&mut self.writer.clone()).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.load_script(script).await?;
                self.run(&pipe).await
            }
            other => other.map_err(unavailable),
        }
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
            let reply: Option<StreamReadReply> = self.blocking(&cmd).await?;
            reply
                .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
                .unwrap_or_default()
        } else {
            entries
        };
        let mut events = Vec::with_capacity(entries.len());
        for entry in entries {
            let raw: String = entry.get("m").unwrap_or_default();
            match serde_json::from_str::<Event>(&raw) {
                Ok(event) => events.push(event),
                Err(e) => {
                    tracing::warn!(%stream, id = %entry.id, error = %e, "undecodable event skipped")
                }
            }
        }
        Ok(events)
    }

    async fn pending(&self) -> Result<usize, BusError> {
        let apps: Vec<String> = self
            .query(redis::cmd("SMEMBERS").arg(format!("{}:apps", self.prefix)))
            .await?;
        let mut streams = Vec::new();
        for app in apps {
            let Some((name, version)) = app.rsplit_once('@') else {
                continue;
            };
            let app = AppRef {
                name: name.to_string(),
                version: version.to_string(),
            };
            for p in PRIORITIES {
                streams.push((self.action_stream(&app, p), EXECUTORS));
            }
        }
        let control = self.control_stream();
        self.ensure_group(&control, WORKERS).await?;
        streams.push((control, WORKERS));
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
        self.closed.store(true, Ordering::Release);
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
    }
}

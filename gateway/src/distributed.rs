//! The gateway in a distributed deployment: workers and executors are other processes on
//! Redis, and any number of gateway replicas share one database.
//!
//! What each replica records, and how every event ends up stored once:
//! - **Live**: the executions this replica submitted or someone here subscribed to are
//!   *followed*: one task reads all their event streams in one blocking `XREAD` (woken early
//!   through a stream of its own when it takes on another), stores each batch, then hands it to
//!   this replica's subscribers. One reader per replica, however many subscribers.
//! - **Finished**: the replicas share the feed of finished executions through the consumer
//!   group `gateways`; for each entry one of them stores whatever of that execution is not
//!   stored yet, then acknowledges it. Entries a replica held when it died are taken over after
//!   [`CLAIM_AFTER`]. So an execution whose replica died mid-run still ends recorded.
//! - Several replicas may store the same event (two follow one execution): the store keeps each
//!   (execution, sequence) once, and only the transaction that changed a status reports it.
//! - **Status changes** go through a Redis channel to every replica's `executionStatus`
//!   subscribers, so a list is live whichever replica it is connected to.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use moka::future::Cache;
use serde_json::Value;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use walkoff_dataflow::bus::{ExecutionRecord, RedisBus, Wake};
use walkoff_dataflow::{Bus, BusError, Client, ControlError, Plan, SubmitError};
use walkoff_schema::{AppCatalog, Event, EventKind, ExecutionId};

use crate::auth::{Auth, AuthChange};
use crate::engine::Engine;
use crate::hub::Hub;
use crate::recorder::record;
use crate::store::Store;

/// The consumer group of gateways on the feed of finished executions.
const GATEWAYS: &str = "gateways";
/// A finished entry held this long by a replica that has not acknowledged it is taken over.
pub const CLAIM_AFTER: Duration = Duration::from_secs(30);
/// How long one blocking read waits before looking at what to follow again.
const READ_WAIT: Duration = Duration::from_secs(2);
/// Events read per execution per read.
const READ_COUNT: usize = 512;
/// Finished entries taken per read.
const FINISHED_COUNT: usize = 256;
/// The Redis channel of status changes (execution ids, comma-separated).
const STATUS_CHANNEL: &str = "gateway:statuses";

/// Where replicas tell each other of revocations and of changed roles and settings.
const AUTH_CHANNEL: &str = "gateway:auth";
/// Status changes waiting to be relayed; beyond this they are dropped (they are advisory).
const RELAY_QUEUE: usize = 4096;
/// How often a waiting subscriber reads the store again (another replica may have stored what
/// this one's reader has not read yet).
const STORE_RECHECK: Duration = Duration::from_secs(2);
/// Events written per transaction at most.
const RECORD_BATCH: usize = 4096;
/// How long the app catalogue read from Redis is used at most, even with no new registration.
const CATALOG_TTL: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits longer after each failure, up to 5 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100 * u64::from(failures.clamp(1, 50)))
}

/// The deployment's workers run what this engine submits.
pub struct RedisEngine {
    bus: Arc<RedisBus>,
    /// The built-in apps' APIs; those executors registered in Redis are added to it.
    builtin: Arc<AppCatalog>,
    /// The catalogue by registration version.
    catalog: Cache<u64, Arc<AppCatalog>>,
    /// Sends starts of compiled plans (`Client::submit_plan` reads no catalogue, so submitting
    /// costs no catalogue lookup).
    submitter: Client,
    following: Arc<Following>,
}

impl RedisEngine {
    async fn load_catalog(&self) -> Result<Arc<AppCatalog>, BusError> {
        Ok(Arc::new(self.bus.app_catalog(&self.builtin).await?))
    }

    /// A client validating against the catalogue of now.
    async fn client(&self) -> Result<Client, BusError> {
        Ok(Client::new(
            Arc::clone(&self.bus) as Arc<dyn Bus>,
            self.catalog(false).await?,
        ))
    }
}

#[async_trait]
impl Engine for RedisEngine {
    async fn catalog(&self, fresh: bool) -> Result<Arc<AppCatalog>, BusError> {
        // One GET per use instead of reading and parsing every API: a registration raises the
        // version, so a new app is seen at once; the time to live catches registrations by
        // apps that do not raise it.
        let version = self.bus.app_apis_version().await?;
        if fresh {
            let catalog = self.load_catalog().await?;
            self.catalog.insert(version, Arc::clone(&catalog)).await;
            return Ok(catalog);
        }
        self.catalog
            .try_get_with(version, self.load_catalog())
            .await
            .map_err(|e| (*e).clone())
    }

    async fn submit(
        &self,
        plan: Arc<Plan>,
        execution_id: ExecutionId,
        variables: BTreeMap<String, Value>,
        globals: BTreeMap<String, Value>,
    ) -> Result<(), SubmitError> {
        let id = self
            .submitter
            .submit_plan(&plan, execution_id, variables, &globals)
            .await?;
        self.following.follow(&id, Some(1), true);
        Ok(())
    }

    async fn trigger(
        &self,
        execution_id: &str,
        node: &str,
        data: Value,
    ) -> Result<(), ControlError> {
        let client = self.client().await?;
        client.trigger(execution_id, node, data).await
    }

    async fn abort(&self, execution_id: &str) -> Result<(), ControlError> {
        let client = self.client().await?;
        client.abort(execution_id).await
    }

    fn follow(&self, execution_id: &str) {
        self.following.follow(execution_id, None, false);
    }

    fn store_recheck(&self) -> Option<Duration> {
        Some(STORE_RECHECK)
    }

    async fn shutdown(&self) {
        self.bus.close().await;
    }
}

/// The executions this replica follows live.
struct Following {
    bus: Arc<RedisBus>,
    wanted: Mutex<HashMap<ExecutionId, Followed>>,
    /// The reader is in (or about to start) a blocking read: a new execution must wake it.
    reading: AtomicBool,
    wake: Wake,
    added: Notify,
    /// An execution followed for a subscriber that has shown no event for this long is
    /// dropped (a subscription to an id that never runs must not be read forever).
    stale_after: Duration,
}

struct Followed {
    /// The next sequence number wanted; `None` until the store says how far it has recorded.
    next: Option<u64>,
    since: Instant,
    /// Submitted here: followed until it finishes, however long its workers take to start.
    submitted: bool,
}

impl Following {
    fn follow(self: &Arc<Self>, id: &str, next: Option<u64>, submitted: bool) {
        {
            let mut wanted = lock(&self.wanted);
            if let Some(followed) = wanted.get_mut(id) {
                followed.submitted |= submitted;
                // Someone still waits for it.
                followed.since = Instant::now();
                return;
            }
            wanted.insert(
                id.to_string(),
                Followed {
                    next,
                    since: Instant::now(),
                    submitted,
                },
            );
        }
        self.added.notify_one();
        // Read after the insert: a reader that set the flag before its snapshot either saw the
        // execution or is woken here.
        if self.reading.load(Ordering::SeqCst) {
            let me = Arc::clone(self);
            tokio::spawn(async move {
                if let Err(e) = me.bus.wake(&me.wake).await {
                    tracing::warn!(error = %e, "could not wake the event reader");
                }
            });
        }
    }

    /// Ask the store how far the executions it knows nothing about yet are recorded; drop
    /// those it has finished.
    async fn resolve(&self, store: &Store) -> Result<(), crate::store::StoreError> {
        let unresolved: Vec<String> = lock(&self.wanted)
            .iter()
            .filter(|(_, f)| f.next.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        if unresolved.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = unresolved.iter().map(String::as_str).collect();
        let progress = store.progress(&ids).await?;
        let mut wanted = lock(&self.wanted);
        for id in &unresolved {
            match progress.get(id) {
                Some(p) if p.finished => {
                    wanted.remove(id);
                }
                Some(p) => {
                    if let Some(f) = wanted.get_mut(id) {
                        f.next.get_or_insert(p.last_seq + 1);
                    }
                }
                None => {
                    if let Some(f) = wanted.get_mut(id) {
                        f.next.get_or_insert(1);
                    }
                }
            }
        }
        Ok(())
    }

    /// What to read next: each resolved execution from its next sequence; stale ones go.
    fn snapshot(&self) -> Vec<(ExecutionId, u64)> {
        let mut wanted = lock(&self.wanted);
        wanted.retain(|id, f| {
            let stale =
                !f.submitted && f.next == Some(1) && f.since.elapsed() > self.stale_after;
            if stale {
                tracing::debug!(execution = %id, "stopped following an execution that showed no event");
            }
            !stale
        });
        wanted
            .iter()
            .filter_map(|(id, f)| f.next.map(|next| (id.clone(), next)))
            .collect()
    }

    /// Move past what was read; a finished execution is followed no more.
    fn advance(&self, events: &[Event]) {
        let mut wanted = lock(&self.wanted);
        for event in events {
            if is_final(event) {
                wanted.remove(&event.execution_id);
            } else if let Some(f) = wanted.get_mut(&event.execution_id) {
                f.next = Some(f.next.unwrap_or(1).max(event.seq + 1));
            }
        }
    }

    fn forget(&self, ids: &[&str]) {
        let mut wanted = lock(&self.wanted);
        for id in ids {
            wanted.remove(*id);
        }
    }
}

fn is_final(event: &Event) -> bool {
    matches!(&event.kind, EventKind::Workflow { status, .. } if status.is_terminal())
}

/// The gateway's tasks on a deployment: the live reader, the finished-feed consumer and the
/// status relay.
pub struct RedisRecorder {
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    bus: Arc<RedisBus>,
    consumer: String,
}

impl RedisRecorder {
    /// Start recording for this replica (named `consumer` in the deployment); the engine it
    /// returns submits and follows through the same tasks.
    pub async fn start(
        bus: Arc<RedisBus>,
        store: Store,
        hub: Arc<Hub>,
        builtin: AppCatalog,
        consumer: String,
        stale_after: Duration,
    ) -> anyhow::Result<(RedisRecorder, Arc<RedisEngine>)> {
        let following = Arc::new(Following {
            wake: bus.wake_stream(&consumer),
            bus: Arc::clone(&bus),
            wanted: Mutex::new(HashMap::new()),
            reading: AtomicBool::new(false),
            added: Notify::new(),
            stale_after,
        });
        resume(&bus, &store, &following).await?;
        let builtin = Arc::new(builtin);
        let engine = Arc::new(RedisEngine {
            bus: Arc::clone(&bus),
            builtin: Arc::clone(&builtin),
            catalog: Cache::builder()
                .max_capacity(2)
                .time_to_live(CATALOG_TTL)
                .build(),
            submitter: Client::new(Arc::clone(&bus) as Arc<dyn Bus>, builtin),
            following: Arc::clone(&following),
        });
        let (stop, stopping) = watch::channel(false);
        let (relay, relayed) = mpsc::channel(RELAY_QUEUE);
        hub.relay_statuses(relay);
        let tasks = vec![
            tokio::spawn(read_live(
                Arc::clone(&following),
                store.clone(),
                Arc::clone(&hub),
                stopping.clone(),
            )),
            tokio::spawn(record_finished(
                Arc::clone(&bus),
                store.clone(),
                Arc::clone(&hub),
                following,
                consumer.clone(),
                stopping.clone(),
            )),
            tokio::spawn(send_statuses(Arc::clone(&bus), relayed, stopping.clone())),
            tokio::spawn(receive_statuses(Arc::clone(&bus), store, hub, stopping)),
        ];
        Ok((
            RedisRecorder {
                tasks,
                stop,
                bus,
                consumer,
            },
            engine,
        ))
    }

    /// Carry `auth`'s changes (revocations, roles, settings) to every other replica, and
    /// theirs to it, so a token revoked on one is refused on all at once.
    pub fn relay_auth(&mut self, auth: Arc<Auth>) {
        let (changes, mut announced) = mpsc::unbounded_channel();
        auth.announce_to(changes);
        let bus = Arc::clone(&self.bus);
        let me = self.consumer.clone();
        let mut stopping = self.stop.subscribe();
        self.tasks.push(tokio::spawn(async move {
            loop {
                let change = tokio::select! {
                    change = announced.recv() => change,
                    _ = stopping.wait_for(|stop| *stop) => return,
                };
                let Some(change) = change else { return };
                let message = format!("{me}|{}", change.encode());
                match bus.announce(AUTH_CHANNEL, &message).await {
                    Ok(()) | Err(BusError::Closed) => {}
                    Err(e) => tracing::error!(error = %e, "could not tell the other gateways of a revocation"),
                }
            }
        }));
        let bus = Arc::clone(&self.bus);
        let me = self.consumer.clone();
        let stopping = self.stop.subscribe();
        self.tasks.push(tokio::spawn(async move {
            listen(&bus, AUTH_CHANNEL, stopping, |message| {
                let (auth, me) = (Arc::clone(&auth), me.clone());
                async move {
                    let Some((from, change)) = message.split_once('|') else {
                        return;
                    };
                    if from == me {
                        return;
                    }
                    if let Some(change) = AuthChange::decode(change) {
                        auth.apply(&change).await;
                    }
                }
            })
            .await;
        }));
    }

    /// Stop reading (what was read is stored first) and close the connection to Redis.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        // Ends the blocking reads at once.
        self.bus.close().await;
        for mut task in self.tasks {
            if tokio::time::timeout(Duration::from_secs(10), &mut task)
                .await
                .is_err()
            {
                tracing::warn!("a recorder task did not stop in time");
                task.abort();
            }
        }
    }
}

/// After a start, follow the executions the store has unfinished; those the deployment no
/// longer holds anything of, although they had begun, end ABORTED saying why.
async fn resume(bus: &RedisBus, store: &Store, following: &Arc<Following>) -> anyhow::Result<()> {
    let unfinished = store.unfinished_executions().await?;
    if unfinished.is_empty() {
        return Ok(());
    }
    let ids: Vec<ExecutionId> = unfinished.iter().map(|row| row.id.clone()).collect();
    let mut records = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        records.extend(bus.lookup_executions(chunk).await?);
    }
    let mut lost = Vec::new();
    for (row, record) in unfinished.iter().zip(records) {
        match record {
            // Nothing recorded and nothing in Redis: its start may still wait in a control
            // stream, so it is followed (and dropped if nothing ever shows).
            ExecutionRecord::Absent if row.last_seq > 0 => lost.push(row.aborted_event(
                "the deployment no longer holds this execution (Redis lost it, or its retention passed)",
            )),
            _ => following.follow(&row.id, Some(row.last_seq as u64 + 1), row.last_seq > 0),
        }
    }
    if !lost.is_empty() {
        store.record_events(&lost).await?;
        tracing::warn!(
            count = lost.len(),
            "executions Redis no longer holds are marked ABORTED"
        );
    }
    Ok(())
}

/// The live reader: every followed execution's new events, stored, then published here.
async fn read_live(
    following: Arc<Following>,
    store: Store,
    hub: Arc<Hub>,
    stopping: watch::Receiver<bool>,
) {
    let mut wake = following.wake.clone();
    let mut turn = 0usize;
    let mut failures = 0u32;
    loop {
        if *stopping.borrow() {
            return;
        }
        if let Err(e) = following.resolve(&store).await {
            failures += 1;
            tracing::warn!(error = %e, "could not read how far executions are recorded");
            tokio::time::sleep(backoff(failures)).await;
            continue;
        }
        following.reading.store(true, Ordering::SeqCst);
        let from = following.snapshot();
        if from.is_empty() {
            following.reading.store(false, Ordering::SeqCst);
            let mut stopping = stopping.clone();
            tokio::select! {
                _ = following.added.notified() => {}
                _ = stopping.wait_for(|stop| *stop) => return,
                // Unresolved executions are looked at again.
                _ = tokio::time::sleep(READ_WAIT) => {}
            }
            continue;
        }
        // About RECORD_BATCH events per read, whatever the number of streams.
        let count = (RECORD_BATCH / from.len().min(1000)).clamp(16, READ_COUNT);
        let read = following
            .bus
            .read_events_of(&from, &mut wake, turn, count, READ_WAIT)
            .await;
        following.reading.store(false, Ordering::SeqCst);
        turn = turn.wrapping_add(1);
        match read {
            Ok(events) => {
                failures = 0;
                for chunk in events.chunks(RECORD_BATCH) {
                    record(&store, &hub, chunk).await;
                }
                following.advance(&events);
            }
            Err(BusError::Closed) => return,
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "could not read execution events");
                tokio::time::sleep(backoff(failures)).await;
            }
        }
    }
}

/// This replica's share of the feed of finished executions: what of each is not stored yet is
/// stored, then the entry acknowledged.
async fn record_finished(
    bus: Arc<RedisBus>,
    store: Store,
    hub: Arc<Hub>,
    following: Arc<Following>,
    consumer: String,
    stopping: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        if *stopping.borrow() {
            return;
        }
        let entries = match bus
            .read_finished(GATEWAYS, &consumer, FINISHED_COUNT, CLAIM_AFTER, READ_WAIT)
            .await
        {
            Ok(entries) => entries,
            Err(BusError::Closed) => return,
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "could not read the feed of finished executions");
                tokio::time::sleep(backoff(failures)).await;
                continue;
            }
        };
        if entries.is_empty() {
            continue;
        }
        let finals: Vec<&Event> = entries.iter().map(|entry| &entry.event).collect();
        match complete(&bus, &store, &hub, &finals).await {
            Ok(()) => failures = 0,
            Err(e) => {
                // Not acknowledged: read again by this replica's next claim, or another's.
                failures += 1;
                tracing::warn!(error = %e, "could not store finished executions");
                tokio::time::sleep(backoff(failures)).await;
                continue;
            }
        }
        // Subscribers here may wait on events another replica stored: the final event tells
        // them to read the store (they skip what they have).
        hub.publish(&finals.iter().map(|e| (*e).clone()).collect::<Vec<_>>());
        let ids: Vec<&str> = finals.iter().map(|e| e.execution_id.as_str()).collect();
        following.forget(&ids);
        let acks: Vec<String> = entries.iter().map(|entry| entry.id.clone()).collect();
        if let Err(e) = bus.ack_finished(GATEWAYS, &acks).await {
            tracing::warn!(error = %e, "could not acknowledge finished executions");
        }
    }
}

/// Store every event of these finished executions (their final events) the store lacks.
/// Executions the store does not know (submitted around the gateway) are left alone.
async fn complete(
    bus: &RedisBus,
    store: &Store,
    hub: &Hub,
    finals: &[&Event],
) -> anyhow::Result<()> {
    let ids: Vec<&str> = finals.iter().map(|e| e.execution_id.as_str()).collect();
    let progress = store.progress(&ids).await?;
    let mut batch: Vec<Event> = Vec::new();
    for last in finals {
        let Some(recorded) = progress.get(&last.execution_id) else {
            continue;
        };
        let mut next = recorded.last_seq + 1;
        while next <= last.seq {
            let events = bus
                .read_events(&last.execution_id, next, 1024, Duration::ZERO)
                .await?;
            let Some(newest) = events.last() else {
                break;
            };
            next = newest.seq + 1;
            batch.extend(events);
        }
        // The stream is gone (its retention passed): the final event at least.
        if next <= last.seq {
            batch.push((*last).clone());
        }
    }
    for chunk in batch.chunks(RECORD_BATCH) {
        record(store, hub, chunk).await;
    }
    Ok(())
}

/// Send this replica's status changes to every replica, a batch per message.
async fn send_statuses(
    bus: Arc<RedisBus>,
    mut changes: mpsc::Receiver<String>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut batch = Vec::new();
    loop {
        let received = tokio::select! {
            received = changes.recv_many(&mut batch, 256) => received,
            _ = stopping.wait_for(|stop| *stop) => return,
        };
        if received == 0 {
            return;
        }
        let message = batch.join(",");
        batch.clear();
        match bus.announce(STATUS_CHANNEL, &message).await {
            Ok(()) | Err(BusError::Closed) => {}
            Err(e) => tracing::warn!(error = %e, "could not relay status changes"),
        }
    }
}

/// Hand every replica's status changes to this one's `executionStatus` subscribers.
async fn receive_statuses(
    bus: Arc<RedisBus>,
    store: Store,
    hub: Arc<Hub>,
    stopping: watch::Receiver<bool>,
) {
    listen(&bus, STATUS_CHANNEL, stopping, |message| {
        let (store, hub) = (store.clone(), Arc::clone(&hub));
        async move {
            for id in message.split(',') {
                hub.deliver_status(&store, id).await;
            }
        }
    })
    .await;
}

/// Hand every message of `channel` to `handle`, in order, until `stopping`; a subscription
/// that breaks is made again, with back-off while Redis refuses.
async fn listen<F, Fut>(
    bus: &RedisBus,
    channel: &str,
    mut stopping: watch::Receiver<bool>,
    handle: F,
) where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut failures = 0u32;
    loop {
        let listening = tokio::select! {
            listening = bus.listen(channel) => listening,
            _ = stopping.wait_for(|stop| *stop) => return,
        };
        match listening {
            Ok(messages) => {
                failures = 0;
                let mut messages = std::pin::pin!(messages);
                loop {
                    let message = tokio::select! {
                        message = messages.next() => message,
                        _ = stopping.wait_for(|stop| *stop) => return,
                    };
                    let Some(message) = message else { break };
                    handle(message).await;
                }
                tracing::warn!(channel, "the channel closed; listening again");
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(channel, error = %e, "could not listen");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff(failures)) => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
    }
}

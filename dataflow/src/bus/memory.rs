//! The in-memory bus: the embedded default for `walkoff run` and `walkoff serve`.

use std::collections::{HashMap, HashSet, VecDeque};

use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use walkoff_schema::{ActionRequest, AppRef, ControlMessage, Event, NodeResult};

use super::{
    Bus, BusError, Commit, ControlBatch, Delivery, DeliveryId, ExecutionRecord, Partition,
    PriorityQueue,
};
use walkoff_schema::ExecutionId;

#[derive(Default)]
pub struct MemoryBus {
    actions: Mutex<HashMap<AppRef, Arc<AppQueue>>>,
    control: Mutex<VecDeque<Delivery<ControlMessage>>>,
    control_ready: Notify,
    pending_control: Mutex<HashSet<DeliveryId>>,
    events: Mutex<FxHashMap<String, Vec<Event>>>,
    /// Finished executions whose events are kept, oldest first: beyond
    /// [`MemoryBus::FINISHED_KEPT`], the oldest one's events are forgotten.
    finished: Mutex<VecDeque<String>>,
    events_ready: Notify,
    next_id: AtomicU64,
    closed: AtomicBool,
    /// A control receive is to end now, empty (a runtime is stopping).
    control_interrupted: AtomicBool,
    /// Workers told they own the one partition.
    owners: Mutex<HashSet<String>>,
}

#[derive(Default)]
struct AppQueue {
    /// Requests with their delivery ids.
    queue: Mutex<PriorityQueue<(u64, ActionRequest)>>,
    pending: Mutex<HashSet<DeliveryId>>,
    ready: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryBus {
    /// Finished executions whose events stay readable (`read_events`) after their end; a
    /// process that runs executions without end stays within a bounded memory.
    pub const FINISHED_KEPT: usize = 10_000;

    pub fn new() -> Arc<MemoryBus> {
        Arc::new(MemoryBus::default())
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, AtomicOrdering::Relaxed) + 1
    }

    fn app_queue(&self, app: &AppRef) -> Arc<AppQueue> {
        let mut apps = lock(&self.actions);
        if let Some(q) = apps.get(app) {
            return Arc::clone(q);
        }
        let q = Arc::new(AppQueue::default());
        apps.insert(app.clone(), Arc::clone(&q));
        q
    }

    /// Requests queued for `app` and not yet delivered.
    pub fn queued_actions(&self, app: &AppRef) -> usize {
        lock(&self.app_queue(app).queue).len()
    }

    /// Forget the events of a finished execution.
    pub fn forget_events(&self, execution_id: &str) {
        lock(&self.events).remove(execution_id);
    }

    /// Wait on `notify` until `take` yields something, the bus closes or `wait` runs out.
    async fn wait_for<T>(
        &self,
        notify: &Notify,
        wait: Duration,
        mut take: impl FnMut() -> Option<T>,
    ) -> Result<Option<T>, BusError> {
        // Give the tasks that produce messages one turn before arming a timer: in-process, the
        // answer to what was just sent is often one scheduler turn away.
        if let Some(found) = take() {
            return Ok(Some(found));
        }
        tokio::task::yield_now().await;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.closed.load(AtomicOrdering::Acquire) {
                return Err(BusError::Closed);
            }
            if let Some(found) = take() {
                return Ok(Some(found));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(take());
            }
        }
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn send_actions(&self, requests: Vec<ActionRequest>) -> Result<(), BusError> {
        if self.closed.load(AtomicOrdering::Acquire) {
            return Err(BusError::Closed);
        }
        let mut by_app: HashMap<AppRef, Vec<ActionRequest>> = HashMap::new();
        for request in requests {
            by_app.entry(request.app.clone()).or_default().push(request);
        }
        for (app, requests) in by_app {
            let q = self.app_queue(&app);
            {
                let mut queue = lock(&q.queue);
                for request in requests {
                    queue.push(request.priority, (self.next_id(), request));
                }
            }
            q.ready.notify_waiters();
        }
        Ok(())
    }

    async fn recv_actions(
        &self,
        app: &AppRef,
        _consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery<ActionRequest>>, BusError> {
        let q = self.app_queue(app);
        let taken = self
            .wait_for(&q.ready, wait, || {
                let mut queue = lock(&q.queue);
                if queue.is_empty() {
                    return None;
                }
                let mut pending = lock(&q.pending);
                let mut out = Vec::with_capacity(max.min(queue.len()));
                while out.len() < max.max(1) {
                    let Some((id, request)) = queue.pop() else {
                        break;
                    };
                    let id = id.to_string();
                    pending.insert(id.clone());
                    out.push(Delivery {
                        id,
                        deliveries: 1,
                        message: request,
                    });
                }
                Some(out)
            })
            .await?;
        Ok(taken.unwrap_or_default())
    }

    async fn complete_actions(
        &self,
        app: &AppRef,
        done: Vec<(DeliveryId, NodeResult)>,
    ) -> Result<(), BusError> {
        let q = self.app_queue(app);
        let mut results = Vec::with_capacity(done.len());
        let mut ids = Vec::with_capacity(done.len());
        for (id, result) in done {
            ids.push(id);
            results.push(ControlMessage::Result(result));
        }
        self.send_control(results).await?;
        let mut pending = lock(&q.pending);
        for id in ids {
            pending.remove(&id);
        }
        Ok(())
    }

    async fn send_control(&self, messages: Vec<ControlMessage>) -> Result<(), BusError> {
        if self.closed.load(AtomicOrdering::Acquire) {
            return Err(BusError::Closed);
        }
        {
            let mut control = lock(&self.control);
            for message in messages {
                control.push_back(Delivery {
                    id: self.next_id().to_string(),
                    deliveries: 1,
                    message,
                });
            }
        }
        self.control_ready.notify_waiters();
        Ok(())
    }

    async fn recv_control(
        &self,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<ControlBatch, BusError> {
        // One partition, owned by every worker that asks: in-process there is one runtime.
        if lock(&self.owners).insert(consumer.to_string()) {
            return Ok(ControlBatch {
                gained: vec![0],
                ..ControlBatch::default()
            });
        }
        let taken = self
            .wait_for(&self.control_ready, wait, || {
                if self.control_interrupted.swap(false, AtomicOrdering::AcqRel) {
                    return Some(Vec::new());
                }
                let mut control = lock(&self.control);
                if control.is_empty() {
                    return None;
                }
                let n = control.len().min(max.max(1));
                let out: Vec<_> = control.drain(..n).collect();
                let mut pending = lock(&self.pending_control);
                pending.extend(out.iter().map(|d| d.id.clone()));
                Some(out)
            })
            .await?;
        Ok(ControlBatch {
            deliveries: taken.unwrap_or_default(),
            ..ControlBatch::default()
        })
    }

    async fn ack_control(&self, ids: Vec<DeliveryId>) -> Result<(), BusError> {
        let mut pending = lock(&self.pending_control);
        for id in ids {
            pending.remove(&id);
        }
        Ok(())
    }

    fn durable(&self) -> bool {
        false
    }

    fn interrupt_control_receive(&self) {
        self.control_interrupted
            .store(true, AtomicOrdering::Release);
        self.control_ready.notify_waiters();
    }

    fn partitions(&self) -> u32 {
        1
    }

    async fn commit(&self, _consumer: &str, commit: Commit) -> Result<(), BusError> {
        // Nothing outlives this process, so there are no logs to keep: publish and acknowledge.
        let Commit {
            acks,
            events,
            actions,
            ..
        } = commit;
        self.publish_events(events).await?;
        if !actions.is_empty() {
            self.send_actions(actions).await?;
        }
        self.ack_control(acks).await
    }

    async fn lookup_executions(
        &self,
        ids: &[ExecutionId],
    ) -> Result<Vec<ExecutionRecord>, BusError> {
        Ok(vec![ExecutionRecord::Absent; ids.len()])
    }

    async fn load_partition(
        &self,
        _partition: Partition,
    ) -> Result<Vec<(ExecutionId, Vec<ControlMessage>)>, BusError> {
        Ok(Vec::new())
    }

    async fn resync(&self, consumer: &str) {
        lock(&self.owners).remove(consumer);
    }

    async fn executor_heartbeat(&self, _app: &AppRef, _consumer: &str) -> Result<(), BusError> {
        Ok(())
    }

    async fn maintain(&self, _consumer: &str, _executor_wait: Duration) -> Result<(), BusError> {
        // In-process executors do not die alone, and the local executor fails unknown apps at once.
        Ok(())
    }

    async fn publish_events(&self, events: Vec<Event>) -> Result<(), BusError> {
        if events.is_empty() {
            return Ok(());
        }
        {
            let mut logs = lock(&self.events);
            let mut ended = Vec::new();
            for event in events {
                // Look up before inserting: the key is cloned only for a new execution.
                let log = match logs.get_mut(&event.execution_id) {
                    Some(log) => log,
                    None => logs.entry(event.execution_id.clone()).or_default(),
                };
                // Sequence numbers only grow; a republished event is not stored twice.
                if log.last().is_none_or(|last| last.seq < event.seq) {
                    if event.is_final() {
                        ended.push(event.execution_id.clone());
                    }
                    log.push(event);
                }
            }
            if !ended.is_empty() {
                let mut finished = lock(&self.finished);
                finished.extend(ended);
                while finished.len() > Self::FINISHED_KEPT {
                    if let Some(oldest) = finished.pop_front() {
                        logs.remove(&oldest);
                    }
                }
            }
        }
        self.events_ready.notify_waiters();
        Ok(())
    }

    async fn read_events(
        &self,
        execution_id: &str,
        from_seq: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Event>, BusError> {
        let slice = || {
            let logs = lock(&self.events);
            let log = logs.get(execution_id)?;
            let start = log.partition_point(|e| e.seq < from_seq);
            if start == log.len() {
                return None;
            }
            Some(log[start..log.len().min(start + max.max(1))].to_vec())
        };
        match self.wait_for(&self.events_ready, wait, slice).await {
            Ok(found) => Ok(found.unwrap_or_default()),
            // Events already published stay readable after close; past them, the stream has ended.
            Err(BusError::Closed) => slice().ok_or(BusError::Closed),
            Err(e) => Err(e),
        }
    }

    async fn pending(&self) -> Result<usize, BusError> {
        let actions: usize = lock(&self.actions)
            .values()
            .map(|q| lock(&q.pending).len())
            .sum();
        Ok(actions + lock(&self.pending_control).len())
    }

    async fn close(&self) {
        self.closed.store(true, AtomicOrdering::Release);
        self.control_ready.notify_waiters();
        self.events_ready.notify_waiters();
        for q in lock(&self.actions).values() {
            q.ready.notify_waiters();
        }
    }
}

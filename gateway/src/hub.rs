//! Live fan-out inside one gateway: the recorder publishes each event once, after it is stored,
//! and every subscriber of that execution receives it from one bounded broadcast channel. A
//! subscriber that falls behind by more than the channel holds is told it lagged and catches up
//! from the store, so it never blocks the others, never holds more than the channel, and misses
//! nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio::sync::{broadcast, mpsc};
use walkoff_schema::Event;

use crate::store::{ExecutionRow, Store};

pub struct Hub {
    executions: Mutex<HashMap<String, broadcast::Sender<Arc<Event>>>>,
    statuses: broadcast::Sender<Arc<ExecutionRow>>,
    capacity: usize,
    /// With several gateways, status changes go (as execution ids) to every replica, this one
    /// included, instead of straight to this one's subscribers.
    relay: OnceLock<mpsc::Sender<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One subscriber's live feed of one execution; leaving drops the channel when it was the last.
pub struct LiveEvents {
    hub: Arc<Hub>,
    execution_id: String,
    receiver: broadcast::Receiver<Arc<Event>>,
}

impl LiveEvents {
    pub async fn recv(&mut self) -> Result<Arc<Event>, broadcast::error::RecvError> {
        self.receiver.recv().await
    }
}

impl Drop for LiveEvents {
    fn drop(&mut self) {
        let mut executions = lock(&self.hub.executions);
        // This receiver still counts while it is being dropped.
        if executions
            .get(&self.execution_id)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            executions.remove(&self.execution_id);
        }
    }
}

impl Hub {
    /// `capacity`: events (and status changes) a subscriber may fall behind by before it lags.
    pub fn new(capacity: usize) -> Arc<Hub> {
        Arc::new(Hub {
            executions: Mutex::new(HashMap::new()),
            statuses: broadcast::channel(capacity.max(1)).0,
            capacity: capacity.max(1),
            relay: OnceLock::new(),
        })
    }

    pub fn subscribe(self: &Arc<Self>, execution_id: &str) -> LiveEvents {
        let receiver = lock(&self.executions)
            .entry(execution_id.to_string())
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .subscribe();
        LiveEvents {
            hub: Arc::clone(self),
            execution_id: execution_id.to_string(),
            receiver,
        }
    }

    pub fn subscribe_statuses(&self) -> broadcast::Receiver<Arc<ExecutionRow>> {
        self.statuses.subscribe()
    }

    /// Whether anyone listens to status changes (so the recorder need not read them back).
    pub fn has_status_subscribers(&self) -> bool {
        self.statuses.receiver_count() > 0
    }

    /// Hand stored events to the subscribers of their executions.
    pub fn publish(&self, events: &[Event]) {
        let executions = lock(&self.executions);
        if executions.is_empty() {
            return;
        }
        for event in events {
            if let Some(sender) = executions.get(&event.execution_id) {
                // No receiver left is not an error: the last one is leaving.
                let _ = sender.send(Arc::new(event.clone()));
            }
        }
    }

    /// Send status changes through `relay` from now on (set once, by the distributed mode).
    pub fn relay_statuses(&self, relay: mpsc::Sender<String>) {
        let _ = self.relay.set(relay);
    }

    /// The stored status of `row`'s execution changed here: tell the subscribers of every
    /// replica, or this one's.
    pub fn status_changed(&self, row: ExecutionRow) {
        match self.relay.get() {
            Some(relay) => self.relay_change(relay, row.id),
            None => self.broadcast_status(row),
        }
    }

    /// As [`Hub::status_changed`], for an execution known by its id (the row is read only
    /// when someone here listens).
    pub async fn status_changed_id(&self, store: &Store, id: &str) {
        match self.relay.get() {
            Some(relay) => self.relay_change(relay, id.to_string()),
            None => self.deliver_status(store, id).await,
        }
    }

    /// Status changes are advisory (a list reads `executions` again when told it missed some),
    /// so a relay that cannot keep up drops them rather than hold memory or block a recorder.
    fn relay_change(&self, relay: &mpsc::Sender<String>, id: String) {
        if relay.try_send(id).is_err() {
            tracing::warn!("a status change was not relayed: the relay is behind or gone");
        }
    }

    /// Read the execution's row and hand it to this replica's status subscribers, if any.
    pub async fn deliver_status(&self, store: &Store, id: &str) {
        if !self.has_status_subscribers() {
            return;
        }
        match store.execution(id).await {
            Ok(Some(row)) => self.broadcast_status(row),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not read a changed execution"),
        }
    }

    fn broadcast_status(&self, execution: ExecutionRow) {
        if self.has_status_subscribers() {
            let _ = self.statuses.send(Arc::new(execution));
        }
    }
}

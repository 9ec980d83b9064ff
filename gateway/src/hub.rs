//! Live fan-out inside one gateway: the recorder publishes each event once, after it is stored,
//! and every subscriber of that execution receives it from one bounded broadcast channel. A
//! subscriber that falls behind by more than the channel holds is told it lagged and catches up
//! from the store, so it never blocks the others, never holds more than the channel, and misses
//! nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;
use walkoff_schema::Event;

use crate::store::ExecutionRow;

pub struct Hub {
    executions: Mutex<HashMap<String, broadcast::Sender<Arc<Event>>>>,
    statuses: broadcast::Sender<Arc<ExecutionRow>>,
    capacity: usize,
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

    pub fn publish_status(&self, execution: ExecutionRow) {
        let _ = self.statuses.send(Arc::new(execution));
    }
}

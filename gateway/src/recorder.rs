//! The recorder: takes the engine's events in order, stores each batch in one transaction
//! (once per execution and sequence), and only then hands them to live subscribers, so a
//! subscriber that reads the store and then listens misses nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use walkoff_schema::Event;

use crate::hub::Hub;
use crate::store::Store;

/// Events written per transaction at most; more wait for the next one.
const BATCH: usize = 4096;

/// Record what arrives on `events` until it closes, or until `stopping` turns true and what
/// was already sent is stored.
///
/// The recorder runs on a thread of its own: each batch waits on the store several times, and
/// on the server's scheduler every wait would queue behind the tasks of every subscriber it
/// just woke (with a thousand subscribers on one execution, events reached them ~100 ms late).
pub fn spawn(
    store: Store,
    hub: Arc<Hub>,
    events: mpsc::Receiver<Vec<Event>>,
    stopping: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::task::spawn_blocking(move || {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(run(store, hub, events, stopping)),
            // No thread for it: record on the server's scheduler, slower but no less sure.
            Err(e) => {
                tracing::warn!(error = %e, "the recorder runs on the server's scheduler");
                tokio::runtime::Handle::current().block_on(run(store, hub, events, stopping))
            }
        }
    })
}

async fn run(
    store: Store,
    hub: Arc<Hub>,
    mut events: mpsc::Receiver<Vec<Event>>,
    mut stopping: watch::Receiver<bool>,
) {
    {
        let mut batch: Vec<Event> = Vec::new();
        loop {
            if batch.is_empty() {
                tokio::select! {
                    first = events.recv() => match first {
                        Some(first) => batch = first,
                        None => return,
                    },
                    _ = stopping.wait_for(|stop| *stop) => match events.try_recv() {
                        Ok(first) => batch = first,
                        Err(_) => return,
                    },
                }
            }
            while batch.len() < BATCH {
                match events.try_recv() {
                    Ok(more) => batch.extend(more),
                    Err(_) => break,
                }
            }
            record(&store, &hub, &batch).await;
            batch.clear();
        }
    }
}

/// Store a batch, retrying until the store takes it (an event is never dropped, and while the
/// store is down the engine waits on the full channel behind it), then hand it to this
/// process's subscribers and report the status changes it made.
pub async fn record(store: &Store, hub: &Hub, batch: &[Event]) {
    let mut failures = 0u32;
    let recorded = loop {
        match store.record_events(batch).await {
            Ok(recorded) => break recorded,
            Err(e) => {
                failures += 1;
                let wait = Duration::from_millis(50 * u64::from(failures.min(40)));
                tracing::error!(error = %e, retry_in = ?wait, "could not record events");
                tokio::time::sleep(wait).await;
            }
        }
    };
    for id in &recorded.unknown {
        tracing::warn!(execution = %id, "events of an execution the store does not know were dropped");
    }
    hub.publish(batch);
    for id in &recorded.changed {
        hub.status_changed_id(store, id).await;
    }
}

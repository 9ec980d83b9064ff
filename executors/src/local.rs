//! The in-process executor: runs registered Rust apps directly in this process, each app with its
//! own concurrency limit and a priority queue of requests waiting for a slot. Results go to the bus's
//! control channel like any executor's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::Utc;
use walkoff_dataflow::bus::PriorityQueue;
use walkoff_dataflow::{ActionExecutor, Bus, BusError};
use walkoff_schema::{ActionRequest, AppRef, ControlMessage, NodeResult, Outcome};

use crate::{PreparedApp, Registry};

pub struct LocalExecutor {
    bus: Arc<dyn Bus>,
    apps: HashMap<AppRef, Arc<LocalApp>>,
}

struct LocalApp {
    app: Arc<PreparedApp>,
    concurrency: usize,
    state: Mutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    queue: PriorityQueue<ActionRequest>,
    running: usize,
}

fn lock(m: &Mutex<Waiting>) -> MutexGuard<'_, Waiting> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LocalExecutor {
    /// Serve every app of `registry`, each with `concurrency` actions in flight at most.
    pub fn new(bus: Arc<dyn Bus>, registry: &Registry, concurrency: usize) -> LocalExecutor {
        let apps = registry
            .apps()
            .map(|app| {
                (
                    app.app_ref().clone(),
                    Arc::new(LocalApp {
                        app: Arc::clone(app),
                        concurrency: concurrency.max(1),
                        state: Mutex::new(Waiting::default()),
                    }),
                )
            })
            .collect();
        LocalExecutor { bus, apps }
    }

    /// Requests waiting for a slot, across apps.
    pub fn waiting(&self) -> usize {
        self.apps.values().map(|a| lock(&a.state).queue.len()).sum()
    }
}

impl LocalApp {
    /// Start waiting requests while slots are free.
    fn start_ready(self: &Arc<LocalApp>, bus: &Arc<dyn Bus>) {
        loop {
            let request = {
                let mut state = lock(&self.state);
                if state.running >= self.concurrency {
                    return;
                }
                let Some(next) = state.queue.pop() else {
                    return;
                };
                state.running += 1;
                next
            };
            let app = Arc::clone(self);
            let bus = Arc::clone(bus);
            tokio::spawn(async move {
                let result = app.app.run(request).await;
                if let Err(e) = bus.send_control(vec![ControlMessage::Result(result)]).await {
                    tracing::warn!(error = %e, "could not report an action result");
                }
                lock(&app.state).running -= 1;
                app.start_ready(&bus);
            });
        }
    }
}

#[async_trait]
impl ActionExecutor for LocalExecutor {
    async fn dispatch(&self, requests: Vec<ActionRequest>) -> Result<(), BusError> {
        let mut touched: Vec<&Arc<LocalApp>> = Vec::new();
        let mut unserved = Vec::new();
        for request in requests {
            let Some(app) = self.apps.get(&request.app) else {
                unserved.push(request);
                continue;
            };
            lock(&app.state).queue.push(request.priority, request);
            if !touched.iter().any(|t| Arc::ptr_eq(t, app)) {
                touched.push(app);
            }
        }
        for app in touched {
            app.start_ready(&self.bus);
        }
        if !unserved.is_empty() {
            // Validation normally prevents this; answer rather than leave the node waiting.
            let now = Utc::now();
            let failures = unserved
                .into_iter()
                .map(|r| {
                    ControlMessage::Result(NodeResult {
                        outcome: Outcome::Failure {
                            error: format!("no executor in this process serves the app {}", r.app),
                            retryable: false,
                        },
                        execution_id: r.execution_id,
                        node_id: r.node_id,
                        shard: r.shard,
                        attempt: r.attempt,
                        started_at: now,
                        finished_at: now,
                    })
                })
                .collect();
            self.bus.send_control(failures).await?;
        }
        Ok(())
    }
}

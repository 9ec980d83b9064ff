//! The embedded mode: the in-process runtime on the in-memory bus, as `walkoff run` uses it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use walkoff_dataflow::{Bus, MemoryBus, Runtime, RuntimeConfig, ScriptIsolation};
use walkoff_executors::{ExecutorConfig, LocalExecutor};
use walkoff_schema::{Workflow, WorkflowStatus};

use crate::stats::Run;

pub struct Embedded {
    bus: Arc<MemoryBus>,
    runtime: Runtime,
}

impl Embedded {
    pub fn start(scripts: ScriptIsolation) -> Embedded {
        let registry = walkoff_apps::builtin_registry();
        let bus = MemoryBus::new();
        let dyn_bus: Arc<dyn Bus> = bus.clone();
        let executor = LocalExecutor::new(
            Arc::clone(&dyn_bus),
            &registry,
            ExecutorConfig::default().concurrency,
        );
        let runtime = Runtime::start(
            dyn_bus,
            Arc::new(executor),
            Arc::new(registry.catalog()),
            RuntimeConfig {
                scripts,
                ..RuntimeConfig::default()
            },
        );
        Embedded { bus, runtime }
    }

    /// Submit `executions` executions of `workflow` at once and wait for all of them.
    pub async fn run(
        &self,
        workflow: &Arc<Workflow>,
        executions: usize,
        progress: &indicatif::ProgressBar,
    ) -> anyhow::Result<Run> {
        let started = Instant::now();
        let mut waiters = Vec::with_capacity(executions);
        for _ in 0..executions {
            let id = self
                .runtime
                .submit(Arc::clone(workflow), BTreeMap::new(), &BTreeMap::new())
                .await?;
            let submitted = Instant::now();
            let mut events = Box::pin(self.runtime.events(&id, 1));
            let progress = progress.clone();
            waiters.push(tokio::spawn(async move {
                let mut status = WorkflowStatus::Pending;
                while let Some(event) = events.next().await {
                    let event = event?;
                    if let walkoff_schema::EventKind::Workflow { status: s, .. } = event.kind {
                        status = s;
                    }
                }
                progress.inc(1);
                let done = Instant::now();
                anyhow::Ok((id, status, submitted, done))
            }));
        }
        let mut run = Run::default();
        let mut last = started;
        for waiter in waiters {
            let (id, status, submitted, done) = waiter.await??;
            if status != WorkflowStatus::Completed {
                anyhow::bail!("execution {id} ended {status}");
            }
            run.latencies_ms
                .push(done.duration_since(submitted).as_secs_f64() * 1000.0);
            run.completions_ms
                .push(done.duration_since(started).as_secs_f64() * 1000.0);
            last = last.max(done);
            self.bus.forget_events(&id);
        }
        run.wall_ms = last.duration_since(started).as_secs_f64() * 1000.0;
        Ok(run)
    }

    pub async fn stop(self) {
        self.runtime.shutdown().await;
        self.bus.close().await;
    }
}

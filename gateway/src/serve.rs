//! `walkoff serve`: the embedded default, everything in one process — SQLite in a data
//! directory, the in-process runtime on the in-memory bus, the built-in apps, the recorder and
//! the API.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use walkoff_executors::Registry;
use walkoff_schema::{Event, EventKind, WorkflowStatus};

use crate::engine::{EmbeddedEngine, Engine};
use crate::hub::Hub;
use crate::store::Store;
use crate::{http, recorder, Gateway, GatewayConfig};

/// Events in flight between the engine and the recorder; a store that falls behind this far
/// slows the engine instead of filling memory.
const RECORDER_QUEUE: usize = 1024;

/// How long a stop waits for WebSockets to close and the recorder to store the last events.
const STOP_GRACE: Duration = Duration::from_secs(10);

pub struct EmbeddedOptions {
    pub data_dir: PathBuf,
    /// A database URL to use instead of `walkoff.db` in the data directory.
    pub database: Option<String>,
    pub config: GatewayConfig,
    /// The first start's `admin` password; one is generated (and printed once) when `None`.
    pub admin_password: Option<String>,
    pub registry: Registry,
}

/// Run the embedded server until `shutdown` resolves, then stop gracefully: requests in flight
/// finish, WebSockets close with a close frame, every event the engine produced is stored.
/// `on_ready` gets the address it listens on, once it answers.
pub async fn serve_embedded(
    options: EmbeddedOptions,
    on_ready: impl FnOnce(std::net::SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&options.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            options.data_dir.display()
        )
    })?;
    let database = options
        .database
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", options.data_dir.join("walkoff.db").display()));
    let store = Store::connect(&database).await.with_context(|| {
        format!(
            "cannot open the database {}",
            crate::store::redact(&database)
        )
    })?;
    let embedded = Embedded::start(store, &options.registry, options.config.clone()).await?;
    let gateway = Arc::clone(&embedded.gateway);
    if let Some(password) = gateway
        .auth
        .bootstrap_admin(options.admin_password.clone())
        .await
        .map_err(|e| anyhow::anyhow!(e.message()))?
    {
        if options.admin_password.is_none() {
            println!("created the user 'admin' with the password {password} (shown once; set WALKOFF_ADMIN_PASSWORD to choose it)");
        } else {
            println!("created the user 'admin' with the password from WALKOFF_ADMIN_PASSWORD");
        }
    }

    let listener = TcpListener::bind(options.config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.config.listen))?;
    let address = listener.local_addr()?;
    let (state, stop_sockets, mut sockets_closed) = http::state(Arc::clone(&gateway));
    let router = http::router(state);
    on_ready(address);
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop_sockets.send(true);
        })
        .await
        .context("the server failed")?;
    // Every WebSocket got its close frame (or the grace ran out).
    let _ = tokio::time::timeout(STOP_GRACE, sockets_closed.recv()).await;
    embedded.stop().await;
    Ok(())
}

/// The embedded engine with its store, recorder and gateway, without a listener: what `serve`
/// runs, and what tests drive through the schema.
pub struct Embedded {
    pub gateway: Arc<Gateway>,
    engine: Arc<EmbeddedEngine>,
    recorder: JoinHandle<()>,
    stop_recorder: watch::Sender<bool>,
}

impl Embedded {
    /// Start on `store`: executions a previous run left unfinished are ended first.
    pub async fn start(
        store: Store,
        registry: &Registry,
        config: GatewayConfig,
    ) -> anyhow::Result<Embedded> {
        end_interrupted(&store).await?;
        let hub = Hub::new(config.limits.subscriber_buffer);
        let (events, recorded) = mpsc::channel(RECORDER_QUEUE);
        let (stop_recorder, recorder_stopping) = watch::channel(false);
        let recorder =
            recorder::spawn(store.clone(), Arc::clone(&hub), recorded, recorder_stopping);
        let engine = Arc::new(EmbeddedEngine::start(registry, events));
        let gateway = Gateway::new(store, Arc::clone(&engine) as Arc<dyn Engine>, hub, config);
        Ok(Embedded {
            gateway,
            engine,
            recorder,
            stop_recorder,
        })
    }

    /// Stop the engine, store what it produced, close the store.
    pub async fn stop(self) {
        self.engine.shutdown().await;
        let _ = self.stop_recorder.send(true);
        if tokio::time::timeout(STOP_GRACE, self.recorder)
            .await
            .is_err()
        {
            tracing::warn!("the recorder did not finish storing events in time");
        }
        self.gateway.store.close().await;
    }
}

/// Executions that were running when the embedded server last stopped cannot go on (their
/// state lived in memory): each ends ABORTED with a last event saying why.
async fn end_interrupted(store: &Store) -> anyhow::Result<()> {
    let interrupted = store.unfinished_executions().await?;
    if interrupted.is_empty() {
        return Ok(());
    }
    let events: Vec<Event> = interrupted
        .iter()
        .map(|row| Event {
            execution_id: row.id.clone(),
            seq: row.last_seq as u64 + 1,
            at: Utc::now(),
            kind: EventKind::Workflow {
                workflow_id: row.workflow_id.clone(),
                status: WorkflowStatus::Aborted,
                error: Some("the server stopped while this execution ran".into()),
            },
        })
        .collect();
    store.record_events(&events).await?;
    println!(
        "{} execution(s) interrupted by the last stop are marked ABORTED",
        events.len()
    );
    Ok(())
}

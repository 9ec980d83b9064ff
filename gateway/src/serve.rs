//! `walkoff serve`: the embedded default, everything in one process — SQLite in a data
//! directory, the in-process runtime on the in-memory bus, the built-in apps, the recorder and
//! the API; and `walkoff gateway`, one replica of the gateway in a distributed deployment.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use walkoff_dataflow::bus::{RedisBus, RedisBusConfig};
use walkoff_executors::Registry;
use walkoff_schema::{AppCatalog, Event};

use crate::distributed::RedisRecorder;
use crate::engine::{EmbeddedEngine, Engine};
use crate::hub::Hub;
use crate::keys::MasterKey;
use crate::secrets::Secrets;
use crate::store::Store;
use crate::{http, recorder, Gateway, GatewayConfig};

/// Events in flight between the engine and the recorder; a store that falls behind this far
/// slows the engine instead of filling memory.
const RECORDER_QUEUE: usize = 1024;

/// How long a stop waits for WebSockets to close and the recorder to store the last events.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The passwords a store's first start gives `admin` and `super_admin`; each is generated (and
/// printed once) when `None`.
#[derive(Debug, Clone, Default)]
pub struct Passwords {
    pub admin: Option<String>,
    pub super_admin: Option<String>,
}

pub struct EmbeddedOptions {
    pub data_dir: PathBuf,
    /// A database URL to use instead of `walkoff.db` in the data directory.
    pub database: Option<String>,
    pub config: GatewayConfig,
    pub passwords: Passwords,
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
    let store = open_store(&database).await?;
    let embedded = Embedded::start(store, &options.registry, options.config.clone()).await?;
    let gateway = Arc::clone(&embedded.gateway);
    let retention = keep_retention(Arc::clone(&gateway));
    let served = async {
        bootstrap_users(&gateway, &options.passwords).await?;
        serve_http(gateway, on_ready, shutdown).await
    }
    .await;
    retention.abort();
    embedded.stop().await;
    served
}

/// How to run `walkoff gateway`.
pub struct DistributedOptions {
    /// The deployment's Redis, and the prefix of its keys.
    pub redis: String,
    pub prefix: String,
    /// The database every replica shares.
    pub database: String,
    pub config: GatewayConfig,
    pub passwords: Passwords,
    /// The built-in apps (executors register the others in Redis).
    pub builtin: AppCatalog,
    /// This replica's name in the deployment, unique to it.
    pub consumer: String,
}

/// Run one gateway replica of a distributed deployment until `shutdown` resolves, then stop as
/// [`serve_embedded`] does; executions go on in the deployment's workers.
pub async fn serve_distributed(
    options: DistributedOptions,
    on_ready: impl FnOnce(std::net::SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = open_store(&options.database).await?;
    check_key(&store, &options.config.key).await?;
    let bus = RedisBus::connect_with(
        &options.redis,
        RedisBusConfig {
            prefix: options.prefix.clone(),
            ..RedisBusConfig::default()
        },
    )
    .await
    .with_context(|| {
        format!(
            "cannot reach Redis at {}",
            crate::store::redact(&options.redis)
        )
    })?;
    let hub = Hub::new(options.config.limits.subscriber_buffer);
    let (mut recorder, engine) = RedisRecorder::start(
        bus,
        store.clone(),
        Arc::clone(&hub),
        options.builtin,
        options.consumer,
        options.config.limits.pending_execution_wait,
    )
    .await?;
    let gateway = Gateway::new(store, engine as Arc<dyn Engine>, hub, options.config);
    recorder.relay_auth(Arc::clone(&gateway.auth));
    let retention = keep_retention(Arc::clone(&gateway));
    let served = async {
        bootstrap_users(&gateway, &options.passwords).await?;
        serve_http(Arc::clone(&gateway), on_ready, shutdown).await
    }
    .await;
    retention.abort();
    recorder.stop().await;
    gateway.store.close().await;
    served
}

/// Refuse a master key other than the one the store's globals were sealed with (the first
/// start with a key records a value sealed with it).
pub async fn check_key(store: &Store, key: &MasterKey) -> anyhow::Result<()> {
    let secrets = Secrets::new(key);
    match store.key_check().await? {
        None => {
            store
                .save_key_check(&secrets.seal(KEY_CHECK_ID, &serde_json::json!(KEY_CHECK_ID)))
                .await?;
            Ok(())
        }
        Some(sealed) => match secrets.open(&sealed) {
            Ok(Some(_)) => Ok(()),
            _ => anyhow::bail!(
                "this master key is not the one this database's globals were sealed with: give the key it was started with (WALKOFF_KEY_FILE or WALKOFF_KEY), or change keys with `walkoff rotate-key`"
            ),
        },
    }
}

/// Re-seal every global of the store at `database` (and its key check) from `old` to `new`,
/// in one transaction; how many globals were re-sealed. Tokens signed with the old key stop
/// working once the servers run with the new one.
pub async fn rotate_key(database: &str, old: &MasterKey, new: &MasterKey) -> anyhow::Result<usize> {
    let store = open_store(database).await?;
    check_key(&store, old).await?;
    let (old_secrets, new_secrets) = (Secrets::new(old), Secrets::new(new));
    let mut resealed = Vec::new();
    for global in store.all_globals().await? {
        let value = old_secrets
            .open(&global.sealed)
            .map_err(|e| anyhow::anyhow!("global '{}': {e}", global.name))?
            .ok_or_else(|| anyhow::anyhow!("global '{}' is stored unsealed", global.name))?;
        resealed.push((global.id.clone(), new_secrets.seal(&global.id, &value)));
    }
    let check = new_secrets.seal(KEY_CHECK_ID, &serde_json::json!(KEY_CHECK_ID));
    store.reseal(&resealed, &check).await?;
    store.close().await;
    Ok(resealed.len())
}

/// The name a store's key check is sealed under.
pub const KEY_CHECK_ID: &str = "walkoff key check";

/// How often finished executions past their retention are deleted.
const RETENTION_PERIOD: Duration = Duration::from_secs(600);

/// Delete the finished executions older than the settings' retention (none when it is 0);
/// how many went.
pub async fn apply_retention(gateway: &Gateway) -> crate::ApiResult<u64> {
    let days = gateway.auth.settings().await?.execution_retention_days;
    if days == 0 {
        return Ok(0);
    }
    let before = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
    Ok(gateway.store.delete_executions(before).await?)
}

/// Apply the retention now and every `RETENTION_PERIOD`, until aborted.
fn keep_retention(gateway: Arc<Gateway>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RETENTION_PERIOD);
        loop {
            tick.tick().await;
            match apply_retention(&gateway).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    deleted = n,
                    "finished executions past their retention deleted"
                ),
                Err(e) => {
                    tracing::warn!(error = %e.message(), "could not apply the retention of executions")
                }
            }
        }
    })
}

/// Connect to the database at `url`, saying which (without its password) when it fails.
async fn open_store(url: &str) -> anyhow::Result<Store> {
    Store::connect(url)
        .await
        .with_context(|| format!("cannot open the database {}", crate::store::redact(url)))
}

/// The first start of a store creates `super_admin` and `admin`, with the passwords given or
/// generated ones (printed once).
async fn bootstrap_users(gateway: &Gateway, passwords: &Passwords) -> anyhow::Result<()> {
    let created = gateway
        .auth
        .bootstrap(passwords.admin.clone(), passwords.super_admin.clone())
        .await
        .map_err(|e| anyhow::anyhow!(e.message()))?;
    for user in created {
        let variable = match user.username.as_str() {
            "admin" => "WALKOFF_ADMIN_PASSWORD",
            _ => "WALKOFF_SUPER_ADMIN_PASSWORD",
        };
        if user.generated {
            println!(
                "created the user '{}' with the password {} (shown once; set {variable} to choose it)",
                user.username, user.password
            );
        } else {
            println!(
                "created the user '{}' with the password from {variable}",
                user.username
            );
        }
    }
    Ok(())
}

fn bind(listen: std::net::SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = if listen.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(listen)?;
    socket.listen(1024)
}

/// Answer HTTP and WebSockets on the configured address until `shutdown` resolves; requests in
/// flight finish and every WebSocket gets a close frame.
async fn serve_http(
    gateway: Arc<Gateway>,
    on_ready: impl FnOnce(std::net::SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listen = gateway.config.listen;
    let listener = bind(listen, gateway.config.reuse_port)
        .with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr()?;
    let (state, stop_sockets, mut sockets_closed) = http::state(gateway);
    let router = http::router(state);
    on_ready(address);
    // The peer's address reaches login throttling (behind a proxy it is the proxy's).
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stop_sockets.send(true);
    })
    .await
    .context("the server failed")?;
    // Every WebSocket got its close frame (or the grace ran out).
    let _ = tokio::time::timeout(STOP_GRACE, sockets_closed.recv()).await;
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
        check_key(&store, &config.key).await?;
        // The built-in apps open the globals they are given, with this deployment's key.
        let registry = registry
            .clone()
            .opening_with(Arc::new(Secrets::new(&config.key)));
        let registry = &registry;
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
        .map(|row| row.aborted_event("the server stopped while this execution ran"))
        .collect();
    store.record_events(&events).await?;
    println!(
        "{} execution(s) interrupted by the last stop are marked ABORTED",
        events.len()
    );
    Ok(())
}

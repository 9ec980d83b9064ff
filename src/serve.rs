//! `walkoff serve`: the API, the engine and the built-in apps in one process, with SQLite in a
//! data directory; `walkoff gateway`: the API alone, as one replica in a Redis deployment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use walkoff_gateway::keys::{default_key_path, MasterKey};
use walkoff_gateway::serve::{
    serve_distributed, serve_embedded, DistributedOptions, EmbeddedOptions, Passwords,
};
use walkoff_gateway::GatewayConfig;

use crate::distributed::{consumer_name, RedisArgs};
use crate::run::Interrupt;

#[derive(Args)]
pub struct ServeArgs {
    /// Where the database lives (created when missing).
    #[arg(long, env = "WALKOFF_DATA_DIR", default_value = "walkoff-data")]
    data_dir: PathBuf,
    /// Keep the data in this database instead (sqlite://PATH or postgres://…).
    #[arg(long, env = "WALKOFF_DATABASE")]
    database: Option<String>,
    /// The address to listen on.
    #[arg(long, env = "WALKOFF_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    passwords: PasswordArgs,
    #[command(flatten)]
    key: KeyArgs,
    /// The built-in apps this server runs. `diagnostics` (no-ops, sleeps, and an action that
    /// appends to a file a workflow names) is for drills and load tests, not for a shared server.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "basics",
        value_name = "APP,..."
    )]
    apps: Vec<String>,
}

#[derive(Args)]
pub struct GatewayArgs {
    #[command(flatten)]
    redis: RedisArgs,
    /// The database every replica shares (postgres://… ; sqlite://PATH for a single replica).
    #[arg(long, env = "WALKOFF_DATABASE")]
    database: String,
    /// The address to listen on.
    #[arg(long, env = "WALKOFF_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Share the port with other replicas on the same host (SO_REUSEPORT): for replicas on a
    /// host's network rather than behind Swarm's routing mesh.
    #[arg(long, env = "WALKOFF_REUSE_PORT")]
    reuse_port: bool,
    #[command(flatten)]
    passwords: PasswordArgs,
    #[command(flatten)]
    key: KeyArgs,
}

/// Where the master key comes from.
#[derive(Args, Clone)]
pub struct KeyArgs {
    /// The file holding the deployment's master key (created, readable by its owner only,
    /// when missing); by default `$XDG_CONFIG_HOME/walkoff/key` or `~/.config/walkoff/key`.
    /// `WALKOFF_KEY` (the key itself, base64) takes precedence.
    #[arg(long, env = "WALKOFF_KEY_FILE")]
    key_file: Option<PathBuf>,
}

impl KeyArgs {
    /// The key given, or in its default place; `None` when none was given and there is none
    /// there (an executor without one runs actions that use no global).
    pub fn load_existing(&self) -> Result<Option<MasterKey>, String> {
        if std::env::var("WALKOFF_KEY").is_ok_and(|k| !k.is_empty()) || self.key_file.is_some() {
            return self.load().map(Some);
        }
        match default_key_path() {
            Some(path) if path.exists() => self.load().map(Some),
            _ => Ok(None),
        }
    }

    /// The key given, or in its default place (created there when missing).
    pub fn load(&self) -> Result<MasterKey, String> {
        if let Some(key) = std::env::var("WALKOFF_KEY").ok().filter(|k| !k.is_empty()) {
            return MasterKey::from_base64(&key, "WALKOFF_KEY").map_err(|e| e.to_string());
        }
        let path = self
            .key_file
            .clone()
            .or_else(default_key_path)
            .ok_or("no key: set WALKOFF_KEY_FILE (or HOME, for the default place)")?;
        let (key, created) = MasterKey::load_or_create(&path).map_err(|e| e.to_string())?;
        if created {
            println!(
                "created the master key {} (keep it safe and out of backups of the data: tokens are signed and globals encrypted with it)",
                path.display()
            );
        }
        Ok(key)
    }
}

/// The passwords of the accounts a store's first start creates.
#[derive(Args)]
pub struct PasswordArgs {
    /// The password the first start gives the user `admin` (generated and printed when unset).
    #[arg(long, env = "WALKOFF_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: Option<String>,
    /// The password the first start gives the user `super_admin` (generated and printed when
    /// unset).
    #[arg(long, env = "WALKOFF_SUPER_ADMIN_PASSWORD", hide_env_values = true)]
    super_admin_password: Option<String>,
}

impl From<PasswordArgs> for Passwords {
    fn from(args: PasswordArgs) -> Passwords {
        Passwords {
            admin: args.admin_password,
            super_admin: args.super_admin_password,
        }
    }
}

fn announce(address: SocketAddr) {
    println!("walkoff is listening on http://{address} (GraphQL and GraphiQL at /graphql)");
}

fn exit_code(served: anyhow::Result<()>) -> ExitCode {
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub async fn gateway(args: GatewayArgs) -> ExitCode {
    let key = match args.key.load() {
        Ok(key) => key,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = DistributedOptions {
        redis: args.redis.redis,
        prefix: args.redis.prefix,
        database: args.database,
        config: GatewayConfig {
            listen: args.listen,
            reuse_port: args.reuse_port,
            key,
            ..GatewayConfig::default()
        },
        passwords: args.passwords.into(),
        // What workers validate against before executors add theirs.
        builtin: walkoff_apps::builtin_registry().catalog(),
        consumer: consumer_name("gateway"),
    };
    let mut interrupt = Interrupt::listen();
    let shutdown = async move { interrupt.recv().await };
    exit_code(serve_distributed(options, announce, shutdown).await)
}

pub async fn serve(args: ServeArgs) -> ExitCode {
    let key = match args.key.load() {
        Ok(key) => key,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = GatewayConfig {
        listen: args.listen,
        key,
        ..GatewayConfig::default()
    };
    let mut registry = walkoff_executors::Registry::new();
    for name in &args.apps {
        registry = match name.as_str() {
            "basics" => registry.with(Arc::new(walkoff_apps::basics::Basics::new())),
            "diagnostics" => {
                registry.with(Arc::new(walkoff_apps::diagnostics::Diagnostics::from_env()))
            }
            other => {
                eprintln!("error: --apps: there is no built-in app '{other}' (there are basics and diagnostics)");
                return ExitCode::from(2);
            }
        };
    }
    let options = EmbeddedOptions {
        data_dir: args.data_dir,
        database: args.database,
        config,
        passwords: args.passwords.into(),
        registry,
    };
    let mut interrupt = Interrupt::listen();
    let shutdown = async move { interrupt.recv().await };
    exit_code(serve_embedded(options, announce, shutdown).await)
}

#[derive(Args)]
pub struct RotateKeyArgs {
    /// The database whose globals are re-sealed (sqlite://PATH or postgres://…).
    #[arg(long, env = "WALKOFF_DATABASE")]
    database: String,
    /// The current key (as for `serve`: WALKOFF_KEY, --key-file or the default place).
    #[command(flatten)]
    key: KeyArgs,
    /// The file holding the new key (created when missing).
    #[arg(long)]
    new_key_file: PathBuf,
}

/// `walkoff rotate-key`: re-seal every global under a new master key, in one transaction.
pub async fn rotate_key(args: RotateKeyArgs) -> ExitCode {
    let old = match args.key.load() {
        Ok(key) => key,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let new = match MasterKey::load_or_create(&args.new_key_file) {
        Ok((key, _)) => key,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match walkoff_gateway::serve::rotate_key(&args.database, &old, &new).await {
        Ok(n) => {
            println!(
                "re-sealed {n} global(s) with the key in {}; start every gateway and executor with it (WALKOFF_KEY_FILE): tokens signed with the old key no longer work, so everyone signs in again",
                args.new_key_file.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

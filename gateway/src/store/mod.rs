//! The gateway's store: users, tokens, workflows, executions and their events, in SQLite (the
//! embedded default) or PostgreSQL, through sqlx's `Any` driver with one SQL text for both.
//!
//! Times are stored as microseconds since the Unix epoch and JSON documents as text, the types
//! both backends share. Every change that writes more than one row is one transaction.

mod executions;
mod globals;
mod roles;
mod settings;
mod users;
mod workflows;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Row, SqlSafeStr};

pub use executions::{ExecutionFilter, ExecutionRow, NewExecution, Progress, Recorded};
pub use globals::GlobalRow;
pub use roles::{framed, RoleRow, Table};
pub use settings::Settings;
pub use users::{TokenRow, UserRow};
pub use workflows::{truncate_micros, Updated, Viewer, WorkflowFilter, WorkflowRow};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database URL '{0}' is not sqlite://… or postgres://…")]
    UnsupportedUrl(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("a stored document is corrupt: {0}")]
    Corrupt(String),
    /// A unique column already holds this value.
    #[error("{0}")]
    Conflict(String),
}

impl StoreError {
    fn corrupt(what: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt(what.to_string())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Which server holds the data; a few statements differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite takes one writer at a time and makes the others sleep and retry (its busy
    /// handler backs off by up to 100 ms at a time); this process's writers queue here instead.
    /// `None` for PostgreSQL, which lets writers work side by side.
    write_gate: Option<Arc<tokio::sync::Mutex<()>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish()
    }
}

fn migrator() -> Migrator {
    let migration = |version, name, sql: &'static str| {
        Migration::new(
            version,
            Cow::Borrowed(name),
            MigrationType::Simple,
            sql.into_sql_str(),
            false,
        )
    };
    Migrator::with_migrations(vec![
        migration(
            1,
            "initial",
            include_str!("../../migrations/0001_initial.sql"),
        ),
        migration(
            2,
            "roles and permissions",
            include_str!("../../migrations/0002_roles_and_permissions.sql"),
        ),
        migration(
            3,
            "settings",
            include_str!("../../migrations/0003_settings.sql"),
        ),
        migration(
            4,
            "globals",
            include_str!("../../migrations/0004_globals.sql"),
        ),
    ])
}

impl Store {
    /// Connect to `url` (`sqlite://PATH` — created when missing — or `postgres://…`) and bring
    /// its schema up to date.
    pub async fn connect(url: &str) -> StoreResult<Store> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if let Some(path) = url.strip_prefix("sqlite://") {
            let url = if path.contains('?') {
                url.to_string()
            } else {
                format!("sqlite://{path}?mode=rwc")
            };
            (Backend::Sqlite, url)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else {
            return Err(StoreError::UnsupportedUrl(redact(url)));
        };
        let options = AnyPoolOptions::new()
            .acquire_timeout(Duration::from_secs(10))
            .max_connections(match backend {
                // SQLite writes one at a time; a few readers beside the writer are enough.
                Backend::Sqlite => 4,
                Backend::Postgres => 16,
            })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers go on while the recorder writes; foreign keys are
                        // off by default in SQLite; a busy writer is waited for, not an error.
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = NORMAL",
                            "PRAGMA foreign_keys = ON",
                            "PRAGMA busy_timeout = 10000",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            });
        let pool = options.connect(&url).await?;
        migrator().run(&pool).await?;
        let write_gate =
            (backend == Backend::Sqlite).then(|| Arc::new(tokio::sync::Mutex::new(())));
        let store = Store {
            pool,
            backend,
            write_gate,
        };
        store.seed_default_roles().await?;
        Ok(store)
    }

    /// Wait for this process's turn to write (SQLite), held until the returned guard drops.
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.write_gate {
            Some(gate) => Some(gate.lock().await),
            None => None,
        }
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A database or Redis URL fit for a message: the password replaced.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

pub(crate) fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

pub(crate) fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

pub(crate) fn opt_time(row: &AnyRow, column: &str) -> StoreResult<Option<DateTime<Utc>>> {
    Ok(row.try_get::<Option<i64>, _>(column)?.map(from_micros))
}

/// A violated unique constraint as CONFLICT naming what is taken (`a workflow named 'x'
/// exists`); any other error as it is.
pub(crate) fn name_taken<'a>(
    what: &'a str,
    name: &'a str,
) -> impl Fn(sqlx::Error) -> StoreError + 'a {
    move |e| {
        if is_unique_violation(&e) {
            StoreError::Conflict(format!("a {what} named '{name}' exists"))
        } else {
            e.into()
        }
    }
}

/// True when `error` is a violated unique constraint (both backends say so through sqlx).
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.is_unique_violation())
}

//! Connections: the shared writing connection's commands, and dedicated reading connections for
//! blocking reads (pooled, with a response timeout past their `BLOCK`, registered so `close` can
//! unblock them), over TCP with keepalive and a user timeout.

use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Cmd, FromRedisValue, Pipeline};

use super::{lock, unavailable, BusError, RedisBus, WatchingReader};

/// How much longer than its `BLOCK` a blocking read may take to answer before it counts as
/// failed (a frozen server, a half-open connection); the reader then opens a fresh connection.
pub(super) const RESPONSE_MARGIN: Duration = Duration::from_secs(5);

/// Reading connections kept open between reads; more are opened for a burst and then closed.
pub(super) const MAX_IDLE_READERS: usize = 16;

/// A connection idle this long is probed, every interval, and closed after this many
/// unanswered probes: a dead peer is noticed in about 25 s even on a connection nothing uses.
pub(super) const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(10);

pub(super) const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);

pub(super) const TCP_KEEPALIVE_PROBES: u32 = 3;

/// Data sent and unacknowledged this long closes the connection (`TCP_USER_TIMEOUT`).
pub(super) const TCP_USER_TIMEOUT: Duration = Duration::from_secs(20);

/// A client for `url` whose connections notice a vanished peer. Small messages go both ways:
/// without TCP_NODELAY, Nagle's algorithm holds writes back. Keepalive probes and a user timeout
/// close a connection whose peer vanished (a host gone, a partition) instead of leaving it
/// half-open until a read's own timeout.
pub(super) fn client_for(url: &str) -> Result<Client, BusError> {
    let info = redis::IntoConnectionInfo::into_connection_info(url)
        .map_err(unavailable)?
        .set_tcp_settings(
            redis::io::tcp::TcpSettings::default()
                .set_nodelay(true)
                .set_keepalive(
                    socket2::TcpKeepalive::new()
                        .with_time(TCP_KEEPALIVE_IDLE)
                        .with_interval(TCP_KEEPALIVE_INTERVAL)
                        .with_retries(TCP_KEEPALIVE_PROBES),
                )
                .set_user_timeout(TCP_USER_TIMEOUT),
        );
    Client::open(info).map_err(unavailable)
}

impl RedisBus {
    pub(super) fn check_open(&self) -> Result<(), BusError> {
        if self.closed.load(Ordering::Acquire) {
            Err(BusError::Closed)
        } else {
            Ok(())
        }
    }

    pub(super) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, BusError> {
        cmd.query_async(&mut self.writer.clone())
            .await
            .map_err(|e| self.failed(e))
    }

    /// A failed command; a missing group (Redis restarted without its data) is created again on
    /// the next call.
    pub(super) fn failed(&self, e: redis::RedisError) -> BusError {
        if e.code() == Some("NOGROUP") {
            lock(&self.groups).clear();
        }
        unavailable(e)
    }

    /// The first error among a pipeline's replies, including those of commands inside a
    /// `MULTI`/`EXEC` (which come back inside `EXEC`'s answer).
    pub(super) fn first_failure(
        &self,
        replies: Vec<redis::RedisResult<redis::Value>>,
    ) -> Result<(), BusError> {
        for reply in replies {
            if let Err(e) = reply.and_then(redis::Value::extract_error) {
                return Err(self.failed(e));
            }
        }
        Ok(())
    }

    pub(super) async fn run(&self, pipe: &Pipeline) -> Result<(), BusError> {
        pipe.query_async::<()>(&mut self.writer.clone())
            .await
            .map_err(|e| self.failed(e))
    }

    /// Redis's clock, in milliseconds since the epoch.
    pub(super) async fn now_ms(&self) -> Result<u64, BusError> {
        let (secs, micros): (u64, u64) = self.query(&redis::cmd("TIME")).await?;
        Ok(secs * 1000 + micros / 1000)
    }

    /// Create the consumer group of `stream` (and the stream) once; it starts at the beginning so
    /// entries written before it existed are delivered too.
    pub(super) async fn ensure_group(&self, stream: &str, group: &str) -> Result<(), BusError> {
        let key = format!("{stream}\u{0}{group}");
        if lock(&self.groups).contains(&key) {
            return Ok(());
        }
        let created: Result<(), BusError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.writer.clone())
            .await
            .or_else(|e: redis::RedisError| {
                if e.code() == Some("BUSYGROUP") {
                    Ok(())
                } else {
                    Err(unavailable(e))
                }
            });
        created?;
        lock(&self.groups).insert(key);
        Ok(())
    }

    /// Run a blocking command (which blocks up to `block`) on a dedicated connection, which
    /// `close` can unblock. An answer later than `block` + [`RESPONSE_MARGIN`] is an error: a
    /// frozen server or a half-open connection cannot hang the reader.
    pub(super) async fn blocking<T: FromRedisValue>(
        &self,
        cmd: &Cmd,
        block: Duration,
    ) -> Result<T, BusError> {
        let (mut conn, id) = self.reader().await?;
        conn.set_response_timeout(block + RESPONSE_MARGIN);
        let result = cmd.query_async(&mut conn).await;
        self.return_reader(conn, id, result.map_err(|e| self.failed(e)))
    }

    /// Run a pipeline ending in a blocking command on a dedicated connection; each command's own
    /// result (the pipeline ignores errors).
    pub(super) async fn blocking_pipe(
        &self,
        pipe: &Pipeline,
        block: Duration,
    ) -> Result<Vec<redis::RedisResult<redis::Value>>, BusError> {
        let (mut conn, id) = self.reader().await?;
        conn.set_response_timeout(block + RESPONSE_MARGIN);
        let result = pipe.query_async(&mut conn).await;
        self.return_reader(conn, id, result.map_err(|e| self.failed(e)))
    }

    /// A reading connection, registered as blocked so `close` can unblock it.
    pub(super) async fn reader(&self) -> Result<(MultiplexedConnection, i64), BusError> {
        let pooled = lock(&self.readers).pop();
        let (conn, id) = match pooled {
            Some(reader) => reader,
            None => {
                // Each read sets its response timeout: its BLOCK plus a margin.
                let config = AsyncConnectionConfig::new()
                    .set_response_timeout(None)
                    .set_connection_timeout(Some(Duration::from_secs(5)));
                let mut conn = self
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(unavailable)?;
                let id: i64 = redis::cmd("CLIENT")
                    .arg("ID")
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                (conn, id)
            }
        };
        self.mark_blocked(id)?;
        Ok((conn, id))
    }

    /// The worker's watching reader (a fresh reader watching nothing the first time).
    pub(super) async fn watching_reader(&self) -> Result<WatchingReader, BusError> {
        let kept = lock(&self.watching).take();
        match kept {
            Some((conn, id, watched)) => {
                self.mark_blocked(id)?;
                Ok((conn, id, watched))
            }
            None => {
                let (conn, id) = self.reader().await?;
                Ok((conn, id, Vec::new()))
            }
        }
    }

    pub(super) fn mark_blocked(&self, id: i64) -> Result<(), BusError> {
        lock(&self.blocked).insert(id);
        // Checked after registering, so a concurrent close either sees this reader or is seen here.
        if let Err(e) = self.check_open() {
            lock(&self.blocked).remove(&id);
            return Err(e);
        }
        Ok(())
    }

    /// Pool the connection again after a read that worked; one that failed is dropped, and the
    /// next read opens a fresh one.
    pub(super) fn return_reader<T>(
        &self,
        conn: MultiplexedConnection,
        id: i64,
        result: Result<T, BusError>,
    ) -> Result<T, BusError> {
        lock(&self.blocked).remove(&id);
        self.check_open()?;
        let value = result?;
        let mut readers = lock(&self.readers);
        // A burst of reads opens as many connections; afterwards only a few are kept.
        if readers.len() < MAX_IDLE_READERS {
            readers.push((conn, id));
        }
        Ok(value)
    }
}

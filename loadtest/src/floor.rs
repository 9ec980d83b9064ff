//! The platform's floor for a chain step: one entry bounced between two processes through two Redis
//! streams with consumer groups, each side sending its answer, its acknowledgement and its next
//! blocking read in one write — the two hops a walkoff step makes (worker → executor → worker), with
//! no engine work at all (no commit script, log, events or decoding). It runs on the same Redis
//! server as walkoff, right after it, so the two figures share the machine's moment.

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use redis::streams::StreamReadReply;

use crate::deployment::Started;
use crate::stats::{process_usage, ProcessUsage, Run};

/// Set on the child process: the Redis URL it answers on.
pub const PONG_ENV: &str = "WALKOFF_LOADTEST_FLOOR_PONG";

const PING: &str = "walkoff-floor:ping";
const PONG: &str = "walkoff-floor:pong";
const GROUP: &str = "floor";
/// About the size of a walkoff action request or result.
const PAYLOAD_BYTES: usize = 300;
/// How long a side waits for the other before giving up: the pong process stops this way.
const BLOCK_MS: u64 = 2000;

/// One side of the exchange: answers what arrives on `inbox` on `outbox`.
struct Side {
    conn: redis::aio::MultiplexedConnection,
    name: &'static str,
    inbox: &'static str,
    outbox: &'static str,
    payload: String,
    /// The entry to answer and acknowledge with the next read.
    answering: Option<String>,
}

impl Side {
    async fn connect(url: &str, name: &'static str) -> anyhow::Result<Side> {
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        let mut conn = redis::Client::open(url)?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        for stream in [PING, PONG] {
            // BUSYGROUP (already made by the other side) is fine.
            let _: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(stream)
                .arg(GROUP)
                .arg("$")
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await;
        }
        let (inbox, outbox) = if name == "ping" {
            (PONG, PING)
        } else {
            (PING, PONG)
        };
        Ok(Side {
            conn,
            name,
            inbox,
            outbox,
            payload: "x".repeat(PAYLOAD_BYTES),
            answering: None,
        })
    }

    async fn send(&mut self) -> anyhow::Result<()> {
        redis::cmd("XADD")
            .arg(self.outbox)
            .arg("*")
            .arg("m")
            .arg(&self.payload)
            .query_async::<()>(&mut self.conn)
            .await?;
        Ok(())
    }

    /// Acknowledge the entry in hand without answering it.
    async fn acknowledge(&mut self) -> anyhow::Result<()> {
        if let Some(id) = self.answering.take() {
            redis::cmd("XACK")
                .arg(self.inbox)
                .arg(GROUP)
                .arg(id)
                .query_async::<()>(&mut self.conn)
                .await?;
        }
        Ok(())
    }

    /// Answer the entry in hand (if any) and wait for the next: one write, one reply. False when
    /// nothing came within `BLOCK_MS`.
    async fn exchange(&mut self) -> anyhow::Result<bool> {
        let mut pipe = redis::pipe();
        if let Some(id) = self.answering.take() {
            pipe.cmd("XADD")
                .arg(self.outbox)
                .arg("*")
                .arg("m")
                .arg(&self.payload)
                .ignore();
            pipe.cmd("XACK").arg(self.inbox).arg(GROUP).arg(id).ignore();
        }
        pipe.cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(self.name)
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(BLOCK_MS)
            .arg("STREAMS")
            .arg(self.inbox)
            .arg(">");
        let (reply,): (Option<StreamReadReply>,) = pipe.query_async(&mut self.conn).await?;
        let id = reply
            .and_then(|r| r.keys.into_iter().next())
            .and_then(|k| k.ids.into_iter().next())
            .map(|entry| entry.id);
        let arrived = id.is_some();
        self.answering = id;
        Ok(arrived)
    }
}

/// The child process: answer until the pinging side stops.
pub fn pong(url: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut side = Side::connect(url, "pong").await?;
        while side.exchange().await? {}
        Ok(())
    })
}

/// `repeat` measured runs (after a warm-up) of `size` round trips; each run's wall time is its
/// latency, as for a chain of `size` steps.
pub fn run(
    redis_url: &str,
    size: usize,
    repeat: usize,
) -> anyhow::Result<(Vec<Run>, Vec<ProcessUsage>)> {
    let me = std::env::current_exe()?;
    let child = Command::new(me)
        .env(PONG_ENV, redis_url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start the floor's answering process")?;
    let mut answerer = Started::new("floor-pong", child);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (runs, usage) = runtime.block_on(async {
        let mut side = Side::connect(redis_url, "ping").await?;
        let mut runs = Vec::with_capacity(repeat);
        for measured in std::iter::once(false).chain(std::iter::repeat_n(true, repeat)) {
            let started = Instant::now();
            side.send().await?;
            for _ in 0..size.max(1) {
                if !side.exchange().await? {
                    bail!("the floor's answering process stopped answering");
                }
            }
            let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
            // The last answer ends the run: acknowledged, not answered, so one entry is ever in
            // flight.
            side.acknowledge().await?;
            if measured {
                runs.push(Run {
                    wall_ms,
                    latencies_ms: vec![wall_ms],
                    completions_ms: vec![wall_ms],
                    lost: 0,
                });
            }
        }
        // Read while the answerer still runs (the streams' removal ends it).
        let usage: Vec<ProcessUsage> = answerer
            .pid()
            .and_then(|pid| process_usage(pid, "floor answerer"))
            .into_iter()
            .collect();
        redis::cmd("DEL")
            .arg(PING)
            .arg(PONG)
            .query_async::<()>(&mut side.conn)
            .await?;
        Ok::<_, anyhow::Error>((runs, usage))
    })?;
    answerer.stop(std::time::Duration::from_secs(5));
    Ok((runs, usage))
}

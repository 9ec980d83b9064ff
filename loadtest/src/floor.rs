//! The platform's floor for a chain step: one entry bounced between two processes through two Redis
//! streams with consumer groups, each side sending its answer, its acknowledgement and its next
//! blocking read in one write — the two hops a walkoff step makes (worker → executor → worker), with
//! no engine work at all (no commit, log, events or decoding). It runs on the same Redis server as
//! walkoff, right after it, so the figures share the machine's moment.
//!
//! The durable floor is the same exchange carrying the Redis writes that make a walkoff step
//! durable, with walkoff's commands and payload sizes: the answering side reports in a `MULTI`
//! (result, acknowledgement) and reads five priority streams, as an executor does; the pinging side
//! commits in a `MULTI` (the log entry, two events, the next request, the acknowledgement), watches
//! and reads its four partitions' fences and reads their four streams, as a worker of two does. What
//! walkoff spends beyond it is the engine's own work: decoding, deciding, encoding.

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use redis::streams::StreamReadReply;

use crate::deployment::Started;
use crate::stats::{process_usage, ProcessUsage, Run};

/// Set on the child process: which floor, and the Redis URL it answers on (`durable|URL`).
pub const PONG_ENV: &str = "WALKOFF_LOADTEST_FLOOR_PONG";

const PING: &str = "walkoff-floor:ping";
const PONG: &str = "walkoff-floor:pong";
const GROUP: &str = "floor";
/// About the size of a walkoff action request or result.
const PAYLOAD_BYTES: usize = 300;
/// How long a side waits for the other before giving up: the pong process stops this way.
const BLOCK_MS: u64 = 2000;

/// Sizes of what a walkoff chain step writes, as measured on a chain of no-op actions.
const REQUEST_BYTES: usize = 433;
const RESULT_BYTES: usize = 263;
const SUCCESS_EVENT_BYTES: usize = 190;
const EXECUTING_EVENT_BYTES: usize = 200;
/// A worker of two owns four of the eight control partitions; an executor reads five priorities.
const WORKER_PARTITIONS: usize = 4;
const PRIORITIES: usize = 5;
/// As walkoff: a worker reads up to 512 messages at once, an executor as many as it has room for.
const WORKER_READ_COUNT: usize = 512;
const EXECUTOR_READ_COUNT: usize = 8;
const REQUEST_STREAM_MAXLEN: usize = 1_000_000;
const LOG: &str = "walkoff-floor:log";
const EVENTS: &str = "walkoff-floor:events";

/// Which floor to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Floor {
    /// The bare round trip.
    Bare,
    /// The round trip with the Redis writes of a durable step.
    Durable,
}

impl Floor {
    fn tag(self) -> &'static str {
        match self {
            Floor::Bare => "bare",
            Floor::Durable => "durable",
        }
    }

    /// The streams a side reads, the one it answers first: the durable floor's worker reads its
    /// four partitions and its executor five priorities, as walkoff's do.
    fn inbox(self, pinging: bool) -> Vec<String> {
        let (answered, streams) = match (self, pinging) {
            (Floor::Bare, true) => (PONG, 1),
            (Floor::Bare, false) => (PING, 1),
            (Floor::Durable, true) => (PONG, WORKER_PARTITIONS),
            (Floor::Durable, false) => (PING, PRIORITIES),
        };
        std::iter::once(answered.to_string())
            .chain((1..streams).map(|i| format!("{answered}:{i}")))
            .collect()
    }

    /// Every key this floor writes, to remove after the runs.
    fn keys(self) -> Vec<String> {
        let mut keys = self.inbox(true);
        keys.extend(self.inbox(false));
        if self == Floor::Durable {
            keys.extend(fences());
            keys.extend([LOG.to_string(), EVENTS.to_string()]);
        }
        keys
    }
}

/// The fence keys the durable floor's worker watches, one per partition it owns.
fn fences() -> Vec<String> {
    (0..WORKER_PARTITIONS)
        .map(|i| format!("walkoff-floor:fence:{i}"))
        .collect()
}

/// One side of the exchange: answers what arrives on `inbox` on `outbox`.
struct Side {
    conn: redis::aio::MultiplexedConnection,
    floor: Floor,
    name: &'static str,
    /// The streams read, the one answered on first.
    inbox: Vec<String>,
    outbox: &'static str,
    payload: String,
    /// The durable floor's log entry and events (the pinging side).
    log_entry: String,
    events: [String; 2],
    fences: Vec<String>,
    /// The events' explicit ids, as walkoff numbers an execution's events.
    seq: u64,
    /// The entry to answer and acknowledge with the next read.
    answering: Option<String>,
}

impl Side {
    async fn connect(url: &str, floor: Floor, name: &'static str) -> anyhow::Result<Side> {
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        let mut conn = redis::Client::open(url)?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let pinging = name == "ping";
        let outbox = if pinging { PING } else { PONG };
        let inbox = floor.inbox(pinging);
        for stream in inbox.iter().map(String::as_str).chain([outbox]) {
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
        let payload_bytes = match (floor, pinging) {
            (Floor::Bare, _) => PAYLOAD_BYTES,
            (Floor::Durable, true) => REQUEST_BYTES,
            (Floor::Durable, false) => RESULT_BYTES,
        };
        Ok(Side {
            conn,
            floor,
            name,
            inbox,
            outbox,
            payload: "x".repeat(payload_bytes),
            log_entry: "x".repeat(RESULT_BYTES),
            events: [
                "x".repeat(SUCCESS_EVENT_BYTES),
                "x".repeat(EXECUTING_EVENT_BYTES),
            ],
            fences: fences(),
            seq: 0,
            answering: None,
        })
    }

    /// Start a run: what answering writes, with nothing to acknowledge.
    async fn send(&mut self) -> anyhow::Result<()> {
        let mut pipe = redis::pipe();
        self.answer(&mut pipe, None);
        pipe.query_async::<()>(&mut self.conn).await?;
        Ok(())
    }

    /// Acknowledge the entry in hand without answering it.
    async fn acknowledge(&mut self) -> anyhow::Result<()> {
        if let Some(id) = self.answering.take() {
            redis::cmd("XACK")
                .arg(&self.inbox[0])
                .arg(GROUP)
                .arg(id)
                .query_async::<()>(&mut self.conn)
                .await?;
        }
        Ok(())
    }

    /// The answer to `id` (none when starting a run): bare, the entry and its acknowledgement;
    /// durable, what a worker's commit or an executor's report writes, in one transaction.
    fn answer(&mut self, pipe: &mut redis::Pipeline, id: Option<String>) {
        let durable = self.floor == Floor::Durable;
        let worker = durable && self.name == "ping";
        if durable {
            pipe.cmd("MULTI").ignore();
        }
        if worker {
            pipe.cmd("RPUSH").arg(LOG).arg(&self.log_entry).ignore();
            for event in &self.events {
                self.seq += 1;
                pipe.cmd("XADD")
                    .arg(EVENTS)
                    .arg(format!("0-{}", self.seq))
                    .arg("m")
                    .arg(event)
                    .ignore();
            }
        }
        pipe.cmd("XADD").arg(self.outbox);
        if worker {
            pipe.arg("MAXLEN").arg("~").arg(REQUEST_STREAM_MAXLEN);
        }
        pipe.arg("*").arg("m").arg(&self.payload).ignore();
        if let Some(id) = &id {
            pipe.cmd("XACK")
                .arg(&self.inbox[0])
                .arg(GROUP)
                .arg(id)
                .ignore();
        }
        if durable {
            pipe.cmd("EXEC").ignore();
        }
    }

    /// Answer the entry in hand (if any) and wait for the next: one write, one reply. False when
    /// nothing came within `BLOCK_MS`.
    async fn exchange(&mut self) -> anyhow::Result<bool> {
        let mut pipe = redis::pipe();
        if let Some(id) = self.answering.take() {
            self.answer(&mut pipe, Some(id));
        }
        let durable_worker = self.floor == Floor::Durable && self.name == "ping";
        if durable_worker {
            pipe.cmd("WATCH").arg(&self.fences).ignore();
            pipe.cmd("MGET").arg(&self.fences).ignore();
        }
        let count = match (self.floor, durable_worker) {
            (Floor::Bare, _) => 1,
            (Floor::Durable, true) => WORKER_READ_COUNT,
            (Floor::Durable, false) => EXECUTOR_READ_COUNT,
        };
        pipe.cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(self.name)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(BLOCK_MS)
            .arg("STREAMS")
            .arg(&self.inbox);
        for _ in &self.inbox {
            pipe.arg(">");
        }
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

/// The child process, given `PONG_ENV`'s value: answer until the pinging side stops.
pub fn pong(setting: &str) -> anyhow::Result<()> {
    let (floor, url) = match setting.split_once('|') {
        Some(("durable", url)) => (Floor::Durable, url),
        Some(("bare", url)) => (Floor::Bare, url),
        _ => bail!("{PONG_ENV} is FLOOR|URL, FLOOR bare or durable: {setting}"),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut side = Side::connect(url, floor, "pong").await?;
        while side.exchange().await? {}
        Ok(())
    })
}

/// `repeat` measured runs (after a warm-up) of `size` round trips; each run's wall time is its
/// latency, as for a chain of `size` steps.
pub fn run(
    floor: Floor,
    redis_url: &str,
    size: usize,
    repeat: usize,
) -> anyhow::Result<(Vec<Run>, Vec<ProcessUsage>)> {
    let me = std::env::current_exe()?;
    let child = Command::new(me)
        .env(PONG_ENV, format!("{}|{redis_url}", floor.tag()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start the floor's answering process")?;
    let mut answerer = Started::new("floor-pong", child);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (runs, usage) = runtime.block_on(async {
        let mut side = Side::connect(redis_url, floor, "ping").await?;
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
        if floor == Floor::Durable {
            // Every step's writes went through: a transaction refused would leave them short.
            // Per run: the start, then an answer to all but the last reply.
            let steps = size.max(1) * (repeat + 1);
            let (logged, events): (usize, usize) = redis::pipe()
                .cmd("LLEN")
                .arg(LOG)
                .cmd("XLEN")
                .arg(EVENTS)
                .query_async(&mut side.conn)
                .await?;
            if logged != steps || events != 2 * steps {
                bail!(
                    "the durable floor wrote {logged} log entries and {events} events for {steps} \
                     steps"
                );
            }
        }
        // Read while the answerer still runs (the streams' removal ends it).
        let usage: Vec<ProcessUsage> = answerer
            .pid()
            .and_then(|pid| process_usage(pid, "floor answerer"))
            .into_iter()
            .collect();
        redis::cmd("DEL")
            .arg(floor.keys())
            .query_async::<()>(&mut side.conn)
            .await?;
        Ok::<_, anyhow::Error>((runs, usage))
    })?;
    answerer.stop(std::time::Duration::from_secs(5));
    Ok((runs, usage))
}

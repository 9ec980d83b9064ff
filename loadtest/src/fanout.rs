//! The subscribers' floor: the same fan-out with no engine, no store and no GraphQL — a bare
//! WebSocket server (tokio-tungstenite, as axum uses) in a process of its own, with one task per
//! connection fed by one broadcast channel as the gateway's hub feeds its subscribers, sending
//! each event already serialized. It replays the events walkoff's one-execution case delivered:
//! as many, at the same moments after the first, in messages of the same size, written as
//! walkoff writes them (what is ready in one write). The client side is the harness's own, as
//! for walkoff. What it measures is what this machine's sockets, scheduler and client cost;
//! walkoff's latency is reported beside it.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::Utc;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio_tungstenite::tungstenite::Message;

use crate::deployment::Started;
use crate::gateway::{rss_kb, settle, tally, Incoming, SubscriberCase};

/// Set to `SUBSCRIBERS|MESSAGE_BYTES|OFFSET_MS,OFFSET_MS,…` in the child: serve the fan-out.
pub const FANOUT_ENV: &str = "WALKOFF_LOADTEST_FANOUT";

/// The child process: listen on a free port (printed on stdout), wait for `subscribers`
/// connections and a line on stdin, then send an event of `MESSAGE_BYTES` at each offset (ms
/// after the first) to every connection and close them.
pub fn serve(setting: &str) -> anyhow::Result<()> {
    let usage = || format!("{FANOUT_ENV} is SUBSCRIBERS|MESSAGE_BYTES|OFFSET_MS,…: {setting}");
    let [subscribers, message_bytes, offsets] = setting.split('|').collect::<Vec<_>>()[..] else {
        bail!(usage());
    };
    let subscribers: usize = subscribers.parse().with_context(usage)?;
    let message_bytes: usize = message_bytes.parse().with_context(usage)?;
    let offsets: Vec<f64> = offsets
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(usage)?;
    // As `walkoff serve` runs: a scheduler thread per core.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?.port());
        let (events_tx, _) = broadcast::channel::<std::sync::Arc<String>>(64);
        let mut connections = Vec::new();
        for _ in 0..subscribers {
            let (stream, _) = listener.accept().await?;
            let mut receiver = events_tx.subscribe();
            connections.push(tokio::spawn(async move {
                let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                    .read_buffer_size(4096)
                    .write_buffer_size(4096);
                let socket =
                    tokio_tungstenite::accept_async_with_config(stream, Some(config)).await?;
                let (mut sink, _read) = socket.split();
                while let Ok(text) = receiver.recv().await {
                    sink.feed(Message::Text(text.as_str().into())).await?;
                    while let Ok(text) = receiver.try_recv() {
                        sink.feed(Message::Text(text.as_str().into())).await?;
                    }
                    sink.flush().await?;
                }
                sink.close().await?;
                anyhow::Ok(())
            }));
        }
        // Go when told (the harness has read the memory it wants).
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map(|_| ())
        })
        .await??;
        let start = tokio::time::Instant::now();
        for (sequence, offset_ms) in (1..).zip(offsets) {
            tokio::time::sleep_until(start + Duration::from_secs_f64(offset_ms / 1000.0)).await;
            let mut event = json!({"sequence": sequence, "status": "SUCCESS", "label": "s",
                                   "at": Utc::now().to_rfc3339(), "padding": ""});
            let padding = message_bytes.saturating_sub(event.to_string().len());
            event["padding"] = json!("x".repeat(padding));
            let _ = events_tx.send(std::sync::Arc::new(event.to_string()));
        }
        drop(events_tx);
        for connection in connections {
            let _ = connection.await;
        }
        anyhow::Ok(())
    })
}

/// Run the floor with `subscribers` connections, replaying `replayed`'s events (their moments
/// and message size).
pub async fn measure(
    subscribers: usize,
    replayed: &SubscriberCase,
) -> anyhow::Result<SubscriberCase> {
    if replayed.event_offsets_ms.is_empty() {
        bail!("the floor replays an execution's events, and no event was delivered");
    }
    let offsets: Vec<String> = replayed
        .event_offsets_ms
        .iter()
        .map(f64::to_string)
        .collect();
    let me = std::env::current_exe()?;
    let mut child = Command::new(me)
        .env(
            FANOUT_ENV,
            format!(
                "{subscribers}|{}|{}",
                replayed.message_bytes,
                offsets.join(",")
            ),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start the fan-out floor")?;
    let stdout = child.stdout.take().context("the floor's stdout")?;
    let mut stdin = child.stdin.take().context("the floor's stdin")?;
    let process = Started::new("fan-out floor", child);
    let pid = process.pid().unwrap_or_default();
    let port: u16 = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        line.trim().parse::<u16>().context("the floor's port")
    })
    .await??;
    settle().await;
    let before_kb = rss_kb(pid);
    let half = subscribers / 2;
    let mut half_kb = before_kb;
    let mut followers = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        if i == half && half > 0 {
            settle().await;
            half_kb = rss_kb(pid);
        }
        let (socket, _) =
            tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/")).await?;
        let (route, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (_write, mut read) = socket.split();
            while let Some(Ok(message)) = read.next().await {
                match message {
                    Message::Text(text) => {
                        let arrived = Utc::now();
                        if let Ok(event) = serde_json::from_str(&text) {
                            let _ = route.send(Incoming::Next(event, arrived, text.len()));
                        }
                    }
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            let _ = route.send(Incoming::Done(Ok(())));
        });
        followers.push(tokio::spawn(crate::gateway::follow(events)));
    }
    settle().await;
    let subscribed_kb = rss_kb(pid);
    let cpu = crate::gateway::CpuMeter::start(pid);
    std::io::Write::write_all(&mut stdin, b"go\n")?;
    let case = tally(
        "one stream, bare WebSocket broadcaster (floor)",
        subscribers,
        1,
        followers,
        (before_kb, half_kb, subscribed_kb, half),
    )
    .await
    .map(|case| cpu.stop(case))?;
    drop(process);
    Ok(case)
}

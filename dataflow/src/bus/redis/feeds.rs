//! What a gateway reads from a deployment besides the bus itself: the events of many executions
//! in one blocking read (woken early through a stream of its own when it takes on another), the
//! feed of finished executions shared by a consumer group (so each entry is handled by one replica,
//! and those a dead replica held are taken over), and a channel to tell every replica something.

use std::time::Duration;

use futures::{Stream, StreamExt};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use walkoff_schema::{Event, ExecutionId};

use super::{unavailable, RedisBus};
use crate::bus::BusError;

/// Streams named in one `XREAD`; a reader following more goes through them in turns.
const STREAMS_PER_READ: usize = 1000;

/// An entry of the feed of finished executions, to acknowledge once handled.
#[derive(Debug, Clone)]
pub struct FinishedEntry {
    pub id: String,
    pub event: Event,
}

/// A stream another process adds to when this one should stop waiting, and the last entry seen.
#[derive(Debug, Clone)]
pub struct Wake {
    key: String,
    last: String,
}

/// Decode `m` of each entry; an entry that does not decode is skipped with a warning (the events
/// stream is written by workers only, so it means a bug or a foreign writer, not a reason to stop).
pub(super) fn decode_events(stream: &str, entries: Vec<StreamId>) -> Vec<Event> {
    let mut events = Vec::with_capacity(entries.len());
    for entry in entries {
        let raw: String = entry.get("m").unwrap_or_default();
        match serde_json::from_str::<Event>(&raw) {
            Ok(event) => events.push(event),
            Err(e) => {
                tracing::warn!(%stream, id = %entry.id, error = %e, "undecodable event skipped")
            }
        }
    }
    events
}

impl RedisBus {
    /// A wake stream named `name` (unique to the reading process).
    pub fn wake_stream(&self, name: &str) -> Wake {
        Wake {
            key: self.keys.wake(name),
            last: "0-0".into(),
        }
    }

    /// End the wait of whoever reads `wake` now. The stream keeps a few entries and goes away a
    /// minute after the last one, so a reader that died leaves nothing behind.
    pub async fn wake(&self, wake: &Wake) -> Result<(), BusError> {
        let mut pipe = redis::pipe();
        pipe.cmd("XADD")
            .arg(&wake.key)
            .arg("MAXLEN")
            .arg("~")
            .arg(16)
            .arg("*")
            .arg("w")
            .arg(1)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&wake.key)
            .arg(60_000)
            .ignore();
        self.run(&pipe).await
    }

    /// The next events of several executions, each from its own next sequence number
    /// (`from`: execution id → the first sequence wanted), at most `max` per execution, waiting
    /// up to `wait` when none has any, or until `wake` is woken. Beyond 1000 executions they
    /// are read in turns, `turn` saying which thousand.
    pub async fn read_events_of(
        &self,
        from: &[(ExecutionId, u64)],
        wake: &mut Wake,
        turn: usize,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Event>, BusError> {
        self.check_open()?;
        let chunks = from.len().div_ceil(STREAMS_PER_READ).max(1);
        let chunk = from
            .chunks(STREAMS_PER_READ)
            .nth(turn % chunks)
            .unwrap_or_default();
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(max.max(1));
        if !wait.is_zero() {
            // With more than one turn, waiting on one would leave the others unread.
            let wait = if chunks > 1 {
                wait.min(Duration::from_millis(20))
            } else {
                wait
            };
            cmd.arg("BLOCK").arg(wait.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS").arg(&wake.key);
        for (id, _) in chunk {
            cmd.arg(self.keys.events(id));
        }
        cmd.arg(&wake.last);
        for (_, next) in chunk {
            cmd.arg(format!("0-{}", next.max(&1) - 1));
        }
        let reply: Option<StreamReadReply> = if wait.is_zero() {
            self.query(&cmd).await?
        } else {
            self.blocking(&cmd, wait).await?
        };
        let mut events = Vec::new();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            if key.key == wake.key {
                if let Some(last) = key.ids.last() {
                    wake.last.clone_from(&last.id);
                }
                continue;
            }
            events.extend(decode_events(&key.key, key.ids));
        }
        Ok(events)
    }

    /// Entries of the finished feed for `consumer` of `group`: first those another consumer has
    /// held for longer than `claim_after` (it died before acknowledging them), then new ones,
    /// waiting up to `wait`.
    pub async fn read_finished(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
        claim_after: Duration,
        wait: Duration,
    ) -> Result<Vec<FinishedEntry>, BusError> {
        let feed = self.keys.finished();
        self.ensure_group(&feed, group).await?;
        let claimed: StreamAutoClaimReply = self
            .query(
                redis::cmd("XAUTOCLAIM")
                    .arg(&feed)
                    .arg(group)
                    .arg(consumer)
                    .arg(claim_after.as_millis() as u64)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(max.max(1)),
            )
            .await?;
        // Entries trimmed from the feed while held: nothing to handle, only to acknowledge.
        self.ack_finished(group, &claimed.deleted_ids).await?;
        let mut entries = claimed.claimed;
        if entries.is_empty() {
            self.check_open()?;
            let reply: Option<StreamReadReply> = self
                .blocking(
                    redis::cmd("XREADGROUP")
                        .arg("GROUP")
                        .arg(group)
                        .arg(consumer)
                        .arg("COUNT")
                        .arg(max.max(1))
                        .arg("BLOCK")
                        .arg(wait.as_millis().max(1) as u64)
                        .arg("STREAMS")
                        .arg(&feed)
                        .arg(">"),
                    wait,
                )
                .await?;
            entries = reply
                .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
                .unwrap_or_default();
        }
        let mut finished = Vec::with_capacity(entries.len());
        let mut undecodable = Vec::new();
        for entry in entries {
            let raw: String = entry.get("m").unwrap_or_default();
            match serde_json::from_str::<Event>(&raw) {
                Ok(event) => finished.push(FinishedEntry {
                    id: entry.id,
                    event,
                }),
                Err(e) => {
                    tracing::warn!(id = %entry.id, error = %e, "undecodable finished entry skipped");
                    undecodable.push(entry.id);
                }
            }
        }
        self.ack_finished(group, &undecodable).await?;
        Ok(finished)
    }

    /// Acknowledge handled entries of the finished feed.
    pub async fn ack_finished(&self, group: &str, ids: &[String]) -> Result<(), BusError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.query::<u64>(
            redis::cmd("XACK")
                .arg(self.keys.finished())
                .arg(group)
                .arg(ids),
        )
        .await
        .map(|_| ())
    }

    /// Tell every listener of `channel` (under the prefix) `message`; nobody listening is fine.
    pub async fn announce(&self, channel: &str, message: &str) -> Result<(), BusError> {
        let channel = self.keys.channel(channel);
        self.query::<u64>(redis::cmd("PUBLISH").arg(channel).arg(message))
            .await
            .map(|_| ())
    }

    /// What is announced on `channel` from now on, until the connection breaks (then the stream
    /// ends, and the listener subscribes again).
    pub async fn listen(
        &self,
        channel: &str,
    ) -> Result<impl Stream<Item = String> + Send + 'static, BusError> {
        let mut pubsub = self.client.get_async_pubsub().await.map_err(unavailable)?;
        let channel = self.keys.channel(channel);
        pubsub.subscribe(channel).await.map_err(unavailable)?;
        Ok(pubsub
            .into_on_message()
            .filter_map(|message| async move { message.get_payload::<String>().ok() }))
    }
}

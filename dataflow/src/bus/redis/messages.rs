//! Stream entries in and out: JSON in the field `m`, delivery ids, stream order, the dead-letter
//! stream for what cannot be decoded or delivered, and the deployment's counters.

use redis::streams::{StreamClaimReply, StreamId};
use redis::Pipeline;
use serde::de::DeserializeOwned;
use serde::Serialize;
use walkoff_schema::ControlMessage;

use super::{BusError, RedisBus};

/// The dead-letter stream keeps about this many of the latest entries for operators.
pub(super) const DEAD_MAXLEN: usize = 100_000;

/// The executions a control message is about (a batch of results may span several).
pub(super) fn executions_of(message: &ControlMessage) -> Vec<String> {
    let mut ids: Vec<String> = match message {
        ControlMessage::Results { results } => {
            results.iter().map(|r| r.execution_id.clone()).collect()
        }
        other => vec![other.execution_id().to_string()],
    };
    ids.sort();
    ids.dedup();
    ids
}

pub(super) fn encode<T: Serialize>(message: &T) -> String {
    serde_json::to_string(message).expect("wire messages serialise")
}

/// Append `XADD stream * m <json>` to a pipeline.
pub(super) fn add_message<T: Serialize>(pipe: &mut Pipeline, stream: &str, message: &T) {
    pipe.cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("m")
        .arg(encode(message))
        .ignore();
}

/// Split a delivery id `"{n}|{entry}"` (n: a priority or a partition).
pub(super) fn split_delivery(id: &str) -> (u32, &str) {
    match id.split_once('|') {
        Some((n, entry)) => (n.parse().unwrap_or(0), entry),
        None => (0, id),
    }
}

/// A stream entry id (`{ms}-{seq}`) as numbers, to sort entries in stream order.
pub(super) fn entry_order(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// The milliseconds part of a stream entry id (`{ms}-{seq}`): when it was added, by Redis's clock.
pub(super) fn entry_millis(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
}

pub(super) fn decode_entry<T: DeserializeOwned>(entry: &StreamId) -> Result<T, String> {
    entry
        .get::<String>("m")
        .ok_or_else(|| "no field 'm'".to_string())
        .and_then(|m| serde_json::from_str::<T>(&m).map_err(|e| e.to_string()))
}

impl RedisBus {
    /// Move an entry that cannot be served to the dead-letter stream and acknowledge it.
    pub(super) async fn dead_letter(
        &self,
        stream: &str,
        group: &str,
        entry: &StreamId,
        reason: &str,
    ) {
        tracing::warn!(%stream, id = %entry.id, %reason, "message dead-lettered");
        let raw: String = entry.get("m").unwrap_or_default();
        let mut pipe = redis::pipe();
        self.add_dead_letter(&mut pipe, stream, &entry.id, reason, &raw);
        pipe.cmd("XACK")
            .arg(stream)
            .arg(group)
            .arg(&entry.id)
            .ignore();
        if let Err(e) = self.run(&pipe).await {
            tracing::warn!(error = %e, "could not dead-letter a message");
        }
    }

    pub(super) fn add_dead_letter(
        &self,
        pipe: &mut Pipeline,
        stream: &str,
        id: &str,
        reason: &str,
        raw: &str,
    ) {
        pipe.cmd("XADD")
            .arg(self.keys.dead_letters())
            .arg("MAXLEN")
            .arg("~")
            .arg(DEAD_MAXLEN)
            .arg("*")
            .arg("stream")
            .arg(stream)
            .arg("id")
            .arg(id)
            .arg("reason")
            .arg(reason)
            .arg("m")
            .arg(raw)
            .ignore();
    }

    /// Decode the entries of a group read; undecodable ones are dead-lettered.
    pub(super) async fn decode_entries<T: DeserializeOwned>(
        &self,
        stream: &str,
        group: &str,
        entries: Vec<StreamId>,
    ) -> Vec<(String, T)> {
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            match decode_entry::<T>(&entry) {
                Ok(message) => out.push((entry.id, message)),
                Err(reason) => self.dead_letter(stream, group, &entry, &reason).await,
            }
        }
        out
    }

    /// Raise a counter of `{prefix}:stats` by `by` within `pipe`.
    pub(super) fn count(&self, pipe: &mut Pipeline, stat: &str, by: u64) {
        if by > 0 {
            pipe.cmd("HINCRBY")
                .arg(self.keys.stats())
                .arg(stat)
                .arg(by)
                .ignore();
        }
    }

    /// `XCLAIM stream group consumer min-idle id…`: the entries now held by `consumer` (a claim
    /// counts a delivery).
    pub(super) async fn claim<Id: redis::ToRedisArgs>(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle_ms: u64,
        ids: &[Id],
    ) -> Result<StreamClaimReply, BusError> {
        self.query(
            redis::cmd("XCLAIM")
                .arg(stream)
                .arg(group)
                .arg(consumer)
                .arg(min_idle_ms)
                .arg(ids),
        )
        .await
    }
}

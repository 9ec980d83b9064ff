//! Housekeeping for the whole deployment, done by the worker owning partition 0:
//! - requests held by executors that stopped beating are handed out again (a new entry with its
//!   delivery count raised), or past their delivery limit moved to the dead-letter stream with a
//!   failure result for their node;
//! - requests for an app version no live executor serves fail their node once they have waited
//!   longer than the executor wait.
//!
//! Dead executors are told apart by their heartbeat, not by how long an entry has been idle, so a
//! long action on a live executor is never taken away from it.

use std::time::Duration;

use chrono::Utc;
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use walkoff_schema::{ActionRequest, AppRef, ControlMessage, NodeResult, Outcome};

use super::actions::parse_app;
use super::messages::{add_message, decode_entry, encode, entry_millis};
use super::{
    BusError, RedisBus, EXECUTORS, PRIORITIES, STAT_ACTIONS_DEAD_LETTERED,
    STAT_ACTIONS_HANDED_OUT_AGAIN,
};

/// Entries taken from one dead consumer per pass.
const RECLAIM_BATCH: usize = 500;

/// A pending-summary reply: count, smallest id, greatest id, and (consumer, count) pairs.
type PendingSummary = (
    usize,
    Option<String>,
    Option<String>,
    Option<Vec<(String, String)>>,
);

impl RedisBus {
    pub(super) async fn maintain_streams(
        &self,
        consumer: &str,
        executor_wait: Duration,
    ) -> Result<(), BusError> {
        if !self.leases.owns(0) {
            return Ok(());
        }
        let apps: Vec<String> = self
            .query(redis::cmd("SMEMBERS").arg(self.keys.apps()))
            .await?;
        let reclaimer = format!("reclaim:{consumer}");
        let now = self.now_ms().await?;
        for app in apps.iter().filter_map(|a| parse_app(a)) {
            let ttl = self.config.executor_ttl.as_millis() as u64;
            let executors = self.keys.executors(&app);
            let (live,): (Vec<String>,) = redis::pipe()
                .cmd("ZREMRANGEBYSCORE")
                .arg(&executors)
                .arg("-inf")
                .arg(format!("({}", now.saturating_sub(ttl)))
                .ignore()
                .cmd("ZRANGE")
                .arg(&executors)
                .arg(0)
                .arg(-1)
                .query_async(&mut self.writer.clone())
                .await
                .map_err(super::unavailable)?;
            self.ensure_action_groups(&app).await?;
            for priority in PRIORITIES {
                let stream = self.keys.action_stream(&app, priority);
                let summary: PendingSummary = self
                    .query(redis::cmd("XPENDING").arg(&stream).arg(EXECUTORS))
                    .await?;
                for (holder, _) in summary.3.unwrap_or_default() {
                    if !live.contains(&holder) {
                        self.reclaim(&stream, &holder, &reclaimer).await?;
                    }
                }
                if live.is_empty() {
                    self.fail_unserved(&stream, &app, &reclaimer, now, executor_wait)
                        .await?;
                }
            }
            // What the executors are done with leaves the streams; nothing else ever does.
            let streams: Vec<(String, &str)> = PRIORITIES
                .iter()
                .map(|&p| (self.keys.action_stream(&app, p), EXECUTORS))
                .collect();
            self.trim_consumed(&streams).await?;
        }
        Ok(())
    }

    /// Take the requests `holder` (a dead executor) never answered and hand them out again.
    async fn reclaim(&self, stream: &str, holder: &str, reclaimer: &str) -> Result<(), BusError> {
        let pending: Vec<(String, String, u64, u64)> = self
            .query(
                redis::cmd("XPENDING")
                    .arg(stream)
                    .arg(EXECUTORS)
                    .arg("-")
                    .arg("+")
                    .arg(RECLAIM_BATCH)
                    .arg(holder),
            )
            .await?;
        if !pending.is_empty() {
            let ids: Vec<&str> = pending.iter().map(|p| p.0.as_str()).collect();
            let claimed = self.claim(stream, EXECUTORS, reclaimer, 0, &ids).await?;
            tracing::warn!(%stream, executor = %holder, requests = claimed.ids.len(),
                "executor presumed dead: its requests are handed out again");
            self.requeue(stream, claimed.ids, |_, request| {
                (request.max_deliveries > 0 && request.delivery >= request.max_deliveries).then(
                    || Failed {
                        error: format!(
                            "the action was delivered {} times and its executor died each time; \
                             the request is in the dead-letter stream",
                            request.delivery
                        ),
                        dead_letter: true,
                    },
                )
            })
            .await?;
        }
        if pending.len() < RECLAIM_BATCH {
            // Nothing of it is pending any more: forget the consumer.
            self.query::<u64>(
                redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(stream)
                    .arg(EXECUTORS)
                    .arg(holder),
            )
            .await?;
        }
        Ok(())
    }

    /// With no executor of `app` alive, fail the requests that have waited longer than `wait`.
    async fn fail_unserved(
        &self,
        stream: &str,
        app: &AppRef,
        reclaimer: &str,
        now: u64,
        wait: Duration,
    ) -> Result<(), BusError> {
        let groups: Vec<redis::Value> = self
            .query(redis::cmd("XINFO").arg("GROUPS").arg(stream))
            .await?;
        let last_delivered = groups
            .iter()
            .filter_map(group_fields)
            .find(|(name, _)| name == EXECUTORS)
            .map(|(_, last)| last)
            .unwrap_or_else(|| "0-0".into());
        let deadline = now.saturating_sub(wait.as_millis() as u64);
        let waiting: StreamRangeReply = self
            .query(
                redis::cmd("XRANGE")
                    .arg(stream)
                    .arg(format!("({last_delivered}"))
                    .arg("+")
                    .arg("COUNT")
                    .arg(RECLAIM_BATCH),
            )
            .await?;
        let overdue = waiting
            .ids
            .iter()
            .take_while(|e| entry_millis(&e.id) < deadline)
            .count();
        if overdue == 0 {
            return Ok(());
        }
        let read: Option<StreamReadReply> = self
            .query(
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(EXECUTORS)
                    .arg(reclaimer)
                    .arg("COUNT")
                    .arg(overdue)
                    .arg("STREAMS")
                    .arg(stream)
                    .arg(">"),
            )
            .await?;
        let entries: Vec<StreamId> = read
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default();
        let seconds = wait.as_secs_f64();
        tracing::warn!(%stream, requests = entries.len(), "no executor of {app} is running");
        self.requeue(stream, entries, |added, _| {
            (added < deadline).then(|| Failed {
                error: format!(
                    "no executor of app '{}' version '{}' is running: none took the request \
                     within {seconds} s",
                    app.name, app.version
                ),
                dead_letter: false,
            })
        })
        .await
    }

    /// For each entry now held by the reclaimer, `verdict` (given when the entry was added and the
    /// request) decides: `None` hands it out again as a new entry with one more delivery; `Some`
    /// fails its node. Everything for one stream goes out in one transaction.
    async fn requeue(
        &self,
        stream: &str,
        entries: Vec<StreamId>,
        verdict: impl Fn(u64, &ActionRequest) -> Option<Failed>,
    ) -> Result<(), BusError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        let (mut again, mut dead) = (0u64, 0u64);
        for entry in entries {
            match decode_entry::<ActionRequest>(&entry) {
                Err(reason) => {
                    let raw: String = entry.get("m").unwrap_or_default();
                    self.add_dead_letter(&mut pipe, stream, &entry.id, &reason, &raw);
                }
                Ok(mut request) => match verdict(entry_millis(&entry.id), &request) {
                    None => {
                        again += 1;
                        request.delivery = request.delivery.max(1) + 1;
                        pipe.cmd("XADD")
                            .arg(stream)
                            .arg("*")
                            .arg("m")
                            .arg(encode(&request))
                            .ignore();
                    }
                    Some(Failed { error, dead_letter }) => {
                        if dead_letter {
                            dead += 1;
                            self.add_dead_letter(
                                &mut pipe,
                                stream,
                                &entry.id,
                                &error,
                                &encode(&request),
                            );
                        }
                        let now = Utc::now();
                        let result = NodeResult {
                            execution_id: request.execution_id.clone(),
                            node_id: request.node_id,
                            shard: request.shard,
                            attempt: request.attempt,
                            outcome: Outcome::Failure {
                                error,
                                retryable: false,
                            },
                            started_at: now,
                            finished_at: now,
                        };
                        add_message(
                            &mut pipe,
                            &self
                                .keys
                                .control_stream_of(&request.execution_id, self.partitions),
                            &ControlMessage::Result(result),
                        );
                    }
                },
            }
            pipe.cmd("XACK")
                .arg(stream)
                .arg(EXECUTORS)
                .arg(&entry.id)
                .ignore();
        }
        self.count(&mut pipe, STAT_ACTIONS_HANDED_OUT_AGAIN, again);
        self.count(&mut pipe, STAT_ACTIONS_DEAD_LETTERED, dead);
        self.run(&pipe).await
    }
}

/// Why a request is not handed out again.
struct Failed {
    error: String,
    /// Also keep the request in the dead-letter stream.
    dead_letter: bool,
}

/// (name, last-delivered-id) of one `XINFO GROUPS` entry.
fn group_fields(group: &redis::Value) -> Option<(String, String)> {
    let fields: std::collections::HashMap<String, redis::Value> =
        redis::FromRedisValue::from_redis_value(group.clone()).ok()?;
    let text = |key: &str| -> Option<String> {
        redis::FromRedisValue::from_redis_value(fields.get(key)?.clone()).ok()
    };
    Some((text("name")?, text("last-delivered-id")?))
}

//! Control messages: one stream per partition, read by the owner of the partition (group
//! `workers`); taking everything pending on a partition gained, dead-lettering what no worker could
//! commit, adopting what a former owner left, trimming what is consumed; and execution logs.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use redis::streams::{StreamId, StreamReadReply};
use redis::Cmd;
use walkoff_schema::{ControlMessage, ExecutionId};

use super::messages::{add_message, entry_order, executions_of, split_delivery};
use super::{
    lock, partition_of, unavailable, BusError, ControlBatch, Delivery, DeliveryId, ExecutionRecord,
    Partition, RedisBus, MAX_CONTROL_DELIVERIES, STAT_CONTROL_DEAD_LETTERED, WORKERS,
};

impl RedisBus {
    /// Read every entry of `partition` still pending (with any consumer) into `consumer`.
    /// Whether owned partitions are due their upkeep (twice per `stranded_after`).
    pub(super) fn upkeep_due(&self) -> bool {
        lock(&self.upkept_at).elapsed() >= self.config.stranded_after / 2
    }

    /// Drop from each (stream, group) what the group is done with: entries older than the oldest
    /// one still pending, or when none is, than the last one delivered. Nothing pending or not yet
    /// delivered is touched, however long the backlog. (Entries are added with growing ids, so one
    /// delivered or claimed after the look is never below the bound.)
    pub(super) async fn trim_consumed(&self, streams: &[(String, &str)]) -> Result<(), BusError> {
        let mut look = redis::pipe();
        for (stream, group) in streams {
            look.cmd("XINFO").arg("GROUPS").arg(stream);
            look.cmd("XPENDING").arg(stream).arg(*group);
        }
        let replies: Vec<redis::Value> = look
            .query_async(&mut self.writer.clone())
            .await
            .map_err(|e| self.failed(e))?;
        let mut trims = redis::pipe();
        for ((stream, group), pair) in streams.iter().zip(replies.chunks(2)) {
            let [groups, pending] = pair else { continue };
            let groups: redis::streams::StreamInfoGroupsReply =
                redis::FromRedisValue::from_redis_value(groups.clone())
                    .map_err(|e| self.failed(e.into()))?;
            let pending: redis::streams::StreamPendingReply =
                redis::FromRedisValue::from_redis_value(pending.clone())
                    .map_err(|e| self.failed(e.into()))?;
            let delivered = groups
                .groups
                .iter()
                .find(|g| g.name == *group)
                .map(|g| g.last_delivered_id.clone());
            let keep_from = match pending {
                redis::streams::StreamPendingReply::Data(data) if data.count > 0 => {
                    Some(data.start_id)
                }
                _ => delivered,
            };
            // "0-0": the group has delivered nothing yet, so there is nothing to trim.
            if let Some(id) = keep_from.filter(|id| id != "0-0") {
                trims.cmd("XTRIM").arg(stream).arg("MINID").arg(id).ignore();
            }
        }
        if trims.is_empty() {
            return Ok(());
        }
        self.run(&trims).await
    }

    /// Control messages of `partitions` pending for `stranded_after` under other consumers, claimed
    /// for `consumer`. A worker reading as it loses a partition (its read pipelined with a commit
    /// that is then fenced) leaves what it read pending under its name, where nothing else would
    /// look; only the owner applies a partition's messages, so those are the owner's to take.
    pub(super) async fn adopt_stranded(
        &self,
        partitions: &[Partition],
        consumer: &str,
    ) -> Result<Vec<Delivery<ControlMessage>>, BusError> {
        let idle = self.config.stranded_after.as_millis() as u64;
        let mut pending = redis::pipe();
        for &p in partitions {
            pending
                .cmd("XPENDING")
                .arg(self.keys.control_stream(p))
                .arg(WORKERS)
                .arg("IDLE")
                .arg(idle)
                .arg("-")
                .arg("+")
                .arg(1000);
        }
        let replies: Vec<redis::streams::StreamPendingCountReply> = pending
            .query_async(&mut self.writer.clone())
            .await
            .map_err(|e| self.failed(e))?;
        let mut deliveries = Vec::new();
        for (&p, reply) in partitions.iter().zip(replies) {
            let stranded: Vec<_> = reply
                .ids
                .into_iter()
                .filter(|pending| pending.consumer != consumer)
                .collect();
            if stranded.is_empty() {
                continue;
            }
            let stream = self.keys.control_stream(p);
            tracing::warn!(
                partition = p,
                count = stranded.len(),
                "taking over control messages left pending by a former owner"
            );
            let ids: Vec<&str> = stranded.iter().map(|s| s.id.as_str()).collect();
            let claimed = self.claim(&stream, WORKERS, consumer, idle, &ids).await?;
            for (id, message) in self
                .decode_entries::<ControlMessage>(&stream, WORKERS, claimed.ids)
                .await
            {
                let times = stranded
                    .iter()
                    .find(|s| s.id == id)
                    .map_or(2, |s| s.times_delivered + 1);
                deliveries.push(Delivery {
                    id: format!("{p}|{id}"),
                    deliveries: times as u32,
                    message,
                });
            }
        }
        Ok(deliveries)
    }

    /// Everything pending on a partition just gained (or gained again after a failed commit),
    /// in stream order. Another worker's messages are claimed, which counts a delivery; this
    /// worker's own (read before a commit failed) are read again as they are, which does not:
    /// so the count says how many workers took a message without committing it, and past
    /// [`MAX_CONTROL_DELIVERIES`] the message is dead-lettered instead of handed on.
    pub(super) async fn claim_all_pending(
        &self,
        partition: Partition,
        consumer: &str,
    ) -> Result<Vec<Delivery<ControlMessage>>, BusError> {
        let stream = self.keys.control_stream(partition);
        self.ensure_group(&stream, WORKERS).await?;
        let pending = self.pending_entries(&stream).await?;
        let (mine, others): (Vec<_>, Vec<_>) =
            pending.into_iter().partition(|p| p.consumer == consumer);
        let (overdelivered, others): (Vec<_>, Vec<_>) = others
            .into_iter()
            .partition(|p| p.times_delivered >= MAX_CONTROL_DELIVERIES);
        if !overdelivered.is_empty() {
            let ids: Vec<String> = overdelivered.into_iter().map(|p| p.id).collect();
            self.dead_letter_control(&stream, &ids).await?;
        }
        let mut entries: Vec<(StreamId, usize)> = Vec::new();
        for chunk in mine.chunks(1000) {
            let mut pipe = redis::pipe();
            for p in chunk {
                pipe.cmd("XRANGE").arg(&stream).arg(&p.id).arg(&p.id);
            }
            let replies: Vec<redis::streams::StreamRangeReply> = pipe
                .query_async(&mut self.writer.clone())
                .await
                .map_err(|e| self.failed(e))?;
            for (reply, p) in replies.into_iter().zip(chunk) {
                entries.extend(reply.ids.into_iter().map(|e| (e, p.times_delivered)));
            }
        }
        for chunk in others.chunks(1000) {
            let ids: Vec<&str> = chunk.iter().map(|p| p.id.as_str()).collect();
            let claimed = self.claim(&stream, WORKERS, consumer, 0, &ids).await?;
            for entry in claimed.ids {
                let times = chunk
                    .iter()
                    .find(|p| p.id == entry.id)
                    .map_or(2, |p| p.times_delivered + 1);
                entries.push((entry, times));
            }
        }
        entries.sort_by_key(|(entry, _)| entry_order(&entry.id));
        let times: HashMap<String, usize> = entries
            .iter()
            .map(|(entry, times)| (entry.id.clone(), *times))
            .collect();
        let entries = entries.into_iter().map(|(entry, _)| entry).collect();
        Ok(self
            .decode_entries::<ControlMessage>(&stream, WORKERS, entries)
            .await
            .into_iter()
            .map(|(id, message)| Delivery {
                deliveries: times.get(&id).copied().unwrap_or(2).max(1) as u32,
                id: format!("{partition}|{id}"),
                message,
            })
            .collect())
    }

    /// Every entry pending in `stream`'s worker group: id, holder and delivery count.
    pub(super) async fn pending_entries(
        &self,
        stream: &str,
    ) -> Result<Vec<redis::streams::StreamPendingId>, BusError> {
        let mut pending = Vec::new();
        let mut start = "-".to_string();
        loop {
            let page: redis::streams::StreamPendingCountReply = self
                .query(
                    redis::cmd("XPENDING")
                        .arg(stream)
                        .arg(WORKERS)
                        .arg(&start)
                        .arg("+")
                        .arg(1000),
                )
                .await?;
            let full = page.ids.len() == 1000;
            if let Some(last) = page.ids.last() {
                start = format!("({}", last.id);
            }
            pending.extend(page.ids);
            if !full {
                return Ok(pending);
            }
        }
    }

    /// Dead-letter these control messages of `stream` and abort their executions (an abort
    /// itself is only dead-lettered): the execution ends instead of taking every worker down in
    /// turn, or hanging.
    pub(super) async fn dead_letter_control(
        &self,
        stream: &str,
        ids: &[String],
    ) -> Result<(), BusError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for id in ids {
            let entries: redis::streams::StreamRangeReply = self
                .query(redis::cmd("XRANGE").arg(stream).arg(id).arg(id))
                .await?;
            let raw: String = entries
                .ids
                .first()
                .and_then(|entry| entry.get("m"))
                .unwrap_or_default();
            let message = serde_json::from_str::<ControlMessage>(&raw).ok();
            let executions = message.as_ref().map(executions_of).unwrap_or_default();
            let reason = format!(
                "taken by {MAX_CONTROL_DELIVERIES} workers and committed by none (each stopped \
                 before committing it): dead-lettered, and its executions ({}) aborted",
                executions.join(", ")
            );
            tracing::error!(stream, id, executions = ?executions, "a control message no worker could commit is dead-lettered");
            self.add_dead_letter(&mut pipe, stream, id, &reason, &raw);
            if !matches!(message, Some(ControlMessage::Abort { .. })) {
                for execution_id in executions {
                    add_message(&mut pipe, stream, &ControlMessage::Abort { execution_id });
                }
            }
            pipe.cmd("XACK").arg(stream).arg(WORKERS).arg(id).ignore();
        }
        self.count(&mut pipe, STAT_CONTROL_DEAD_LETTERED, ids.len() as u64);
        self.run(&pipe).await
    }

    /// The blocking (or, with no wait, immediate) read of the worker's partitions.
    pub(super) async fn control_read_cmd(
        &self,
        partitions: &[Partition],
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Cmd, BusError> {
        let streams: Vec<String> = partitions
            .iter()
            .map(|&p| self.keys.control_stream(p))
            .collect();
        for stream in &streams {
            self.ensure_group(stream, WORKERS).await?;
        }
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(WORKERS)
            .arg(consumer)
            .arg("COUNT")
            .arg(max.max(1));
        if !wait.is_zero() {
            cmd.arg("BLOCK").arg(wait.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS").arg(&streams);
        for _ in &streams {
            cmd.arg(">");
        }
        Ok(cmd)
    }

    /// Decode a control read; undecodable entries are dead-lettered.
    pub(super) async fn control_deliveries(
        &self,
        reply: Option<StreamReadReply>,
    ) -> Vec<Delivery<ControlMessage>> {
        let mut deliveries = Vec::new();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            let partition = key
                .key
                .rsplit(':')
                .next()
                .and_then(|p| p.parse::<Partition>().ok())
                .unwrap_or(0);
            for (id, message) in self
                .decode_entries::<ControlMessage>(&key.key, WORKERS, key.ids)
                .await
            {
                deliveries.push(Delivery {
                    id: format!("{partition}|{id}"),
                    deliveries: 1,
                    message,
                });
            }
        }
        deliveries
    }

    pub(super) async fn read_control(
        &self,
        partitions: &[Partition],
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery<ControlMessage>>, BusError> {
        let cmd = self
            .control_read_cmd(partitions, consumer, max, wait)
            .await?;
        let reply: Option<StreamReadReply> = if wait.is_zero() {
            self.query(&cmd).await?
        } else {
            self.blocking(&cmd, wait).await?
        };
        Ok(self.control_deliveries(reply).await)
    }

    pub(super) async fn load_logs(
        &self,
        ids: &[ExecutionId],
    ) -> Result<Vec<Vec<ControlMessage>>, BusError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("LRANGE").arg(self.keys.log(id)).arg(0).arg(-1);
        }
        let raw: Vec<Vec<String>> = pipe
            .query_async(&mut self.writer.clone())
            .await
            .map_err(unavailable)?;
        Ok(raw
            .into_iter()
            .zip(ids)
            .map(|(entries, id)| {
                entries
                    .iter()
                    .filter_map(|m| match serde_json::from_str(m) {
                        Ok(message) => Some(message),
                        Err(e) => {
                            tracing::error!(execution = %id, error = %e, "undecodable log entry skipped");
                            None
                        }
                    })
                    .collect()
            })
            .collect())
    }

    pub(super) async fn send_control_messages(
        &self,
        messages: Vec<ControlMessage>,
    ) -> Result<(), BusError> {
        self.check_open()?;
        if messages.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for message in &messages {
            add_message(
                &mut pipe,
                &self
                    .keys
                    .control_stream_of(message.execution_id(), self.partitions),
                message,
            );
        }
        self.run(&pipe).await
    }

    pub(super) async fn take_control(
        &self,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<ControlBatch, BusError> {
        self.check_open()?;
        self.loop_came_back();
        self.become_worker(consumer).await?;
        let changes = self.take_lease_changes().await;
        if !changes.gained.is_empty() || !changes.lost.is_empty() {
            let mut deliveries = Vec::new();
            for &partition in &changes.gained {
                match self.claim_all_pending(partition, consumer).await {
                    Ok(claimed) => deliveries.extend(claimed),
                    Err(e) => {
                        // Reported again next time, with whatever is pending then.
                        self.leases.regain(&changes.gained);
                        return Err(e);
                    }
                }
            }
            return Ok(ControlBatch {
                deliveries,
                gained: changes.gained,
                lost: changes.lost,
            });
        }
        let owned = self.leases.owned();
        if owned.is_empty() {
            // Nothing to read until a partition comes our way.
            let _ = tokio::time::timeout(wait, self.leases.changed.notified()).await;
            self.check_open()?;
            return Ok(ControlBatch::default());
        }
        if self.upkeep_due() {
            *lock(&self.upkept_at) = Instant::now();
            // Upkeep is worth a warning, not a stop: the next one comes in a few seconds.
            let controls: Vec<(String, &str)> = owned
                .iter()
                .map(|&p| (self.keys.control_stream(p), WORKERS))
                .collect();
            if let Err(e) = self.trim_consumed(&controls).await {
                tracing::warn!(error = %e, "could not trim the control streams");
            }
            match self.adopt_stranded(&owned, consumer).await {
                Ok(adopted) if !adopted.is_empty() => {
                    return Ok(ControlBatch {
                        deliveries: adopted,
                        ..ControlBatch::default()
                    })
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not look for stranded messages"),
            }
        }
        Ok(ControlBatch {
            deliveries: self.read_control(&owned, consumer, max, wait).await?,
            ..ControlBatch::default()
        })
    }

    pub(super) async fn ack_control_messages(&self, ids: Vec<DeliveryId>) -> Result<(), BusError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut by_partition: BTreeMap<Partition, Vec<&str>> = BTreeMap::new();
        for id in &ids {
            let (partition, entry) = split_delivery(id);
            by_partition.entry(partition).or_default().push(entry);
        }
        let mut pipe = redis::pipe();
        for (partition, entries) in by_partition {
            pipe.cmd("XACK")
                .arg(self.keys.control_stream(partition))
                .arg(WORKERS)
                .arg(entries)
                .ignore();
        }
        self.run(&pipe).await
    }

    pub(super) async fn look_up_executions(
        &self,
        ids: &[ExecutionId],
    ) -> Result<Vec<ExecutionRecord>, BusError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("SISMEMBER")
                .arg(self.keys.running(partition_of(id, self.partitions)))
                .arg(id);
            pipe.cmd("EXISTS").arg(self.keys.log(id));
        }
        let flags: Vec<bool> = pipe
            .query_async(&mut self.writer.clone())
            .await
            .map_err(unavailable)?;
        let running: Vec<ExecutionId> = ids
            .iter()
            .zip(flags.chunks(2))
            .filter(|(_, f)| f[0])
            .map(|(id, _)| id.clone())
            .collect();
        let mut logs = self.load_logs(&running).await?.into_iter();
        Ok(flags
            .chunks(2)
            .map(|f| match (f[0], f[1]) {
                (true, _) => ExecutionRecord::Running(logs.next().unwrap_or_default()),
                (false, true) => ExecutionRecord::Finished,
                (false, false) => ExecutionRecord::Absent,
            })
            .collect())
    }

    pub(super) async fn running_of_partition(
        &self,
        partition: Partition,
    ) -> Result<Vec<(ExecutionId, Vec<ControlMessage>)>, BusError> {
        let ids: Vec<ExecutionId> = self
            .query(redis::cmd("SMEMBERS").arg(self.keys.running(partition)))
            .await?;
        let logs = self.load_logs(&ids).await?;
        Ok(ids.into_iter().zip(logs).collect())
    }
}

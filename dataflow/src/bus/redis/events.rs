//! Execution events: appended in order by sequence number (each stored once, however often it is
//! published), read from any sequence number, blocking for the next.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::streams::{StreamId, StreamReadReply};
use walkoff_schema::Event;

use super::messages::encode;
use super::{feeds, unavailable, BusError, RedisBus};

/// Appends events whose sequence number is above the stream's last one, in order.
pub(super) const PUBLISH_EVENTS: &str = r#"
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local seq = 0
if #last > 0 then seq = tonumber(string.match(last[1][1], '%-(%d+)$')) end
for i = 1, #ARGV, 2 do
  local next = tonumber(ARGV[i])
  if next > seq then
    redis.call('XADD', KEYS[1], '0-' .. next, 'm', ARGV[i + 1])
    seq = next
  end
end
return seq
"#;

pub(super) fn publish_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(PUBLISH_EVENTS))
}

/// Events grouped by execution, each group in the order given.
pub(super) fn by_execution(events: &[Event]) -> BTreeMap<&str, Vec<&Event>> {
    let mut grouped: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for event in events {
        grouped.entry(&event.execution_id).or_default().push(event);
    }
    grouped
}

impl RedisBus {
    pub(super) async fn append_events(&self, events: Vec<Event>) -> Result<(), BusError> {
        if events.is_empty() {
            return Ok(());
        }
        let script = publish_script();
        for (execution, events) in by_execution(&events) {
            let mut invocation = script.key(self.keys.events(execution));
            for event in events {
                invocation.arg(event.seq).arg(encode(event));
            }
            // `invoke_async` loads the script again when Redis has forgotten it (a restart).
            invocation
                .invoke_async::<u64>(&mut self.writer.clone())
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    pub(super) async fn events_from(
        &self,
        execution_id: &str,
        from_seq: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Event>, BusError> {
        let stream = self.keys.events(execution_id);
        let from_seq = from_seq.max(1);
        let entries: Vec<StreamId> = {
            let reply: redis::streams::StreamRangeReply = self
                .query(
                    redis::cmd("XRANGE")
                        .arg(&stream)
                        .arg(format!("0-{from_seq}"))
                        .arg("+")
                        .arg("COUNT")
                        .arg(max.max(1)),
                )
                .await?;
            reply.ids
        };
        let entries = if entries.is_empty() && !wait.is_zero() {
            if self.closed.load(Ordering::Acquire) {
                return Err(BusError::Closed);
            }
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(max.max(1))
                .arg("BLOCK")
                .arg(wait.as_millis().max(1) as u64)
                .arg("STREAMS")
                .arg(&stream)
                .arg(format!("0-{}", from_seq - 1));
            let reply: Option<StreamReadReply> = self.blocking(&cmd, wait).await?;
            reply
                .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
                .unwrap_or_default()
        } else {
            entries
        };
        Ok(feeds::decode_events(&stream, entries))
    }
}

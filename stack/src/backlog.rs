//! An app version's backlog in a Redis deployment: over its five action streams (one per
//! priority), the requests its executors have not taken yet (the group's lag) and those taken
//! but not finished (pending). Both are what more replicas would help with.

use redis::aio::ConnectionLike;
use redis::Value;
use walkoff_dataflow::bus::{RedisKeys, EXECUTORS};
use walkoff_schema::AppRef;

/// Requests waiting and in hand, for one app version's executors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    /// Not yet delivered to any executor.
    pub waiting: u64,
    /// Delivered, not yet acknowledged.
    pub pending: u64,
}

impl Backlog {
    pub fn total(&self) -> u64 {
        self.waiting + self.pending
    }
}

fn field<'a>(group: &'a [Value], name: &str) -> Option<&'a Value> {
    group
        .chunks(2)
        .find(|pair| matches!(&pair[0], Value::BulkString(b) if b == name.as_bytes()))
        .and_then(|pair| pair.get(1))
}

fn number(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Int(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

/// The backlog of `app`'s executors. A stream nobody has written to yet counts as empty; where
/// Redis cannot tell a group's lag (entries deleted past it), the stream's length stands in for it.
pub async fn app_backlog<C: ConnectionLike>(
    connection: &mut C,
    keys: &RedisKeys,
    app: &AppRef,
) -> redis::RedisResult<Backlog> {
    let mut backlog = Backlog::default();
    for priority in 1..=5 {
        let stream = keys.action_stream(app, priority);
        let exists: bool = redis::cmd("EXISTS")
            .arg(&stream)
            .query_async(connection)
            .await?;
        if !exists {
            continue;
        }
        let groups: Vec<Value> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&stream)
            .query_async(connection)
            .await?;
        let executors = groups.iter().find_map(|group| match group {
            Value::Array(fields)
                if matches!(field(fields, "name"), Some(Value::BulkString(n)) if n == EXECUTORS.as_bytes()) =>
            {
                Some(fields.as_slice())
            }
            _ => None,
        });
        // No executor ever started, or a lag Redis cannot tell: count the stream's entries.
        let lag = executors.and_then(|fields| number(field(fields, "lag")));
        backlog.pending += executors
            .and_then(|fields| number(field(fields, "pending")))
            .unwrap_or(0);
        backlog.waiting += match lag {
            Some(lag) => lag,
            None => {
                redis::cmd("XLEN")
                    .arg(&stream)
                    .query_async::<u64>(connection)
                    .await?
            }
        };
    }
    Ok(backlog)
}

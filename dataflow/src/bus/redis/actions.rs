//! Action requests: one stream per app version and priority, read by the `executors` group, highest
//! priority first; results reported with the acknowledgement in one transaction; and the registry
//! of app APIs.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use redis::streams::{StreamId, StreamReadReply};
use redis::{Cmd, Pipeline};
use walkoff_schema::{ActionRequest, AppApi, AppCatalog, AppRef, ControlMessage, NodeResult};

use super::messages::{encode, split_delivery};
use super::{
    lock, partition_of, BusError, Delivery, DeliveryId, Partition, RedisBus, EXECUTORS, HEARTBEAT,
    PRIORITIES,
};

/// Reads up to ARGV[3] new entries for consumer ARGV[2] of group ARGV[1], from the streams in KEYS
/// in order (highest priority first): one round trip, and never more than asked for.
pub(super) const READ_BY_PRIORITY: &str = r#"
local out = {}
local wanted = tonumber(ARGV[3])
for i = 1, #KEYS do
  if wanted <= 0 then break end
  local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', wanted, 'STREAMS', KEYS[i], '>')
  if reply then
    for _, entry in ipairs(reply[1][2]) do
      if entry[2] then
        table.insert(out, {KEYS[i], entry[1], entry[2]})
        wanted = wanted - 1
      end
    end
  end
end
return out
"#;

pub(super) fn read_by_priority_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(READ_BY_PRIORITY))
}

/// `name@version` as stored in the apps set.
pub(super) fn parse_app(text: &str) -> Option<AppRef> {
    let (name, version) = text.rsplit_once('@')?;
    Some(AppRef {
        name: name.to_string(),
        version: version.to_string(),
    })
}

impl RedisBus {
    /// Create the app's five streams and groups once; true when this call created them.
    pub(super) async fn ensure_action_groups(&self, app: &AppRef) -> Result<bool, BusError> {
        let known = lock(&self.groups).contains(&format!(
            "{}\u{0}{EXECUTORS}",
            self.keys.action_stream(app, 1)
        ));
        if known {
            return Ok(false);
        }
        for p in PRIORITIES {
            self.ensure_group(&self.keys.action_stream(app, p), EXECUTORS)
                .await?;
        }
        Ok(true)
    }

    /// One `XREADGROUP` on the given priority streams of `app`; blocking when `block` is set.
    pub(super) async fn read_actions(
        &self,
        app: &AppRef,
        consumer: &str,
        priorities: &[u8],
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<Delivery<ActionRequest>>, BusError> {
        let cmd = self.read_actions_cmd(app, consumer, priorities, count, block);
        let reply: Option<StreamReadReply> = match block {
            Some(block) => self.blocking(&cmd, block).await?,
            None => self.query(&cmd).await?,
        };
        Ok(self.action_deliveries(reply).await)
    }

    pub(super) fn read_actions_cmd(
        &self,
        app: &AppRef,
        consumer: &str,
        priorities: &[u8],
        count: usize,
        block: Option<Duration>,
    ) -> Cmd {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(EXECUTORS)
            .arg(consumer)
            .arg("COUNT")
            .arg(count.max(1));
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS");
        for &p in priorities {
            cmd.arg(self.keys.action_stream(app, p));
        }
        for _ in priorities {
            cmd.arg(">");
        }
        cmd
    }

    /// The requests of a read of action streams, highest priority first, then in stream order;
    /// undecodable entries are dead-lettered.
    pub(super) async fn action_deliveries(
        &self,
        reply: Option<StreamReadReply>,
    ) -> Vec<Delivery<ActionRequest>> {
        let mut deliveries = Vec::new();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            let priority = key
                .key
                .rsplit(":p")
                .next()
                .and_then(|p| p.parse::<u8>().ok())
                .unwrap_or(3);
            for (id, request) in self
                .decode_entries::<ActionRequest>(&key.key, EXECUTORS, key.ids)
                .await
            {
                deliveries.push(Delivery {
                    id: format!("{priority}|{id}"),
                    deliveries: request.delivery.max(1),
                    message: request,
                });
            }
        }
        deliveries.sort_by_key(|d| std::cmp::Reverse(d.message.priority));
        deliveries
    }

    /// The writes reporting `done`, in one `MULTI`/`EXEC`: each result on its execution's control
    /// partition (one entry per partition: a batch is one entry to read and acknowledge, not one per
    /// result), then one `XACK` per priority stream. A request is acknowledged only with its result:
    /// when Redis refuses the `XADD` (out of memory), the transaction is dropped whole and the
    /// request stays pending, to be handed out again if this executor dies before it reports.
    pub(super) fn add_completions(
        &self,
        pipe: &mut Pipeline,
        app: &AppRef,
        done: Vec<(DeliveryId, NodeResult)>,
    ) {
        pipe.cmd("MULTI");
        let mut acks = Vec::with_capacity(done.len());
        let mut by_partition: BTreeMap<Partition, Vec<NodeResult>> = BTreeMap::new();
        for (id, result) in done {
            by_partition
                .entry(partition_of(&result.execution_id, self.partitions))
                .or_default()
                .push(result);
            acks.push(id);
        }
        for (partition, mut results) in by_partition {
            let message = if results.len() == 1 {
                ControlMessage::Result(results.remove(0))
            } else {
                ControlMessage::Results { results }
            };
            pipe.cmd("XADD")
                .arg(self.keys.control_stream(partition))
                .arg("*")
                .arg("m")
                .arg(encode(&message));
        }
        let mut by_priority: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
        for id in &acks {
            let (priority, entry) = split_delivery(id);
            by_priority.entry(priority).or_default().push(entry);
        }
        for (priority, entries) in by_priority {
            pipe.cmd("XACK")
                .arg(self.keys.action_stream(app, priority as u8))
                .arg(EXECUTORS)
                .arg(entries);
        }
        pipe.cmd("EXEC");
    }

    pub(super) async fn read_by_priority(
        &self,
        app: &AppRef,
        consumer: &str,
        max: usize,
    ) -> Result<Vec<Delivery<ActionRequest>>, BusError> {
        let mut invocation = read_by_priority_script().prepare_invoke();
        for p in PRIORITIES {
            invocation.key(self.keys.action_stream(app, p));
        }
        invocation.arg(EXECUTORS).arg(consumer).arg(max);
        let entries: Vec<(String, String, Vec<String>)> = invocation
            .invoke_async(&mut self.writer.clone())
            .await
            .map_err(|e| self.failed(e))?;
        let mut deliveries = Vec::with_capacity(entries.len());
        for (stream, id, fields) in entries {
            let raw = fields
                .chunks(2)
                .find(|pair| pair[0] == "m")
                .and_then(|pair| pair.get(1).cloned());
            let decoded = raw
                .as_deref()
                .ok_or_else(|| "no field 'm'".to_string())
                .and_then(|m| serde_json::from_str::<ActionRequest>(m).map_err(|e| e.to_string()));
            match decoded {
                Ok(request) => {
                    let priority = stream
                        .rsplit(":p")
                        .next()
                        .and_then(|p| p.parse::<u8>().ok())
                        .unwrap_or(3);
                    deliveries.push(Delivery {
                        id: format!("{priority}|{id}"),
                        deliveries: request.delivery.max(1),
                        message: request,
                    });
                }
                Err(reason) => {
                    let entry = StreamId {
                        id,
                        map: HashMap::from([(
                            "m".to_string(),
                            redis::Value::BulkString(raw.unwrap_or_default().into_bytes()),
                        )]),
                        milliseconds_elapsed_from_delivery: None,
                        delivered_count: None,
                    };
                    self.dead_letter(&stream, EXECUTORS, &entry, &reason).await;
                }
            }
        }
        Ok(deliveries)
    }

    /// Append `XADD` of action requests, each telling its executor where the result goes.
    pub(super) fn add_actions(&self, pipe: &mut Pipeline, requests: Vec<ActionRequest>) {
        for mut request in requests {
            request.reply_to = Some(
                self.keys
                    .control_stream_of(&request.execution_id, self.partitions),
            );
            pipe.cmd("XADD")
                .arg(self.keys.action_stream(&request.app, request.priority))
                .arg("*")
                .arg("m")
                .arg(encode(&request))
                .ignore();
        }
    }

    /// Register an app version's `api.yaml`, so submitters and workers validate against it.
    /// The version counter goes up with it, so gateways see the new catalogue at once.
    pub async fn register_app(&self, app: &AppRef, api_yaml: &str) -> Result<(), BusError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(self.keys.app_apis())
            .arg(app.to_string())
            .arg(api_yaml)
            .ignore()
            .cmd("INCR")
            .arg(self.keys.app_apis_version())
            .ignore();
        self.run(&pipe).await
    }

    /// The counter of app registrations (0 before the first): a cache of the catalogue is
    /// right for as long as it stays the same.
    pub async fn app_apis_version(&self) -> Result<u64, BusError> {
        let version: Option<u64> = self
            .query(redis::cmd("GET").arg(self.keys.app_apis_version()))
            .await?;
        Ok(version.unwrap_or(0))
    }

    /// The `api.yaml` of every registered app version.
    pub async fn registered_apps(&self) -> Result<Vec<String>, BusError> {
        self.query(redis::cmd("HVALS").arg(self.keys.app_apis()))
            .await
    }

    /// `base` (the built-in apps) with every registered app version's API added; one that does
    /// not parse, or breaks the rules of an app API, is skipped with a warning saying why.
    pub async fn app_catalog(&self, base: &AppCatalog) -> Result<AppCatalog, BusError> {
        let mut catalog = base.clone();
        for text in self.registered_apps().await? {
            match AppApi::from_yaml(&text) {
                Ok(api) => {
                    let problems = api.problems();
                    if problems.is_empty() {
                        catalog.insert(api);
                    } else {
                        tracing::warn!(app = %api.name, problems = %problems.join("; "), "a registered app API is not valid; its app is left out");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "a registered app API does not parse"),
            }
        }
        Ok(catalog)
    }

    pub(super) async fn queue_actions(&self, requests: Vec<ActionRequest>) -> Result<(), BusError> {
        self.check_open()?;
        if requests.is_empty() {
            return Ok(());
        }
        let apps: BTreeMap<AppRef, ()> = requests.iter().map(|r| (r.app.clone(), ())).collect();
        let mut pipe = redis::pipe();
        for app in apps.keys() {
            self.ensure_action_groups(app).await?;
            pipe.cmd("SADD")
                .arg(self.keys.apps())
                .arg(app.to_string())
                .ignore();
        }
        self.add_actions(&mut pipe, requests);
        self.run(&pipe).await
    }

    pub(super) async fn take_actions(
        &self,
        app: &AppRef,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery<ActionRequest>>, BusError> {
        self.check_open()?;
        let max = max.max(1);
        let slot = (app.clone(), consumer.to_string());
        self.ensure_action_groups(app).await?;
        let held: Vec<_> = lock(&self.overflow)
            .get_mut(&slot)
            .map(|q| q.drain(..).collect())
            .unwrap_or_default();
        let mut got = if held.is_empty() {
            // One read on every priority at once, waiting when all are empty. Usually one stream
            // answers and this is all; when several do, the surplus is held below.
            self.read_actions(
                app,
                consumer,
                &PRIORITIES,
                max,
                (!wait.is_zero()).then_some(wait),
            )
            .await?
        } else {
            // Entries held from an earlier read: higher priorities may have queued behind the
            // ones read then, so read by priority first and merge.
            let mut merged = held;
            merged.extend(self.read_by_priority(app, consumer, max).await?);
            merged
        };
        // Highest priority first; within a priority, in stream order (the sort is stable).
        got.sort_by_key(|d| std::cmp::Reverse(d.message.priority));
        if got.len() > max {
            let extra: Vec<_> = got.drain(max..).collect();
            lock(&self.overflow).entry(slot).or_default().extend(extra);
        }
        Ok(got)
    }

    pub(super) async fn report_results(
        &self,
        app: &AppRef,
        done: Vec<(DeliveryId, NodeResult)>,
    ) -> Result<(), BusError> {
        if done.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        self.add_completions(&mut pipe, app, done);
        let replies: Vec<redis::RedisResult<redis::Value>> = pipe
            .query_async(&mut self.writer.clone())
            .await
            .map_err(|e| self.failed(e))?;
        self.first_failure(replies)
    }

    pub(super) async fn report_and_take_actions(
        &self,
        app: &AppRef,
        consumer: &str,
        done: Vec<(DeliveryId, NodeResult)>,
        max: usize,
        wait: Duration,
    ) -> (
        Result<(), BusError>,
        Result<Vec<Delivery<ActionRequest>>, BusError>,
    ) {
        let slot = (app.clone(), consumer.to_string());
        let held = lock(&self.overflow)
            .get(&slot)
            .is_some_and(|q| !q.is_empty());
        if done.is_empty() || wait.is_zero() || held || self.check_open().is_err() {
            let reported = self.report_results(app, done).await;
            return (reported, self.take_actions(app, consumer, max, wait).await);
        }
        if let Err(e) = self.ensure_action_groups(app).await {
            return (Err(e.clone()), Err(e));
        }
        // The report, then the next blocking read, in one write on a reading connection: Redis
        // takes the results before the read waits, and the executor sends one message per action.
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        self.add_completions(&mut pipe, app, done);
        let writes = pipe.len();
        pipe.add_command(self.read_actions_cmd(app, consumer, &PRIORITIES, max.max(1), Some(wait)));
        let replies = match self.blocking_pipe(&pipe, wait).await {
            Ok(replies) => replies,
            Err(e) => return (Err(e.clone()), Err(e)),
        };
        let mut replies = replies.into_iter();
        let reported = self.first_failure(replies.by_ref().take(writes).collect());
        let received = match replies.next().map(|reply| {
            reply.and_then(|v| redis::FromRedisValue::from_redis_value(v).map_err(Into::into))
        }) {
            Some(Ok(reply)) => Ok(self.action_deliveries(reply).await),
            Some(Err(e)) => Err(self.failed(e)),
            None => Err(BusError::Unavailable("no reply to the read".into())),
        };
        (reported, received)
    }

    pub(super) async fn beat_as_executor(
        &self,
        app: &AppRef,
        consumer: &str,
    ) -> Result<(), BusError> {
        self.query::<u64>(
            redis::cmd("EVAL")
                .arg(HEARTBEAT)
                .arg(1)
                .arg(self.keys.executors(app))
                .arg(consumer),
        )
        .await?;
        Ok(())
    }
}

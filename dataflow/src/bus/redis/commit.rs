//! A worker's commit: one Lua script that checks the worker still owns every partition it writes
//! for, then appends to the execution logs, updates the running sets, publishes events, queues
//! action requests and acknowledges the control messages. Redis runs a script atomically and writes
//! it to the AOF as one transaction, so a batch is either wholly durable or not there at all.

use std::collections::BTreeMap;

use walkoff_schema::{AppRef, Event};

use super::{
    encode, lock, partition_of, split_delivery, unavailable, BusError, Commit, Partition, RedisBus,
    ACTION_STREAM_MAXLEN, WORKERS,
};

/// ARGV: lease count, (lease key, token) pairs, then sections, each a tag and its fields:
/// `list key n v…` (RPUSH), `events key n (id json)…` (XADD with explicit ids), `queue key maxlen n
/// json…` (XADD … MAXLEN ~), `ack key group n id…` (XACK), `cmd argc arg…` (anything else).
/// Sections spare the per-command tables a generic runner builds. Returns the errors of commands
/// that failed (none in normal operation).
const COMMIT: &str = r#"
local leases = tonumber(ARGV[1])
local i = 2
for _ = 1, leases do
  if redis.call('GET', ARGV[i]) ~= ARGV[i + 1] then
    return redis.error_reply('FENCED ' .. ARGV[i])
  end
  i = i + 2
end
local failures = {}
local function check(reply, what)
  if type(reply) == 'table' and reply.err then
    table.insert(failures, what .. ': ' .. reply.err)
  end
end
-- Commands taking a key, fixed arguments and values, in chunks Lua's unpack can hold.
local function chunked(command, head, from, to)
  while from <= to do
    local last = math.min(from + 999, to)
    local args = {unpack(head)}
    for j = from, last do args[#args + 1] = ARGV[j] end
    check(redis.pcall(command, unpack(args)), command .. ' ' .. head[1])
    from = last + 1
  end
end
while i <= #ARGV do
  local tag = ARGV[i]
  if tag == 'list' then
    local n = tonumber(ARGV[i + 2])
    chunked('RPUSH', {ARGV[i + 1]}, i + 3, i + 2 + n)
    i = i + 3 + n
  elseif tag == 'events' then
    local key, n = ARGV[i + 1], tonumber(ARGV[i + 2])
    local j = i + 3
    for _ = 1, n do
      local reply = redis.pcall('XADD', key, ARGV[j], 'm', ARGV[j + 1])
      -- An event stored by an earlier attempt (its entry id is its sequence number) is no error.
      if type(reply) == 'table' and reply.err and not string.find(reply.err, 'equal or smaller') then
        table.insert(failures, 'XADD ' .. key .. ': ' .. reply.err)
      end
      j = j + 2
    end
    i = j
  elseif tag == 'queue' then
    local key, maxlen, n = ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
    for j = i + 4, i + 3 + n do
      check(redis.pcall('XADD', key, 'MAXLEN', '~', maxlen, '*', 'm', ARGV[j]), 'XADD ' .. key)
    end
    i = i + 4 + n
  elseif tag == 'ack' then
    local n = tonumber(ARGV[i + 3])
    chunked('XACK', {ARGV[i + 1], ARGV[i + 2]}, i + 4, i + 3 + n)
    i = i + 4 + n
  elseif tag == 'cmd' then
    local argc = tonumber(ARGV[i + 1])
    check(redis.pcall(unpack(ARGV, i + 2, i + 1 + argc)), ARGV[i + 2] .. ' ' .. ARGV[i + 3])
    i = i + 2 + argc
  else
    return redis.error_reply('unknown commit section ' .. tostring(tag))
  end
end
return failures
"#;

/// The feed of finished executions keeps about this many.
const FINISHED_MAXLEN: usize = 100_000;

fn commit_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(COMMIT))
}

/// `EVALSHA` of the commit script with these arguments (no keys declared: standalone Redis).
pub(super) fn commit_cmd(args: &[String]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(commit_script().get_hash()).arg(0).arg(args);
    cmd
}

/// The commit's sections, flattened into script arguments.
#[derive(Default)]
struct Sections {
    args: Vec<String>,
}

impl Sections {
    fn list(&mut self, key: String, values: impl ExactSizeIterator<Item = String>) {
        self.args
            .extend(["list".into(), key, values.len().to_string()]);
        self.args.extend(values);
    }

    fn events(&mut self, key: String, events: &[&Event]) {
        self.args
            .extend(["events".into(), key, events.len().to_string()]);
        for event in events {
            self.args.push(format!("0-{}", event.seq));
            self.args.push(encode(event));
        }
    }

    fn queue(&mut self, key: String, maxlen: usize, messages: Vec<String>) {
        self.args.extend([
            "queue".into(),
            key,
            maxlen.to_string(),
            messages.len().to_string(),
        ]);
        self.args.extend(messages);
    }

    fn ack(&mut self, key: String, group: &str, ids: Vec<String>) {
        self.args
            .extend(["ack".into(), key, group.into(), ids.len().to_string()]);
        self.args.extend(ids);
    }

    fn cmd(&mut self, command: Vec<String>) {
        self.args.push("cmd".into());
        self.args.push(command.len().to_string());
        self.args.extend(command);
    }
}

impl RedisBus {
    pub(super) async fn commit_batch(&self, commit: Commit) -> Result<(), BusError> {
        let Some(args) = self.prepare_commit(commit).await? else {
            return Ok(());
        };
        let result = commit_cmd(&args)
            .query_async::<Vec<String>>(&mut self.writer.clone())
            .await;
        match result {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.commit_after_reload(&args).await
            }
            other => self.commit_outcome(other),
        }
    }

    /// Redis forgot the commit script (it restarted): load it and run the commit again.
    pub(super) async fn commit_after_reload(&self, args: &[String]) -> Result<(), BusError> {
        self.load_commit_script().await?;
        self.commit_outcome(commit_cmd(args).query_async(&mut self.writer.clone()).await)
    }

    pub(super) async fn load_commit_script(&self) -> Result<(), BusError> {
        redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(COMMIT)
            .query_async::<String>(&mut self.writer.clone())
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    /// The commit script's arguments for `commit`: the leases it must still hold, then its
    /// sections; `None` when there is nothing to write.
    pub(super) async fn prepare_commit(
        &self,
        commit: Commit,
    ) -> Result<Option<Vec<String>>, BusError> {
        let Commit {
            acks,
            logs,
            started,
            finished,
            events,
            actions,
        } = commit;
        let mut sections = Sections::default();
        let mut touched = std::collections::BTreeSet::new();

        for (id, messages) in logs {
            touched.insert(partition_of(&id, self.partitions));
            sections.list(self.log_key(&id), messages.iter().map(encode));
        }
        for id in &started {
            let p = partition_of(id, self.partitions);
            touched.insert(p);
            sections.cmd(vec!["SADD".into(), self.running_key(p), id.clone()]);
        }
        let retention = self.config.retention.as_secs().max(1).to_string();
        for id in &finished {
            let p = partition_of(id, self.partitions);
            touched.insert(p);
            sections.cmd(vec!["SREM".into(), self.running_key(p), id.clone()]);
            sections.cmd(vec!["EXPIRE".into(), self.log_key(id), retention.clone()]);
            sections.cmd(vec![
                "EXPIRE".into(),
                self.events_stream(id),
                retention.clone(),
            ]);
        }
        // One feed of every execution's end, for dashboards and load tests.
        let finals: Vec<String> = events.iter().filter(|e| e.is_final()).map(encode).collect();
        if !finals.is_empty() {
            sections.queue(self.key(format_args!("finished")), FINISHED_MAXLEN, finals);
        }
        let mut by_execution: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
        for event in &events {
            by_execution
                .entry(&event.execution_id)
                .or_default()
                .push(event);
        }
        for (execution, events) in by_execution {
            sections.events(self.events_stream(execution), &events);
        }
        let apps: BTreeMap<AppRef, ()> = actions.iter().map(|r| (r.app.clone(), ())).collect();
        for app in apps.keys() {
            // The first time this process queues for an app: its streams, and its entry in the
            // set of apps (housekeeping walks it).
            if self.ensure_action_groups(app).await? {
                sections.cmd(vec![
                    "SADD".into(),
                    self.key(format_args!("apps")),
                    app.to_string(),
                ]);
            }
        }
        let mut by_stream: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for mut request in actions {
            request.reply_to = Some(self.control_stream_of(&request.execution_id));
            by_stream
                .entry(self.action_stream(&request.app, request.priority))
                .or_default()
                .push(encode(&request));
        }
        for (stream, requests) in by_stream {
            sections.queue(stream, ACTION_STREAM_MAXLEN, requests);
        }
        let mut by_partition: BTreeMap<Partition, Vec<String>> = BTreeMap::new();
        for id in acks {
            let (p, entry) = split_delivery(&id);
            by_partition.entry(p).or_default().push(entry.to_string());
        }
        for (p, entries) in by_partition {
            touched.insert(p);
            sections.ack(self.control_stream(p), WORKERS, entries);
        }
        if sections.args.is_empty() {
            return Ok(None);
        }

        let mut args = Vec::with_capacity(1 + 2 * touched.len() + sections.args.len());
        args.push(touched.len().to_string());
        for &p in &touched {
            let Some(token) = self.leases.token(p) else {
                return Err(BusError::Fenced(p));
            };
            args.push(self.lease_key(p));
            args.push(token);
        }
        args.extend(sections.args);
        Ok(Some(args))
    }

    /// What the commit script's answer means: failures of single commands are logged (there are
    /// none in normal operation); a lease taken over fences the commit, and the partition is lost.
    pub(super) fn commit_outcome(
        &self,
        result: redis::RedisResult<Vec<String>>,
    ) -> Result<(), BusError> {
        match result {
            Ok(failures) => {
                for failure in failures {
                    tracing::error!(%failure, "a command of a commit failed");
                }
                Ok(())
            }
            Err(e) if e.to_string().contains("FENCED") => {
                let text = e.to_string();
                let partition = text
                    .rsplit("lease:")
                    .next()
                    .map(|rest| {
                        rest.chars()
                            .take_while(char::is_ascii_digit)
                            .collect::<String>()
                    })
                    .and_then(|digits| digits.parse().ok())
                    .unwrap_or(0);
                self.leases.fenced(partition);
                Err(BusError::Fenced(partition))
            }
            Err(e) => {
                if e.code() == Some("NOGROUP") {
                    lock(&self.groups).clear();
                }
                Err(unavailable(e))
            }
        }
    }
}

//! A worker's commit: one Lua script that checks the worker still owns every partition it writes
//! for, then appends to the execution logs, updates the running sets, publishes events, queues
//! action requests and acknowledges the control messages. Redis runs a script atomically and writes
//! it to the AOF as one transaction, so a batch is either wholly durable or not there at all.
//! The same commands also go as a `MULTI`/`EXEC` transaction on a connection watching the
//! partitions' fences (see `RedisBus::commit_then_read`): as atomic, with no Lua to run.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::{FromRedisValue, Pipeline};
use walkoff_schema::AppRef;

use super::connection::RESPONSE_MARGIN;
use super::events::by_execution;
use super::messages::{encode, split_delivery};
use super::{
    lock, partition_of, unavailable, BusError, Commit, ControlBatch, Partition, RedisBus, WORKERS,
};

/// ARGV: lease count, (lease key, token) pairs, then sections, each a tag and its fields:
/// `list key n v…` (RPUSH), `events key n (id json)…` (XADD with explicit ids), `queue key maxlen n
/// json…` (XADD, with MAXLEN ~ unless maxlen is 0), `ack key group n id…` (XACK), `cmd argc arg…`
/// (anything else).
///
/// All or nothing, in fact: the `#!lua` line makes it a flagged script, which Redis refuses
/// whole, before it starts, when it is out of memory (an unflagged one was checked only at its
/// first write command, so under `maxmemory` its RPUSH and XADD failed while its XACK and EXPIRE
/// went through: a message acknowledged without its effects). Everything else that could fail
/// is checked before the first write: the fences, every key's type, and which events an earlier
/// attempt already stored (skipped, not re-added). Then every command goes through
/// `redis.call`, which stops the script at an error instead of going on. Sections spare the
/// per-command tables a generic runner builds. Returns an empty list (what failed single
/// commands once returned).
const COMMIT: &str = r#"#!lua
local leases = tonumber(ARGV[1])
local i = 2
for _ = 1, leases do
  if redis.call('GET', ARGV[i]) ~= ARGV[i + 1] then
    return redis.error_reply('FENCED ' .. ARGV[i])
  end
  i = i + 2
end
-- Before the first write: every key holds what the commit writes to it, or nothing.
local function mismatch(key, want)
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'none' and kind ~= want then
    return 'WRONGTYPE ' .. key .. ' holds a ' .. kind .. ', not a ' .. want
  end
end
local j = i
while j <= #ARGV do
  local tag, problem = ARGV[j], nil
  if tag == 'list' then
    problem = mismatch(ARGV[j + 1], 'list')
    j = j + 3 + tonumber(ARGV[j + 2])
  elseif tag == 'events' then
    problem = mismatch(ARGV[j + 1], 'stream')
    j = j + 3 + 2 * tonumber(ARGV[j + 2])
  elseif tag == 'queue' or tag == 'ack' then
    problem = mismatch(ARGV[j + 1], 'stream')
    j = j + 4 + tonumber(ARGV[j + 3])
  elseif tag == 'cmd' then
    local command = ARGV[j + 2]
    if command == 'SADD' or command == 'SREM' then
      problem = mismatch(ARGV[j + 3], 'set')
    end
    j = j + 2 + tonumber(ARGV[j + 1])
  else
    return redis.error_reply('unknown commit section ' .. tostring(tag))
  end
  if problem then
    return redis.error_reply(problem)
  end
end
-- Commands taking a key, fixed arguments and values, in chunks Lua's unpack can hold.
local function chunked(command, head, from, to)
  while from <= to do
    local last = math.min(from + 999, to)
    local args = {unpack(head)}
    for k = from, last do args[#args + 1] = ARGV[k] end
    redis.call(command, unpack(args))
    from = last + 1
  end
end
-- The sequence number of an event entry id (`0-<seq>`).
local function sequence(id)
  return tonumber(string.match(id, '%-(%d+)$'))
end
while i <= #ARGV do
  local tag = ARGV[i]
  if tag == 'list' then
    local n = tonumber(ARGV[i + 2])
    chunked('RPUSH', {ARGV[i + 1]}, i + 3, i + 2 + n)
    i = i + 3 + n
  elseif tag == 'events' then
    local key, n = ARGV[i + 1], tonumber(ARGV[i + 2])
    -- Events stored by an earlier attempt (an entry's id is its sequence number) are skipped.
    local newest = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
    local stored = 0
    if #newest > 0 then stored = sequence(newest[1][1]) end
    local k = i + 3
    for _ = 1, n do
      local seq = sequence(ARGV[k])
      if seq > stored then
        redis.call('XADD', key, ARGV[k], 'm', ARGV[k + 1])
        stored = seq
      end
      k = k + 2
    end
    i = k
  elseif tag == 'queue' then
    local key, maxlen, n = ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
    for k = i + 4, i + 3 + n do
      if maxlen == '0' then
        redis.call('XADD', key, '*', 'm', ARGV[k])
      else
        redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', 'm', ARGV[k])
      end
    end
    i = i + 4 + n
  elseif tag == 'ack' then
    local n = tonumber(ARGV[i + 3])
    chunked('XACK', {ARGV[i + 1], ARGV[i + 2]}, i + 4, i + 3 + n)
    i = i + 4 + n
  else
    local argc = tonumber(ARGV[i + 1])
    redis.call(unpack(ARGV, i + 2, i + 1 + argc))
    i = i + 2 + argc
  end
end
return {}
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

/// One part of a commit: what the script runs for a section, or the same command queued in a
/// transaction.
enum Section {
    /// `RPUSH key values…`
    List { key: String, values: Vec<String> },
    /// `XADD key 0-{seq} m json` per event; an event stored by an earlier attempt is no failure.
    Events {
        key: String,
        entries: Vec<(String, String)>,
    },
    /// `XADD key MAXLEN ~ maxlen * m json` per message; with `maxlen` 0, no `MAXLEN`: a queue
    /// whose unread entries must never be trimmed.
    Queue {
        key: String,
        maxlen: usize,
        messages: Vec<String>,
    },
    /// `XACK key group ids…`
    Ack {
        key: String,
        group: &'static str,
        ids: Vec<String>,
    },
    /// Any other command.
    Cmd(Vec<String>),
}

/// A commit ready to send: the leases it must still hold and what it writes.
pub(super) struct PreparedCommit {
    /// (partition, its lease key, our token)
    leases: Vec<(Partition, String, String)>,
    sections: Vec<Section>,
}

/// What became of a commit sent as a transaction.
pub(super) enum TransactionOutcome {
    /// Written, with the failures of single commands (none in normal operation).
    Done(Vec<String>),
    /// A watched lease changed (renewed, expired or taken over) since the watch: nothing written.
    Aborted,
    /// Redis refused the transaction (a command rejected while queued, out of memory, …).
    Refused(redis::RedisError),
}

/// Redis refuses XADD with an id at or below the stream's last one with this text.
const OLD_EVENT: &str = "equal or smaller";

impl PreparedCommit {
    /// The commit script's arguments: lease count, (key, token) pairs, then the sections.
    pub(super) fn script_args(&self) -> Vec<String> {
        let mut args = vec![self.leases.len().to_string()];
        for (_, key, token) in &self.leases {
            args.push(key.clone());
            args.push(token.clone());
        }
        for section in &self.sections {
            match section {
                Section::List { key, values } => {
                    args.extend(["list".into(), key.clone(), values.len().to_string()]);
                    args.extend(values.iter().cloned());
                }
                Section::Events { key, entries } => {
                    args.extend(["events".into(), key.clone(), entries.len().to_string()]);
                    for (id, json) in entries {
                        args.push(id.clone());
                        args.push(json.clone());
                    }
                }
                Section::Queue {
                    key,
                    maxlen,
                    messages,
                } => {
                    args.extend([
                        "queue".into(),
                        key.clone(),
                        maxlen.to_string(),
                        messages.len().to_string(),
                    ]);
                    args.extend(messages.iter().cloned());
                }
                Section::Ack { key, group, ids } => {
                    args.extend([
                        "ack".into(),
                        key.clone(),
                        (*group).into(),
                        ids.len().to_string(),
                    ]);
                    args.extend(ids.iter().cloned());
                }
                Section::Cmd(command) => {
                    args.push("cmd".into());
                    args.push(command.len().to_string());
                    args.extend(command.iter().cloned());
                }
            }
        }
        args
    }

    /// Whether a `WATCH` of these leases, made when each held our token, fences this commit:
    /// `EXEC` then runs only if none of them changed since.
    pub(super) fn fenced_by(&self, watched: &[(Partition, String)]) -> bool {
        self.leases.iter().all(|(p, _, token)| {
            watched
                .iter()
                .any(|(w, watched_token)| w == p && watched_token == token)
        })
    }

    /// `MULTI`, the commit's commands, `EXEC`: the same writes as the script, without running
    /// Lua; only safe on a connection watching the leases (see [`PreparedCommit::fenced_by`]).
    /// Returns how many replies the transaction takes in the pipeline.
    pub(super) fn add_transaction(&self, pipe: &mut Pipeline) -> usize {
        pipe.cmd("MULTI");
        let commands = self.commands();
        let count = commands.len();
        for command in commands {
            pipe.add_command(command.cmd);
        }
        pipe.cmd("EXEC");
        count + 2
    }

    /// Every command of the commit, in order.
    fn commands(&self) -> Vec<CommitCommand<'_>> {
        let mut commands = Vec::new();
        for section in &self.sections {
            match section {
                Section::List { key, values } => commands.push(CommitCommand::new(
                    redis::cmd("RPUSH").arg(key).arg(values).to_owned(),
                    "RPUSH",
                    key,
                )),
                Section::Events { key, entries } => {
                    for (id, json) in entries {
                        let cmd = redis::cmd("XADD")
                            .arg(key)
                            .arg(id)
                            .arg("m")
                            .arg(json)
                            .to_owned();
                        commands.push(CommitCommand {
                            is_event: true,
                            ..CommitCommand::new(cmd, "XADD", key)
                        });
                    }
                }
                Section::Queue {
                    key,
                    maxlen,
                    messages,
                } => {
                    for json in messages {
                        let mut cmd = redis::cmd("XADD");
                        cmd.arg(key);
                        if *maxlen > 0 {
                            cmd.arg("MAXLEN").arg("~").arg(maxlen);
                        }
                        cmd.arg("*").arg("m").arg(json);
                        commands.push(CommitCommand::new(cmd, "XADD", key));
                    }
                }
                Section::Ack { key, group, ids } => commands.push(CommitCommand::new(
                    redis::cmd("XACK").arg(key).arg(*group).arg(ids).to_owned(),
                    "XACK",
                    key,
                )),
                Section::Cmd(command) => {
                    let mut cmd = redis::cmd(&command[0]);
                    cmd.arg(&command[1..]);
                    let key = command.get(1).map_or("", String::as_str);
                    commands.push(CommitCommand::new(cmd, &command[0], key));
                }
            }
        }
        commands
    }

    /// What `EXEC` answered (its reply in the pipeline).
    pub(super) fn transaction_outcome(
        &self,
        exec: redis::RedisResult<redis::Value>,
    ) -> TransactionOutcome {
        let replies = match exec {
            Ok(redis::Value::Nil) => return TransactionOutcome::Aborted,
            Ok(redis::Value::Array(replies)) => replies,
            Ok(other) => {
                return TransactionOutcome::Refused(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "unexpected answer to EXEC",
                    format!("{other:?}"),
                )))
            }
            Err(e) => return TransactionOutcome::Refused(e),
        };
        let errors: Vec<(usize, redis::RedisError)> = replies
            .into_iter()
            .enumerate()
            .filter_map(|(i, reply)| reply.extract_error().err().map(|e| (i, e)))
            .collect();
        if errors.is_empty() {
            return TransactionOutcome::Done(Vec::new());
        }
        let commands = self.commands();
        let failures = errors
            .into_iter()
            .filter_map(|(i, e)| {
                let command = commands.get(i)?;
                let text = e.to_string();
                (!(command.is_event && text.contains(OLD_EVENT)))
                    .then(|| format!("{} {}: {text}", command.name, command.key))
            })
            .collect();
        TransactionOutcome::Done(failures)
    }
}

/// A command of a commit, with what names it in a failure (put together only then).
struct CommitCommand<'a> {
    cmd: redis::Cmd,
    name: &'a str,
    key: &'a str,
    /// An event's XADD, which an event stored before refuses harmlessly.
    is_event: bool,
}

impl<'a> CommitCommand<'a> {
    fn new(cmd: redis::Cmd, name: &'a str, key: &'a str) -> CommitCommand<'a> {
        CommitCommand {
            cmd,
            name,
            key,
            is_event: false,
        }
    }
}

impl RedisBus {
    pub(super) async fn commit_batch(&self, commit: Commit) -> Result<(), BusError> {
        let Some(prepared) = self.prepare_commit(commit).await? else {
            return Ok(());
        };
        self.commit_with_script(&prepared.script_args()).await
    }

    /// Run the commit script on the shared connection, loading it first if Redis forgot it.
    pub(super) async fn commit_with_script(&self, args: &[String]) -> Result<(), BusError> {
        let result = commit_cmd(args)
            .query_async::<Vec<String>>(&mut self.writer.clone())
            .await;
        match result {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.commit_after_reload(args).await
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

    /// What `commit` writes and the leases it must still hold; `None` when there is nothing to
    /// write.
    pub(super) async fn prepare_commit(
        &self,
        commit: Commit,
    ) -> Result<Option<PreparedCommit>, BusError> {
        let Commit {
            acks,
            logs,
            started,
            finished,
            events,
            actions,
        } = commit;
        let mut sections = Vec::new();
        let mut touched = std::collections::BTreeSet::new();

        for (id, messages) in logs {
            touched.insert(partition_of(&id, self.partitions));
            sections.push(Section::List {
                key: self.keys.log(&id),
                values: messages.iter().map(encode).collect(),
            });
        }
        for id in &started {
            let p = partition_of(id, self.partitions);
            touched.insert(p);
            sections.push(Section::Cmd(vec![
                "SADD".into(),
                self.keys.running(p),
                id.clone(),
            ]));
        }
        let retention = self.config.retention.as_secs().max(1).to_string();
        for id in &finished {
            let p = partition_of(id, self.partitions);
            touched.insert(p);
            sections.push(Section::Cmd(vec![
                "SREM".into(),
                self.keys.running(p),
                id.clone(),
            ]));
            for key in [self.keys.log(id), self.keys.events(id)] {
                sections.push(Section::Cmd(vec!["EXPIRE".into(), key, retention.clone()]));
            }
        }
        // One feed of every execution's end, for dashboards and load tests.
        let finals: Vec<String> = events.iter().filter(|e| e.is_final()).map(encode).collect();
        if !finals.is_empty() {
            sections.push(Section::Queue {
                key: self.keys.finished(),
                maxlen: FINISHED_MAXLEN,
                messages: finals,
            });
        }
        for (execution, events) in by_execution(&events) {
            let mut events = events;
            // In order: the script skips what is at or below the newest stored entry.
            events.sort_by_key(|event| event.seq);
            sections.push(Section::Events {
                key: self.keys.events(execution),
                entries: events
                    .iter()
                    .map(|event| (format!("0-{}", event.seq), encode(event)))
                    .collect(),
            });
        }
        let mut apps: Vec<&AppRef> = Vec::new();
        for request in &actions {
            if !apps.contains(&&request.app) {
                apps.push(&request.app);
            }
        }
        for app in apps {
            // The first time this process queues for an app: its streams, and its entry in the
            // set of apps (housekeeping walks it).
            if self.ensure_action_groups(app).await? {
                sections.push(Section::Cmd(vec![
                    "SADD".into(),
                    self.keys.apps(),
                    app.to_string(),
                ]));
            }
        }
        // Grouped by app and priority (a batch holds few of them, so a scan beats hashing), and
        // each stream's and reply stream's name made once rather than per request: a fan-out
        // queues thousands at once.
        let mut by_stream: Vec<((&AppRef, u8), Vec<String>)> = Vec::new();
        let mut reply_to: Vec<Option<String>> = vec![None; self.partitions as usize];
        let mut requests = actions;
        for request in &mut requests {
            let p = partition_of(&request.execution_id, self.partitions) as usize;
            request.reply_to = Some(
                reply_to[p]
                    .get_or_insert_with(|| self.keys.control_stream(p as Partition))
                    .clone(),
            );
        }
        for request in &requests {
            let queue = (&request.app, request.priority);
            let json = encode(request);
            match by_stream.iter_mut().find(|(q, _)| *q == queue) {
                Some((_, jsons)) => jsons.push(json),
                None => by_stream.push((queue, vec![json])),
            }
        }
        for ((app, priority), requests) in by_stream {
            sections.push(Section::Queue {
                key: self.keys.action_stream(app, priority),
                // Never trimmed by length: requests no executor has read yet stay. Housekeeping
                // trims what executors are done with (`XTRIM MINID`).
                maxlen: 0,
                messages: requests,
            });
        }
        let mut by_partition: BTreeMap<Partition, Vec<String>> = BTreeMap::new();
        for id in acks {
            let (p, entry) = split_delivery(&id);
            by_partition.entry(p).or_default().push(entry.to_string());
        }
        for (p, entries) in by_partition {
            touched.insert(p);
            sections.push(Section::Ack {
                key: self.keys.control_stream(p),
                group: WORKERS,
                ids: entries,
            });
        }
        if sections.is_empty() {
            return Ok(None);
        }
        let mut leases = Vec::with_capacity(touched.len());
        for p in touched {
            let Some(token) = self.leases.token(p) else {
                return Err(BusError::Fenced(p));
            };
            leases.push((p, self.keys.lease(p), token));
        }
        Ok(Some(PreparedCommit { leases, sections }))
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
            // The script's own error reply, `FENCED <lease key>`: code, then detail.
            Err(e) if e.code() == Some("FENCED") => {
                let partition = e
                    .detail()
                    .and_then(|key| key.rsplit("lease:").next())
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

impl RedisBus {
    /// The commit and the next blocking read of the worker's partitions in one pipeline on the
    /// watching reader: Redis runs the read right after the commit, so the worker waits one round
    /// trip per batch instead of two. Between the two, the pipeline watches the owned partitions'
    /// fences and reads them, which fences the next commit without a script: it goes as
    /// `MULTI`…`EXEC` (Redis: about 18 µs a chain step instead of 65), and `EXEC` fails if another
    /// worker took a partition since. Then the script runs, finding the lease taken.
    ///
    /// A lease that expired with nobody taking it over does not stop the transaction, as it
    /// stops the script: harmless, as a worker taking the partition later changes the fence
    /// first and then loads what was committed.
    pub(super) async fn commit_then_read(
        &self,
        commit: Commit,
        owned: &[Partition],
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> (Result<(), BusError>, Option<Result<ControlBatch, BusError>>) {
        let prepared = match self.prepare_commit(commit).await {
            Ok(Some(prepared)) => prepared,
            Ok(None) => return (Ok(()), Some(self.take_control(consumer, max, wait).await)),
            Err(e) => return (Err(e), None),
        };
        let read = match self.control_read_cmd(owned, consumer, max, wait).await {
            Ok(read) => read,
            Err(e) => return (Err(e), None),
        };
        let (mut conn, id, watched) = match self.watching_reader().await {
            Ok(reader) => reader,
            Err(e) => return (Err(e), None),
        };
        conn.set_response_timeout(wait + RESPONSE_MARGIN);
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let as_transaction = prepared.fenced_by(&watched);
        let commit_replies = if as_transaction {
            prepared.add_transaction(&mut pipe)
        } else {
            pipe.add_command(commit_cmd(&prepared.script_args()));
            1
        };
        let tokens: Vec<(Partition, Option<String>)> =
            owned.iter().map(|&p| (p, self.leases.token(p))).collect();
        let fence_keys: Vec<String> = owned.iter().map(|&p| self.keys.fence(p)).collect();
        pipe.cmd("WATCH").arg(&fence_keys);
        pipe.cmd("MGET").arg(&fence_keys);
        pipe.add_command(read);

        let result = pipe
            .query_async::<Vec<redis::RedisResult<redis::Value>>>(&mut conn)
            .await;
        lock(&self.blocked).remove(&id);
        if let Err(e) = self.check_open() {
            return (Err(e), None);
        }
        let replies = match result {
            Ok(replies) if replies.len() == commit_replies + 3 => replies,
            Ok(replies) => {
                let e = BusError::Unavailable(format!(
                    "{} replies to a commit pipeline of {}",
                    replies.len(),
                    commit_replies + 3
                ));
                return (Err(e), None);
            }
            Err(e) => return (Err(self.failed(e)), None),
        };
        let mut replies = replies.into_iter().skip(commit_replies - 1);
        let commit_reply = replies.next().unwrap_or(Ok(redis::Value::Nil));
        let committed = if as_transaction {
            match prepared.transaction_outcome(commit_reply) {
                TransactionOutcome::Done(failures) => self.commit_outcome(Ok(failures)),
                // Another worker took a partition since the watch: the script finds out which
                // (and commits if that was none this commit touches).
                TransactionOutcome::Aborted => {
                    self.commit_with_script(&prepared.script_args()).await
                }
                TransactionOutcome::Refused(e) => self.commit_outcome(Err(e)),
            }
        } else {
            match commit_reply {
                // Commit on its own after reloading the script; what the read delivered is ours
                // and is applied next.
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    self.commit_after_reload(&prepared.script_args()).await
                }
                other => self.commit_outcome(
                    other.and_then(|v| FromRedisValue::from_redis_value(v).map_err(Into::into)),
                ),
            }
        };
        if committed.is_err() {
            // Whatever the read delivered stays pending: the worker reloads and claims it again.
            return (committed, None);
        }
        let watch = replies.next().unwrap_or(Ok(redis::Value::Nil));
        let holders: Vec<Option<String>> = replies
            .next()
            .and_then(|reply| reply.ok())
            .and_then(|v| FromRedisValue::from_redis_value(v).ok())
            .unwrap_or_default();
        let watched = if watch.is_ok() {
            tokens
                .into_iter()
                .zip(holders)
                .filter_map(|((p, token), holder)| {
                    let token = token?;
                    (holder.as_ref() == Some(&token)).then_some((p, token))
                })
                .collect()
        } else {
            Vec::new()
        };
        let next = replies
            .next()
            .unwrap_or(Ok(redis::Value::Nil))
            .and_then(|v| FromRedisValue::from_redis_value(v).map_err(Into::into));
        let next = match next {
            Ok(reply) => {
                *lock(&self.watching) = Some((conn, id, watched));
                Ok(ControlBatch {
                    deliveries: self.control_deliveries(reply).await,
                    ..ControlBatch::default()
                })
            }
            Err(e) => Err(self.failed(e)),
        };
        (committed, Some(next))
    }
}

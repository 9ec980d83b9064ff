//! A worker's commit: one Lua script that checks the worker still owns every partition it writes
//! for, then appends to the execution logs, updates the running sets, publishes events, queues
//! action requests and acknowledges the control messages. Redis runs a script atomically and writes
//! it to the AOF as one transaction, so a batch is either wholly durable or not there at all.

use std::collections::BTreeMap;

use walkoff_schema::AppRef;

use super::{
    encode, lock, partition_of, split_delivery, unavailable, BusError, Commit, Partition, RedisBus,
    ACTION_STREAM_MAXLEN, WORKERS,
};

/// ARGV: lease count, (lease key, token) pairs, then commands, each as its argument count followed
/// by its arguments. Returns the errors of commands that failed (none in normal operation).
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
while i <= #ARGV do
  local argc = tonumber(ARGV[i])
  local reply = redis.pcall(unpack(ARGV, i + 1, i + argc))
  if type(reply) == 'table' and reply.err then
    -- An event stored by an earlier attempt (its entry id is its sequence number) is not an error.
    if not (ARGV[i + 1] == 'XADD' and string.sub(ARGV[i + 3], 1, 2) == '0-') then
      table.insert(failures, ARGV[i + 1] .. ' ' .. ARGV[i + 2] .. ': ' .. reply.err)
    end
  end
  i = i + argc + 1
end
return failures
"#;

/// The feed of finished executions keeps about this many.
const FINISHED_MAXLEN: usize = 100_000;

/// Longest argument list of one command: Lua's `unpack` has a stack limit of about 8000.
const MAX_ARGS: usize = 1000;

fn commit_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(COMMIT))
}

/// Commands flattened into script arguments.
#[derive(Default)]
struct Commands {
    args: Vec<String>,
}

impl Commands {
    fn push(&mut self, command: Vec<String>) {
        self.args.push(command.len().to_string());
        self.args.extend(command);
    }

    /// `head...` followed by `items`, split so no command is longer than [`MAX_ARGS`].
    fn push_chunked(&mut self, head: &[String], items: Vec<String>) {
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let mut command = head.to_vec();
            command.extend(items.by_ref().take(MAX_ARGS));
            self.push(command);
        }
    }
}

impl RedisBus {
    pub(super) async fn commit_batch(
        &self,
        _consumer: &str,
        commit: Commit,
    ) -> Result<(), BusError> {
        let Commit {
            acks,
            logs,
            started,
            finished,
            events,
            actions,
        } = commit;
        let mut commands = Commands::default();
        let mut touched = std::collections::BTreeSet::new();

        for (id, messages) in logs {
            touched.insert(partition_of(&id, self.partitions));
            let entries = messages.iter().map(encode).collect();
            commands.push_chunked(&["RPUSH".into(), self.log_key(&id)], entries);
        }
        for id in &started {
            let p = partition_of(id, self.partitions);
            touched.insert(p);
            commands.push(vec!["SADD".into(), self.running_key(p), id.clone()]);
        }
        let retention = self.config.retention.as_secs().max(1).to_string();
        for id in &finished {
            let p = partition_of(id, self.partitions);
            touched.insert(p);
            commands.push(vec!["SREM".into(), self.running_key(p), id.clone()]);
            commands.push(vec!["EXPIRE".into(), self.log_key(id), retention.clone()]);
            commands.push(vec![
                "EXPIRE".into(),
                self.events_stream(id),
                retention.clone(),
            ]);
        }
        for event in events.iter().filter(|e| e.is_final()) {
            // One feed of every execution's end, for dashboards and load tests.
            commands.push(vec![
                "XADD".into(),
                self.key(format_args!("finished")),
                "MAXLEN".into(),
                "~".into(),
                FINISHED_MAXLEN.to_string(),
                "*".into(),
                "m".into(),
                encode(event),
            ]);
        }
        for event in &events {
            commands.push(vec![
                "XADD".into(),
                self.events_stream(&event.execution_id),
                format!("0-{}", event.seq),
                "m".into(),
                encode(event),
            ]);
        }
        let apps: BTreeMap<AppRef, ()> = actions.iter().map(|r| (r.app.clone(), ())).collect();
        for app in apps.keys() {
            // The first time this process queues for an app: its streams, and its entry in the
            // set of apps (housekeeping walks it).
            if self.ensure_action_groups(app).await? {
                commands.push(vec![
                    "SADD".into(),
                    self.key(format_args!("apps")),
                    app.to_string(),
                ]);
            }
        }
        for mut request in actions {
            request.reply_to = Some(self.control_stream_of(&request.execution_id));
            commands.push(vec![
                "XADD".into(),
                self.action_stream(&request.app, request.priority),
                "MAXLEN".into(),
                "~".into(),
                ACTION_STREAM_MAXLEN.to_string(),
                "*".into(),
                "m".into(),
                encode(&request),
            ]);
        }
        let mut by_partition: BTreeMap<Partition, Vec<String>> = BTreeMap::new();
        for id in acks {
            let (p, entry) = split_delivery(&id);
            by_partition.entry(p).or_default().push(entry.to_string());
        }
        for (p, entries) in by_partition {
            touched.insert(p);
            commands.push_chunked(
                &["XACK".into(), self.control_stream(p), WORKERS.into()],
                entries,
            );
        }
        if commands.args.is_empty() {
            return Ok(());
        }

        let mut invocation = commit_script().prepare_invoke();
        invocation.arg(touched.len());
        for &p in &touched {
            let Some(token) = self.leases.token(p) else {
                return Err(BusError::Fenced(p));
            };
            invocation.arg(self.lease_key(p)).arg(token);
        }
        invocation.arg(commands.args);
        match invocation
            .invoke_async::<Vec<String>>(&mut self.writer.clone())
            .await
        {
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

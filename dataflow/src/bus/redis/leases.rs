//! Partition ownership. Every worker beats in `{prefix}:workers` and holds a fair share of the
//! control partitions through lease keys (`SET NX PX`, renewed by token). A worker that stops
//! renewing loses its partitions when the leases expire; the others pick them up on their next beat.
//! Commits check the leases they touch, so a worker that lost one can never write for it again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use tokio::sync::Notify;

use super::{lock, BusError, Partition, RedisBus, HEARTBEAT};

/// Take a free lease and record the new owner's token as the partition's fence, which only a
/// takeover changes (renewals leave it alone): a worker's commit that watched the fence while it
/// held our token can go as a plain transaction, see `commit_then_read`.
const ACQUIRE: &str = r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[1])
  return 1
end
return 0
"#;

/// Extend a lease this worker still holds.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// Give a lease back, if it is still ours.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

#[derive(Default)]
pub(super) struct Leases {
    state: Mutex<LeaseState>,
    /// Woken when a partition is gained.
    pub(super) changed: Notify,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Default)]
struct LeaseState {
    consumer: Option<String>,
    /// Owned partitions and their lease tokens.
    owned: BTreeMap<Partition, String>,
    /// Not yet reported to the worker.
    gained: BTreeSet<Partition>,
    lost: BTreeSet<Partition>,
    /// Above our fair share: handed back at the worker's next receive, between two batches.
    releasing: BTreeSet<Partition>,
}

/// Ownership changes to report in one receive.
pub(super) struct LeaseChanges {
    pub gained: Vec<Partition>,
    pub lost: Vec<Partition>,
}

impl Leases {
    pub(super) fn owned(&self) -> Vec<Partition> {
        lock(&self.state).owned.keys().copied().collect()
    }

    /// Ownership changes wait to be reported.
    pub(super) fn has_changes(&self) -> bool {
        let state = lock(&self.state);
        !state.gained.is_empty() || !state.lost.is_empty() || !state.releasing.is_empty()
    }

    pub(super) fn owns(&self, partition: Partition) -> bool {
        lock(&self.state).owned.contains_key(&partition)
    }

    pub(super) fn token(&self, partition: Partition) -> Option<String> {
        lock(&self.state).owned.get(&partition).cloned()
    }

    /// Report these (owned) partitions as gained again, so the worker reloads them.
    pub(super) fn regain(&self, partitions: &[Partition]) {
        let mut state = lock(&self.state);
        for p in partitions {
            if state.owned.contains_key(p) {
                state.gained.insert(*p);
            }
        }
    }

    /// A commit found this partition's lease taken.
    pub(super) fn fenced(&self, partition: Partition) {
        let mut state = lock(&self.state);
        if state.owned.remove(&partition).is_some() {
            state.gained.remove(&partition);
            state.lost.insert(partition);
        }
    }
}

impl RedisBus {
    /// Make `consumer` a worker: take a first share of partitions now and keep beating.
    pub(super) async fn become_worker(&self, consumer: &str) -> Result<(), BusError> {
        {
            let mut state = lock(&self.leases.state);
            match &state.consumer {
                Some(existing) if existing == consumer => return Ok(()),
                Some(existing) => {
                    tracing::warn!(%existing, %consumer, "one Redis bus serves one worker; keeping the first");
                    return Ok(());
                }
                None => state.consumer = Some(consumer.to_string()),
            }
        }
        self.beat().await?;
        let me = self.me.clone();
        let every = self.config.heartbeat;
        let task = tokio::spawn(async move {
            let mut stalled = false;
            loop {
                tokio::time::sleep(every).await;
                let Some(bus) = me.upgrade() else { return };
                if bus.check_open().is_err() {
                    return;
                }
                // A loop that stopped coming for work (stuck, or its task died) must not keep
                // its partitions alive: no beat, no renewal, and the others take them over.
                let since = lock(&bus.loop_seen).elapsed();
                if since > bus.config.stall_limit {
                    if !stalled {
                        tracing::error!(
                            stalled_for = ?since,
                            "the control loop has stopped coming for messages: not renewing its leases, so its partitions move to other workers"
                        );
                    }
                    stalled = true;
                    continue;
                }
                if stalled {
                    tracing::warn!("the control loop is back: beating again");
                    stalled = false;
                }
                if let Err(e) = bus.beat().await {
                    tracing::warn!(error = %e, "worker heartbeat failed");
                }
            }
        });
        *lock(&self.leases.task) = Some(task);
        Ok(())
    }

    /// One heartbeat: renew our leases, count the live workers, and move towards a fair share.
    async fn beat(&self) -> Result<(), BusError> {
        let (consumer, owned) = {
            let state = lock(&self.leases.state);
            let Some(consumer) = state.consumer.clone() else {
                return Ok(());
            };
            let owned: Vec<(Partition, String)> =
                state.owned.iter().map(|(p, t)| (*p, t.clone())).collect();
            (consumer, owned)
        };
        let ttl = self.config.lease_ttl.as_millis() as u64;
        let workers = self.keys.workers();
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(HEARTBEAT)
            .arg(1)
            .arg(&workers)
            .arg(&consumer);
        for (p, token) in &owned {
            pipe.cmd("EVAL")
                .arg(RENEW)
                .arg(1)
                .arg(self.keys.lease(*p))
                .arg(token)
                .arg(ttl);
        }
        let replies: Vec<u64> = pipe
            .query_async(&mut self.writer.clone())
            .await
            .map_err(super::unavailable)?;
        let now = replies[0];
        let (live,): (usize,) = redis::pipe()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&workers)
            .arg("-inf")
            .arg(format!("({}", now.saturating_sub(ttl)))
            .ignore()
            .cmd("ZCARD")
            .arg(&workers)
            .query_async(&mut self.writer.clone())
            .await
            .map_err(super::unavailable)?;
        let mut renewed = Vec::new();
        {
            let mut state = lock(&self.leases.state);
            for ((p, token), reply) in owned.iter().zip(&replies[1..]) {
                if *reply == 0 && state.owned.get(p) == Some(token) {
                    tracing::warn!(partition = p, "lease lost");
                    state.owned.remove(p);
                    state.gained.remove(p);
                    state.lost.insert(*p);
                } else {
                    renewed.push(*p);
                }
            }
        }
        let fair = self.partitions.div_ceil(live.max(1) as u32) as usize;
        if renewed.len() > fair {
            let mut state = lock(&self.leases.state);
            let extra = renewed.len() - fair;
            let keep: BTreeSet<Partition> = state.releasing.clone();
            for p in renewed
                .iter()
                .rev()
                .filter(|p| !keep.contains(p))
                .take(extra)
            {
                state.releasing.insert(*p);
            }
        } else if renewed.len() < fair {
            self.acquire(&consumer, fair - renewed.len(), ttl).await?;
        }
        Ok(())
    }

    /// Take up to `wanted` free partitions.
    async fn acquire(&self, consumer: &str, wanted: usize, ttl: u64) -> Result<(), BusError> {
        let keys: Vec<String> = (0..self.partitions).map(|p| self.keys.lease(p)).collect();
        let holders: Vec<Option<String>> = self.query(redis::cmd("MGET").arg(&keys)).await?;
        // Start at a place that depends on the worker, so workers starting together spread out.
        let offset = super::partition_of(consumer, self.partitions);
        let free: Vec<Partition> = (0..self.partitions)
            .map(|i| (i + offset) % self.partitions)
            .filter(|&p| holders[p as usize].is_none())
            .take(wanted)
            .collect();
        if free.is_empty() {
            return Ok(());
        }
        let tokens: Vec<String> = free
            .iter()
            .map(|_| format!("{consumer}:{}", uuid::Uuid::new_v4().simple()))
            .collect();
        let mut pipe = redis::pipe();
        for (p, token) in free.iter().zip(&tokens) {
            pipe.cmd("EVAL")
                .arg(ACQUIRE)
                .arg(2)
                .arg(self.keys.lease(*p))
                .arg(self.keys.fence(*p))
                .arg(token)
                .arg(ttl);
        }
        let taken: Vec<bool> = pipe
            .query_async(&mut self.writer.clone())
            .await
            .map_err(super::unavailable)?;
        let mut state = lock(&self.leases.state);
        let mut gained = false;
        for ((p, token), ok) in free.into_iter().zip(tokens).zip(taken) {
            if ok {
                tracing::info!(partition = p, "partition acquired");
                state.owned.insert(p, token);
                state.lost.remove(&p);
                state.gained.insert(p);
                gained = true;
            }
        }
        drop(state);
        if gained {
            self.leases.changed.notify_waiters();
        }
        Ok(())
    }

    /// Ownership changes since the last receive; partitions above our share are handed back now.
    pub(super) async fn take_lease_changes(&self) -> LeaseChanges {
        let (gained, mut lost, releasing) = {
            let mut state = lock(&self.leases.state);
            let releasing: Vec<(Partition, String)> = std::mem::take(&mut state.releasing)
                .into_iter()
                .filter_map(|p| state.owned.remove(&p).map(|t| (p, t)))
                .collect();
            for (p, _) in &releasing {
                state.gained.remove(p);
            }
            (
                std::mem::take(&mut state.gained)
                    .into_iter()
                    .collect::<Vec<_>>(),
                std::mem::take(&mut state.lost)
                    .into_iter()
                    .collect::<Vec<_>>(),
                releasing,
            )
        };
        if !releasing.is_empty() {
            self.release(&releasing).await;
            lost.extend(releasing.iter().map(|(p, _)| *p));
        }
        LeaseChanges { gained, lost }
    }

    async fn release(&self, leases: &[(Partition, String)]) {
        let mut pipe = redis::pipe();
        for (p, token) in leases {
            tracing::info!(partition = p, "partition handed back");
            pipe.cmd("EVAL")
                .arg(RELEASE)
                .arg(1)
                .arg(self.keys.lease(*p))
                .arg(token)
                .ignore();
        }
        if let Err(e) = self.run(&pipe).await {
            tracing::warn!(error = %e, "could not hand partitions back; their leases will expire");
        }
    }

    /// The worker's control loop came for messages or to commit: it is not stuck.
    pub(super) fn loop_came_back(&self) {
        *lock(&self.loop_seen) = std::time::Instant::now();
    }

    /// Stop being a worker: hand every partition back and leave the worker set, so others take
    /// over at once instead of after the lease TTL.
    pub(super) async fn leave(&self) {
        if let Some(task) = lock(&self.leases.task).take() {
            task.abort();
        }
        let (consumer, owned) = {
            let mut state = lock(&self.leases.state);
            let owned: Vec<(Partition, String)> =
                std::mem::take(&mut state.owned).into_iter().collect();
            (state.consumer.clone(), owned)
        };
        let Some(consumer) = consumer else { return };
        self.release(&owned).await;
        let left: Result<(), _> = redis::cmd("ZREM")
            .arg(self.keys.workers())
            .arg(&consumer)
            .query_async(&mut self.writer.clone())
            .await;
        if let Err(e) = left {
            tracing::warn!(error = %e, "could not leave the worker set");
        }
        self.leases.changed.notify_waiters();
    }
}

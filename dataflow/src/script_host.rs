//! Script isolation: conditions and transforms evaluated in a pool of script-host processes
//! (`walkoff script-host`), each under a hard memory limit (`RLIMIT_DATA`) and a CPU limit
//! (`RLIMIT_CPU`, renewed per script), and killed by the worker when a script outlives its time
//! limit. Starlark checks its own limits only between operations, so one native call (`"a" * n`)
//! could take the whole process down; in a host it takes down the host alone, which is replaced,
//! and the node fails with the limit it broke. Hosts are reused from script to script: a request
//! is a line of JSON carrying a batch of jobs on the host's stdin, and each answer a line on its
//! stdout, written as soon as the job is done.
//!
//! The `walkoff` binary isolates every script ([`isolate_scripts`] at start); a library user
//! (and this crate's own tests) evaluates in-process unless it asks for hosts.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use walkoff_schema::{NodeResult, Outcome};

use crate::execution::ScriptJob;
use crate::script::ScriptLimits;

/// Where conditions and transforms run.
#[derive(Clone, Debug, Default)]
pub enum ScriptIsolation {
    /// On the blocking pool of this process, watched by a timer (a library's default).
    #[default]
    InProcess,
    /// In script-host processes.
    Hosts(Arc<ScriptHosts>),
}

/// How to start script hosts.
#[derive(Clone, Debug)]
pub struct ScriptHostConfig {
    /// The program and arguments of a host (`walkoff script-host --memory-mib N`).
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Hosts at most, so scripts at most at once (more wait their turn).
    pub hosts: usize,
    /// Each host's memory limit, as given to it in `args`; named in the error of a script that
    /// exceeds it.
    pub memory_limit_mib: u64,
    /// Environment variables set for each host.
    pub env: Vec<(String, String)>,
}

/// Memory a script host may use, by default: Starlark's own heap limit is 64 MiB, and the
/// host's code and buffers need the rest.
pub const DEFAULT_HOST_MEMORY_MIB: u64 = 256;

impl ScriptHostConfig {
    /// Hosts run as `PROGRAM script-host --memory-mib N`, `program` being the `walkoff` binary,
    /// one per core.
    pub fn walkoff(program: PathBuf, memory_limit_mib: u64) -> ScriptHostConfig {
        ScriptHostConfig {
            program,
            args: vec![
                "script-host".into(),
                "--memory-mib".into(),
                memory_limit_mib.to_string(),
            ],
            hosts: std::thread::available_parallelism().map_or(2, |n| n.get()),
            memory_limit_mib,
            env: vec![(
                "MIMALLOC_ARENA_RESERVE".into(),
                walkoff_allocator_reserve(memory_limit_mib).into(),
            )],
        }
    }

    /// Hosts that are this very binary (see [`ScriptHostConfig::walkoff`]).
    pub fn this_binary(memory_limit_mib: u64) -> std::io::Result<ScriptHostConfig> {
        Ok(ScriptHostConfig::walkoff(
            std::env::current_exe()?,
            memory_limit_mib,
        ))
    }
}

/// The arena mimalloc (walkoff's allocator) may reserve in a host with this memory limit. By
/// default it reserves 1 GiB at start, which counts against `RLIMIT_DATA` at once: a host would
/// fail its first allocation past the arena whatever a script used, while a script could use the
/// arena's gigabyte under any limit. Its smallest arena, 64 MiB, leaves a 256 MiB limit three
/// quarters for scripts and keeps allocation fast (a host spends 8 µs a script, against 24–34 µs
/// mapping memory as it goes, which smaller limits need to hold at their value).
fn walkoff_allocator_reserve(memory_limit_mib: u64) -> &'static str {
    if memory_limit_mib >= 256 {
        "64MiB"
    } else {
        "0"
    }
}

static PROCESS_DEFAULT: OnceLock<ScriptIsolation> = OnceLock::new();

/// Run every script of this process's runtimes in hosts started from `config` (set once, at
/// start; [`RuntimeConfig::default`](crate::RuntimeConfig) picks it up).
pub fn isolate_scripts(config: ScriptHostConfig) {
    let _ = PROCESS_DEFAULT.set(ScriptIsolation::Hosts(Arc::new(ScriptHosts::new(config))));
}

impl ScriptIsolation {
    /// What [`isolate_scripts`] chose for this process, or in-process.
    pub fn process_default() -> ScriptIsolation {
        PROCESS_DEFAULT.get().cloned().unwrap_or_default()
    }

    /// Evaluate `job`; whatever the script does, the answer is a result for its node.
    pub async fn run(&self, job: ScriptJob, limits: ScriptLimits) -> NodeResult {
        let mut results = self.run_all(vec![job], limits);
        results
            .recv()
            .await
            .expect("every job is answered with a result")
    }

    /// Evaluate `jobs`, each result sent as soon as it is known (in no particular order); the
    /// channel closes after the last.
    pub fn run_all(
        &self,
        jobs: Vec<ScriptJob>,
        limits: ScriptLimits,
    ) -> mpsc::UnboundedReceiver<NodeResult> {
        let (results, received) = mpsc::unbounded_channel();
        match self {
            ScriptIsolation::InProcess => {
                for job in jobs {
                    let results = results.clone();
                    tokio::spawn(async move {
                        let _ = results.send(run_in_process(job, limits).await);
                    });
                }
            }
            ScriptIsolation::Hosts(hosts) => hosts.submit(jobs, limits, results),
        }
        received
    }
}

/// How long past its time limit a script may run before it is stopped from outside: Starlark
/// stops it itself between operations, a single huge operation is not interrupted.
fn watchdog(limits: &ScriptLimits) -> Duration {
    limits.max_duration * 2 + Duration::from_millis(250)
}

/// The node run a script is for: what a failure that is not the script's own answer names
/// (kept apart so the job itself, parents' results and all, need not be copied to fail it).
struct ScriptNode {
    execution_id: String,
    node_id: String,
    attempt: u32,
}

impl ScriptNode {
    fn of(job: &ScriptJob) -> ScriptNode {
        ScriptNode {
            execution_id: job.execution_id.clone(),
            node_id: job.node_id.clone(),
            attempt: job.attempt,
        }
    }

    fn failed(self, started_at: chrono::DateTime<Utc>, error: String) -> NodeResult {
        NodeResult {
            execution_id: self.execution_id,
            node_id: self.node_id,
            shard: None,
            attempt: self.attempt,
            outcome: Outcome::Failure {
                error,
                retryable: false,
            },
            started_at,
            finished_at: Utc::now(),
        }
    }
}

fn time_limit_error(limits: &ScriptLimits) -> String {
    format!(
        "script exceeded its time limit of {} ms",
        limits.max_duration.as_millis()
    )
}

async fn run_in_process(job: ScriptJob, limits: ScriptLimits) -> NodeResult {
    let started_at = Utc::now();
    let node = ScriptNode::of(&job);
    let evaluation = tokio::task::spawn_blocking(move || job.run(&limits));
    match tokio::time::timeout(watchdog(&limits), evaluation).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => node.failed(started_at, format!("the script evaluation crashed: {e}")),
        // The thread runs on: only a host can be stopped from outside.
        Err(_) => node.failed(started_at, time_limit_error(&limits)),
    }
}

/// One job of a request to a host: sent borrowed, read owned.
#[derive(Serialize, Deserialize)]
struct HostJob<Job> {
    job: Job,
    limits: ScriptLimits,
}

/// A job waiting for a host, with where its result goes.
struct Queued {
    job: ScriptJob,
    limits: ScriptLimits,
    reply: mpsc::UnboundedSender<NodeResult>,
}

/// Jobs waiting for a host. Each host has a thread of its own that takes its share of what
/// waits — everything that came while it was busy, so a burst costs one exchange per host, not
/// one per script — sends it in one request and passes each answer on as it is read.
#[derive(Default)]
struct JobQueue {
    state: Mutex<QueueState>,
    arrived: Condvar,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Queued>,
    closing: bool,
}

/// Jobs one request carries at most.
const MAX_JOBS_PER_REQUEST: usize = 64;

impl JobQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait for jobs and take a share: what waits divided among the hosts, so a burst is spread
    /// over them. None when the pool closes.
    fn take(&self, hosts: usize) -> Option<VecDeque<Queued>> {
        let mut state = self.lock();
        loop {
            if state.closing {
                return None;
            }
            if !state.jobs.is_empty() {
                let share = state
                    .jobs
                    .len()
                    .div_ceil(hosts.max(1))
                    .clamp(1, MAX_JOBS_PER_REQUEST);
                return Some(state.jobs.drain(..share).collect());
            }
            state = self.arrived.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A pool of script hosts, each started when first needed and replaced when it dies, each
/// served by a thread of its own.
pub struct ScriptHosts {
    config: ScriptHostConfig,
    queue: Arc<JobQueue>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for ScriptHosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptHosts")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Host {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

/// How waiting for an answer ended.
enum Answer {
    Result(NodeResult),
    /// The host answered something that is not a result: it cannot be trusted again.
    Garbled(String),
    /// The host is gone (killed, or broke a limit).
    Died(std::process::ExitStatus),
    /// No answer in the watchdog's time: the host was killed.
    TimedOut,
}

impl Host {
    fn start(config: &ScriptHostConfig) -> std::io::Result<Host> {
        let mut child = Command::new(&config.program)
            .args(&config.args)
            .envs(config.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // What a script prints, and why a host died, go to this process's stderr.
            .stderr(Stdio::inherit())
            .spawn()?;
        let (Some(input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other("the script host has no pipes"));
        };
        Ok(Host {
            child,
            input,
            output: BufReader::new(output),
        })
    }

    fn send(&mut self, request: &str) -> std::io::Result<()> {
        self.input.write_all(request.as_bytes())?;
        self.input.flush()
    }

    /// The next answer, waiting at most `wait` for it to begin.
    fn answer(&mut self, wait: Duration) -> Answer {
        if !self.output.buffer().contains(&b'\n') {
            let deadline = std::time::Instant::now() + wait;
            loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    kill(self.child.id());
                    let _ = self.child.wait();
                    return Answer::TimedOut;
                }
                let timeout = rustix::time::Timespec {
                    tv_sec: left.as_secs() as i64,
                    tv_nsec: i64::from(left.subsec_nanos()),
                };
                let mut fds = [rustix::event::PollFd::new(
                    self.output.get_ref(),
                    rustix::event::PollFlags::IN,
                )];
                match rustix::event::poll(&mut fds, Some(&timeout)) {
                    Ok(0) | Err(rustix::io::Errno::INTR) => continue,
                    _ => break,
                }
            }
        }
        let mut line = String::new();
        match self.output.read_line(&mut line) {
            Ok(n) if n > 0 => match serde_json::from_str(&line) {
                Ok(result) => Answer::Result(result),
                Err(e) => Answer::Garbled(format!("the script host answered garbage: {e}")),
            },
            // End of file or a broken pipe: the host is gone.
            _ => self.reap(),
        }
    }

    /// The host is gone (or must be): reap it to learn why.
    fn reap(&mut self) -> Answer {
        let _ = self.child.kill();
        match self.child.wait() {
            Ok(status) => Answer::Died(status),
            Err(e) => Answer::Garbled(format!("the script host vanished: {e}")),
        }
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ScriptHosts {
    pub fn new(config: ScriptHostConfig) -> ScriptHosts {
        ScriptHosts {
            config,
            queue: Arc::default(),
            threads: Mutex::new(Vec::new()),
        }
    }

    /// Queue `jobs`; each result goes to `reply` as soon as it is known.
    fn submit(
        &self,
        jobs: Vec<ScriptJob>,
        limits: ScriptLimits,
        reply: mpsc::UnboundedSender<NodeResult>,
    ) {
        {
            let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
            while threads.len() < self.config.hosts.max(1) {
                let queue = Arc::clone(&self.queue);
                let config = self.config.clone();
                let serving = std::thread::Builder::new()
                    .name(format!("script-host-{}", threads.len()))
                    .spawn(move || serve_queue(&queue, &config));
                match serving {
                    Ok(thread) => threads.push(thread),
                    Err(e) => {
                        tracing::error!(error = %e, "could not start a script host's thread");
                        break;
                    }
                }
            }
            if threads.is_empty() {
                let started_at = Utc::now();
                for job in jobs {
                    let _ = reply.send(ScriptNode::of(&job).failed(
                        started_at,
                        "no thread could be started to serve script hosts".into(),
                    ));
                }
                return;
            }
        }
        let mut state = self.queue.lock();
        if state.closing {
            let started_at = Utc::now();
            for job in jobs {
                let _ = reply.send(
                    ScriptNode::of(&job)
                        .failed(started_at, "the script hosts are shut down".into()),
                );
            }
            return;
        }
        state.jobs.extend(jobs.into_iter().map(|job| Queued {
            job,
            limits,
            reply: reply.clone(),
        }));
        drop(state);
        self.queue.arrived.notify_all();
    }
}

/// A host's thread: take a share of the waiting jobs, send it in one request, pass each answer
/// on. A host that breaks a limit fails the job it was on; the jobs after it in the request,
/// which it never started, go to its replacement.
fn serve_queue(queue: &JobQueue, config: &ScriptHostConfig) {
    let mut host: Option<Host> = None;
    while let Some(mut jobs) = queue.take(config.hosts) {
        while !jobs.is_empty() {
            let started_at = Utc::now();
            let fail_all = |jobs: &mut VecDeque<Queued>, error: String| {
                for queued in jobs.drain(..) {
                    let _ = queued
                        .reply
                        .send(ScriptNode::of(&queued.job).failed(started_at, error.clone()));
                }
            };
            let request: Vec<HostJob<&ScriptJob>> = jobs
                .iter()
                .map(|queued| HostJob {
                    job: &queued.job,
                    limits: queued.limits,
                })
                .collect();
            let request = match serde_json::to_string(&request) {
                Ok(mut request) => {
                    request.push('\n');
                    request
                }
                Err(e) => {
                    fail_all(&mut jobs, format!("could not send the script: {e}"));
                    continue;
                }
            };
            let current = match host.take() {
                Some(current) => Ok(current),
                None => Host::start(config),
            };
            let mut current = match current {
                Ok(current) => current,
                Err(e) => {
                    let error = format!(
                        "could not start a script host ({}): {e}",
                        config.program.display()
                    );
                    fail_all(&mut jobs, error);
                    continue;
                }
            };
            // A host that cannot take the request is gone: the first job fails with why, as if it
            // had been running, so a host that dies at once cannot have its jobs resent for ever.
            let sent = current.send(&request).is_ok();
            let mut healthy = true;
            while healthy {
                let Some(queued) = jobs.pop_front() else {
                    break;
                };
                let answer = if sent {
                    current.answer(watchdog(&queued.limits))
                } else {
                    current.reap()
                };
                let node = || ScriptNode::of(&queued.job);
                let result = match answer {
                    Answer::Result(result) => result,
                    Answer::TimedOut => {
                        healthy = false;
                        node().failed(started_at, time_limit_error(&queued.limits))
                    }
                    Answer::Garbled(error) => {
                        healthy = false;
                        node().failed(started_at, error)
                    }
                    Answer::Died(status) => {
                        healthy = false;
                        tracing::warn!(node = %queued.job.node_id, %status, "a script host died and is replaced");
                        let error = if status.signal()
                            == Some(rustix::process::Signal::XCPU.as_raw())
                        {
                            time_limit_error(&queued.limits)
                        } else if status.signal() == Some(rustix::process::Signal::ABORT.as_raw()) {
                            // An allocation the memory limit refused aborts the host.
                            format!(
                                "script exceeded its memory limit of {} MiB",
                                config.memory_limit_mib
                            )
                        } else {
                            format!("the script host died ({status})")
                        };
                        node().failed(started_at, error)
                    }
                };
                let _ = queued.reply.send(result);
            }
            if healthy {
                host = Some(current);
            } else {
                current.stop();
            }
        }
    }
    if let Some(host) = host {
        host.stop();
    }
}

impl Drop for ScriptHosts {
    fn drop(&mut self) {
        self.queue.lock().closing = true;
        self.queue.arrived.notify_all();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn kill(pid: u32) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// This process's private writable memory (`VmData`), what `RLIMIT_DATA` limits.
fn mapped_data_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmData:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib << 10)
}

/// The host's side (`walkoff script-host`): limit this process's memory, then evaluate one
/// request per line of stdin, answering each with a line on stdout, until stdin closes.
pub fn serve_host(memory_limit_mib: u64) -> std::io::Result<()> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let bytes = memory_limit_mib.saturating_mul(1 << 20);
    // The limit counts what is mapped already: a host that starts above it (an allocator that
    // reserved memory up front) would fail at its first allocation, so it refuses to start.
    if let Some(mapped) = mapped_data_bytes().filter(|&mapped| mapped >= bytes / 2) {
        return Err(std::io::Error::other(format!(
            "the script host maps {} MiB at start, too close to its memory limit of \
             {memory_limit_mib} MiB (is MIMALLOC_ARENA_RESERVE=0 set?)",
            mapped >> 20
        )));
    }
    setrlimit(
        Resource::Data,
        Rlimit {
            current: Some(bytes),
            maximum: Some(bytes),
        },
    )?;
    // A panic ends the host at once (no unwinding, no backtrace to symbolize with no memory
    // left): an allocation the limit refused — Starlark's arena panics "out of memory" — as an
    // abort, which the worker reports as the memory limit; anything else as a plain exit.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("script host: {info}");
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if message.contains("out of memory") || message.contains("memory allocation") {
            std::process::abort();
        }
        std::process::exit(70);
    }));
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let cpu_maximum = getrlimit(Resource::Cpu).maximum;
    let mut cpu_limit = None;
    for line in stdin.lines() {
        let line = line?;
        let request: Vec<HostJob<ScriptJob>> = serde_json::from_str(&line)
            .map_err(|e| std::io::Error::other(format!("not a script request: {e}")))?;
        for HostJob { job, limits } in request {
            // CPU seconds from now on: the kernel stops a host that computes past them, whatever
            // the worker does.
            // (Whole seconds: it changes about once per second of CPU, and is set only then.)
            let wanted = Some(cpu_seconds() + watchdog(&limits).as_secs() + 1);
            if wanted != cpu_limit {
                setrlimit(
                    Resource::Cpu,
                    Rlimit {
                        current: wanted,
                        maximum: cpu_maximum,
                    },
                )?;
                cpu_limit = wanted;
            }
            let result = job.run(&limits);
            let mut answer = serde_json::to_string(&result)
                .map_err(|e| std::io::Error::other(format!("could not answer: {e}")))?;
            answer.push('\n');
            stdout.write_all(answer.as_bytes())?;
            // Each answer as soon as it is known: the worker passes it on while the next runs.
            stdout.flush()?;
        }
    }
    Ok(())
}

/// CPU seconds this process has used (user and system), rounded up.
fn cpu_seconds() -> u64 {
    let used = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    u64::try_from(used.tv_sec).unwrap_or(0) + u64::from(used.tv_nsec > 0)
}

//! Script isolation: conditions and transforms evaluated in a pool of script-host processes
//! (`walkoff script-host`), each under a hard memory limit (`RLIMIT_DATA`) and a CPU limit
//! (`RLIMIT_CPU`, renewed per script), and killed by the worker when a script outlives its time
//! limit. Starlark checks its own limits only between operations, so one native call (`"a" * n`)
//! could take the whole process down; in a host it takes down the host alone, which is replaced,
//! and the node fails with the limit it broke. Hosts are reused from script to script: one
//! request and one answer, a line of JSON each, over the host's stdin and stdout.
//!
//! The `walkoff` binary isolates every script ([`isolate_scripts`] at start); a library user
//! (and this crate's own tests) evaluates in-process unless it asks for hosts.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
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
        match self {
            ScriptIsolation::InProcess => run_in_process(job, limits).await,
            ScriptIsolation::Hosts(hosts) => hosts.run(job, limits).await,
        }
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

/// One request to a host: sent with the job borrowed, read with it owned.
#[derive(Serialize, Deserialize)]
struct HostRequest<Job> {
    job: Job,
    limits: ScriptLimits,
}

/// A pool of script hosts, started when first needed and replaced when one dies.
#[derive(Debug)]
pub struct ScriptHosts {
    config: ScriptHostConfig,
    idle: Mutex<Vec<Host>>,
    turns: Semaphore,
}

#[derive(Debug)]
struct Host {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

/// How a call to a host ended.
enum Answer {
    Result(NodeResult),
    /// The host answered something that is not a result: it cannot be trusted again.
    Garbled(String),
    /// The host is gone (killed, or broke a limit).
    Died(std::process::ExitStatus),
}

impl Host {
    fn start(config: &ScriptHostConfig) -> std::io::Result<Host> {
        let mut child = Command::new(&config.program)
            .args(&config.args)
            // mimalloc (walkoff's allocator) reserves a 1 GiB arena at start, which counts
            // against RLIMIT_DATA at once: the host would then fail its first allocation past
            // the arena whatever a script uses, while a script could use the arena's gigabyte
            // below any limit. Without the reserve, memory is mapped as used, and the limit holds.
            .env("MIMALLOC_ARENA_RESERVE", "0")
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

    /// Send one request and read its answer (blocking).
    fn call(&mut self, request: &str) -> Answer {
        let mut line = String::new();
        let exchanged = self
            .input
            .write_all(request.as_bytes())
            .and_then(|_| self.input.flush())
            .and_then(|_| self.output.read_line(&mut line));
        match exchanged {
            Ok(n) if n > 0 => match serde_json::from_str(&line) {
                Ok(result) => Answer::Result(result),
                Err(e) => Answer::Garbled(format!("the script host answered garbage: {e}")),
            },
            // End of file or a broken pipe: the host is gone; reap it to learn why.
            _ => {
                let _ = self.child.kill();
                match self.child.wait() {
                    Ok(status) => Answer::Died(status),
                    Err(e) => Answer::Garbled(format!("the script host vanished: {e}")),
                }
            }
        }
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ScriptHosts {
    pub fn new(config: ScriptHostConfig) -> ScriptHosts {
        let turns = Semaphore::new(config.hosts.max(1));
        ScriptHosts {
            config,
            idle: Mutex::new(Vec::new()),
            turns,
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Host>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Evaluate `job` in a host: an idle one, or a new one.
    pub async fn run(&self, job: ScriptJob, limits: ScriptLimits) -> NodeResult {
        let started_at = Utc::now();
        let Ok(_turn) = self.turns.acquire().await else {
            return ScriptNode::of(&job)
                .failed(started_at, "the script hosts are shut down".into());
        };
        let request = match serde_json::to_string(&HostRequest { job: &job, limits }) {
            Ok(mut request) => {
                request.push('\n');
                request
            }
            Err(e) => {
                return ScriptNode::of(&job)
                    .failed(started_at, format!("could not send the script: {e}"))
            }
        };
        let idle = self.idle().pop();
        let mut host = match idle {
            Some(host) => host,
            None => match Host::start(&self.config) {
                Ok(host) => host,
                Err(e) => {
                    return ScriptNode::of(&job).failed(
                        started_at,
                        format!(
                            "could not start a script host ({}): {e}",
                            self.config.program.display()
                        ),
                    )
                }
            },
        };
        let pid = host.child.id();
        let call = tokio::task::spawn_blocking(move || {
            let answer = host.call(&request);
            (host, answer)
        });
        tokio::pin!(call);
        let (timed_out, joined) = match tokio::time::timeout(watchdog(&limits), &mut call).await {
            Ok(joined) => (false, joined),
            Err(_) => {
                // Stopped from outside; the call then sees the end of its pipe and returns.
                kill(pid);
                (true, call.await)
            }
        };
        let (host, answer) = match joined {
            Ok(done) => done,
            Err(e) => {
                return ScriptNode::of(&job)
                    .failed(started_at, format!("the script call crashed: {e}"))
            }
        };
        match answer {
            Answer::Result(result) if !timed_out => {
                self.idle().push(host);
                result
            }
            Answer::Result(_) => {
                host.stop();
                ScriptNode::of(&job).failed(started_at, time_limit_error(&limits))
            }
            Answer::Garbled(error) => {
                host.stop();
                ScriptNode::of(&job).failed(started_at, error)
            }
            Answer::Died(status) => {
                tracing::warn!(node = %job.node_id, %status, "a script host died and is replaced");
                let error = if timed_out
                    || status.signal() == Some(rustix::process::Signal::XCPU.as_raw())
                {
                    time_limit_error(&limits)
                } else if status.signal() == Some(rustix::process::Signal::ABORT.as_raw()) {
                    // An allocation the memory limit refused aborts the host.
                    format!(
                        "script exceeded its memory limit of {} MiB",
                        self.config.memory_limit_mib
                    )
                } else {
                    format!("the script host died ({status})")
                };
                ScriptNode::of(&job).failed(started_at, error)
            }
        }
    }
}

impl Drop for ScriptHosts {
    fn drop(&mut self) {
        for host in self.idle().drain(..) {
            host.stop();
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
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lines() {
        let line = line?;
        let request: HostRequest<ScriptJob> = serde_json::from_str(&line)
            .map_err(|e| std::io::Error::other(format!("not a script request: {e}")))?;
        // CPU seconds from now on: the kernel stops a host that computes past them, whatever
        // the worker does.
        let allowed = watchdog(&request.limits).as_secs() + 1;
        let used = cpu_seconds();
        let cpu = getrlimit(Resource::Cpu);
        setrlimit(
            Resource::Cpu,
            Rlimit {
                current: Some(used + allowed),
                maximum: cpu.maximum,
            },
        )?;
        let result = request.job.run(&request.limits);
        let mut answer = serde_json::to_string(&result)
            .map_err(|e| std::io::Error::other(format!("could not answer: {e}")))?;
        answer.push('\n');
        stdout.write_all(answer.as_bytes())?;
        stdout.flush()?;
    }
    Ok(())
}

/// CPU seconds this process has used (user and system), rounded up.
fn cpu_seconds() -> u64 {
    let used = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    u64::try_from(used.tv_sec).unwrap_or(0) + u64::from(used.tv_nsec > 0)
}

//! walkoff on a real single-node Docker Swarm, made and removed by this test: `dockerd` from
//! Debian's `docker.io` with its own data and exec roots and no changes to the host's network
//! (`--bridge=none --iptables=false --ip-forward=false`), a base image made by `debootstrap` from
//! the mirror apt uses (no registry is reachable here), the images of `stack/images/` built on it,
//! and `stack/walkoff.yml` deployed with every service on the host's network (its overlay network
//! swapped for `host`, every server on 127.0.0.1): containers here talk over loopback only.
//!
//! A workflow runs through the gateways' GraphQL API while a worker and the executor are killed
//! (`docker kill`); every execution completes, exactly once. A burst makes the autoscaler scale the
//! app's executors up within 5 s and back down when idle. Then everything is removed and nothing
//! is left: no container, service, secret, volume or network device.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const REDIS_PASSWORD: &str = "redis-password-1";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Debian mirror apt uses (`URIs:` of a deb822 source, or a `deb` line).
fn debian_mirror() -> String {
    let sources = [
        "/etc/apt/sources.list.d/debian.sources",
        "/etc/apt/sources.list",
    ];
    for file in sources {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines() {
            let line = line.trim();
            if let Some(uri) = line.strip_prefix("URIs:") {
                if let Some(first) = uri.split_whitespace().next() {
                    if !first.contains("security") {
                        return first.to_string();
                    }
                }
            }
            if let Some(rest) = line.strip_prefix("deb ") {
                if let Some(uri) = rest.split_whitespace().find(|w| w.starts_with("http")) {
                    if !uri.contains("security") {
                        return uri.to_string();
                    }
                }
            }
        }
    }
    "http://deb.debian.org/debian".to_string()
}

fn run(command: &mut Command) -> Output {
    let shown = format!("{command:?}");
    let output = command.output().unwrap_or_else(|e| panic!("{shown}: {e}"));
    assert!(
        output.status.success(),
        "{shown} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A dockerd of this test's own, in a swarm of one node; everything it made is removed when
/// dropped, the daemon stopped, and Swarm's bridge deleted.
struct Swarm {
    dir: tempfile::TempDir,
    dockerd: Child,
}

impl Swarm {
    fn start() -> Swarm {
        assert!(
            is_root(),
            "the swarm test starts its own dockerd, which needs root (scripts/test runs as root in CI)"
        );
        let dir = tempfile::Builder::new()
            .prefix("walkoff-swarm")
            .tempdir()
            .unwrap();
        let socket = dir.path().join("docker.sock");
        let log = std::fs::File::create(dir.path().join("dockerd.log")).unwrap();
        let dockerd = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args(["--bridge=none", "--iptables=false", "--ip-forward=false"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd starts (scripts/test installs docker.io)");
        let swarm = Swarm { dir, dockerd };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !swarm.docker(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer: {}",
                swarm.log()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        swarm.ok(&[
            "swarm",
            "init",
            "--advertise-addr",
            "127.0.0.1",
            "--listen-addr",
            &format!("127.0.0.1:{}", free_port()),
        ]);
        swarm
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    fn command(&self) -> Command {
        let mut command = Command::new("docker");
        command
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.dir.path().join("docker.sock").display()),
            )
            .env("DOCKER_BUILDKIT", "0");
        command
    }

    fn docker(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .output()
            .expect("the docker CLI runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&run(self.command().args(args)).stdout).into_owned()
    }

    fn lines(&self, args: &[&str]) -> Vec<String> {
        self.ok(args)
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// `debian:bookworm-slim`, as a user would pull it: a minimal root made by `debootstrap`
    /// (kept as a tarball in the target directory for the next run).
    fn base_image(&self) {
        let tarball = Path::new(env!("CARGO_TARGET_TMPDIR")).join("debian-bookworm-minbase.tar");
        if !tarball.exists() {
            let root = self.dir.path().join("rootfs");
            run(Command::new("debootstrap")
                .args(["--variant=minbase", "bookworm"])
                .arg(&root)
                .arg(debian_mirror())
                .stdout(Stdio::null()));
            let partial = tarball.with_extension("partial");
            run(Command::new("tar")
                .arg("-C")
                .arg(&root)
                .arg("-cf")
                .arg(&partial)
                .arg("."));
            std::fs::rename(&partial, &tarball).unwrap();
        }
        run(self
            .command()
            .args(["import", "-", "debian:bookworm-slim"])
            .stdin(std::fs::File::open(&tarball).unwrap()));
    }

    fn build(&self, tag: &str, context: &Path) {
        run(self
            .command()
            .args(["build", "--quiet", "--network", "host", "-t", tag])
            .arg(context));
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let _ = self.docker(&["stack", "rm", "walkoff"]);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && !self.docker(&["ps", "-aq"]).stdout.is_empty() {
            std::thread::sleep(Duration::from_millis(500));
        }
        let _ = self.docker(&["swarm", "leave", "--force"]);
        let _ = Command::new("kill")
            .args(["-TERM", &self.dockerd.id().to_string()])
            .status();
        let _ = self.dockerd.wait();
        // dockerd leaves network namespaces mounted under its exec root: unmount them, so the
        // directory (with every image in it) can be removed.
        for mountpoint in mounts_under(self.dir.path()).into_iter().rev() {
            let _ = Command::new("umount").arg(&mountpoint).status();
        }
        // Swarm makes this bridge even with --bridge=none.
        let _ = Command::new("ip")
            .args(["link", "del", "docker_gwbridge"])
            .status();
    }
}

/// The mount points at or below `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .filter(|mountpoint| Path::new(mountpoint).starts_with(dir))
        .map(str::to_string)
        .collect()
}

/// `stack/walkoff.yml` with every service on the host's network instead of the overlay one, and
/// no published ports (there is no routing mesh on the host network).
fn host_network_stack(to: &Path) {
    let text = std::fs::read_to_string(repository().join("stack/walkoff.yml")).unwrap();
    let mut stack: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    stack.apply_merge().unwrap();
    let services = stack["services"].as_mapping_mut().unwrap();
    for (_, service) in services.iter_mut() {
        let service = service.as_mapping_mut().unwrap();
        service.insert(
            "networks".into(),
            serde_yaml::from_str("[hostnet]").unwrap(),
        );
        service.remove("ports");
    }
    stack["networks"] = serde_yaml::from_str("{hostnet: {external: true, name: host}}").unwrap();
    std::fs::write(to, serde_yaml::to_string(&stack).unwrap()).unwrap();
}

async fn graphql(url: &str, token: Option<&str>, query: &str, variables: Value) -> Value {
    let mut request = reqwest::Client::new()
        .post(url)
        .json(&json!({"query": query, "variables": variables}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let body: Value = request.send().await.unwrap().json().await.unwrap();
    assert!(body.get("errors").is_none(), "{query}: {body}");
    body["data"].clone()
}

/// The gateways' API as the test uses it: a token, workflows imported, runs started and awaited.
struct Api {
    url: String,
    token: String,
}

impl Api {
    async fn call(&self, query: &str, variables: Value) -> Value {
        graphql(&self.url, Some(&self.token), query, variables).await
    }

    async fn import(&self, workflow: Value) -> String {
        let imported = self
            .call(
                "mutation($j: JSON!) { importWorkflow(json: $j) { id } }",
                json!({"j": workflow}),
            )
            .await;
        imported["importWorkflow"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn run(&self, workflow: &str) -> String {
        let started = self
            .call(
                "mutation($id: ID!) { executeWorkflow(workflowId: $id) { id } }",
                json!({"id": workflow}),
            )
            .await;
        started["executeWorkflow"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Waits until `execution` has COMPLETED (and fails the test if it fails or takes too long).
    async fn completed(&self, execution: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let status = self
                .call(
                    "query($id: ID!) { execution(id: $id) { status } }",
                    json!({"id": execution}),
                )
                .await;
            match status["execution"]["status"].as_str().unwrap() {
                "COMPLETED" => return,
                "FAILED" | "ABORTED" => panic!("{execution}: {status}"),
                _ => {
                    assert!(
                        Instant::now() < deadline,
                        "{execution} did not complete: {status}"
                    );
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stack_runs_on_a_real_swarm_and_loses_nothing_when_tasks_are_killed() {
    let swarm = Swarm::start();
    swarm.base_image();
    // The walkoff image takes the binary cargo built, as `walkoff stack up` gives it.
    let context = swarm.dir.path().join("walkoff-image");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::copy(
        repository().join("stack/images/walkoff/Dockerfile"),
        context.join("Dockerfile"),
    )
    .unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_walkoff"), context.join("walkoff")).unwrap();
    swarm.build("walkoff/walkoff:latest", &context);
    swarm.build(
        "walkoff/redis:latest",
        &repository().join("stack/images/redis"),
    );
    swarm.build(
        "walkoff/postgres:latest",
        &repository().join("stack/images/postgres"),
    );

    let admin_password = "swarm admin password";
    for (name, value) in [
        (
            "walkoff_key",
            "dGVzdHMgb25seTogbm90IGEgc2VjcmV0IGF0IGFsbCE=",
        ),
        ("walkoff_admin_password", admin_password),
        ("walkoff_super_admin_password", "swarm super admin password"),
        ("walkoff_redis_password", REDIS_PASSWORD),
        ("walkoff_postgres_password", "postgres-password-1"),
    ] {
        let mut create = swarm.command();
        create
            .args(["secret", "create", name, "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        let mut child = create.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(value.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "secret {name}");
    }

    let stack_file = swarm.dir.path().join("walkoff-host.yml");
    host_network_stack(&stack_file);
    let gateway_port = free_port();
    let metrics_port = free_port();
    let redis_port = free_port();
    let mut deploy = swarm.command();
    deploy
        .args(["stack", "deploy", "--compose-file"])
        .arg(&stack_file)
        .arg("walkoff")
        .env("WALKOFF_BIND", "127.0.0.1")
        .env("WALKOFF_REUSE_PORT", "true")
        .env("WALKOFF_REDIS_HOST", "127.0.0.1")
        .env("WALKOFF_REDIS_PORT", redis_port.to_string())
        .env("WALKOFF_POSTGRES_HOST", "127.0.0.1")
        .env("WALKOFF_POSTGRES_PORT", free_port().to_string())
        .env("WALKOFF_GATEWAY_PORT", gateway_port.to_string())
        .env(
            "WALKOFF_DOCKER_SOCKET",
            swarm.dir.path().join("docker.sock"),
        )
        .env("WALKOFF_AUTOSCALE_METRICS_PORT", metrics_port.to_string());
    run(&mut deploy);

    // Every service healthy: as many running, healthy containers as replicas asked for.
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let services = swarm.lines(&["service", "ls", "--format", "{{.Name}} {{.Replicas}}"]);
        let healthy = swarm.lines(&["ps", "--filter", "health=healthy", "--format", "{{.Names}}"]);
        let ready = services.len() == 6
            && services.iter().all(|line| {
                let (name, replicas) = line.split_once(' ').unwrap();
                let wanted: usize = replicas.split('/').nth(1).unwrap().parse().unwrap();
                healthy
                    .iter()
                    .filter(|c| c.starts_with(&format!("{name}.")))
                    .count()
                    >= wanted
            });
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stack did not become healthy: {services:?}, healthy {healthy:?}\n{}",
            swarm.ok(&["service", "ps", "--no-trunc", "walkoff_gateway"])
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // A workflow through the gateways: twenty runs of three half-second actions.
    let url = format!("http://127.0.0.1:{gateway_port}/graphql");
    let login = graphql(
        &url,
        None,
        "mutation($p: String!) { login(username: \"admin\", password: $p) { accessToken } }",
        json!({"p": admin_password}),
    )
    .await;
    let token = login["login"]["accessToken"].as_str().unwrap().to_string();
    let api = Api {
        url: url.clone(),
        token,
    };
    let workflow = json!({
        "id": "slow-chain", "name": "Slow chain", "start": "one",
        "nodes": [
            {"label": "one", "kind": "action", "app": "basics", "action": "pause", "parameters": [{"name": "seconds", "value": 0.5}]},
            {"label": "two", "kind": "action", "app": "basics", "action": "pause", "parameters": [{"name": "seconds", "value": 0.5}]},
            {"label": "three", "kind": "action", "app": "basics", "action": "pause", "parameters": [{"name": "seconds", "value": 0.5}]}
        ],
        "branches": [{"from": "one", "to": "two"}, {"from": "two", "to": "three"}]
    });
    let id = api.import(workflow).await;
    let mut executions = Vec::new();
    for _ in 0..20 {
        executions.push(api.run(&id).await);
    }
    // Mid-run: a worker and the executor killed outright; Swarm starts others.
    tokio::time::sleep(Duration::from_millis(700)).await;
    for service in ["walkoff_worker", "walkoff_app_basics_1_0_0"] {
        let container = swarm.lines(&["ps", "-q", "--filter", &format!("name={service}.")]);
        swarm.ok(&["kill", &container[0]]);
    }

    // Every execution completes, and exactly once: one final event each, each node's success
    // recorded once.
    for execution in &executions {
        api.completed(execution, Duration::from_secs(180)).await;
        let events = api
            .call(
                "query($id: ID!) { execution(id: $id) { events { subject status label } } }",
                json!({"id": execution}),
            )
            .await;
        let events = events["execution"]["events"].as_array().unwrap();
        let count = |subject: &str, status: &str, label: Option<&str>| {
            events
                .iter()
                .filter(|e| {
                    e["subject"] == subject
                        && e["status"] == status
                        && label.is_none_or(|l| e["label"] == l)
                })
                .count()
        };
        assert_eq!(
            count("WORKFLOW", "COMPLETED", None),
            1,
            "{execution}: {events:?}"
        );
        for node in ["one", "two", "three"] {
            assert_eq!(
                count("NODE", "SUCCESS", Some(node)),
                1,
                "{execution} {node}: {events:?}"
            );
        }
    }

    // A burst: the autoscaler sees the backlog and scales the app's executors up within 5 s, and
    // back down to its minimum once the work is done and the quiet period (15 s) has passed.
    let replicas = || {
        swarm
            .ok(&[
                "service",
                "inspect",
                "--format",
                "{{.Spec.Mode.Replicated.Replicas}}",
                "walkoff_app_basics_1_0_0",
            ])
            .trim()
            .parse::<u32>()
            .unwrap()
    };
    assert_eq!(replicas(), 1);
    let burst = json!({
        "id": "burst", "name": "Burst", "start": "wait",
        "nodes": [{"label": "wait", "kind": "action", "app": "basics", "action": "pause", "parameters": [{"name": "seconds", "value": 1}]}],
        "branches": []
    });
    let burst_id = api.import(burst).await;
    let mut burst_runs = Vec::new();
    for _ in 0..80 {
        burst_runs.push(api.run(&burst_id).await);
    }
    let submitted = Instant::now();
    while replicas() < 2 {
        assert!(
            submitted.elapsed() < Duration::from_secs(5),
            "not scaled up within 5 s of the burst"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let scaled_up_after = submitted.elapsed();
    let most = replicas();
    for execution in &burst_runs {
        api.completed(execution, Duration::from_secs(120)).await;
    }
    let idle = Instant::now();
    while replicas() > 1 {
        assert!(
            idle.elapsed() < Duration::from_secs(45),
            "not scaled back down when idle"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "scaled up to {most} replicas {:.1} s after the burst; back to 1 {:.1} s after it was done",
        scaled_up_after.as_secs_f64(),
        idle.elapsed().as_secs_f64()
    );

    // Its decisions are metrics too.
    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted = |direction: &str| {
        let line = format!("walkoff_autoscale_scaled_total{{service=\"walkoff_app_basics_1_0_0\",direction=\"{direction}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {direction} count in the metrics:\n{metrics}"))
    };
    assert!(counted("up") >= 1 && counted("down") >= 1, "{metrics}");
    assert!(
        metrics.contains("walkoff_autoscale_replicas{service=\"walkoff_app_basics_1_0_0\"} 1"),
        "{metrics}"
    );

    // With WALKOFF_SWARM_BURST_OUT=DIR: a burst of 10,000 actions, charted (docs/benchmarks.md).
    if let Ok(out) = std::env::var("WALKOFF_SWARM_BURST_OUT") {
        let redis = format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{redis_port}");
        burst_chart(&api, &redis, metrics_port, Path::new(&out)).await;
    }

    // Down, with everything it made: nothing is left.
    swarm.ok(&["stack", "rm", "walkoff"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    while !swarm.lines(&["ps", "-aq"]).is_empty() {
        assert!(Instant::now() < deadline, "containers left after stack rm");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for secret in swarm.lines(&["secret", "ls", "-q"]) {
        swarm.ok(&["secret", "rm", &secret]);
    }
    for volume in swarm.lines(&["volume", "ls", "-q"]) {
        swarm.ok(&["volume", "rm", &volume]);
    }
    assert!(swarm.lines(&["service", "ls", "-q"]).is_empty());
    assert!(swarm.lines(&["secret", "ls", "-q"]).is_empty());
    assert!(swarm.lines(&["volume", "ls", "-q"]).is_empty());
    let root = swarm.dir.path().to_path_buf();
    drop(swarm);
    assert!(
        mounts_under(&root).is_empty(),
        "mounts left under {}",
        root.display()
    );
    assert!(!root.exists(), "{} is left", root.display());
    let bridge = Command::new("ip")
        .args(["link", "show", "docker_gwbridge"])
        .output()
        .unwrap();
    assert!(
        !bridge.status.success(),
        "Swarm's bridge is left on the host"
    );
}

/// One sample of a burst: seconds since it began, the app's backlog (read from Redis), its
/// replicas (from the autoscaler's metrics) and the actions of completed executions.
struct Sample {
    at: f64,
    backlog: u64,
    replicas: u64,
    completed: u64,
}

fn metric(metrics: &str, name: &str) -> u64 {
    let prefix = format!("{name}{{service=\"walkoff_app_basics_1_0_0\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// 100 executions of one parallel action over 100 items (all in flight at once): 10,000 actions
/// for the app's executors, sampled every 100 ms until the service is back to one replica, then
/// written as `samples.csv`, `burst.svg` and `summary.md` in `out`.
async fn burst_chart(api: &Api, redis: &str, metrics_port: u16, out: &Path) {
    const EXECUTIONS: u64 = 100;
    const SHARDS: u64 = 100;
    std::fs::create_dir_all(out).unwrap();
    let fan = json!({
        "id": "fan", "name": "Fan out", "start": "each",
        "nodes": [{"label": "each", "kind": "action", "app": "basics", "action": "echo_array",
                   "parallelized": true, "concurrency": SHARDS,
                   "parameters": [{"name": "data", "value": (0..SHARDS).collect::<Vec<_>>(), "parallelized": true}]}],
        "branches": []
    });
    let id = api.import(fan).await;
    let begin = Instant::now();
    let mut connection = redis::Client::open(redis)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys = walkoff_dataflow::bus::RedisKeys::new("walkoff");
    let basics = walkoff_schema::AppRef {
        name: "basics".into(),
        version: "1.0.0".into(),
    };
    let sampler = {
        let (url, token, id) = (api.url.clone(), api.token.clone(), id.clone());
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut done_at: Option<Instant> = None;
            loop {
                let metrics =
                    match reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics")).await {
                        Ok(r) => r.text().await.unwrap_or_default(),
                        Err(_) => String::new(),
                    };
                let completed = graphql(
                    &url,
                    Some(&token),
                    "query($w: ID!) { executions(first: 200, filter: {workflowId: $w, statuses: [COMPLETED]}) { nodes { id } } }",
                    json!({"w": id}),
                )
                .await["executions"]["nodes"]
                    .as_array()
                    .map_or(0, |n| n.len() as u64);
                let sample = Sample {
                    at: begin.elapsed().as_secs_f64(),
                    backlog: walkoff_stack::app_backlog(&mut connection, &keys, &basics)
                        .await
                        .map_or(0, |b| b.total()),
                    replicas: metric(&metrics, "walkoff_autoscale_replicas"),
                    completed: completed * SHARDS,
                };
                let finished = sample.completed == EXECUTIONS * SHARDS;
                let at_min = sample.replicas == 1;
                samples.push(sample);
                if finished {
                    let since = *done_at.get_or_insert_with(Instant::now);
                    if at_min || since.elapsed() > Duration::from_secs(60) {
                        return samples;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    for _ in 0..EXECUTIONS {
        api.run(&id).await;
    }
    let submitted = begin.elapsed().as_secs_f64();
    let samples = sampler.await.unwrap();

    let mut csv = String::from("seconds,backlog,replicas,actions_completed\n");
    for s in &samples {
        csv.push_str(&format!(
            "{:.2},{},{},{}\n",
            s.at, s.backlog, s.replicas, s.completed
        ));
    }
    std::fs::write(out.join("samples.csv"), csv).unwrap();
    let peak_backlog = samples.iter().map(|s| s.backlog).max().unwrap_or(0);
    let most = samples.iter().map(|s| s.replicas).max().unwrap_or(0);
    let first_up = samples.iter().find(|s| s.replicas > 1).map(|s| s.at);
    let all_done = samples
        .iter()
        .find(|s| s.completed == EXECUTIONS * SHARDS)
        .map(|s| s.at);
    let back_down = samples.last().map(|s| s.at);
    std::fs::write(
        out.join("summary.md"),
        format!(
            "# A burst of {} actions on the swarm\n\n{EXECUTIONS} executions of one parallel `echo_array` over {SHARDS} items, submitted through the gateways in {submitted:.1} s; sampled every 100 ms (backlog from Redis, replicas from the autoscaler's metrics, completions from the API).\n\n| | |\n|---|---|\n| peak backlog | {peak_backlog} |\n| most replicas | {most} |\n| first scaled up | {} |\n| every action done | {} |\n| back to one replica | {} |\n",
            EXECUTIONS * SHARDS,
            first_up.map_or("never".into(), |t| format!("{t:.1} s")),
            all_done.map_or("never".into(), |t| format!("{t:.1} s")),
            back_down.map_or("never".into(), |t| format!("{t:.1} s")),
        ),
    )
    .unwrap();
    draw_burst(&out.join("burst.svg"), &samples).unwrap();
}

fn draw_burst(path: &Path, samples: &[Sample]) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (900, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(420);
    let x_max = samples.last().map_or(1.0, |s| s.at).max(1.0);
    let y_max = samples
        .iter()
        .map(|s| s.backlog.max(s.completed))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.05;
    let mut chart = ChartBuilder::on(&top)
        .caption("A burst of 10,000 actions on the swarm", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    chart.configure_mesh().y_desc("actions").draw()?;
    for (label, color, value) in [
        (
            "backlog (waiting + in hand)",
            RED,
            (|s: &Sample| s.backlog) as fn(&Sample) -> u64,
        ),
        ("actions of completed executions", BLUE, |s: &Sample| {
            s.completed
        }),
    ] {
        chart
            .draw_series(LineSeries::new(
                samples.iter().map(|s| (s.at, value(s) as f64)),
                color.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 15, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    let most = samples.iter().map(|s| s.replicas).max().unwrap_or(1).max(1) as f64 + 1.0;
    let mut replicas = ChartBuilder::on(&bottom)
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..most)?;
    replicas
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("executor replicas")
        .draw()?;
    replicas.draw_series(LineSeries::new(
        samples.iter().map(|s| (s.at, s.replicas as f64)),
        GREEN.stroke_width(2),
    ))?;
    root.present()?;
    Ok(())
}

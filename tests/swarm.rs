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
        // Swarm makes this bridge even with --bridge=none.
        let _ = Command::new("ip")
            .args(["link", "del", "docker_gwbridge"])
            .status();
    }
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
        ("walkoff_redis_password", "redis-password-1"),
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
    let mut deploy = swarm.command();
    deploy
        .args(["stack", "deploy", "--compose-file"])
        .arg(&stack_file)
        .arg("walkoff")
        .env("WALKOFF_BIND", "127.0.0.1")
        .env("WALKOFF_REUSE_PORT", "true")
        .env("WALKOFF_REDIS_HOST", "127.0.0.1")
        .env("WALKOFF_REDIS_PORT", free_port().to_string())
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
    let workflow = json!({
        "id": "slow-chain", "name": "Slow chain", "start": "one",
        "nodes": [
            {"label": "one", "kind": "action", "app": "basics", "action": "pause", "parameters": [{"name": "seconds", "value": 0.5}]},
            {"label": "two", "kind": "action", "app": "basics", "action": "pause", "parameters": [{"name": "seconds", "value": 0.5}]},
            {"label": "three", "kind": "action", "app": "basics", "action": "pause", "parameters": [{"name": "seconds", "value": 0.5}]}
        ],
        "branches": [{"from": "one", "to": "two"}, {"from": "two", "to": "three"}]
    });
    let id = graphql(
        &url,
        Some(&token),
        "mutation($j: JSON!) { importWorkflow(json: $j) { id } }",
        json!({"j": workflow}),
    )
    .await["importWorkflow"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut executions = Vec::new();
    for _ in 0..20 {
        let started = graphql(
            &url,
            Some(&token),
            "mutation($id: ID!) { executeWorkflow(workflowId: $id) { id } }",
            json!({"id": id}),
        )
        .await;
        executions.push(
            started["executeWorkflow"]["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // Mid-run: a worker and the executor killed outright; Swarm starts others.
    tokio::time::sleep(Duration::from_millis(700)).await;
    for service in ["walkoff_worker", "walkoff_app_basics_1_0_0"] {
        let container = swarm.lines(&["ps", "-q", "--filter", &format!("name={service}.")]);
        swarm.ok(&["kill", &container[0]]);
    }

    // Every execution completes, and exactly once: one final event each, each node's success
    // recorded once.
    let deadline = Instant::now() + Duration::from_secs(180);
    for execution in &executions {
        loop {
            let status = graphql(
                &url,
                Some(&token),
                "query($id: ID!) { execution(id: $id) { status } }",
                json!({"id": execution}),
            )
            .await;
            match status["execution"]["status"].as_str().unwrap() {
                "COMPLETED" => break,
                "FAILED" | "ABORTED" => panic!("{execution}: {status}"),
                _ => {
                    assert!(
                        Instant::now() < deadline,
                        "{execution} did not complete: {status}"
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        let events = graphql(
            &url,
            Some(&token),
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
    let burst_id = graphql(
        &url,
        Some(&token),
        "mutation($j: JSON!) { importWorkflow(json: $j) { id } }",
        json!({"j": burst}),
    )
    .await["importWorkflow"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut burst_runs = Vec::new();
    for _ in 0..80 {
        let started = graphql(
            &url,
            Some(&token),
            "mutation($id: ID!) { executeWorkflow(workflowId: $id) { id } }",
            json!({"id": burst_id}),
        )
        .await;
        burst_runs.push(
            started["executeWorkflow"]["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
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
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let status = graphql(
                &url,
                Some(&token),
                "query($id: ID!) { execution(id: $id) { status } }",
                json!({"id": execution}),
            )
            .await;
            match status["execution"]["status"].as_str().unwrap() {
                "COMPLETED" => break,
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
    drop(swarm);
    let bridge = Command::new("ip")
        .args(["link", "show", "docker_gwbridge"])
        .output()
        .unwrap();
    assert!(
        !bridge.status.success(),
        "Swarm's bridge is left on the host"
    );
}

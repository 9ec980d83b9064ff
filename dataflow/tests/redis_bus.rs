//! The Redis Streams bus passes the same conformance suite as the in-memory bus, against a real
//! `redis-server`; and what the network sends it cannot break it.

mod redis_server;

use std::sync::Arc;
use std::time::Duration;

use redis_server::RedisServer;
use walkoff_dataflow::bus::partition_of;
use walkoff_dataflow::bus::{RedisBus, RedisBusConfig};
use walkoff_dataflow::{Bus, Delivery};
use walkoff_schema::ControlMessage;

async fn bus(server: &RedisServer) -> Arc<dyn Bus> {
    RedisBus::connect(&server.url(), "walkoff")
        .await
        .expect("connect")
}

async fn bus_with(server: &RedisServer, config: RedisBusConfig) -> Arc<dyn Bus> {
    RedisBus::connect_with(&server.url(), config)
        .await
        .expect("connect")
}

/// Limit Redis's memory (0: no limit); at one byte, Redis refuses every write as out of memory.
async fn set_maxmemory(server: &RedisServer, bytes: u64) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(bytes)
        .query_async(&mut server.connection().await)
        .await
        .unwrap();
}

/// Receive control messages as worker "w1" until `n` arrived (ownership changes come in between).
async fn receive(bus: &Arc<dyn Bus>, n: usize) -> Vec<Delivery<ControlMessage>> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} messages arrived",
            got.len()
        );
        match bus.recv_control("w1", 10, Duration::from_millis(200)).await {
            Ok(batch) => got.extend(batch.deliveries),
            Err(e) => eprintln!("receive failed: {e}"),
        }
    }
    got
}

walkoff_dataflow::bus_conformance_tests!(async {
    let server = RedisServer::start();
    (bus(&server).await, server)
});

#[tokio::test]
async fn a_malformed_control_message_is_dead_lettered_and_stops_nothing() {
    let server = RedisServer::start();
    let bus = bus(&server).await;
    // Make sure the group exists, then write garbage and a good message after it.
    assert!(bus
        .recv_control("w1", 10, Duration::ZERO)
        .await
        .unwrap()
        .deliveries
        .is_empty());
    let mut conn = server.connection().await;
    let _: String = redis::cmd("XADD")
        .arg(format!(
            "walkoff:control:{}",
            partition_of("e", bus.partitions())
        ))
        .arg("*")
        .arg("m")
        .arg("{not json")
        .query_async(&mut conn)
        .await
        .unwrap();
    bus.send_control(vec![walkoff_schema::ControlMessage::Abort {
        execution_id: "e".into(),
    }])
    .await
    .unwrap();
    let got = receive(&bus, 1).await;
    assert_eq!(got.len(), 1, "the good message is delivered");
    bus.ack_control(vec![got[0].id.clone()]).await.unwrap();
    assert_eq!(
        bus.pending().await.unwrap(),
        0,
        "the bad one is acknowledged, not left pending"
    );
    let dead: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("walkoff:dead")
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(dead.ids.len(), 1);
    let reason: String = dead.ids[0].get("reason").unwrap();
    assert!(
        reason.contains("key must be a string") || reason.contains("expected"),
        "{reason}"
    );
}

mod common;

#[tokio::test]
async fn the_runtime_runs_workflows_over_redis() {
    use std::collections::BTreeMap;

    use futures::StreamExt;
    use serde_json::json;
    use walkoff_dataflow::{BusDispatch, ExecutionSummary, Runtime, RuntimeConfig};
    use walkoff_schema::{NodeStatus, WorkflowStatus};

    let server = RedisServer::start();
    let bus = bus(&server).await;
    common::spawn_test_executor(Arc::clone(&bus));
    let runtime = Runtime::start(
        Arc::clone(&bus),
        Arc::new(BusDispatch(Arc::clone(&bus))),
        Arc::new(common::catalog()),
        RuntimeConfig::default(),
    );
    let wf = common::workflow(json!({
        "start": "a",
        "nodes": [
            common::action("a", "echo", json!([{"name": "value", "value": 10}])),
            {"label": "pick", "kind": "condition", "code": "if a.result > 5:\n    selected_node = fan\nelse:\n    selected_node = other"},
            {"label": "fan", "kind": "action", "action": "items", "parallelized": true, "concurrency": 3,
             "parameters": [{"name": "data", "value": [1, 2, 3, 4, 5], "parallelized": true}]},
            common::action("other", "noop", json!([])),
            {"label": "gate", "kind": "trigger"},
        ],
        "branches": common::edges(&[("a", "pick"), ("pick", "fan"), ("pick", "other"), ("fan", "gate")]),
    }));
    let id = runtime
        .submit(Arc::new(wf), BTreeMap::new(), &BTreeMap::new())
        .await
        .unwrap();
    let mut summary = ExecutionSummary::new(&id);
    let mut events = Box::pin(runtime.events(&id, 1));
    while let Some(event) = tokio::time::timeout(Duration::from_secs(20), events.next())
        .await
        .expect("the execution moves on")
    {
        let event = event.unwrap();
        summary.apply(&event);
        if let walkoff_schema::EventKind::Node(n) = &event.kind {
            if n.label == "gate" && n.status == NodeStatus::AwaitingData {
                runtime
                    .trigger(&id, "gate", json!({"go": true}))
                    .await
                    .unwrap();
            }
        }
    }
    assert_eq!(summary.status, WorkflowStatus::Completed);
    assert_eq!(common::status(&summary, "other"), NodeStatus::Skipped);
    let items: Vec<_> = (1..=5).map(|i| json!({"item": i})).collect();
    assert_eq!(common::result(&summary, "fan"), json!(items));
    assert_eq!(common::result(&summary, "gate"), json!({"go": true}));
    assert_eq!(
        bus.pending().await.unwrap(),
        0,
        "every message acknowledged"
    );
    runtime.shutdown().await;
    bus.close().await;
}

#[tokio::test]
async fn groups_lost_with_redis_data_are_created_again() {
    let server = RedisServer::start();
    let bus = bus(&server).await;
    assert!(bus
        .recv_control("w1", 10, Duration::ZERO)
        .await
        .unwrap()
        .deliveries
        .is_empty());
    let mut conn = server.connection().await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    // The first read after the loss fails with the reason; later ones work again (the worker
    // takes its partitions back as their leases went with the data).
    let lost = bus
        .recv_control("w1", 10, Duration::ZERO)
        .await
        .unwrap_err();
    assert!(lost.to_string().contains("NOGROUP"), "{lost}");
    bus.send_control(vec![walkoff_schema::ControlMessage::Abort {
        execution_id: "e".into(),
    }])
    .await
    .unwrap();
    let got = receive(&bus, 1).await;
    assert_eq!(got.len(), 1);
}

/// A worker's commit writes the log, the running set, events, requests and acknowledgements
/// together; once its lease is taken over, a commit writes nothing at all.
#[tokio::test]
async fn commits_are_all_or_nothing_and_fenced_after_a_takeover() {
    use walkoff_dataflow::bus::{conformance, Commit, ExecutionRecord};

    let server = RedisServer::start();
    let bus = bus(&server).await;
    bus.send_control(vec![ControlMessage::Abort {
        execution_id: "e".into(),
    }])
    .await
    .unwrap();
    let delivered = receive(&bus, 1).await;
    let log = vec![delivered[0].message.clone()];
    bus.commit(
        "w1",
        Commit {
            acks: vec![delivered[0].id.clone()],
            logs: vec![("e".into(), log.clone())],
            started: vec!["e".into()],
            events: vec![conformance::node_event("e", 1)],
            actions: vec![conformance::request("e", "n", 3)],
            ..Commit::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        bus.lookup_executions(&["e".into(), "never".into()])
            .await
            .unwrap(),
        [
            ExecutionRecord::Running(log.clone()),
            ExecutionRecord::Absent
        ]
    );
    let partition = partition_of("e", bus.partitions());
    assert_eq!(
        bus.load_partition(partition).await.unwrap(),
        [("e".to_string(), log.clone())]
    );
    assert_eq!(
        bus.read_events("e", 1, 10, Duration::ZERO)
            .await
            .unwrap()
            .len(),
        1
    );
    let requests = bus
        .recv_actions(&conformance::app(), "x1", 10, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(requests.len(), 1);
    let reply_to = requests[0].message.reply_to.clone().unwrap();
    assert_eq!(reply_to, format!("walkoff:control:{partition}"));

    // Finishing keeps the log for the retention time, then Redis drops it.
    bus.commit(
        "w1",
        Commit {
            finished: vec!["e".into()],
            ..Commit::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        bus.lookup_executions(&["e".into()]).await.unwrap(),
        [ExecutionRecord::Finished]
    );
    let mut conn = server.connection().await;
    for key in ["walkoff:exec:e", "walkoff:events:e"] {
        let ttl: i64 = redis::cmd("TTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!((86_000..=86_400).contains(&ttl), "{key} expires in {ttl} s");
    }

    // Another worker took partition "f" over (the lease expired): nothing of a commit is written.
    let f_partition = partition_of("f", bus.partitions());
    let _: () = redis::cmd("SET")
        .arg(format!("walkoff:lease:{f_partition}"))
        .arg("someone-else")
        .query_async(&mut conn)
        .await
        .unwrap();
    let fenced = bus
        .commit(
            "w1",
            Commit {
                logs: vec![("f".into(), log.clone())],
                started: vec!["f".into()],
                events: vec![conformance::node_event("f", 1)],
                ..Commit::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(fenced, walkoff_dataflow::BusError::Fenced(f_partition));
    assert_eq!(
        bus.lookup_executions(&["f".into()]).await.unwrap(),
        [ExecutionRecord::Absent]
    );
    assert!(bus
        .read_events("f", 1, 10, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
    // The worker hears it lost the partition.
    let batch = bus
        .recv_control("w1", 10, Duration::from_millis(10))
        .await
        .unwrap();
    assert!(batch.lost.contains(&f_partition), "{batch:?}");
}

/// How many times Redis ran `command` since it started.
async fn calls(server: &RedisServer, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut server.connection().await)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// After its first commit, a worker commits with its next read as a plain transaction (no script),
/// fenced by watching the partitions' fences: it writes what the script writes (an event stored
/// before is no failure), all or nothing, and once another worker took a partition over, a commit
/// for it writes nothing at all — though the worker has not heard of the takeover yet.
#[tokio::test]
async fn transaction_commits_are_fenced_by_a_takeover_the_worker_has_not_heard_of() {
    use walkoff_dataflow::bus::{conformance, Commit, ExecutionRecord};
    use walkoff_dataflow::BusError;

    let server = RedisServer::start();
    // "w1" beats once, when it becomes a worker, and never again: like a paused worker, it cannot
    // learn from its heartbeat that it lost a partition.
    let bus: Arc<dyn Bus> = bus_with(
        &server,
        RedisBusConfig {
            heartbeat: Duration::from_secs(3600),
            ..RedisBusConfig::default()
        },
    )
    .await;
    let gained = bus
        .recv_control("w1", 10, Duration::from_millis(10))
        .await
        .unwrap()
        .gained;
    assert_eq!(
        gained.len(),
        bus.partitions() as usize,
        "w1 owns everything"
    );
    let commit_for = |id: &str| Commit {
        logs: vec![(
            id.into(),
            vec![ControlMessage::Abort {
                execution_id: id.into(),
            }],
        )],
        started: vec![id.into()],
        events: vec![conformance::node_event(id, 1)],
        ..Commit::default()
    };
    let commit_and_recv = |commit| {
        let bus = bus.clone();
        async move {
            bus.commit_and_recv("w1", commit, 10, Duration::from_millis(10))
                .await
        }
    };

    // The first commit arms the watch; the second goes as a transaction.
    let (committed, next) = commit_and_recv(commit_for("e")).await;
    committed.unwrap();
    next.unwrap().unwrap();
    let scripts = calls(&server, "evalsha").await;
    let (committed, next) = commit_and_recv(commit_for("e")).await;
    committed.unwrap();
    next.unwrap().unwrap();
    assert_eq!(
        calls(&server, "evalsha").await,
        scripts,
        "no script ran for the second commit"
    );
    let ExecutionRecord::Running(log) = &bus.lookup_executions(&["e".into()]).await.unwrap()[0]
    else {
        panic!("e is running");
    };
    assert_eq!(log.len(), 2, "both commits appended to the log");
    assert_eq!(
        bus.read_events("e", 1, 10, Duration::ZERO)
            .await
            .unwrap()
            .len(),
        1,
        "the event committed twice is stored once"
    );

    // Out of memory, Redis refuses the whole transaction.
    set_maxmemory(&server, 1).await;
    let (refused, next) = commit_and_recv(commit_for("g")).await;
    set_maxmemory(&server, 0).await;
    assert!(refused.is_err(), "an out-of-memory commit must fail");
    assert!(next.is_none());
    assert_eq!(
        bus.lookup_executions(&["g".into()]).await.unwrap(),
        [ExecutionRecord::Absent]
    );
    // The next commit arms the watch again.
    let (committed, _) = commit_and_recv(commit_for("e")).await;
    committed.unwrap();

    // w1's leases expire (deleted here) and "w2" takes partitions over.
    let mut raw = server.connection().await;
    for p in 0..bus.partitions() {
        let _: () = redis::cmd("DEL")
            .arg(format!("walkoff:lease:{p}"))
            .query_async(&mut raw)
            .await
            .unwrap();
    }
    let other = self::bus(&server).await;
    let taken = other
        .recv_control("w2", 10, Duration::from_millis(10))
        .await
        .unwrap()
        .gained;
    assert!(!taken.is_empty(), "w2 took partitions");
    let id = (0..)
        .map(|i| format!("f{i}"))
        .find(|id| taken.contains(&partition_of(id, bus.partitions())))
        .unwrap();
    let partition = partition_of(&id, bus.partitions());

    let (fenced, next) = commit_and_recv(commit_for(&id)).await;
    assert_eq!(fenced.unwrap_err(), BusError::Fenced(partition));
    assert!(next.is_none(), "what the read brought stays pending");
    assert_eq!(
        bus.lookup_executions(std::slice::from_ref(&id))
            .await
            .unwrap(),
        [ExecutionRecord::Absent]
    );
    assert!(bus
        .read_events(&id, 1, 10, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
    let batch = bus
        .recv_control("w1", 10, Duration::from_millis(10))
        .await
        .unwrap();
    assert!(batch.lost.contains(&partition), "{batch:?}");
}

/// Housekeeping hands the requests of an executor that stopped beating to another one, counting
/// the delivery; past the limit it dead-letters the request and fails its node. A live executor's
/// request is never taken away, however long it runs.
#[tokio::test]
async fn requests_of_dead_executors_are_handed_out_again_then_dead_lettered() {
    use walkoff_dataflow::bus::conformance;
    use walkoff_schema::Outcome;

    let server = RedisServer::start();
    let bus = bus(&server).await;
    // "w1" becomes the only worker, owning partition 0, so it does the housekeeping.
    let owned = bus.recv_control("w1", 10, Duration::ZERO).await.unwrap();
    assert!(owned.gained.contains(&0));
    let app = conformance::app();
    let mut doomed = conformance::request("e", "doomed", 3);
    doomed.max_deliveries = 2;
    bus.send_actions(vec![doomed, conformance::request("e", "steady", 3)])
        .await
        .unwrap();
    bus.executor_heartbeat(&app, "alive").await.unwrap();
    let held = bus
        .recv_actions(&app, "alive", 1, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(held[0].message.node_id, "doomed");
    // "alive" beats: housekeeping leaves its request alone.
    bus.maintain("w1", Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        bus.pending().await.unwrap(),
        1,
        "a live executor keeps its request"
    );
    // "ghost" takes the other request and never beats.
    let taken = bus
        .recv_actions(&app, "ghost", 1, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(taken[0].message.node_id, "steady");
    assert_eq!(taken[0].deliveries, 1);
    bus.maintain("w1", Duration::from_secs(30)).await.unwrap();
    let again = bus
        .recv_actions(&app, "ghost-2", 1, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(again[0].message.node_id, "steady");
    assert_eq!(again[0].deliveries, 2, "the hand-out is counted");
    // "alive" dies holding "doomed" (delivery 1 of 2) and ghost-2 dies holding "steady" (no limit).
    let mut conn = server.connection().await;
    let _: () = redis::cmd("DEL")
        .arg("walkoff:executors:conformance@1.0.0")
        .query_async(&mut conn)
        .await
        .unwrap();
    bus.maintain("w1", Duration::from_secs(30)).await.unwrap();
    let both = bus
        .recv_actions(&app, "last", 2, Duration::from_secs(1))
        .await
        .unwrap();
    let mut nodes: Vec<(String, u32)> = both
        .iter()
        .map(|d| (d.message.node_id.clone(), d.deliveries))
        .collect();
    nodes.sort();
    assert_eq!(nodes, [("doomed".into(), 2), ("steady".into(), 3)]);
    // "last" dies too: "doomed" is at its limit.
    bus.maintain("w1", Duration::from_secs(30)).await.unwrap();
    let dead: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("walkoff:dead")
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(dead.ids.len(), 1);
    let reason: String = dead.ids[0].get("reason").unwrap();
    assert!(reason.contains("delivered 2 times"), "{reason}");
    let results = receive(&bus, 1).await;
    let ControlMessage::Result(result) = &results[0].message else {
        panic!("{results:?}")
    };
    assert_eq!(result.node_id, "doomed");
    match &result.outcome {
        Outcome::Failure { error, retryable } => {
            assert!(error.contains("its executor died each time"), "{error}");
            assert!(!retryable);
        }
        other => panic!("{other:?}"),
    }
    // "steady" has no limit and is queued again; nothing else is held.
    let last = bus
        .recv_actions(&app, "survivor", 5, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(
        (last[0].message.node_id.as_str(), last[0].deliveries),
        ("steady", 4)
    );
    // What housekeeping did, counted: "steady" three times, "doomed" once, then dead-lettered.
    let stats: std::collections::HashMap<String, u64> = redis::cmd("HGETALL")
        .arg("walkoff:stats")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        stats[walkoff_dataflow::bus::STAT_ACTIONS_HANDED_OUT_AGAIN],
        4
    );
    assert_eq!(stats[walkoff_dataflow::bus::STAT_ACTIONS_DEAD_LETTERED], 1);
}

/// A message read by a worker that no longer owns its partition (a read pipelined with a commit
/// that was then fenced) is left pending under that worker's name: the owner takes it over.
#[tokio::test]
async fn messages_left_pending_by_a_former_owner_are_taken_over() {
    let server = RedisServer::start();
    let bus: Arc<dyn Bus> = bus_with(
        &server,
        RedisBusConfig {
            stranded_after: Duration::from_millis(400),
            ..RedisBusConfig::default()
        },
    )
    .await;
    // "w1" becomes the only worker, owning every partition.
    for _ in 0..3 {
        bus.recv_control("w1", 10, Duration::from_millis(100))
            .await
            .unwrap();
    }
    bus.send_control(vec![ControlMessage::Abort {
        execution_id: "e".into(),
    }])
    .await
    .unwrap();
    // A former owner reads it and goes away without acknowledging it.
    let stream = format!("walkoff:control:{}", partition_of("e", bus.partitions()));
    let mut raw = server.connection().await;
    let read: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("workers")
        .arg("former-owner")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(
        read.keys[0].ids.len(),
        1,
        "the former owner read the message"
    );

    let delivered = receive(&bus, 1).await;
    assert_eq!(
        delivered[0].message,
        ControlMessage::Abort {
            execution_id: "e".into()
        }
    );
    assert_eq!(delivered[0].deliveries, 2, "counted as a second delivery");
    bus.ack_control(vec![delivered[0].id.clone()])
        .await
        .unwrap();
    assert_eq!(bus.pending().await.unwrap(), 0);
    // Once taken over, it is not delivered again.
    let again = bus
        .recv_control("w1", 10, Duration::from_millis(600))
        .await
        .unwrap();
    assert!(again.deliveries.is_empty());
}

/// A result Redis refuses (out of memory) leaves its request unacknowledged, so it is not lost with
/// the executor: reporting fails, the request stays pending, and a report once Redis takes writes
/// again delivers the result and acknowledges the request.
#[tokio::test]
async fn a_refused_result_leaves_its_request_pending() {
    use walkoff_dataflow::bus::conformance;

    let server = RedisServer::start();
    let bus = bus(&server).await;
    let app = conformance::app();
    bus.send_actions(vec![conformance::request("e", "n", 3)])
        .await
        .unwrap();
    let got = bus
        .recv_actions(&app, "c1", 1, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    let done = vec![(got[0].id.clone(), conformance::result("e", "n"))];

    set_maxmemory(&server, 1).await;
    let refused = bus.complete_actions(&app, done.clone()).await;
    assert!(refused.is_err(), "an out-of-memory report must fail");
    let (reported, _) = bus
        .complete_and_recv_actions(&app, "c1", done.clone(), 1, Duration::from_millis(50))
        .await;
    assert!(
        reported.is_err(),
        "an out-of-memory report with a read must fail"
    );
    set_maxmemory(&server, 0).await;
    assert_eq!(
        bus.pending().await.unwrap(),
        1,
        "the request is still pending"
    );

    bus.complete_actions(&app, done).await.unwrap();
    assert_eq!(bus.pending().await.unwrap(), 0);
    let delivered = receive(&bus, 1).await;
    assert_eq!(delivered.len(), 1, "the result arrives once");
}

/// Control streams do not grow without end: the owner trims what the workers are done with, and
/// never an entry still pending or not yet delivered.
#[tokio::test]
async fn control_streams_are_trimmed_to_what_is_still_pending() {
    let server = RedisServer::start();
    let bus: Arc<dyn Bus> = bus_with(
        &server,
        RedisBusConfig {
            partitions: 1,
            stranded_after: Duration::from_millis(400),
            ..RedisBusConfig::default()
        },
    )
    .await;
    let raw = server.connection().await;
    let stream = "walkoff:control:0";
    let first_and_length = || {
        let mut raw = raw.clone();
        async move {
            let first: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(stream)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut raw)
                .await
                .unwrap();
            let length: usize = redis::cmd("XLEN")
                .arg(stream)
                .query_async(&mut raw)
                .await
                .unwrap();
            (first.ids.first().map(|e| e.id.clone()), length)
        }
    };
    // Receive (and so let the owner's upkeep run, every 200 ms) until the stream is this long.
    let receive_until = |length: usize| {
        let bus = Arc::clone(&bus);
        let first_and_length = &first_and_length;
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            let mut got = Vec::new();
            loop {
                let (first, now) = first_and_length().await;
                if now <= length {
                    return (first, now, got);
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "not trimmed to {length}: still {now} entries"
                );
                let batch = bus
                    .recv_control("w1", 1000, Duration::from_millis(200))
                    .await
                    .unwrap();
                got.extend(batch.deliveries);
            }
        }
    };
    let aborts = |from: usize, n: usize| -> Vec<ControlMessage> {
        (from..from + n)
            .map(|i| ControlMessage::Abort {
                execution_id: format!("e{i}"),
            })
            .collect()
    };
    bus.send_control(aborts(0, 300)).await.unwrap();
    let delivered = receive(&bus, 300).await;
    // All acknowledged but two.
    let kept = [delivered[100].id.clone(), delivered[250].id.clone()];
    let acks: Vec<_> = delivered
        .iter()
        .map(|d| d.id.clone())
        .filter(|id| !kept.contains(id))
        .collect();
    bus.ack_control(acks).await.unwrap();

    // Trimmed to the oldest entry still pending: 200 left.
    let (first, length, more) = receive_until(200).await;
    assert!(more.is_empty(), "nothing new was sent");
    assert_eq!(length, 200);
    assert_eq!(first.as_deref(), kept[0].split_once('|').map(|(_, e)| e));
    assert_eq!(bus.pending().await.unwrap(), 2);

    // With nothing pending, trimmed to the last entry delivered.
    bus.ack_control(kept.to_vec()).await.unwrap();
    let (first, length, _) = receive_until(1).await;
    assert_eq!(length, 1);
    assert_eq!(
        first.as_deref(),
        delivered[299].id.split_once('|').map(|(_, e)| e)
    );
    // What arrives next is delivered as ever.
    bus.send_control(aborts(300, 3)).await.unwrap();
    let next = receive(&bus, 3).await;
    assert_eq!(next.len(), 3);
}

/// Housekeeping trims the action streams too: answered requests leave, one still held by an
/// executor and those nobody has taken yet stay.
#[tokio::test]
async fn action_streams_are_trimmed_to_what_executors_still_hold() {
    use walkoff_dataflow::bus::conformance;

    let server = RedisServer::start();
    let bus = bus(&server).await;
    // "w1" becomes the only worker, owning partition 0, so it does the housekeeping.
    let owned = bus.recv_control("w1", 10, Duration::ZERO).await.unwrap();
    assert!(owned.gained.contains(&0));
    let app = conformance::app();
    let requests = (0..10)
        .map(|i| conformance::request("e", &format!("n{i}"), 3))
        .collect();
    bus.send_actions(requests).await.unwrap();
    bus.executor_heartbeat(&app, "c1").await.unwrap();
    let got = bus
        .recv_actions(&app, "c1", 8, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(got.len(), 8);
    // Answered: all taken but n3; n8 and n9 were never taken.
    let done = got
        .iter()
        .filter(|d| d.message.node_id != "n3")
        .map(|d| (d.id.clone(), conformance::result("e", &d.message.node_id)))
        .collect();
    bus.complete_actions(&app, done).await.unwrap();
    bus.maintain("w1", Duration::from_secs(30)).await.unwrap();

    let mut raw = server.connection().await;
    let left: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("walkoff:actions:conformance@1.0.0:p3")
        .arg("-")
        .arg("+")
        .query_async(&mut raw)
        .await
        .unwrap();
    let nodes: Vec<String> = left
        .ids
        .iter()
        .map(|entry| {
            let m: String = entry.get("m").unwrap();
            serde_json::from_str::<serde_json::Value>(&m).unwrap()["node_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(nodes, ["n3", "n4", "n5", "n6", "n7", "n8", "n9"]);
    // The held request and the untaken ones are still served.
    let rest = bus
        .recv_actions(&app, "c1", 10, Duration::from_secs(1))
        .await
        .unwrap();
    let rest: Vec<String> = rest.into_iter().map(|d| d.message.node_id).collect();
    assert_eq!(rest, ["n8", "n9"]);
    assert_eq!(bus.pending().await.unwrap(), 3);
}

/// Action streams are never trimmed by length — neither when requests are sent, nor in a
/// commit, nor when housekeeping hands a dead executor's request out again — so a request no
/// executor has read yet cannot be lost to a backlog; housekeeping's `XTRIM MINID` removes only
/// what executors are done with. (They were written with `MAXLEN ~ 1000000`.)
#[tokio::test]
async fn action_requests_are_never_trimmed_by_length() {
    use futures::StreamExt;
    use walkoff_dataflow::bus::{conformance, Commit};

    let server = RedisServer::start();
    // MONITOR: every command Redis runs, as it runs it.
    let monitor = redis::Client::open(server.url())
        .unwrap()
        .get_async_monitor()
        .await
        .unwrap();
    let mut commands = monitor.into_on_message::<String>();
    let bus = bus(&server).await;
    let app = conformance::app();
    // Sent directly.
    bus.send_actions(vec![conformance::request("e", "sent", 3)])
        .await
        .unwrap();
    // In a commit (the worker owns partition 0 and every other as the only worker).
    bus.send_control(vec![ControlMessage::Abort {
        execution_id: "e".into(),
    }])
    .await
    .unwrap();
    let delivered = receive(&bus, 1).await;
    bus.commit(
        "w1",
        Commit {
            acks: vec![delivered[0].id.clone()],
            logs: vec![("e".into(), vec![delivered[0].message.clone()])],
            started: vec!["e".into()],
            actions: vec![conformance::request("e", "committed", 3)],
            ..Commit::default()
        },
    )
    .await
    .unwrap();
    // Handed out again: its executor takes it, then stops beating and is presumed dead.
    bus.executor_heartbeat(&app, "doomed").await.unwrap();
    let taken = bus
        .recv_actions(&app, "doomed", 10, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(taken.len(), 2);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    bus.maintain("w1", Duration::from_secs(30)).await.unwrap();
    // Every XADD to an action stream, as Redis saw it (from scripts too).
    let mut adds = Vec::new();
    while let Ok(Some(line)) =
        tokio::time::timeout(Duration::from_millis(500), commands.next()).await
    {
        if line.contains("\"XADD\"") && line.contains("walkoff:actions:") {
            adds.push(line);
        }
    }
    // Sent, committed, and both handed out again.
    assert!(adds.len() >= 4, "{adds:#?}");
    for add in &adds {
        assert!(
            !add.to_uppercase().contains("MAXLEN"),
            "trimmed by length: {add}"
        );
    }
}

/// A blocking read whose server stops answering (frozen here; a half-open connection looks the
/// same) fails once its `BLOCK` and a margin have passed, instead of hanging its reader forever.
#[tokio::test]
async fn a_blocking_read_on_a_server_that_stops_answering_fails_instead_of_hanging() {
    let server = RedisServer::start();
    let bus = bus(&server).await;
    let reader = Arc::clone(&bus);
    // Nothing to read: the read goes on to `XREAD … BLOCK 1000`.
    let read = tokio::spawn(async move {
        reader
            .read_events("nothing", 1, 10, Duration::from_secs(1))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal("STOP");
    // Far beyond the block and its margin: a read that hangs would still be waiting.
    let outcome = tokio::time::timeout(Duration::from_secs(30), read).await;
    server.signal("CONT");
    let outcome = outcome.expect("the read ended").unwrap();
    assert!(
        matches!(outcome, Err(walkoff_dataflow::BusError::Unavailable(_))),
        "{outcome:?}"
    );
}

/// Everything Redis holds, read back as values (not `DUMP`s, which also carry a stream
/// consumer's last-seen time): what a refused commit must leave exactly as it was.
async fn dataset(server: &RedisServer) -> Vec<(String, String)> {
    let mut conn = server.connection().await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    let mut values = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let read = |name: &str| {
            let mut cmd = redis::cmd(name);
            cmd.arg(&key);
            cmd
        };
        let value: redis::Value = match kind.as_str() {
            "string" => read("GET").query_async(&mut conn).await.unwrap(),
            "list" => read("LRANGE")
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .unwrap(),
            "set" => {
                let mut members: Vec<String> =
                    read("SMEMBERS").query_async(&mut conn).await.unwrap();
                members.sort();
                redis::Value::Array(
                    members
                        .into_iter()
                        .map(|m| redis::Value::BulkString(m.into_bytes()))
                        .collect(),
                )
            }
            "zset" => read("ZRANGE")
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .unwrap(),
            "hash" => read("HGETALL").query_async(&mut conn).await.unwrap(),
            "stream" => {
                let entries: redis::Value = read("XRANGE")
                    .arg("-")
                    .arg("+")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let groups: redis::Value = redis::cmd("XINFO")
                    .arg("GROUPS")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                redis::Value::Array(vec![entries, groups])
            }
            other => panic!("{key} is a {other}"),
        };
        let ttl: i64 = read("PTTL").query_async(&mut conn).await.unwrap();
        values.push((key, format!("{kind} {value:?} expires: {}", ttl > 0)));
    }
    values
}

/// How many kinds of commit [`commit_of_kind`] makes.
const COMMIT_KINDS: usize = 5;

/// A commit a worker makes, of one kind of write (besides acknowledging a control message), so
/// each kind of command is in turn the first the commit writes with; and the key it writes.
fn commit_of_kind(
    kind: usize,
    id: &str,
    partitions: u32,
) -> (&'static str, walkoff_dataflow::bus::Commit, String) {
    use walkoff_dataflow::bus::{conformance, Commit};
    let running = format!("walkoff:running:{}", partition_of(id, partitions));
    match kind {
        0 => (
            "log (RPUSH)",
            Commit {
                logs: vec![(
                    id.into(),
                    vec![ControlMessage::Abort {
                        execution_id: id.into(),
                    }],
                )],
                ..Commit::default()
            },
            format!("walkoff:exec:{id}"),
        ),
        1 => (
            "running set (SADD)",
            Commit {
                started: vec![id.into()],
                ..Commit::default()
            },
            running,
        ),
        2 => (
            "events (XADD)",
            Commit {
                events: vec![conformance::node_event(id, 1)],
                ..Commit::default()
            },
            format!("walkoff:events:{id}"),
        ),
        3 => {
            let app = conformance::app();
            (
                "action request (XADD)",
                Commit {
                    actions: vec![conformance::request(id, "n", 3)],
                    ..Commit::default()
                },
                format!("walkoff:actions:{}@{}:p3", app.name, app.version),
            )
        }
        _ => (
            "end (SREM, EXPIRE, XADD to the finished feed)",
            Commit {
                finished: vec![id.into()],
                events: vec![conformance::final_event(id, 2)],
                ..Commit::default()
            },
            "walkoff:finished".into(),
        ),
    }
}

/// A worker that beats once, when it starts: nothing else writes while a test compares what
/// Redis holds.
async fn quiet_bus(server: &RedisServer) -> Arc<dyn Bus> {
    bus_with(
        server,
        RedisBusConfig {
            heartbeat: Duration::from_secs(3600),
            ..RedisBusConfig::default()
        },
    )
    .await
}

/// A worker with the action streams of the conformance app in place (a commit's first request
/// for an app creates them before the commit, outside it).
async fn quiet_bus_with_action_streams(server: &RedisServer) -> Arc<dyn Bus> {
    let bus = quiet_bus(server).await;
    bus.send_actions(vec![walkoff_dataflow::bus::conformance::request(
        "warm-up", "n", 3,
    )])
    .await
    .unwrap();
    bus
}

/// Send a control message and receive it as "w1": what a commit acknowledges.
async fn delivered_control(bus: &Arc<dyn Bus>, id: &str) -> walkoff_dataflow::DeliveryId {
    bus.send_control(vec![ControlMessage::Abort {
        execution_id: id.into(),
    }])
    .await
    .unwrap();
    receive(bus, 1).await.remove(0).id
}

/// Under `maxmemory`, a commit is refused whole on both paths (the script and the transaction),
/// whichever command it would write first: Redis holds exactly what it held, the control message
/// is still pending, and the same commit goes through once memory is back.
#[tokio::test]
async fn commits_out_of_memory_write_nothing_and_acknowledge_nothing() {
    for as_transaction in [false, true] {
        let server = RedisServer::start();
        let bus = quiet_bus_with_action_streams(&server).await;
        let path = if as_transaction {
            "transaction"
        } else {
            "script"
        };
        for kind in 0..COMMIT_KINDS {
            let id = format!("{path}-{kind}");
            let (what, mut commit, _) = commit_of_kind(kind, &id, bus.partitions());
            let what = format!("the {path} commit of a {what}");
            commit.acks = vec![delivered_control(&bus, &id).await];
            if as_transaction {
                // A commit with a read arms the watch; the next one goes as MULTI/EXEC.
                let (_, arm, _) = commit_of_kind(0, &format!("arm-{kind}"), bus.partitions());
                let (armed, _) = bus
                    .commit_and_recv("w1", arm, 10, Duration::from_millis(10))
                    .await;
                armed.unwrap();
            }
            let scripts = calls(&server, "evalsha").await;
            let before = dataset(&server).await;
            set_maxmemory(&server, 1).await;
            let refused = if as_transaction {
                bus.commit_and_recv("w1", commit.clone(), 10, Duration::from_millis(10))
                    .await
                    .0
            } else {
                bus.commit("w1", commit.clone()).await
            };
            set_maxmemory(&server, 0).await;
            assert!(refused.is_err(), "{what} must fail out of memory");
            if as_transaction {
                assert_eq!(
                    calls(&server, "evalsha").await,
                    scripts,
                    "{what} ran the script"
                );
            }
            assert_eq!(dataset(&server).await, before, "{what} changed Redis");
            assert_eq!(
                bus.pending().await.unwrap(),
                1,
                "{what} acknowledged its message"
            );
            bus.commit("w1", commit).await.unwrap();
            assert_eq!(
                bus.pending().await.unwrap(),
                0,
                "{what} did not go through later"
            );
            assert_ne!(dataset(&server).await, before, "{what} wrote nothing later");
        }
    }
}

/// Control messages delivered and not acknowledged, on every partition.
async fn control_pending(server: &RedisServer, partitions: u32) -> usize {
    let mut conn = server.connection().await;
    let mut pending = 0;
    for p in 0..partitions {
        let summary: redis::Value = redis::cmd("XPENDING")
            .arg(format!("walkoff:control:{p}"))
            .arg("workers")
            .query_async(&mut conn)
            .await
            .unwrap_or(redis::Value::Nil);
        if let redis::Value::Array(fields) = summary {
            if let Some(redis::Value::Int(n)) = fields.first() {
                pending += *n as usize;
            }
        }
    }
    pending
}

/// A key of the wrong type (something else wrote it) makes the commit script refuse the commit
/// before its first write, whichever key of the commit it is.
#[tokio::test]
async fn a_commit_meeting_a_key_of_the_wrong_type_writes_nothing() {
    let server = RedisServer::start();
    let bus = quiet_bus_with_action_streams(&server).await;
    let mut raw = server.connection().await;
    for kind in 0..COMMIT_KINDS {
        let id = format!("x-{kind}");
        let (what, mut commit, key) = commit_of_kind(kind, &id, bus.partitions());
        commit.acks = vec![delivered_control(&bus, &id).await];
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg("not mine")
            .query_async(&mut raw)
            .await
            .unwrap();
        let before = dataset(&server).await;
        let refused = bus.commit("w1", commit.clone()).await.unwrap_err();
        assert!(
            refused
                .to_string()
                .contains(&format!("{key} holds a string, not a"))
                && refused.to_string().contains("WRONGTYPE"),
            "the commit of a {what}: {refused}"
        );
        assert_eq!(
            dataset(&server).await,
            before,
            "the commit of a {what} changed Redis"
        );
        assert_eq!(
            control_pending(&server, bus.partitions()).await,
            1,
            "the commit of a {what} acknowledged"
        );
        let _: () = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .unwrap();
        bus.commit("w1", commit).await.unwrap();
        assert_eq!(control_pending(&server, bus.partitions()).await, 0);
    }
}

/// A worker whose control loop stops coming for messages (stuck, or its task died) stops
/// renewing its leases: its partitions move to a live worker within the stall limit plus the
/// lease TTL, though its process (and its heartbeat task) is alive; when the loop comes back it
/// learns it lost them.
#[tokio::test]
async fn a_stalled_control_loop_gives_its_partitions_up() {
    let server = RedisServer::start();
    let config = RedisBusConfig {
        heartbeat: Duration::from_millis(100),
        lease_ttl: Duration::from_millis(500),
        stall_limit: Duration::from_secs(1),
        ..RedisBusConfig::default()
    };
    let stuck = bus_with(&server, config.clone()).await;
    let owned = stuck
        .recv_control("stuck", 10, Duration::from_millis(10))
        .await
        .unwrap()
        .gained;
    assert_eq!(
        owned.len(),
        stuck.partitions() as usize,
        "the first worker owns everything"
    );
    // "stuck" never calls again; "live" keeps receiving.
    let live = bus_with(&server, config).await;
    let mut gained = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gained.len() < live.partitions() as usize {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the live worker took only {gained:?} from a stalled one"
        );
        let batch = live
            .recv_control("live", 10, Duration::from_millis(100))
            .await
            .unwrap();
        gained.extend(batch.gained);
        for p in batch.lost {
            gained.remove(&p);
        }
    }
    // Back, the stalled loop hears it lost what it held.
    let mut lost = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while lost.len() < owned.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled worker heard of losing only {lost:?}"
        );
        let batch = stuck
            .recv_control("stuck", 10, Duration::from_millis(100))
            .await
            .unwrap();
        lost.extend(batch.lost);
    }
}

/// Every connection the bus opens to Redis probes its peer (TCP keepalive), so a peer that
/// vanished is noticed on a connection nothing is using.
#[tokio::test]
async fn the_bus_connections_carry_tcp_keepalive() {
    let server = RedisServer::start();
    let bus = bus(&server).await;
    bus.recv_control("w1", 10, Duration::from_millis(10))
        .await
        .unwrap();
    let out = std::process::Command::new("ss")
        .args(["-tnoH", "state", "established"])
        .arg(format!("dst 127.0.0.1:{}", server.port))
        .output()
        .expect("ss (iproute2) runs");
    let lines = String::from_utf8_lossy(&out.stdout).into_owned();
    let connections: Vec<&str> = lines.lines().collect();
    assert!(!connections.is_empty(), "the bus is connected");
    assert!(
        connections.iter().all(|c| c.contains("timer:(keepalive")),
        "every connection to Redis probes its peer:\n{lines}"
    );
}

/// Worker `worker` vanishes as a killed one does: its leases and its beat are gone at once
/// (no waiting for them to expire), what it read stays pending under its name.
async fn vanish(server: &RedisServer, partitions: u32, worker: &str) {
    let mut raw = server.connection().await;
    let mut pipe = redis::pipe();
    for p in 0..partitions {
        pipe.cmd("DEL").arg(format!("walkoff:lease:{p}")).ignore();
    }
    pipe.cmd("ZREM").arg("walkoff:workers").arg(worker).ignore();
    let _: () = pipe.query_async(&mut raw).await.unwrap();
}

/// A control message that every worker taking it dies on (none commits it) is handed to
/// `MAX_CONTROL_DELIVERIES` workers, then dead-lettered by the next, which aborts its execution
/// instead of dying too; a worker's own failed commits do not count against a message.
#[tokio::test]
async fn a_control_message_no_worker_commits_is_dead_lettered_and_its_execution_aborted() {
    use walkoff_dataflow::bus::MAX_CONTROL_DELIVERIES;

    let server = RedisServer::start();
    let mut raw = server.connection().await;
    let poison = ControlMessage::Trigger {
        execution_id: "poison".into(),
        node: "n".into(),
        data: serde_json::json!({}),
    };
    let sender = quiet_bus(&server).await;
    sender.send_control(vec![poison.clone()]).await.unwrap();
    let partitions = sender.partitions();
    // A worker takes every partition, gets the message, and dies before committing it: its
    // leases and its beat vanish, its pending messages stay.
    let takes = |worker: String| {
        let server = &server;
        async move {
            let bus = quiet_bus(server).await;
            let mut got = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while tokio::time::Instant::now() < deadline && got.is_empty() {
                let batch = bus
                    .recv_control(&worker, 10, Duration::from_millis(50))
                    .await
                    .unwrap();
                got.extend(batch.deliveries.into_iter().map(|d| d.message));
            }
            vanish(server, partitions, &worker).await;
            got
        }
    };
    for i in 0..MAX_CONTROL_DELIVERIES {
        let got = takes(format!("doomed-{i}")).await;
        assert_eq!(got, vec![poison.clone()], "worker {i} took the message");
    }
    // The next one dead-letters it and gets the abort of its execution instead.
    let got = takes("survivor".into()).await;
    assert_eq!(
        got,
        vec![ControlMessage::Abort {
            execution_id: "poison".into()
        }]
    );
    let dead: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("walkoff:dead")
        .arg("-")
        .arg("+")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(dead.ids.len(), 1);
    let reason: String = dead.ids[0].get("reason").unwrap();
    assert!(
        reason.contains(&format!("taken by {MAX_CONTROL_DELIVERIES} workers"))
            && reason.contains("(poison) aborted"),
        "{reason}"
    );
    let stream: String = dead.ids[0].get("stream").unwrap();
    assert_eq!(
        stream,
        format!("walkoff:control:{}", partition_of("poison", partitions))
    );
    let counted: u64 = redis::cmd("HGET")
        .arg("walkoff:stats")
        .arg(walkoff_dataflow::bus::STAT_CONTROL_DEAD_LETTERED)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(counted, 1);
}

/// A worker reading its own pending messages again after failed commits (its `resync`) does not
/// count deliveries: however often its commits failed, the next worker still gets the message.
#[tokio::test]
async fn a_workers_own_retries_do_not_count_towards_dead_lettering() {
    use walkoff_dataflow::bus::MAX_CONTROL_DELIVERIES;

    let server = RedisServer::start();
    let message = ControlMessage::Abort {
        execution_id: "retried".into(),
    };
    let flaky = quiet_bus(&server).await;
    flaky.send_control(vec![message.clone()]).await.unwrap();
    assert_eq!(receive(&flaky, 1).await[0].message, message);
    for _ in 0..MAX_CONTROL_DELIVERIES * 2 {
        flaky.resync("w1").await;
        let again = receive(&flaky, 1).await;
        assert_eq!(
            again[0].message, message,
            "the message comes again after a resync"
        );
    }
    vanish(&server, flaky.partitions(), "w1").await;
    let mut raw = server.connection().await;
    let next = quiet_bus(&server).await;
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the next worker got nothing"
        );
        got = next
            .recv_control("w2", 10, Duration::from_millis(50))
            .await
            .unwrap()
            .deliveries;
    }
    assert_eq!(got[0].message, message);
    assert_eq!(got[0].deliveries, 2, "taken by two workers");
    let dead: usize = redis::cmd("XLEN")
        .arg("walkoff:dead")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(dead, 0);
}

/// A burst of blocking reads opens as many connections; afterwards the bus keeps a few, not
/// all of them.
#[tokio::test]
async fn idle_reading_connections_are_capped_after_a_burst() {
    let server = RedisServer::start();
    let bus = bus(&server).await;
    let reads: Vec<_> = (0..48)
        .map(|i| {
            let bus = Arc::clone(&bus);
            tokio::spawn(async move {
                bus.read_events(&format!("quiet-{i}"), 1, 10, Duration::from_millis(500))
                    .await
            })
        })
        .collect();
    for read in reads {
        assert!(read.await.unwrap().unwrap().is_empty());
    }
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut server.connection().await)
        .await
        .unwrap();
    let open = clients.lines().count();
    assert!(
        open <= 20,
        "{open} connections stay open after 48 reads:\n{clients}"
    );
}

//! An app's backlog read from a real `redis-server`, with requests queued, taken and answered
//! through the bus as workers and executors do.

#[path = "../../dataflow/tests/redis_server/mod.rs"]
mod redis_server;

use std::time::Duration;

use serde_json::Map;
use walkoff_dataflow::bus::{Bus, RedisBus};
use walkoff_schema::{ActionRequest, AppRef, NodeResult, Outcome};
use walkoff_stack::{app_backlog, Backlog};

fn request(app: &AppRef, n: u32, priority: u8) -> ActionRequest {
    ActionRequest {
        execution_id: format!("execution-{n}"),
        workflow_id: "workflow".into(),
        node_id: "node".into(),
        label: "node".into(),
        app: app.clone(),
        action: "echo_string".into(),
        priority,
        parameters: Map::new(),
        attempt: 1,
        shard: None,
        timeout_ms: 60_000,
        delivery: 1,
        max_deliveries: 0,
        reply_to: None,
    }
}

#[tokio::test]
async fn the_backlog_counts_requests_waiting_and_in_hand_over_every_priority() {
    let server = redis_server::RedisServer::start();
    let bus = RedisBus::connect(&server.url(), "walkoff").await.unwrap();
    let mut connection = server.connection().await;
    let basics = AppRef {
        name: "basics".into(),
        version: "1.0.0".into(),
    };
    let other = AppRef {
        name: "other".into(),
        version: "2.0.0".into(),
    };
    // Nothing queued yet: nothing to scale for.
    let backlog = app_backlog(&mut connection, bus.keys(), &basics)
        .await
        .unwrap();
    assert_eq!(backlog, Backlog::default());

    // Six requests at two priorities, and one for another app, before any executor started.
    let mut requests: Vec<_> = (0..4).map(|n| request(&basics, n, 3)).collect();
    requests.extend((4..6).map(|n| request(&basics, n, 5)));
    requests.push(request(&other, 9, 3));
    bus.send_actions(requests).await.unwrap();
    let backlog = app_backlog(&mut connection, bus.keys(), &basics)
        .await
        .unwrap();
    assert_eq!(
        backlog,
        Backlog {
            waiting: 6,
            pending: 0
        }
    );

    // An executor takes three (the bus may read a few more for it, which it then holds): at least
    // three are in hand, and the total is the same.
    let taken = bus
        .recv_actions(&basics, "executor-1", 3, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(taken.len(), 3);
    let backlog = app_backlog(&mut connection, bus.keys(), &basics)
        .await
        .unwrap();
    assert!(backlog.pending >= 3, "{backlog:?}");
    assert_eq!(backlog.total(), 6);

    // It answers two: they leave the backlog.
    let now = chrono::Utc::now();
    let done = taken
        .iter()
        .take(2)
        .map(|d| {
            (
                d.id.clone(),
                NodeResult {
                    execution_id: d.message.execution_id.clone(),
                    node_id: d.message.node_id.clone(),
                    shard: None,
                    attempt: 1,
                    outcome: Outcome::Success {
                        result: "ok".into(),
                    },
                    started_at: now,
                    finished_at: now,
                },
            )
        })
        .collect();
    bus.complete_actions(&basics, done).await.unwrap();
    let after = app_backlog(&mut connection, bus.keys(), &basics)
        .await
        .unwrap();
    assert_eq!(after.total(), 4, "{after:?}");
    assert_eq!(after.pending, backlog.pending - 2);
    // The other app's request is its own.
    let backlog = app_backlog(&mut connection, bus.keys(), &other)
        .await
        .unwrap();
    assert_eq!(
        backlog,
        Backlog {
            waiting: 1,
            pending: 0
        }
    );
}

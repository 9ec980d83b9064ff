//! The conformance suite every [`Bus`] implementation must pass. Each check takes a fresh bus; the
//! in-memory bus runs them in this crate's tests, the Redis bus against a real `redis-server`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Map};
use walkoff_schema::{
    ActionRequest, AppRef, ControlMessage, Event, EventKind, NodeEvent, NodeResult, NodeStatus,
    Outcome, WorkflowStatus,
};

use super::Bus;

/// Define one `#[tokio::test]` per conformance check for a bus implementation. `$fixture` is an
/// async block yielding `(Arc<dyn Bus>, guard)`; the guard (a server, say) lives until the check ends.
#[macro_export]
macro_rules! bus_conformance_tests {
    ($fixture:expr) => {
        $crate::bus_conformance_tests!(@each $fixture;
            actions_are_served_by_priority_then_in_order,
            receives_wait_a_bounded_time_and_wake_on_send,
            completing_actions_publishes_results_and_acknowledges,
            completing_while_receiving_reports_then_waits_for_the_next_request,
            control_messages_arrive_in_order_and_stay_pending_until_acknowledged,
            events_replay_from_any_sequence_and_wake_readers,
            republished_events_are_not_duplicated,
            close_wakes_waiting_receivers,
        );
    };
    (@each $fixture:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let (bus, _guard) = $fixture.await;
                $crate::bus::conformance::$check(bus).await;
            }
        )*
    };
}

const SHORT: Duration = Duration::from_millis(50);
const LONG: Duration = Duration::from_secs(5);

pub fn app() -> AppRef {
    AppRef {
        name: "conformance".into(),
        version: "1.0.0".into(),
    }
}

pub fn request(execution: &str, node: &str, priority: u8) -> ActionRequest {
    ActionRequest {
        execution_id: execution.into(),
        workflow_id: "wf".into(),
        node_id: node.into(),
        label: node.into(),
        app: app(),
        action: "noop".into(),
        priority,
        parameters: Map::new(),
        attempt: 1,
        shard: None,
        timeout_ms: 1000,
        delivery: 1,
        max_deliveries: 0,
        reply_to: None,
    }
}

pub fn result(execution: &str, node: &str) -> NodeResult {
    NodeResult {
        execution_id: execution.into(),
        node_id: node.into(),
        shard: None,
        attempt: 1,
        outcome: Outcome::Success {
            result: json!(node),
        },
        started_at: Utc::now(),
        finished_at: Utc::now(),
    }
}

/// The event that ends an execution (COMPLETED).
pub fn final_event(execution: &str, seq: u64) -> Event {
    Event {
        execution_id: execution.into(),
        seq,
        at: Utc::now(),
        kind: EventKind::Workflow {
            workflow_id: "wf".into(),
            status: WorkflowStatus::Completed,
            error: None,
        },
    }
}

pub fn node_event(execution: &str, seq: u64) -> Event {
    Event {
        execution_id: execution.into(),
        seq,
        at: Utc::now(),
        kind: EventKind::Node(NodeEvent {
            node_id: format!("n{seq}"),
            label: format!("n{seq}"),
            status: NodeStatus::Success,
            attempt: 1,
            shard: None,
            parameters: None,
            result: Some(json!(seq)),
            error: None,
        }),
    }
}

/// Higher priority first; equal priorities in the order sent.
pub async fn actions_are_served_by_priority_then_in_order(bus: Arc<dyn Bus>) {
    bus.send_actions(vec![
        request("e", "low-1", 1),
        request("e", "high-1", 5),
        request("e", "mid", 3),
        request("e", "high-2", 5),
        request("e", "low-2", 1),
    ])
    .await
    .unwrap();
    let mut order = Vec::new();
    while order.len() < 5 {
        let got = bus.recv_actions(&app(), "c1", 2, LONG).await.unwrap();
        assert!(!got.is_empty(), "queued requests were not delivered");
        assert!(got.len() <= 2, "received more than asked for");
        order.extend(got.into_iter().map(|d| d.message.node_id));
    }
    assert_eq!(order, ["high-1", "high-2", "mid", "low-1", "low-2"]);
}

/// A receive with nothing queued waits its bound and returns empty; a request sent meanwhile wakes
/// it.
pub async fn receives_wait_a_bounded_time_and_wake_on_send(bus: Arc<dyn Bus>) {
    let empty = bus.recv_actions(&app(), "c1", 10, SHORT).await.unwrap();
    assert!(empty.is_empty());
    let empty = bus.recv_control("w1", 10, SHORT).await.unwrap();
    assert!(empty.deliveries.is_empty());

    let waiter = {
        let bus = Arc::clone(&bus);
        tokio::spawn(async move { bus.recv_actions(&app(), "c1", 10, LONG).await })
    };
    tokio::task::yield_now().await;
    bus.send_actions(vec![request("e", "late", 3)])
        .await
        .unwrap();
    let got = waiter.await.unwrap().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message.node_id, "late");
    assert_eq!(got[0].deliveries, 1);
}

/// Completing actions publishes their results as control messages and acknowledges the requests.
pub async fn completing_actions_publishes_results_and_acknowledges(bus: Arc<dyn Bus>) {
    bus.send_actions(vec![request("e", "a", 3), request("e", "b", 3)])
        .await
        .unwrap();
    let got = bus.recv_actions(&app(), "c1", 10, LONG).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(
        bus.pending().await.unwrap(),
        2,
        "delivered requests are pending"
    );
    let done = got
        .iter()
        .map(|d| (d.id.clone(), result("e", &d.message.node_id)))
        .collect();
    bus.complete_actions(&app(), done).await.unwrap();
    assert_eq!(
        bus.pending().await.unwrap(),
        0,
        "completed requests are acknowledged"
    );

    let mut results = Vec::new();
    while results.len() < 2 {
        let control = bus.recv_control("w1", 10, LONG).await.unwrap();
        for delivery in control.deliveries {
            match &delivery.message {
                ControlMessage::Result(r) => results.push(r.node_id.clone()),
                // A bus may carry an executor's results as one message.
                ControlMessage::Results { results: batch } => {
                    results.extend(batch.iter().map(|r| r.node_id.clone()))
                }
                other => panic!("unexpected control message {other:?}"),
            }
            bus.ack_control(vec![delivery.id]).await.unwrap();
        }
    }
    results.sort();
    assert_eq!(results, ["a", "b"]);
    assert_eq!(bus.pending().await.unwrap(), 0);
}

/// Reporting with the next receive: the results reach the workers and their requests are
/// acknowledged before the receive waits; the receive then serves a request sent later.
pub async fn completing_while_receiving_reports_then_waits_for_the_next_request(bus: Arc<dyn Bus>) {
    bus.send_actions(vec![request("e", "first", 3)])
        .await
        .unwrap();
    let got = bus.recv_actions(&app(), "c1", 10, LONG).await.unwrap();
    assert_eq!(got.len(), 1);
    let done = vec![(got[0].id.clone(), result("e", "first"))];
    let receiving = {
        let bus = Arc::clone(&bus);
        tokio::spawn(async move {
            bus.complete_and_recv_actions(&app(), "c1", done, 10, LONG)
                .await
        })
    };
    // The result arrives while the receive is still waiting (a worker's first receives may
    // only hand it its partitions).
    let mut delivered = Vec::new();
    for _ in 0..10 {
        let control = bus.recv_control("w1", 10, LONG).await.unwrap();
        for delivery in control.deliveries {
            match &delivery.message {
                ControlMessage::Result(r) => delivered.push(r.node_id.clone()),
                other => panic!("unexpected control message {other:?}"),
            }
            bus.ack_control(vec![delivery.id]).await.unwrap();
        }
        if !delivered.is_empty() {
            break;
        }
    }
    assert_eq!(delivered, ["first"]);
    assert_eq!(
        bus.pending().await.unwrap(),
        0,
        "the reported request is acknowledged"
    );
    assert!(!receiving.is_finished(), "the receive waits for a request");

    bus.send_actions(vec![request("e", "second", 3)])
        .await
        .unwrap();
    let (reported, received) = receiving.await.unwrap();
    reported.unwrap();
    let received = received.unwrap();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].message.node_id, "second");

    // Nothing to report: a plain receive, bounded as ever.
    let (reported, received) = bus
        .complete_and_recv_actions(&app(), "c1", Vec::new(), 10, SHORT)
        .await;
    reported.unwrap();
    assert!(received.unwrap().is_empty());
}

/// An execution's control messages arrive in the order sent and stay pending until acknowledged.
pub async fn control_messages_arrive_in_order_and_stay_pending_until_acknowledged(
    bus: Arc<dyn Bus>,
) {
    let messages: Vec<ControlMessage> = (0..5)
        .map(|i| ControlMessage::Trigger {
            execution_id: "e".into(),
            node: format!("n{i}"),
            data: json!(i),
        })
        .collect();
    bus.send_control(messages.clone()).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 5 {
        let batch = bus.recv_control("w1", 3, LONG).await.unwrap();
        assert!(batch.deliveries.len() <= 3);
        got.extend(batch.deliveries);
    }
    assert_eq!(
        got.iter().map(|d| d.message.clone()).collect::<Vec<_>>(),
        messages
    );
    assert_eq!(bus.pending().await.unwrap(), 5);
    bus.ack_control(got.iter().map(|d| d.id.clone()).collect())
        .await
        .unwrap();
    assert_eq!(bus.pending().await.unwrap(), 0);
}

/// Events are read back from any sequence number, and a reader waiting at the end wakes on new ones.
pub async fn events_replay_from_any_sequence_and_wake_readers(bus: Arc<dyn Bus>) {
    bus.publish_events((1..=5).map(|s| node_event("e", s)).collect())
        .await
        .unwrap();
    let all = bus.read_events("e", 1, 100, LONG).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    let tail = bus.read_events("e", 4, 100, LONG).await.unwrap();
    assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5]);
    let limited = bus.read_events("e", 1, 2, LONG).await.unwrap();
    assert_eq!(limited.len(), 2);
    let none = bus.read_events("other", 1, 100, SHORT).await.unwrap();
    assert!(none.is_empty());

    let waiter = {
        let bus = Arc::clone(&bus);
        tokio::spawn(async move { bus.read_events("e", 6, 100, LONG).await })
    };
    tokio::task::yield_now().await;
    bus.publish_events(vec![final_event("e", 6)]).await.unwrap();
    let got = waiter.await.unwrap().unwrap();
    assert_eq!(got.len(), 1);
    assert!(got[0].is_final());
}

/// Republishing an event (after a redelivery) does not store it twice.
pub async fn republished_events_are_not_duplicated(bus: Arc<dyn Bus>) {
    bus.publish_events(vec![node_event("e", 1), node_event("e", 2)])
        .await
        .unwrap();
    bus.publish_events(vec![node_event("e", 2), node_event("e", 3)])
        .await
        .unwrap();
    let all = bus.read_events("e", 1, 100, LONG).await.unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
}

/// Closing wakes every waiting receiver with `Closed`.
pub async fn close_wakes_waiting_receivers(bus: Arc<dyn Bus>) {
    // The first receive makes "w1" a worker and may answer at once with the partitions it gained.
    bus.recv_control("w1", 1, SHORT).await.unwrap();
    let actions = {
        let bus = Arc::clone(&bus);
        tokio::spawn(async move { bus.recv_actions(&app(), "c1", 1, LONG).await })
    };
    let control = {
        let bus = Arc::clone(&bus);
        tokio::spawn(async move { bus.recv_control("w1", 1, LONG).await })
    };
    tokio::task::yield_now().await;
    bus.close().await;
    assert_eq!(actions.await.unwrap(), Err(super::BusError::Closed));
    assert_eq!(
        control.await.unwrap().map(|b| b.deliveries),
        Err(super::BusError::Closed)
    );
}

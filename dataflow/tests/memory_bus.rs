//! The in-memory bus passes the bus conformance suite.

use std::sync::Arc;

use walkoff_dataflow::{Bus, MemoryBus};

walkoff_dataflow::bus_conformance_tests!(async {
    let bus: Arc<dyn Bus> = MemoryBus::new();
    (bus, ())
});

/// A process running executions without end stays in bounded memory: the events of the
/// oldest finished executions are forgotten past `FINISHED_KEPT`; running ones never are.
#[tokio::test]
async fn events_of_old_finished_executions_are_forgotten() {
    use std::time::Duration;
    use walkoff_dataflow::bus::conformance::{final_event, node_event};

    let bus = MemoryBus::new();
    bus.publish_events(vec![node_event("running", 1)])
        .await
        .unwrap();
    for i in 0..=MemoryBus::FINISHED_KEPT {
        let id = format!("e{i}");
        bus.publish_events(vec![node_event(&id, 1), final_event(&id, 2)])
            .await
            .unwrap();
    }
    let read = |id: &str| {
        let bus = Arc::clone(&bus);
        let id = id.to_string();
        async move {
            bus.read_events(&id, 1, 10, Duration::ZERO)
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!(
        read("e0").await,
        0,
        "the oldest finished execution is forgotten"
    );
    assert_eq!(read("e1").await, 2);
    assert_eq!(read(&format!("e{}", MemoryBus::FINISHED_KEPT)).await, 2);
    assert_eq!(
        read("running").await,
        1,
        "a running execution keeps its events"
    );
}

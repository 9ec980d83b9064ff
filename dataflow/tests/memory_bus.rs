//! The in-memory bus passes the bus conformance suite.

use std::sync::Arc;

use walkoff_dataflow::bus::conformance;
use walkoff_dataflow::{Bus, MemoryBus};

fn bus() -> Arc<dyn Bus> {
    MemoryBus::new()
}

#[tokio::test]
async fn actions_are_served_by_priority_then_in_order() {
    conformance::actions_are_served_by_priority_then_in_order(bus()).await;
}

#[tokio::test]
async fn receives_wait_a_bounded_time_and_wake_on_send() {
    conformance::receives_wait_a_bounded_time_and_wake_on_send(bus()).await;
}

#[tokio::test]
async fn completing_actions_publishes_results_and_acknowledges() {
    conformance::completing_actions_publishes_results_and_acknowledges(bus()).await;
}

#[tokio::test]
async fn control_messages_arrive_in_order_and_stay_pending_until_acknowledged() {
    conformance::control_messages_arrive_in_order_and_stay_pending_until_acknowledged(bus()).await;
}

#[tokio::test]
async fn events_replay_from_any_sequence_and_wake_readers() {
    conformance::events_replay_from_any_sequence_and_wake_readers(bus()).await;
}

#[tokio::test]
async fn republished_events_are_not_duplicated() {
    conformance::republished_events_are_not_duplicated(bus()).await;
}

#[tokio::test]
async fn close_wakes_waiting_receivers() {
    conformance::close_wakes_waiting_receivers(bus()).await;
}

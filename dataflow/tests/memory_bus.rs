//! The in-memory bus passes the bus conformance suite.

use std::sync::Arc;

use walkoff_dataflow::{Bus, MemoryBus};

walkoff_dataflow::bus_conformance_tests!(async {
    let bus: Arc<dyn Bus> = MemoryBus::new();
    (bus, ())
});

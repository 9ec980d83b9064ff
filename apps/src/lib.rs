//! The built-in app suite.

pub mod basics;
pub mod diagnostics;

use std::sync::Arc;

use walkoff_executors::Registry;

/// A registry holding every built-in app; the diagnostics app's `record` writes inside
/// `$WALKOFF_RECORD_DIR` when it is set, nowhere otherwise.
pub fn builtin_registry() -> Registry {
    Registry::new()
        .with(Arc::new(basics::Basics::new()))
        .with(Arc::new(diagnostics::Diagnostics::from_env()))
}

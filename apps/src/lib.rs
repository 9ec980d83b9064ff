//! The built-in app suite.

pub mod basics;
pub mod diagnostics;

use std::sync::Arc;

use walkoff_executors::Registry;

/// A registry holding every built-in app.
pub fn builtin_registry() -> Registry {
    Registry::new()
        .with(Arc::new(basics::Basics::new()))
        .with(Arc::new(diagnostics::Diagnostics::new()))
}

//! Scaling policies read from `api.yaml` files as apps ship them, and from service labels.

use std::collections::HashMap;
use std::time::Duration;

use walkoff_schema::AppApi;
use walkoff_stack::{Resources, ScalePolicy};

fn app(deploy: &str) -> AppApi {
    AppApi::from_yaml(&format!(
        "walkoff_version: 1.0.0\napp_version: 1.0.0\nname: scanner\nactions:\n  - name: scan\n{deploy}"
    ))
    .unwrap()
}

#[test]
fn an_api_yaml_without_a_deploy_section_gets_the_default() {
    let basics = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../apps/basics/api.yaml"
    ))
    .unwrap();
    let api = AppApi::from_yaml(&basics).unwrap();
    assert_eq!(ScalePolicy::from_app(&api).unwrap(), ScalePolicy::default());
}

#[test]
fn a_deploy_section_sets_bounds_target_quiet_period_and_resources() {
    let policy = ScalePolicy::from_app(&app(
        "deploy:\n  replicas: {min: 2, max: 8}\n  backlog_per_replica: 5\n  quiet_seconds: 12\n  resources:\n    reservations: {cpus: 0.25, memory: 64M}\n    limits: {cpus: \"1.5\", memory: 1GiB}\n",
    ))
    .unwrap();
    assert_eq!(
        policy,
        ScalePolicy {
            min: 2,
            max: 8,
            backlog_per_replica: 5,
            quiet: Duration::from_secs(12),
            reservation: Resources {
                nano_cpus: 250_000_000,
                memory_bytes: 64 << 20
            },
            limit: Resources {
                nano_cpus: 1_500_000_000,
                memory_bytes: 1 << 30
            },
        }
    );
}

#[test]
fn a_wrong_setting_is_refused_naming_its_field() {
    let refused = |deploy: &str| ScalePolicy::from_app(&app(deploy)).unwrap_err().to_string();
    assert_eq!(
        refused("deploy:\n  replicas: {min: 3, max: 2}\n"),
        "deploy.replicas.max: must be at least min (3)"
    );
    assert_eq!(
        refused("deploy:\n  replicas: {min: -1}\n"),
        "deploy.replicas.min: expected a whole number, found -1"
    );
    assert_eq!(
        refused("deploy:\n  resources:\n    limits: {memory: lots}\n"),
        "deploy.resources.limits.memory: expected bytes or a size such as 64M or 1G, found \"lots\""
    );
    assert_eq!(
        refused("deploy:\n  resources:\n    reservations: {cpus: 2}\n    limits: {cpus: 1}\n"),
        "deploy.resources.reservations.cpus: must not exceed the limit"
    );
    assert_eq!(
        refused("deploy:\n  replica: {max: 2}\n"),
        "deploy.replica: unknown setting (replicas, backlog_per_replica, quiet_seconds, resources)"
    );
    assert_eq!(
        refused("deploy:\n  backlog_per_replica: 0\n"),
        "deploy.backlog_per_replica: must be at least 1"
    );
}

#[test]
fn labels_override_the_api_yaml_and_are_checked_alike() {
    let from_file = ScalePolicy::from_app(&app("deploy:\n  replicas: {min: 1, max: 3}\n")).unwrap();
    let labels = HashMap::from([
        ("walkoff.autoscale.max".to_string(), "6".to_string()),
        (
            "walkoff.autoscale.quiet_seconds".to_string(),
            "5".to_string(),
        ),
        (
            "com.docker.stack.namespace".to_string(),
            "walkoff".to_string(),
        ),
    ]);
    let policy = from_file.clone().with_labels(&labels).unwrap();
    assert_eq!(
        (policy.min, policy.max, policy.quiet),
        (1, 6, Duration::from_secs(5))
    );
    let wrong = HashMap::from([("walkoff.autoscale.max".to_string(), "none".to_string())]);
    assert_eq!(
        from_file.with_labels(&wrong).unwrap_err().to_string(),
        "walkoff.autoscale.max: expected a whole number, found \"none\""
    );
}

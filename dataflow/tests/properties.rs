//! Property tests on random DAGs with conditions, failures, parallel nodes, transforms and triggers:
//! every run terminates, every node ends terminal with the status a reference evaluation predicts,
//! no node starts before its parents resolve, and the same inputs give the same results.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::{workflow, Harness};
use proptest::prelude::*;
use serde_json::{json, Value};
use walkoff_schema::{Event, EventKind, NodeStatus, WorkflowStatus};

#[derive(Debug, Clone)]
enum Kind {
    Noop,
    Fail,
    /// Parallel over `items`; the item equal to `bad` fails its shard.
    Parallel {
        items: Vec<i64>,
        bad: Option<i64>,
    },
    /// Selects the children whose bit is set in `mask` (by child order).
    Condition {
        mask: u8,
    },
    Transform,
    Trigger,
}

#[derive(Debug, Clone)]
struct Spec {
    kinds: Vec<Kind>,
    parents: Vec<Vec<usize>>,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        3 => Just(Kind::Noop),
        1 => Just(Kind::Fail),
        2 => (prop::collection::vec(0i64..4, 0..5), prop::option::of(0i64..4))
            .prop_map(|(items, bad)| Kind::Parallel { items, bad }),
        2 => any::<u8>().prop_map(|mask| Kind::Condition { mask }),
        1 => Just(Kind::Transform),
        1 => Just(Kind::Trigger),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (2usize..24)
        .prop_flat_map(|n| {
            (
                prop::collection::vec(kind(), n),
                prop::collection::vec(prop::collection::vec(any::<prop::sample::Index>(), 0..4), n),
            )
        })
        .prop_map(|(mut kinds, raw_parents)| {
            let n = kinds.len();
            let mut parents: Vec<Vec<usize>> = raw_parents
                .into_iter()
                .enumerate()
                .map(|(i, picks)| {
                    if i == 0 {
                        return Vec::new();
                    }
                    let mut p: Vec<usize> = picks.iter().map(|ix| ix.index(i)).collect();
                    p.sort_unstable();
                    p.dedup();
                    p
                })
                .collect();
            kinds[0] = Kind::Noop;
            // A condition must have children; one without becomes a transform.
            for (i, kind) in kinds.iter_mut().enumerate() {
                let has_children = parents.iter().any(|ps| ps.contains(&i));
                if matches!(kind, Kind::Condition { .. }) && !has_children {
                    *kind = Kind::Transform;
                }
            }
            parents.truncate(n);
            Spec { kinds, parents }
        })
}

fn children(spec: &Spec, i: usize) -> Vec<usize> {
    (0..spec.kinds.len())
        .filter(|&c| spec.parents[c].contains(&i))
        .collect()
}

fn selected(spec: &Spec, i: usize) -> Vec<usize> {
    let Kind::Condition { mask } = spec.kinds[i] else {
        return children(spec, i);
    };
    children(spec, i)
        .into_iter()
        .enumerate()
        .filter(|(k, _)| mask & (1 << (k % 8)) != 0)
        .map(|(_, c)| c)
        .collect()
}

fn to_workflow(spec: &Spec) -> walkoff_schema::Workflow {
    let label = |i: usize| format!("n{i}");
    let mut nodes = Vec::new();
    for (i, kind) in spec.kinds.iter().enumerate() {
        nodes.push(match kind {
            Kind::Noop => json!({"label": label(i), "kind": "action", "action": "noop"}),
            Kind::Fail => json!({"label": label(i), "kind": "action", "action": "fail"}),
            Kind::Parallel { items, bad } => {
                let mut parameters = vec![json!({"name": "data", "value": items, "parallelized": true})];
                if let Some(bad) = bad {
                    parameters.push(json!({"name": "bad", "value": bad}));
                }
                json!({"label": label(i), "kind": "action", "action": "items", "parallelized": true,
                       "concurrency": 2, "parameters": parameters})
            }
            Kind::Condition { .. } => {
                let picks: Vec<String> = selected(spec, i).into_iter().map(label).collect();
                json!({"label": label(i), "kind": "condition", "code": format!("selected_node = [{}]", picks.join(", "))})
            }
            Kind::Transform => {
                let seen: Vec<String> = spec.parents[i].iter().map(|&p| format!("n{p}.result")).collect();
                json!({"label": label(i), "kind": "transform", "code": format!("result = str([{}])", seen.join(", "))})
            }
            Kind::Trigger => json!({"label": label(i), "kind": "trigger"}),
        });
    }
    let branches: Vec<Value> = spec
        .parents
        .iter()
        .enumerate()
        .flat_map(|(c, ps)| {
            ps.iter()
                .map(move |&p| json!({"from": label(p), "to": label(c)}))
        })
        .collect();
    workflow(json!({"start": "n0", "nodes": nodes, "branches": branches}))
}

/// The status every node should end with, computed directly from the rules.
fn expected(spec: &Spec) -> Vec<NodeStatus> {
    let n = spec.kinds.len();
    let mut status = vec![NodeStatus::Pending; n];
    for i in 0..n {
        let runs = i == 0
            || spec.parents[i]
                .iter()
                .any(|&p| status[p] == NodeStatus::Success && selected(spec, p).contains(&i));
        status[i] = if !runs {
            NodeStatus::Skipped
        } else {
            match &spec.kinds[i] {
                Kind::Fail => NodeStatus::Failure,
                Kind::Parallel {
                    items,
                    bad: Some(bad),
                } if items.contains(bad) => NodeStatus::Failure,
                _ => NodeStatus::Success,
            }
        };
    }
    status
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Runtime::new().unwrap())
}

type Outcomes = BTreeMap<String, (NodeStatus, Option<Value>, Option<String>)>;

fn run(spec: &Spec) -> (walkoff_dataflow::ExecutionSummary, Vec<Event>) {
    let triggers: BTreeMap<String, Value> = spec
        .kinds
        .iter()
        .enumerate()
        .filter(|(_, k)| matches!(k, Kind::Trigger))
        .map(|(i, _)| (format!("n{i}"), json!({"from": i})))
        .collect();
    runtime().block_on(async {
        let h = Harness::new();
        h.run_with(
            to_workflow(spec),
            BTreeMap::new(),
            BTreeMap::new(),
            triggers,
        )
        .await
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_workflows_end_as_the_rules_say(spec in spec()) {
        let (summary, events) = run(&spec);
        let expected = expected(&spec);

        // Every node ends terminal, with the predicted status.
        prop_assert_eq!(summary.nodes.len(), spec.kinds.len());
        for (i, want) in expected.iter().enumerate() {
            let got = summary.nodes[&format!("n{i}")].status;
            prop_assert!(got.is_terminal());
            prop_assert_eq!(got, *want, "node n{} ({:?})", i, spec.kinds[i]);
        }
        let want_workflow = if expected.contains(&NodeStatus::Failure) {
            WorkflowStatus::Failed
        } else {
            WorkflowStatus::Completed
        };
        prop_assert_eq!(summary.status, want_workflow);

        // No node starts before all of its parents have resolved.
        let mut resolved_at: HashMap<String, u64> = HashMap::new();
        for event in &events {
            if let EventKind::Node(node) = &event.kind {
                if node.shard.is_some() {
                    continue;
                }
                if node.status.is_terminal() {
                    resolved_at.insert(node.label.clone(), event.seq);
                } else {
                    let i: usize = node.label[1..].parse().unwrap();
                    for &p in &spec.parents[i] {
                        let parent = format!("n{p}");
                        prop_assert!(
                            resolved_at.get(&parent).is_some_and(|&s| s < event.seq),
                            "{} started before its parent {} resolved", node.label, parent
                        );
                    }
                }
            }
        }

        // The same inputs give the same results.
        let outcomes = |s: &walkoff_dataflow::ExecutionSummary| -> Outcomes {
            s.nodes.iter().map(|(l, n)| (l.clone(), (n.status, n.result.clone(), n.error.clone()))).collect()
        };
        let (again, _) = run(&spec);
        prop_assert_eq!(outcomes(&summary), outcomes(&again));
    }
}

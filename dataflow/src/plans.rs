//! Compiled plans, kept so that a worker compiles each workflow version once, not once per start.
//!
//! Every start carries its workflow (a worker needs nothing else to run it), so the starts of one
//! workflow version submitted by a gateway arrive as equal copies. A plan is known by its
//! workflow's digest — SHA-256 of the workflow's JSON — and the copies share one plan. Plans are
//! kept in a moka cache bounded by their total node count and dropped after an idle hour; the
//! cache is emptied whenever the worker's app catalogue changes (plans depend on it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use moka::sync::Cache;
use sha2::{Digest, Sha256};
use walkoff_schema::{AppCatalog, ExecutionId, ProblemCode, Problems, Workflow};

use crate::compile::{compile_with_digest, Plan};
use crate::runtime::CatalogSource;

/// SHA-256 of a workflow's JSON: equal workflows, and only they, have equal digests.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlanDigest(pub [u8; 32]);

impl PlanDigest {
    pub fn of(workflow: &Workflow) -> PlanDigest {
        let mut hasher = Sha256::new();
        // Straight into the hasher: no buffer the size of the workflow.
        serde_json::to_writer(&mut hasher, workflow).expect("a workflow serializes to JSON");
        PlanDigest(hasher.finalize().into())
    }
}

impl std::fmt::Display for PlanDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sha256:")?;
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl std::fmt::Debug for PlanDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Plan nodes (summed over plans) the cache keeps at most.
const CACHED_NODES: u64 = 200_000;
/// A plan no start used for this long is dropped.
const CACHED_IDLE: Duration = Duration::from_secs(3600);
/// Workflows (by identity) whose plans a submitting process finds without hashing them again.
const SUBMITTED_KEPT: usize = 32;

/// How long a plan prepared for a start waits to be picked up: a start that another worker
/// applied (its partition moved) never is, and must not be kept for ever.
pub(crate) const PREPARED_FOR: Duration = Duration::from_secs(600);

/// Everything a runtime knows about plans: the app catalogue they are compiled against, the cache
/// by digest, the plans of workflows this process submitted, and plans compiled for starts not
/// applied yet.
pub(crate) struct Plans {
    catalog: Mutex<Arc<AppCatalog>>,
    catalog_source: Option<Arc<dyn CatalogSource>>,
    by_digest: Cache<PlanDigest, Arc<Plan>>,
    /// Workflows are immutable behind their `Arc`: one submitted again (a stored workflow run
    /// many times) is recognised by identity, without serializing it.
    submitted: Mutex<Vec<(Weak<Workflow>, Arc<Plan>)>>,
    prepared: Mutex<PreparedPlans>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether compiling failed only because the catalogue lacks an app or action it names.
fn names_unknown_apps(problems: &Problems) -> bool {
    problems
        .0
        .iter()
        .any(|p| matches!(p.code, ProblemCode::UnknownApp | ProblemCode::UnknownAction))
}

impl Plans {
    pub(crate) fn new(
        catalog: Arc<AppCatalog>,
        catalog_source: Option<Arc<dyn CatalogSource>>,
    ) -> Plans {
        Plans {
            catalog: Mutex::new(catalog),
            catalog_source,
            by_digest: Cache::builder()
                .max_capacity(CACHED_NODES)
                .weigher(|_, plan: &Arc<Plan>| {
                    u32::try_from(plan.nodes.len() + 1).unwrap_or(u32::MAX)
                })
                .time_to_idle(CACHED_IDLE)
                .build(),
            submitted: Mutex::new(Vec::new()),
            prepared: Mutex::new(PreparedPlans::default()),
        }
    }

    pub(crate) fn catalog(&self) -> Arc<AppCatalog> {
        Arc::clone(&lock(&self.catalog))
    }

    /// The plan of `workflow`, compiled against the current catalogue unless it is cached.
    pub(crate) fn compiled(&self, workflow: &Arc<Workflow>) -> Result<Arc<Plan>, Problems> {
        let digest = PlanDigest::of(workflow);
        if let Some(plan) = self.by_digest.get(&digest) {
            return Ok(plan);
        }
        let plan = Arc::new(compile_with_digest(
            Arc::clone(workflow),
            &self.catalog(),
            None,
            digest,
        )?);
        self.by_digest.insert(digest, Arc::clone(&plan));
        Ok(plan)
    }

    /// The plan of a workflow this process submits: by identity when it was submitted before.
    pub(crate) fn for_submission(&self, workflow: &Arc<Workflow>) -> Result<Arc<Plan>, Problems> {
        {
            let submitted = lock(&self.submitted);
            if let Some((_, plan)) = submitted
                .iter()
                .find(|(w, _)| w.upgrade().is_some_and(|w| Arc::ptr_eq(&w, workflow)))
            {
                return Ok(Arc::clone(plan));
            }
        }
        let plan = self.compiled(workflow)?;
        let mut submitted = lock(&self.submitted);
        submitted.retain(|(w, _)| w.strong_count() > 0);
        if submitted.len() >= SUBMITTED_KEPT {
            submitted.remove(0);
        }
        submitted.push((Arc::downgrade(workflow), Arc::clone(&plan)));
        Ok(plan)
    }

    /// The plan of a workflow a start carries; when it names apps the worker does not know, the
    /// catalogue is reloaded once (an app may have registered since) and the cache emptied.
    pub(crate) async fn for_start(&self, workflow: &Arc<Workflow>) -> Result<Arc<Plan>, Problems> {
        let problems = match self.compiled(workflow) {
            Ok(plan) => return Ok(plan),
            Err(problems) => problems,
        };
        let Some(source) = self
            .catalog_source
            .as_ref()
            .filter(|_| names_unknown_apps(&problems))
        else {
            return Err(problems);
        };
        match source.load().await {
            Ok(fresh) => {
                *lock(&self.catalog) = Arc::new(fresh);
                self.by_digest.invalidate_all();
                lock(&self.submitted).clear();
                self.compiled(workflow)
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not reload the app catalog");
                Err(problems)
            }
        }
    }

    /// Keep the plan compiled for a start until the control loop applies it.
    pub(crate) fn prepare(&self, execution_id: ExecutionId, plan: Arc<Plan>) {
        lock(&self.prepared).insert(execution_id, plan);
    }

    pub(crate) fn take_prepared(&self, execution_id: &str) -> Option<Arc<Plan>> {
        lock(&self.prepared).remove(execution_id)
    }

    pub(crate) fn prepared(&self, execution_id: &str) -> Option<Arc<Plan>> {
        lock(&self.prepared).get(execution_id)
    }

    pub(crate) fn is_prepared(&self, execution_id: &str) -> bool {
        lock(&self.prepared).plans.contains_key(execution_id)
    }
}

/// Plans compiled for starts not applied yet, with when they were compiled.
#[derive(Default)]
struct PreparedPlans {
    plans: HashMap<ExecutionId, (Arc<Plan>, Instant)>,
    swept_at: Option<Instant>,
}

impl PreparedPlans {
    fn insert(&mut self, execution_id: ExecutionId, plan: Arc<Plan>) {
        self.insert_at(execution_id, plan, Instant::now());
    }

    fn insert_at(&mut self, execution_id: ExecutionId, plan: Arc<Plan>, now: Instant) {
        // At most once a minute, drop what waited too long.
        if self
            .swept_at
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(60))
        {
            self.plans
                .retain(|_, (_, at)| now.duration_since(*at) < PREPARED_FOR);
            self.swept_at = Some(now);
        }
        self.plans.insert(execution_id, (plan, now));
    }

    fn remove(&mut self, execution_id: &str) -> Option<Arc<Plan>> {
        self.plans.remove(execution_id).map(|(plan, _)| plan)
    }

    fn get(&self, execution_id: &str) -> Option<Arc<Plan>> {
        self.plans
            .get(execution_id)
            .map(|(plan, _)| Arc::clone(plan))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workflow(code: &str) -> Arc<Workflow> {
        Arc::new(
            Workflow::from_canonical(serde_json::json!({
                "id": "w", "name": "w", "start": "t",
                "nodes": [{"label": "t", "kind": "transform", "code": code}]
            }))
            .unwrap(),
        )
    }

    #[test]
    fn equal_copies_of_a_workflow_share_one_plan_and_a_change_gets_its_own() {
        let plans = Plans::new(Arc::new(AppCatalog::default()), None);
        let first = plans.compiled(&workflow("result = 1")).unwrap();
        let copy = plans.compiled(&workflow("result = 1")).unwrap();
        assert!(
            Arc::ptr_eq(&first, &copy),
            "an equal copy was compiled again"
        );
        assert_eq!(first.digest, PlanDigest::of(&first.workflow));
        let changed = plans.compiled(&workflow("result = 2")).unwrap();
        assert!(!Arc::ptr_eq(&first, &changed));
        assert_ne!(first.digest, changed.digest);
        assert!(first.digest.to_string().starts_with("sha256:"));
        assert_eq!(first.digest.to_string().len(), "sha256:".len() + 64);
    }

    #[test]
    fn a_workflow_that_does_not_compile_is_not_cached() {
        let plans = Plans::new(Arc::new(AppCatalog::default()), None);
        assert!(plans.compiled(&workflow("result = ")).is_err());
        assert_eq!(plans.by_digest.entry_count(), 0);
    }

    #[test]
    fn plans_nobody_picks_up_are_dropped_after_their_time() {
        let plan = Plans::new(Arc::new(AppCatalog::default()), None)
            .compiled(&workflow("result = 1"))
            .unwrap();
        let mut prepared = PreparedPlans::default();
        let start = Instant::now();
        prepared.insert_at("taken elsewhere".into(), Arc::clone(&plan), start);
        prepared.insert_at(
            "soon".into(),
            Arc::clone(&plan),
            start + Duration::from_secs(30),
        );
        assert!(prepared.plans.contains_key("taken elsewhere"));
        prepared.insert_at(
            "later".into(),
            Arc::clone(&plan),
            start + PREPARED_FOR + Duration::from_secs(1),
        );
        assert!(
            !prepared.plans.contains_key("taken elsewhere"),
            "left for ever"
        );
        assert!(prepared.plans.contains_key("soon") && prepared.plans.contains_key("later"));
        assert!(prepared.remove("soon").is_some());
        assert!(prepared.get("soon").is_none());
    }
}

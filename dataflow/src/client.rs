//! A client of a distributed deployment: submits executions, delivers trigger data, aborts and
//! follows events over the bus, while workers elsewhere run them. It checks what it sends as the
//! in-process runtime does, against the execution's own workflow, read back from the bus.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::Stream;
use serde_json::Value;
use walkoff_schema::{AppCatalog, ControlMessage, Event, ExecutionId, Workflow};

use crate::bus::{Bus, BusError, ExecutionRecord};
use crate::compile::{compile, Plan};
use crate::events::follow;
use crate::execution::{Effects, Execution};
use crate::runtime::{new_execution_id, new_start, ControlError, GlobalProvider, SubmitError};

pub struct Client {
    bus: Arc<dyn Bus>,
    catalog: Arc<AppCatalog>,
}

impl Client {
    pub fn new(bus: Arc<dyn Bus>, catalog: Arc<AppCatalog>) -> Client {
        Client { bus, catalog }
    }

    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    /// Validate, compile and enqueue an execution of `workflow`; with `triggers`, also queue data
    /// for triggers (by label), which an execution keeps until it reaches them.
    pub async fn submit(
        &self,
        workflow: Arc<Workflow>,
        variables: BTreeMap<String, Value>,
        globals: &dyn GlobalProvider,
        triggers: BTreeMap<String, Value>,
    ) -> Result<ExecutionId, SubmitError> {
        let plan =
            compile(Arc::clone(&workflow), &self.catalog, None).map_err(SubmitError::Invalid)?;
        let start = new_start(&plan, workflow, new_execution_id(), variables, globals)?;
        let execution_id = start.execution_id.clone();
        let mut messages = vec![ControlMessage::Start(Box::new(start))];
        messages.extend(
            triggers
                .into_iter()
                .map(|(node, data)| ControlMessage::Trigger {
                    execution_id: execution_id.clone(),
                    node,
                    data,
                }),
        );
        self.bus.send_control(messages).await?;
        Ok(execution_id)
    }

    /// Enqueue an execution of an already compiled `plan` under an id the caller chose (so it
    /// can follow the execution before it starts): how a gateway, which keeps compiled plans,
    /// submits.
    pub async fn submit_plan(
        &self,
        plan: &Plan,
        execution_id: ExecutionId,
        variables: BTreeMap<String, Value>,
        globals: &dyn GlobalProvider,
    ) -> Result<ExecutionId, SubmitError> {
        let start = new_start(
            plan,
            Arc::clone(&plan.workflow),
            execution_id,
            variables,
            globals,
        )?;
        let execution_id = start.execution_id.clone();
        self.bus
            .send_control(vec![ControlMessage::Start(Box::new(start))])
            .await?;
        Ok(execution_id)
    }

    /// Enqueue one execution of `workflow` per entry of `runs` (its variables), compiled once and
    /// sent in one write: how a load generator or a scheduler starts many at once.
    pub async fn submit_many(
        &self,
        workflow: Arc<Workflow>,
        runs: Vec<BTreeMap<String, Value>>,
        globals: &dyn GlobalProvider,
    ) -> Result<Vec<ExecutionId>, SubmitError> {
        let plan =
            compile(Arc::clone(&workflow), &self.catalog, None).map_err(SubmitError::Invalid)?;
        let mut ids = Vec::with_capacity(runs.len());
        let mut messages = Vec::with_capacity(runs.len());
        for variables in runs {
            let start = new_start(
                &plan,
                Arc::clone(&workflow),
                new_execution_id(),
                variables,
                globals,
            )?;
            ids.push(start.execution_id.clone());
            messages.push(ControlMessage::Start(Box::new(start)));
        }
        self.bus.send_control(messages).await?;
        Ok(ids)
    }

    /// The running execution, rebuilt from its log.
    async fn running(&self, execution_id: &str) -> Result<Execution, ControlError> {
        let record = self
            .bus
            .lookup_executions(&[execution_id.to_string()])
            .await?
            .pop()
            .unwrap_or(ExecutionRecord::Absent);
        let log = match record {
            ExecutionRecord::Absent => {
                return Err(ControlError::UnknownExecution(execution_id.to_string()))
            }
            ExecutionRecord::Finished => {
                return Err(ControlError::Finished(execution_id.to_string()))
            }
            ExecutionRecord::Running(log) => log,
        };
        let mut messages = log.into_iter();
        let Some(ControlMessage::Start(start)) = messages.next() else {
            return Err(ControlError::UnknownExecution(execution_id.to_string()));
        };
        let plan = compile(Arc::clone(&start.workflow), &self.catalog, None)
            .map_err(|p| ControlError::InvalidTriggerData(p.to_string()))?;
        let mut fx = Effects::default();
        let mut execution = Execution::start(Arc::new(plan), *start, &mut fx)
            .map_err(|e| ControlError::InvalidTriggerData(e.to_string()))?;
        for message in messages {
            execution.apply(message, &mut fx);
        }
        Ok(execution)
    }

    /// Deliver data to a trigger (by id or label) of a running execution, checked against the
    /// trigger's schema first.
    pub async fn trigger(
        &self,
        execution_id: &str,
        node: &str,
        data: Value,
    ) -> Result<(), ControlError> {
        let execution = self.running(execution_id).await?;
        let plan = Arc::clone(&execution.plan);
        let index = plan.find(node).ok_or_else(|| ControlError::UnknownNode {
            execution: execution_id.to_string(),
            node: node.to_string(),
        })?;
        crate::trigger::check(&plan, index, &data).map_err(ControlError::InvalidTriggerData)?;
        if execution.node(index).status.is_terminal() {
            return Err(ControlError::TriggerAlreadyResolved(
                plan.nodes[index].label.clone(),
            ));
        }
        self.bus
            .send_control(vec![ControlMessage::Trigger {
                execution_id: execution_id.to_string(),
                node: node.to_string(),
                data,
            }])
            .await?;
        Ok(())
    }

    /// Abort a running execution.
    pub async fn abort(&self, execution_id: &str) -> Result<(), ControlError> {
        let record = self
            .bus
            .lookup_executions(&[execution_id.to_string()])
            .await?
            .pop();
        match record {
            Some(ExecutionRecord::Running(_)) => {}
            Some(ExecutionRecord::Finished) => {
                return Err(ControlError::Finished(execution_id.to_string()))
            }
            _ => return Err(ControlError::UnknownExecution(execution_id.to_string())),
        }
        self.bus
            .send_control(vec![ControlMessage::Abort {
                execution_id: execution_id.to_string(),
            }])
            .await?;
        Ok(())
    }

    /// The events of an execution from `from_seq` on, ending with its final workflow event.
    pub fn events(
        &self,
        execution_id: &str,
        from_seq: u64,
    ) -> impl Stream<Item = Result<Event, BusError>> + Send + 'static {
        follow(Arc::clone(&self.bus), execution_id.to_string(), from_seq)
    }
}

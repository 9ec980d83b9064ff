//! Executions and every event of each, recorded once per (execution, sequence).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::AnyConnection;
use sqlx::Row;
use walkoff_schema::{Event, EventKind, Workflow, WorkflowStatus};

use super::{from_micros, micros, opt_time, Store, StoreError, StoreResult};

#[derive(Debug, Clone)]
pub struct ExecutionRow {
    pub id: String,
    pub workflow_id: String,
    pub workflow_version: i64,
    pub workflow_name: String,
    pub workflow: Workflow,
    pub status: WorkflowStatus,
    pub started_by: Option<String>,
    pub started_by_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub last_seq: i64,
}

/// Rows (or ids) per statement at most: far below SQLite's and PostgreSQL's limits on bound
/// parameters (32766 and 65535) at four per row.
const ROWS_PER_STATEMENT: usize = 500;

/// Events per `INSERT`: SQLite finds each bound parameter by a linear search of the
/// statement's names, so hundreds of rows (four parameters each) would cost more than they save.
const EVENTS_PER_INSERT: usize = 64;

/// `$first, $first+1, …` (`count` of them).
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl ExecutionRow {
    /// The event that ends this unfinished execution ABORTED, saying why: the one after its
    /// last recorded.
    pub fn aborted_event(&self, why: &str) -> walkoff_schema::Event {
        Event {
            execution_id: self.id.clone(),
            seq: u64::try_from(self.last_seq).unwrap_or(0) + 1,
            at: Utc::now(),
            kind: EventKind::Workflow {
                workflow_id: self.workflow_id.clone(),
                status: WorkflowStatus::Aborted,
                error: Some(why.to_string()),
            },
        }
    }
}

/// `columns` of the executions among `ids` that exist, a few hundred ids per statement.
async fn executions_by_id(
    conn: &mut AnyConnection,
    columns: &str,
    ids: &[&str],
) -> StoreResult<Vec<AnyRow>> {
    let mut rows = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT {columns} FROM executions WHERE id IN ({})",
            placeholders(1, chunk.len())
        );
        // Only column names of this module and numbered placeholders are formatted in; the
        // ids are bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(*id);
        }
        rows.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(rows)
}

/// What recording a batch did.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Executions the store does not know, whose events were skipped.
    pub unknown: Vec<String>,
    /// Executions whose stored status this batch changed (not one another process had changed
    /// already).
    pub changed: Vec<String>,
}

/// How far an execution is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The last sequence number recorded (0: none yet).
    pub last_seq: u64,
    /// Its final event is recorded.
    pub finished: bool,
}

/// What is known of an execution before it is enqueued.
#[derive(Debug, Clone)]
pub struct NewExecution<'a> {
    pub id: &'a str,
    pub workflow_id: &'a str,
    pub workflow_version: i64,
    pub workflow: &'a Workflow,
    pub started_by: Option<&'a str>,
    pub started_by_id: Option<&'a str>,
}

#[derive(Debug, Clone, Default)]
pub struct ExecutionFilter {
    pub workflow_id: Option<String>,
    pub statuses: Vec<WorkflowStatus>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
}

/// A statement reading whole execution rows (the columns `execution` maps), then `rest`.
macro_rules! select_executions {
    ($rest:literal) => {
        concat!(
            "SELECT id, workflow_id, workflow_version, workflow_name, workflow, status, ",
            "started_by, created_at, started_at, finished_at, error, last_seq, started_by_id FROM executions ",
            $rest
        )
    };
}

fn status_of(text: &str) -> StoreResult<WorkflowStatus> {
    serde_json::from_value(serde_json::Value::String(text.to_string())).map_err(StoreError::corrupt)
}

fn execution(row: &AnyRow) -> StoreResult<ExecutionRow> {
    let workflow: String = row.try_get("workflow")?;
    let status: String = row.try_get("status")?;
    Ok(ExecutionRow {
        id: row.try_get("id")?,
        workflow_id: row.try_get("workflow_id")?,
        workflow_version: row.try_get("workflow_version")?,
        workflow_name: row.try_get("workflow_name")?,
        workflow: serde_json::from_str(&workflow).map_err(StoreError::corrupt)?,
        status: status_of(&status)?,
        started_by: row.try_get("started_by")?,
        started_by_id: row.try_get("started_by_id")?,
        created_at: from_micros(row.try_get("created_at")?),
        started_at: opt_time(row, "started_at")?,
        finished_at: opt_time(row, "finished_at")?,
        error: row.try_get("error")?,
        last_seq: row.try_get("last_seq")?,
    })
}

fn stored_event(row: &AnyRow) -> StoreResult<Event> {
    let body: String = row.try_get("body")?;
    serde_json::from_str(&body).map_err(StoreError::corrupt)
}

/// The newest workflow-level change of one execution within a batch of events.
struct StatusChange {
    seq: u64,
    status: WorkflowStatus,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    error: Option<String>,
}

impl Store {
    /// Record a new execution as PENDING; it must be committed before it is enqueued.
    pub async fn insert_execution(&self, new: &NewExecution<'_>) -> StoreResult<ExecutionRow> {
        let _turn = self.write_turn().await;
        let now = Utc::now();
        let document = serde_json::to_string(new.workflow).map_err(StoreError::corrupt)?;
        let done = sqlx::query(
            "INSERT INTO executions (id, workflow_id, workflow_version, workflow_name, workflow, \
             status, started_by, created_at, last_seq, started_by_id) \
             VALUES ($1, $2, $3, $4, $5, 'PENDING', $6, $7, 0, $8)",
        )
        .bind(new.id)
        .bind(new.workflow_id)
        .bind(new.workflow_version)
        .bind(&new.workflow.name)
        .bind(document)
        .bind(new.started_by)
        .bind(micros(now))
        .bind(new.started_by_id)
        .execute(&self.pool)
        .await;
        match done {
            Ok(_) => {}
            Err(e) if super::is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "an execution with id '{}' exists",
                    new.id
                )))
            }
            Err(e) => return Err(e.into()),
        }
        Ok(ExecutionRow {
            id: new.id.to_string(),
            workflow_id: new.workflow_id.to_string(),
            workflow_version: new.workflow_version,
            workflow_name: new.workflow.name.clone(),
            workflow: new.workflow.clone(),
            status: WorkflowStatus::Pending,
            started_by: new.started_by.map(str::to_string),
            started_by_id: new.started_by_id.map(str::to_string),
            created_at: super::from_micros(micros(now)),
            started_at: None,
            finished_at: None,
            error: None,
            last_seq: 0,
        })
    }

    /// Forget an execution that could not be enqueued (nothing else refers to it yet).
    pub async fn remove_unstarted_execution(&self, id: &str) -> StoreResult<()> {
        let _turn = self.write_turn().await;
        sqlx::query("DELETE FROM executions WHERE id = $1 AND last_seq = 0")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whose an execution is: its workflow's id and the id of the user who started it (what
    /// deciding who may see it needs, without reading the workflow it ran).
    pub async fn execution_owner(&self, id: &str) -> StoreResult<Option<(String, Option<String>)>> {
        let row = sqlx::query("SELECT workflow_id, started_by_id FROM executions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Ok((row.try_get("workflow_id")?, row.try_get("started_by_id")?)))
            .transpose()
    }

    pub async fn execution(&self, id: &str) -> StoreResult<Option<ExecutionRow>> {
        const SQL: &str = select_executions!("WHERE id = $1");
        sqlx::query(SQL)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(execution)
            .transpose()
    }

    /// Up to `limit` executions `viewer` may see (they may read its workflow, or started
    /// it), newest first, after the cursor `(created_at, id)`.
    pub async fn executions(
        &self,
        filter: &ExecutionFilter,
        viewer: &super::Viewer,
        after: Option<(DateTime<Utc>, &str)>,
        limit: i64,
    ) -> StoreResult<Vec<ExecutionRow>> {
        // Statuses as one comma-framed text, so the statement stays one text for any filter.
        let statuses = (!filter.statuses.is_empty()).then(|| {
            let names: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
            format!(",{},", names.join(","))
        });
        let rows = sqlx::query(select_executions!(
            "WHERE (CAST($1 AS TEXT) IS NULL OR workflow_id = $1) \
             AND (CAST($2 AS TEXT) IS NULL OR $2 LIKE '%,' || status || ',%') \
             AND (CAST($3 AS BIGINT) IS NULL OR created_at >= $3) \
             AND (CAST($4 AS BIGINT) IS NULL OR created_at < $4) \
             AND (CAST($5 AS BIGINT) IS NULL OR created_at < $5 OR (created_at = $5 AND id < $6)) \
             AND ($8 = 1 OR started_by_id = $9 OR EXISTS (SELECT 1 FROM workflows w \
                  WHERE w.id = executions.workflow_id AND (w.creator_id = $9 \
                  OR (w.access_level = 1 AND $10 = 1) \
                  OR (w.access_level = 2 AND EXISTS (SELECT 1 FROM object_permissions p \
                      WHERE p.object_id = w.id AND p.can_read = 1 \
                      AND $11 LIKE '%,' || p.role_id || ',%'))))) \
             ORDER BY created_at DESC, id DESC LIMIT $7"
        ))
        .bind(filter.workflow_id.as_deref())
        .bind(statuses)
        .bind(filter.created_after.map(micros))
        .bind(filter.created_before.map(micros))
        .bind(after.map(|(at, _)| micros(at)))
        .bind(after.map(|(_, id)| id.to_string()))
        .bind(limit)
        .bind(i64::from(viewer.unrestricted))
        .bind(&viewer.user_id)
        .bind(i64::from(viewer.everyone))
        .bind(&viewer.roles)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(execution).collect()
    }

    /// Events of an execution with `seq >= from`, in order, at most `limit`.
    pub async fn events(&self, id: &str, from: u64, limit: i64) -> StoreResult<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT body FROM events WHERE execution_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
        )
        .bind(id)
        .bind(i64::try_from(from).unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored_event).collect()
    }

    /// Record a batch of events in one transaction: each (execution, sequence) once, whatever
    /// was recorded before (by this process or another), and each execution's status from its
    /// newest workflow event. Events of executions the store does not know are skipped (and
    /// named), never half-written.
    pub async fn record_events(&self, events: &[Event]) -> StoreResult<Recorded> {
        let _turn = self.write_turn().await;
        let mut changes: HashMap<&str, StatusChange> = HashMap::new();
        // Rows are written in one order (by execution id, then sequence) by every process, so
        // two transactions recording the same executions never wait on each other in a cycle.
        let mut newest: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
        for event in events {
            let seq = newest.entry(&event.execution_id).or_default();
            *seq = (*seq).max(event.seq);
            if let EventKind::Workflow { status, error, .. } = &event.kind {
                let change = changes
                    .entry(&event.execution_id)
                    .or_insert_with(|| StatusChange {
                        seq: 0,
                        status: *status,
                        started_at: None,
                        finished_at: None,
                        error: None,
                    });
                change.seq = event.seq;
                change.status = *status;
                if *status == WorkflowStatus::Executing {
                    change.started_at.get_or_insert(event.at);
                }
                if status.is_terminal() {
                    change.finished_at = Some(event.at);
                    change.started_at.get_or_insert(event.at);
                }
                if error.is_some() {
                    change.error.clone_from(error);
                }
            }
        }
        let mut tx = self.pool.begin().await?;
        let mut changed = Vec::new();
        let ids: Vec<&str> = newest.keys().copied().collect();
        let mut unknown: std::collections::HashSet<&str> = ids.iter().copied().collect();
        for row in executions_by_id(&mut tx, "id", &ids).await? {
            let id: String = row.try_get("id")?;
            unknown.remove(id.as_str());
        }
        let mut ordered: Vec<&Event> = events
            .iter()
            .filter(|e| !unknown.contains(e.execution_id.as_str()))
            .collect();
        ordered.sort_by(|a, b| (&a.execution_id, a.seq).cmp(&(&b.execution_id, b.seq)));
        // Many rows per statement: one round trip to the database's thread for hundreds of
        // events instead of one each.
        for chunk in ordered.chunks(EVENTS_PER_INSERT) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| format!("({})", placeholders(4 * i + 1, 4)))
                .collect();
            let sql = format!(
                "INSERT INTO events (execution_id, seq, at, body) VALUES {} \
                 ON CONFLICT (execution_id, seq) DO NOTHING",
                rows.join(", ")
            );
            let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
            for event in chunk {
                let body = serde_json::to_string(event).map_err(StoreError::corrupt)?;
                insert = insert
                    .bind(event.execution_id.as_str())
                    .bind(i64::try_from(event.seq).unwrap_or(i64::MAX))
                    .bind(micros(event.at))
                    .bind(body);
            }
            insert.execute(&mut *tx).await?;
        }
        // Executions whose newest sequence is all that changes: one statement for all of them.
        let mut advanced: Vec<(&str, i64)> = Vec::new();
        for (id, seq) in newest {
            if unknown.contains(id) {
                continue;
            }
            let seq = i64::try_from(seq).unwrap_or(i64::MAX);
            let Some(change) = changes.remove(id) else {
                advanced.push((id, seq));
                continue;
            };
            let updated = sqlx::query(
                "UPDATE executions SET status = $1, \
                 started_at = COALESCE(started_at, $2), \
                 finished_at = COALESCE(finished_at, $3), \
                 error = COALESCE(error, $4), last_seq = $5 \
                 WHERE id = $6 AND last_seq < $7",
            )
            .bind(change.status.as_str())
            .bind(change.started_at.map(micros))
            .bind(change.finished_at.map(micros))
            .bind(change.error)
            .bind(seq)
            .bind(id)
            .bind(i64::try_from(change.seq).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() > 0 {
                changed.push(id.to_string());
            } else {
                // Another process stored this status first; the newest sequence still counts.
                advanced.push((id, seq));
            }
        }
        for chunk in advanced.chunks(ROWS_PER_STATEMENT / 4) {
            // last_seq = the given one where it is higher, by a CASE over the ids (the same
            // text on SQLite and PostgreSQL).
            let cases: Vec<String> = (0..chunk.len())
                .map(|i| format!("WHEN ${} THEN ${}", 2 * i + 1, 2 * i + 2))
                .collect();
            let newest = format!("(CASE id {} END)", cases.join(" "));
            let ids = placeholders(2 * chunk.len() + 1, chunk.len());
            let sql = format!(
                "UPDATE executions SET last_seq = {newest} \
                 WHERE id IN ({ids}) AND last_seq < {newest}"
            );
            // Only numbered placeholders are formatted in; ids and numbers are bound.
            let mut update = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (id, seq) in chunk {
                update = update.bind(*id).bind(*seq);
            }
            for (id, _) in chunk {
                update = update.bind(*id);
            }
            update.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(Recorded {
            unknown: unknown.into_iter().map(str::to_string).collect(),
            changed,
        })
    }

    /// How far the store has recorded each of `ids` it knows.
    pub async fn progress(&self, ids: &[&str]) -> StoreResult<HashMap<String, Progress>> {
        let mut progress = HashMap::with_capacity(ids.len());
        let mut conn = self.pool.acquire().await?;
        for row in executions_by_id(&mut conn, "id, last_seq, status", ids).await? {
            let id: String = row.try_get("id")?;
            let last_seq: i64 = row.try_get("last_seq")?;
            let status: String = row.try_get("status")?;
            let finished = status_of(&status)?.is_terminal();
            progress.insert(
                id,
                Progress {
                    last_seq: u64::try_from(last_seq).unwrap_or(0),
                    finished,
                },
            );
        }
        Ok(progress)
    }

    /// Executions that have not finished: after a restart of the embedded mode, whose bus
    /// lived in memory, these can no longer go on.
    pub async fn unfinished_executions(&self) -> StoreResult<Vec<ExecutionRow>> {
        let rows = sqlx::query(select_executions!(
            "WHERE status IN ('PENDING', 'EXECUTING') ORDER BY created_at"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(execution).collect()
    }

    /// Delete finished executions created before `before`, with their events; returns how many.
    pub async fn delete_executions(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM events WHERE execution_id IN (SELECT id FROM executions \
             WHERE status IN ('COMPLETED', 'FAILED', 'ABORTED') AND created_at < $1)",
        )
        .bind(micros(before))
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query(
            "DELETE FROM executions \
             WHERE status IN ('COMPLETED', 'FAILED', 'ABORTED') AND created_at < $1",
        )
        .bind(micros(before))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }
}

import { useEffect, useMemo, useState } from 'react';
import { onSocketConnected } from '../client';
import { useQuery, useSubscription } from 'urql';
import { graphql } from '../gql';
import type { Status } from '../gql/graphql';

const RecentExecutions = graphql(`
  query RecentExecutions($filter: ExecutionFilterInput) {
    executions(first: 50, filter: $filter) {
      edges {
        node {
          id
          status
          workflowName
          startedBy
          createdAt
          finishedAt
        }
      }
    }
  }
`);

const StatusChanges = graphql(`
  subscription StatusChanges($filter: ExecutionStatusFilter) {
    executionStatus(filter: $filter) {
      id
      status
      workflowName
      startedBy
      createdAt
      finishedAt
    }
  }
`);

type Row = {
  id: string;
  status: Status;
  workflowName: string;
  startedBy?: string | null;
  createdAt: string;
  finishedAt?: string | null;
};

const STATUSES: Status[] = ['PENDING', 'EXECUTING', 'AWAITING_DATA', 'COMPLETED', 'FAILED', 'ABORTED'];

const WorkflowNames = graphql(`
  query WorkflowNames {
    workflows(first: 200) {
      edges {
        node {
          id
          name
        }
      }
    }
  }
`);

/** The newest executions, filtered by workflow, status and time, kept live: every status
 * change arrives over the subscription. */
export function Executions() {
  const [status, setStatus] = useState<Status | ''>('');
  const [workflowId, setWorkflowId] = useState('');
  const [since, setSince] = useState('');
  const [{ data: names }] = useQuery({ query: WorkflowNames });
  const createdAfter = since ? new Date(since).toISOString() : null;
  const filter = useMemo(
    () => ({
      workflowId: workflowId || null,
      statuses: status ? [status] : null,
    }),
    [workflowId, status],
  );
  const [{ data, error }, refetch] = useQuery({
    query: RecentExecutions,
    variables: { filter: { ...filter, createdAfter } },
  });
  // Changes made before the subscription was listening are read once it is.
  useEffect(() => onSocketConnected(() => refetch({ requestPolicy: 'network-only' })), [refetch]);
  const [live] = useSubscription(
    { query: StatusChanges, variables: { filter } },
    (seen: Record<string, Row> = {}, change) => ({ ...seen, [change.executionStatus.id]: change.executionStatus }),
  );
  const rows = useMemo(() => {
    const byId = new Map<string, Row>();
    data?.executions.edges.forEach(({ node }) => byId.set(node.id, node));
    Object.values(live.data ?? {})
      .filter((row) => !createdAfter || row.createdAt >= createdAfter)
      .forEach((row) => byId.set(row.id, row));
    // A row that has changed to a status outside the filter leaves it.
    return [...byId.values()]
      .filter((row) => !status || row.status === status)
      .sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  }, [data, live.data, createdAfter, status]);
  return (
    <section>
      <form className="row-form toolbar" aria-label="Filters" onSubmit={(e) => e.preventDefault()}>
        <label>
          Workflow
          <select value={workflowId} onChange={(e) => setWorkflowId(e.target.value)}>
            <option value="">any</option>
            {names?.workflows.edges.map(({ node }) => (
              <option key={node.id} value={node.id}>
                {node.name}
              </option>
            ))}
          </select>
        </label>
        <label>
          Status
          <select value={status} onChange={(e) => setStatus(e.target.value as Status | '')}>
            <option value="">any</option>
            {STATUSES.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </label>
        <label>
          Created since
          <input type="datetime-local" value={since} onChange={(e) => setSince(e.target.value)} />
        </label>
      </form>
      {error && <p role="alert" className="error">{error.message}</p>}
      <table aria-label="Executions">
        <thead>
          <tr>
            <th scope="col">Workflow</th>
            <th scope="col">Status</th>
            <th scope="col">Started by</th>
            <th scope="col">Created</th>
            <th scope="col">Finished</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((row) => (
            <tr key={row.id} data-execution={row.id}>
              <td>
                <a href={`#/executions/${encodeURIComponent(row.id)}`}>{row.workflowName}</a>
              </td>
              <td>
                <span className={`status status-${row.status.toLowerCase()}`}>{row.status}</span>
              </td>
              <td>{row.startedBy}</td>
              <td>{new Date(row.createdAt).toLocaleString()}</td>
              <td>{row.finishedAt ? new Date(row.finishedAt).toLocaleString() : ''}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

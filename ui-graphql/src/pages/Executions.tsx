import { useEffect, useMemo } from 'react';
import { onSocketConnected } from '../client';
import { useQuery, useSubscription } from 'urql';
import { graphql } from '../gql';
import type { Status } from '../gql/graphql';

const RecentExecutions = graphql(`
  query RecentExecutions {
    executions(first: 50) {
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
  subscription StatusChanges {
    executionStatus {
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

/** The newest executions, kept live: every status change arrives over the subscription. */
export function Executions() {
  const [{ data, error }, refetch] = useQuery({ query: RecentExecutions });
  // Changes made before the subscription was listening are read once it is.
  useEffect(() => onSocketConnected(() => refetch({ requestPolicy: 'network-only' })), [refetch]);
  const [live] = useSubscription(
    { query: StatusChanges },
    (seen: Record<string, Row> = {}, change) => ({ ...seen, [change.executionStatus.id]: change.executionStatus }),
  );
  const rows = useMemo(() => {
    const byId = new Map<string, Row>();
    data?.executions.edges.forEach(({ node }) => byId.set(node.id, node));
    Object.values(live.data ?? {}).forEach((row) => byId.set(row.id, row));
    return [...byId.values()].sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  }, [data, live.data]);
  return (
    <section>
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

import { memo, startTransition, useEffect, useMemo, useRef, useState } from 'react';
import { useMutation, useQuery } from 'urql';
import { Background, Controls, Position, ReactFlow, type Edge, type Node } from '@xyflow/react';
import '@xyflow/react/dist/style.css';
import { graphql } from '../gql';
import { subscribeDirectly } from '../client';
import type { Status } from '../gql/graphql';
import { SchemaForm, formable } from '../SchemaForm';
import { LARGE_GRAPH, layout, viewportAt } from '../layout';
import { useMeasured } from '../measured';

const ExecutionDetail = graphql(`
  query ExecutionDetail($id: ID!) {
    execution(id: $id) {
      id
      status
      workflowName
      workflow
      startedBy
      createdAt
      finishedAt
      error
    }
  }
`);

const Events = graphql(`
  subscription Events($id: ID!, $from: Int) {
    executionEvents(executionId: $id, fromSequence: $from) {
      sequence
      subject
      status
      label
      nodeId
      attempt
      parameters
      result
      error
      at
    }
  }
`);

const SendTrigger = graphql(`
  mutation SendTrigger($id: ID!, $trigger: String!, $data: JSON!) {
    sendTriggerData(executionId: $id, trigger: $trigger, data: $data)
  }
`);

const Abort = graphql(`
  mutation Abort($id: ID!) {
    abortExecution(id: $id)
  }
`);

type Event = {
  sequence: number;
  subject: string;
  status: Status;
  label?: string | null;
  nodeId?: string | null;
  attempt?: number | null;
  parameters?: unknown;
  result?: unknown;
  error?: string | null;
  at: string;
};

type WorkflowNode = { id: string; label: string; kind: string; schema?: unknown; position?: { x: number; y: number } };
type Workflow = { start?: string; nodes: WorkflowNode[]; branches: { from: string; to: string }[] };

type NodeState = { status: Status; attempt?: number | null; parameters?: unknown; result?: unknown; error?: string | null };

const TERMINAL: Status[] = ['COMPLETED', 'FAILED', 'ABORTED'];
// The timeline shows the latest events (all on request), redrawn at most every quarter second: a
// burst of thousands would otherwise replace its rows every frame.
const TIMELINE = 100;
const TIMELINE_EVERY_MS = 250;

/** `value`, changing at most once per `ms` (the latest value always comes, at the end of the wait). */
function useThrottled<T>(value: T, ms: number): T {
  const [shown, setShown] = useState(value);
  const last = useRef(0);
  useEffect(() => {
    const wait = last.current + ms - Date.now();
    if (wait <= 0) {
      last.current = Date.now();
      setShown(value);
      return;
    }
    const timer = setTimeout(() => {
      last.current = Date.now();
      setShown(value);
    }, wait);
    return () => clearTimeout(timer);
  }, [value, ms]);
  return shown;
}

/**
 * An execution's events so far and each node's state. `log` and `states` are the hook's own,
 * appended to and updated in place (copying them for every batch made garbage enough to cost
 * frames); `count` and `version` say how far they are, and change with every batch.
 */
type Progress = { log: Event[]; count: number; states: Map<string, NodeState>; version: number; status?: Status };

/** What a subscription's error says: GraphQL errors, a closed socket, or an exception. */
function described(problem: unknown): string {
  if (Array.isArray(problem)) return problem.map((e: { message?: string }) => e.message ?? String(e)).join('; ');
  if (problem instanceof Error) return problem.message;
  if (problem && typeof problem === 'object' && 'code' in problem) {
    const close = problem as { code: number; reason?: string };
    return `the connection closed (${close.code}${close.reason ? `: ${close.reason}` : ''})`;
  }
  return String(problem);
}

/**
 * Every event of the execution, from the first: the stored ones, then live ones, folded into each
 * node's state. Events are applied in batches, once per animation frame, so a burst of thousands
 * renders a few times, and a node's state object is new only when an event changed it, so only
 * those nodes render again.
 */
function useProgress(id: string): Progress & { failure: string | null } {
  const fresh = (): Progress => ({ log: [], count: 0, states: new Map(), version: 0 });
  const [progress, setProgress] = useState<Progress>(fresh);
  const [failure, setFailure] = useState<string | null>(null);
  const buffer = useRef<Event[]>([]);
  useEffect(() => {
    const current = fresh();
    setProgress(current);
    setFailure(null);
    let frame = 0;
    let status: Status | undefined;
    buffer.current = [];
    const flush = () => {
      frame = 0;
      const batch = buffer.current;
      buffer.current = [];
      const { log, states } = current;
      let last = log.length ? log[log.length - 1].sequence : 0;
      for (const event of batch) {
        // Each sequence once, in order (a subscription made again replays from the first).
        if (event.sequence <= last) continue;
        last = event.sequence;
        log.push(event);
        if (event.subject === 'WORKFLOW') {
          status = event.status;
        } else if (event.nodeId) {
          const before = states.get(event.nodeId);
          states.set(event.nodeId, {
            status: event.status,
            attempt: event.attempt ?? before?.attempt,
            parameters: event.parameters ?? before?.parameters,
            result: event.result ?? before?.result,
            error: event.error ?? before?.error,
          });
        }
      }
      const next = { ...current, count: log.length, version: ++current.version, status };
      // A transition: React renders it in slices, yielding to the browser between them, so a
      // large batch does not hold a frame.
      startTransition(() => setProgress(next));
    };
    const unsubscribe = subscribeDirectly(
      Events,
      { id, from: 1 },
      (data) => {
        buffer.current.push(data.executionEvents as Event);
        frame ||= requestAnimationFrame(flush);
      },
      (problem) => setFailure(described(problem)),
    );
    return () => {
      unsubscribe();
      if (frame) cancelAnimationFrame(frame);
    };
  }, [id]);
  return { ...progress, failure };
}

/** One node in the list under the graph; drawn again only when its state changes. */
const NodeRow = memo(function NodeRow({
  label,
  id,
  state,
  onSelect,
}: {
  label: string;
  id: string;
  state: NodeState | undefined;
  onSelect: (id: string) => void;
}) {
  const status = state?.status ?? 'PENDING';
  return (
    <li data-node={label} data-status={status}>
      <button type="button" className="link" onClick={() => onSelect(id)}>
        {label}
      </button>{' '}
      <span className={`status status-${status.toLowerCase()}`}>{status}</span>
      {state?.attempt && state.attempt > 1 ? ` (attempt ${state.attempt})` : ''}
    </li>
  );
});

// One formatter for every row: `toLocaleTimeString` builds one per call, which a burst of
// thousands of events noticeably pays for.
const timeOfDay = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });

const TimelineRow = memo(function TimelineRow({ event }: { event: Event }) {
  return (
    <li>
      <time dateTime={event.at}>{timeOfDay.format(new Date(event.at))}</time> {event.label ?? 'execution'} {event.status}
      {event.error ? ` — ${event.error}` : ''}
    </li>
  );
});

export function ExecutionView({ id }: { id: string }) {
  const [{ data, error }] = useQuery({ query: ExecutionDetail, variables: { id } });
  const { log, count, states, version, status, failure } = useProgress(id);
  const [selected, setSelected] = useState<string | null>(null);
  const [, sendTrigger] = useMutation(SendTrigger);
  const [aborted, abort] = useMutation(Abort);
  const [triggerText, setTriggerText] = useState('{}');
  const [triggerError, setTriggerError] = useState<string | null>(null);
  const [wholeTimeline, setWholeTimeline] = useState(false);
  const shownCount = useThrottled(count, TIMELINE_EVERY_MS);

  const workflow = data?.execution.workflow as Workflow | undefined;
  const byLabel = useMemo(() => new Map(workflow?.nodes.map((n) => [n.label, n.id]) ?? []), [workflow]);
  // Branches by node id (a hand-written workflow may name nodes by label).
  const branches = useMemo(
    () =>
      (workflow?.branches ?? []).map((b) => ({ from: byLabel.get(b.from) ?? b.from, to: byLabel.get(b.to) ?? b.to })),
    [workflow, byLabel],
  );
  // Laid out once per workflow; only colours change as events arrive.
  const positions = useMemo(() => layout(workflow?.nodes ?? [], branches), [workflow, branches]);
  const large = (workflow?.nodes.length ?? 0) > LARGE_GRAPH;
  const startViewport = useMemo(
    () => viewportAt(workflow?.start ? positions.get(byLabel.get(workflow.start) ?? workflow.start) : undefined, 360),
    [workflow, positions, byLabel],
  );
  // A node object is made again only when its state or selection changed, so React Flow redraws
  // just those nodes.
  const drawn = useRef(new Map<string, { state?: NodeState; selected: boolean; node: Node }>());
  const { sizes, record } = useMeasured();
  const nodes: Node[] = useMemo(
    () =>
      (workflow?.nodes ?? []).map((node) => {
        const state = states.get(node.id);
        const isSelected = node.id === selected;
        const cached = drawn.current.get(node.id);
        if (cached && cached.state === state && cached.selected === isSelected) return cached.node;
        const status = state?.status ?? 'PENDING';
        const attempt = status === 'EXECUTING' && state?.attempt && state.attempt > 1 ? ` · attempt ${state.attempt}` : '';
        const drawnNode: Node = {
          id: node.id,
          position: positions.get(node.id) ?? { x: 0, y: 0 },
          sourcePosition: Position.Right,
          targetPosition: Position.Left,
          data: { label: `${node.label}${attempt}` },
          className: `flow-node status-${status.toLowerCase()}`,
          ariaLabel: `${node.label}: ${status}${attempt}`,
          selected: isSelected,
          measured: sizes.get(node.id),
        };
        drawn.current.set(node.id, { state, selected: isSelected, node: drawnNode });
        return drawnNode;
      }),
    // `version` moves with every batch (`states` is updated in place).
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [workflow, states, version, selected, positions, sizes],
  );
  useEffect(() => drawn.current.clear(), [positions]);
  const edges: Edge[] = useMemo(
    () => branches.map((b, i) => ({ id: `e${i}`, source: b.from, target: b.to })),
    [branches],
  );

  if (error) return <p role="alert" className="error">{error.message}</p>;
  if (!data || !workflow) return <p aria-live="polite">Loading…</p>;
  const current = status ?? data.execution.status;
  const waiting = workflow.nodes.filter((n) => states.get(n.id)?.status === 'AWAITING_DATA');
  const chosen = workflow.nodes.find((n) => n.id === selected);
  const chosenState = chosen ? states.get(chosen.id) : undefined;

  return (
    <section className="execution" data-events={count}>
      <p>
        <strong>{data.execution.workflowName}</strong> —{' '}
        <span className={`status status-${current.toLowerCase()}`} data-testid="execution-status">
          {current}
        </span>
        {data.execution.error && <span className="error"> {data.execution.error}</span>}{' '}
        {failure && (
          <span role="alert" className="error">
            Live events stopped: {failure}.{' '}
          </span>
        )}
        {!TERMINAL.includes(current) && (
          <button type="button" onClick={() => void abort({ id })} disabled={aborted.fetching}>
            Abort
          </button>
        )}
      </p>
      <div className="graph" aria-label="Workflow graph">
        <ReactFlow
          nodes={nodes}
          edges={edges}
          fitView={!large}
          fitViewOptions={{ maxZoom: 1 }}
          defaultViewport={large ? startViewport : undefined}
          minZoom={0.05}
          onlyRenderVisibleElements={large}
          nodesDraggable={false}
          nodesConnectable={false}
          onNodesChange={record}
          onNodeClick={(_, node) => setSelected(node.id)}
        >
          <Background />
          <Controls />
        </ReactFlow>
      </div>
      <ul className="node-list" aria-label="Nodes" tabIndex={0}>
        {workflow.nodes.map((node) => (
          <NodeRow key={node.id} id={node.id} label={node.label} state={states.get(node.id)} onSelect={setSelected} />
        ))}
      </ul>
      {waiting.map((node) =>
        formable(node.schema) ? (
          <div key={node.id} className="trigger">
            <p>Data for “{node.label}”</p>
            <SchemaForm
              schema={node.schema}
              label={`Data for ${node.label}`}
              onSubmit={async (value) => {
                setTriggerError(null);
                const sent = await sendTrigger({ id, trigger: node.label, data: value });
                if (sent.error) setTriggerError(sent.error.graphQLErrors.map((g) => g.message).join('; '));
              }}
            />
            {triggerError && <p role="alert" className="error">{triggerError}</p>}
          </div>
        ) : (
          <form
            key={node.id}
            className="trigger"
            aria-label={`Data for ${node.label}`}
            onSubmit={async (event) => {
              event.preventDefault();
              setTriggerError(null);
              let parsed: unknown;
              try {
                parsed = JSON.parse(triggerText);
              } catch (e) {
                setTriggerError(`not JSON: ${(e as Error).message}`);
                return;
              }
              const sent = await sendTrigger({ id, trigger: node.label, data: parsed });
              if (sent.error) setTriggerError(sent.error.graphQLErrors.map((g) => g.message).join('; '));
            }}
          >
            <label className="block">
              Data for “{node.label}” (JSON)
              <textarea rows={3} value={triggerText} onChange={(e) => setTriggerText(e.target.value)} />
            </label>
            <button type="submit">Send</button>
            {triggerError && <p role="alert" className="error">{triggerError}</p>}
          </form>
        ),
      )}
      {chosen && (
        <aside aria-label={`Node ${chosen.label}`}>
          <h2>{chosen.label}</h2>
          <p>
            {chosen.kind} — {chosenState?.status ?? 'PENDING'}
          </p>
          {chosenState?.parameters != null && (
            <>
              <h3>Parameters</h3>
              <pre>{JSON.stringify(chosenState.parameters, null, 2)}</pre>
            </>
          )}
          {chosenState?.result !== undefined && chosenState?.result !== null && (
            <>
              <h3>Result</h3>
              <pre>{JSON.stringify(chosenState.result, null, 2)}</pre>
            </>
          )}
          {chosenState?.error && (
            <>
              <h3>Error</h3>
              <pre className="error">{chosenState.error}</pre>
            </>
          )}
        </aside>
      )}
      <h2>Timeline</h2>
      {shownCount > TIMELINE && !wholeTimeline && (
        <p className="hint">
          The last {TIMELINE} of {shownCount} events.{' '}
          <button type="button" className="link" onClick={() => setWholeTimeline(true)}>
            Show all
          </button>
        </p>
      )}
      <ol className="timeline" aria-label="Timeline" tabIndex={0} start={wholeTimeline ? 1 : Math.max(1, shownCount - TIMELINE + 1)}>
        {log.slice(wholeTimeline ? 0 : Math.max(0, shownCount - TIMELINE), shownCount).map((event) => (
          <TimelineRow key={event.sequence} event={event} />
        ))}
      </ol>
    </section>
  );
}

import { memo, useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { useClient, useMutation, useQuery } from 'urql';
import { Background, Controls, Position, ReactFlow, type Connection, type Edge, type Node, type NodeChange } from '@xyflow/react';
import '@xyflow/react/dist/style.css';
import { graphql } from '../gql';
import { Problems } from '../components';
import { LARGE_GRAPH, layout, viewportAt, type Point } from '../layout';
import { useMeasured } from '../measured';
import { Inspector, type CatalogueApp, type Problem } from '../editor/Inspector';
import { Permissions, RunForm, Variables, type PermissionsValue } from '../editor/Panels';
import { addBranch, addNode, newId, removeBranch, removeNode, toStored, uniqueLabel, type DocNode, type Document } from '../editor/model';

const WorkflowForEditing = graphql(`
  query WorkflowForEditing($id: ID!) {
    workflow(id: $id) {
      id
      name
      version
      document
      permissions {
        accessLevel
        roles {
          roleId
          operations
        }
      }
    }
    me {
      permissions {
        name
        operations
      }
    }
    apps {
      name
      version
      actions {
        name
        description
        parameters {
          name
          description
          required
          parallelizable
          schema
        }
      }
    }
    globals {
      id
      name
    }
  }
`);

// Separate: only those who may read roles get the permissions form.
const RoleNames = graphql(`
  query RoleNames {
    roles {
      id
      name
    }
  }
`);

const Validate = graphql(`
  query Validate($json: JSON!) {
    validateWorkflow(json: $json) {
      valid
      problems {
        code
        message
        nodeId
        label
        field
        line
        column
      }
    }
  }
`);

const Save = graphql(`
  mutation Save($id: ID!, $json: JSON!, $version: Int, $permissions: PermissionsInput) {
    updateWorkflow(id: $id, json: $json, expectedVersion: $version, permissions: $permissions) {
      id
      version
    }
  }
`);

const RunWorkflow = graphql(`
  mutation RunWorkflow($id: ID!, $variables: [VariableOverride!]) {
    executeWorkflow(workflowId: $id, workflowVariables: $variables) {
      id
    }
  }
`);

type Kind = DocNode['kind'];

/** One node in the list under the graph (the keyboard's way to a node); drawn again only when it changes. */
const NodeItem = memo(function NodeItem({
  id,
  label,
  problems,
  current,
  onSelect,
}: {
  id: string;
  label: string;
  problems: number;
  current: boolean;
  onSelect: (id: string) => void;
}) {
  return (
    <li data-node={label} data-problems={problems}>
      <button type="button" className="link" aria-current={current ? 'true' : undefined} onClick={() => onSelect(id)}>
        {label}
      </button>
      {problems > 0 && <span className="error"> ⚠ {problems}</span>}
    </li>
  );
});

/** The form that adds a node: an action from the app catalogue, or a condition, transform or trigger. */
function AddNode({ apps, onAdd }: { apps: CatalogueApp[]; onAdd: (node: Omit<DocNode, 'id' | 'label'>, label: string) => void }) {
  const [kind, setKind] = useState<Kind>('action');
  const [app, setApp] = useState('');
  const [action, setAction] = useState('');
  const [label, setLabel] = useState('');
  const chosenApp = apps.find((a) => `${a.name}@${a.version}` === app);
  return (
    <form
      aria-label="Add a node"
      className="row-form add-node"
      onSubmit={(e) => {
        e.preventDefault();
        if (kind === 'action') {
          if (!chosenApp || !action) return;
          onAdd({ kind, app: chosenApp.name, app_version: chosenApp.version, action, parameters: [] }, label || action);
        } else if (kind === 'condition') {
          onAdd({ kind, code: 'selected_node = None' }, label || 'condition');
        } else if (kind === 'transform') {
          onAdd({ kind, code: 'result = None' }, label || 'transform');
        } else {
          onAdd({ kind, schema: {} }, label || 'trigger');
        }
        setLabel('');
      }}
    >
      <label>
        Kind
        <select aria-label="Kind" value={kind} onChange={(e) => setKind(e.target.value as Kind)}>
          <option value="action">Action</option>
          <option value="condition">Condition</option>
          <option value="transform">Transform</option>
          <option value="trigger">Trigger</option>
        </select>
      </label>
      {kind === 'action' && (
        <>
          <label>
            App
            <select
              aria-label="App"
              value={app}
              onChange={(e) => {
                setApp(e.target.value);
                setAction('');
              }}
            >
              <option value="">choose an app…</option>
              {apps.map((a) => (
                <option key={`${a.name}@${a.version}`} value={`${a.name}@${a.version}`}>
                  {a.name} {a.version}
                </option>
              ))}
            </select>
          </label>
          <label>
            Action
            <select aria-label="Action" value={action} onChange={(e) => setAction(e.target.value)} disabled={!chosenApp}>
              <option value="">choose an action…</option>
              {chosenApp?.actions.map((a) => (
                <option key={a.name} value={a.name} title={a.description ?? undefined}>
                  {a.name}
                </option>
              ))}
            </select>
          </label>
        </>
      )}
      <label>
        New node's label
        <input value={label} placeholder={kind === 'action' ? action || 'the action' : kind} onChange={(e) => setLabel(e.target.value)} />
      </label>
      <button type="submit" disabled={kind === 'action' && (!chosenApp || !action)}>
        Add node
      </button>
    </form>
  );
}

export function Editor({ id }: { id: string }) {
  const client = useClient();
  const [{ data, error }, reload] = useQuery({ query: WorkflowForEditing, variables: { id } });
  const [roles] = useQuery({ query: RoleNames });
  const [document, setDocument] = useState<Document | null>(null);
  const [positions, setPositions] = useState<Map<string, Point>>(new Map());
  const [version, setVersion] = useState<number | null>(null);
  const [permissions, setPermissions] = useState<PermissionsValue | null>(null);
  const [permissionsChanged, setPermissionsChanged] = useState(false);
  const [unsaved, setUnsaved] = useState(false);
  const [problems, setProblems] = useState<Problem[]>([]);
  const [selected, setSelected] = useState<string | null>(null);
  const [saved, save] = useMutation(Save);
  const [, run] = useMutation(RunWorkflow);
  const [notice, setNotice] = useState<string | null>(null);

  useEffect(() => {
    if (!data) return;
    const loaded = data.workflow.document as Document;
    setDocument(loaded);
    setPositions(layout(loaded.nodes, loaded.branches, loaded.start));
    setVersion(data.workflow.version);
    setPermissions({
      accessLevel: data.workflow.permissions.accessLevel,
      roles: data.workflow.permissions.roles.map((r) => ({ roleId: r.roleId, operations: r.operations })),
    });
    setPermissionsChanged(false);
    setUnsaved(false);
  }, [data]);

  // Validation as you type: every problem, pinned to its node, a moment after the last change.
  useEffect(() => {
    if (!document) return;
    const timer = setTimeout(async () => {
      const result = await client.query(Validate, { json: document }, { requestPolicy: 'network-only' }).toPromise();
      setProblems(result.data?.validateWorkflow.problems ?? []);
    }, 300);
    return () => clearTimeout(timer);
  }, [client, document]);

  const may = useCallback(
    (operation: string) =>
      data?.me.permissions.some((p) => p.name === 'workflows' && p.operations.includes(operation)) ?? false,
    [data],
  );
  const readOnly = !may('update');
  const edit = useCallback((next: Document) => {
    setDocument(next);
    setUnsaved(true);
    setNotice(null);
  }, []);

  const problemsByNode = useMemo(() => {
    const byNode = new Map<string, Problem[]>();
    for (const p of problems) if (p.nodeId) byNode.set(p.nodeId, [...(byNode.get(p.nodeId) ?? []), p]);
    return byNode;
  }, [problems]);

  // A node object is made again only when something drawn of it changed (React Flow redraws those).
  const drawn = useRef(new Map<string, { key: unknown[]; node: Node }>());
  const { sizes, record } = useMeasured();
  const nodes: Node[] = useMemo(
    () =>
      (document?.nodes ?? []).map((node) => {
        const count = problemsByNode.get(node.id)?.length ?? 0;
        const key = [node, positions.get(node.id), count, node.id === selected, document?.start === node.id];
        const cached = drawn.current.get(node.id);
        if (cached && cached.key.every((k, i) => k === key[i])) return cached.node;
        const made: Node = {
          id: node.id,
          position: positions.get(node.id) ?? { x: 0, y: 0 },
          sourcePosition: Position.Right,
          targetPosition: Position.Left,
          data: {
            label: (
              <>
                {node.label}
                <small className="kind"> {node.kind === 'action' ? node.action : node.kind}</small>
                {count > 0 && <span className="problem-count" title={`${count} problem(s)`}> ⚠ {count}</span>}
              </>
            ),
          },
          className: `flow-node kind-${node.kind}${count ? ' has-problems' : ''}${document?.start === node.id ? ' start' : ''}`,
          ariaLabel: `${node.label} (${node.kind}${count ? `, ${count} problems` : ''})`,
          selected: node.id === selected,
          measured: sizes.get(node.id),
        };
        drawn.current.set(node.id, { key, node: made });
        return made;
      }),
    [document, positions, problemsByNode, selected, sizes],
  );
  const edges: Edge[] = useMemo(
    () =>
      (document?.branches ?? []).map((b) => ({
        id: `${b.from}->${b.to}`,
        source: b.from,
        target: b.to,
        ariaLabel: `branch`,
      })),
    [document],
  );

  const onNodesChange = useCallback((changes: NodeChange[]) => {
    record(changes);
    setPositions((before) => {
      let after = before;
      for (const change of changes) {
        if (change.type === 'position' && change.position) {
          if (after === before) after = new Map(before);
          after.set(change.id, change.position);
        }
      }
      return after;
    });
    for (const change of changes) if (change.type === 'select' && change.selected) setSelected(change.id);
  }, [record]);

  if (error) return <p role="alert" className="error">{error.message}</p>;
  if (!data || !document || version === null || !permissions) return <p aria-live="polite">Loading…</p>;
  const apps = data.apps as CatalogueApp[];

  const onSave = async () => {
    setNotice(null);
    // Every node where it is drawn now (a workflow without positions gets the layout it was shown in).
    const json = {
      ...document,
      nodes: document.nodes.map((n) => {
        const p = positions.get(n.id);
        return p ? { ...n, position: toStored(p) } : n;
      }),
    };
    const result = await save({ id, json, version, permissions: permissionsChanged ? permissions : undefined });
    if (result.data) {
      setVersion(result.data.updateWorkflow.version);
      setUnsaved(false);
      setPermissionsChanged(false);
      setNotice(`Saved: version ${result.data.updateWorkflow.version}.`);
    } else if (result.error?.graphQLErrors.some((e) => e.extensions?.code === 'CONFLICT')) {
      setNotice('Someone saved a newer version: reload it and make your change again.');
    }
  };

  const onAdd = (partial: Omit<DocNode, 'id' | 'label'>, wanted: string) => {
    const node = { ...partial, id: newId(), label: uniqueLabel(document, wanted) } as DocNode;
    // Right of the selected node, or right of everything.
    const from = selected ? positions.get(selected) : undefined;
    const right = Math.max(0, ...[...positions.values()].map((p) => p.x));
    const at = from ? { x: from.x + 240, y: from.y + 40 } : { x: right + 240, y: 0 };
    setPositions(new Map(positions).set(node.id, at));
    edit(addNode(document, node));
    setSelected(node.id);
  };

  const large = document.nodes.length > LARGE_GRAPH;
  const unpinned = problems.filter((p) => !p.nodeId || !document.nodes.some((n) => n.id === p.nodeId));
  const chosen = document.nodes.find((n) => n.id === selected);
  return (
    <section className="editor">
      <div className="toolbar">
        <strong>{document.name}</strong> — version {version}
        {unsaved && <span className="hint"> (unsaved changes)</span>}{' '}
        {!readOnly && (
          <button type="button" onClick={onSave} disabled={saved.fetching}>
            Save
          </button>
        )}{' '}
        <button type="button" className="link" onClick={() => reload({ requestPolicy: 'network-only' })}>
          Reload
        </button>
        <span className="problem-summary" aria-live="polite">
          {' '}
          {problems.length === 0 ? 'No problems' : `${problems.length} problem${problems.length > 1 ? 's' : ''}`}
        </span>
      </div>
      {notice && <p role="status">{notice}</p>}
      {saved.error && (
        <Problems label="Save problems" items={saved.error.graphQLErrors.map((e) => e.message)} />
      )}
      {unpinned.length > 0 && (
        <ul className="error" aria-label="Workflow problems">
          {unpinned.map((p, i) => (
            <li key={i}>
              {p.field ? `${p.field}: ` : ''}
              {p.message}
            </li>
          ))}
        </ul>
      )}
      <div className="editor-body">
        <div className="graph editable" aria-label="Workflow graph">
          <ReactFlow
            nodes={nodes}
            edges={edges}
            fitView={!large}
            fitViewOptions={{ maxZoom: 1 }}
            defaultViewport={large ? viewportAt(positions.get(document.start), 460) : undefined}
            minZoom={0.05}
            onlyRenderVisibleElements={large}
            nodesDraggable={!readOnly}
            nodesConnectable={!readOnly}
            deleteKeyCode={readOnly ? null : ['Delete', 'Backspace']}
            onNodesChange={onNodesChange}
            onNodeClick={(_, node) => setSelected(node.id)}
            onPaneClick={() => setSelected(null)}
            onConnect={(c: Connection) => edit(addBranch(document, c.source, c.target))}
            onEdgesDelete={(gone) => edit(gone.reduce((d, e) => removeBranch(d, e.source, e.target), document))}
            onNodesDelete={(gone) => {
              edit(gone.reduce((d, n) => removeNode(d, n.id), document));
              setSelected(null);
            }}
          >
            <Background />
            <Controls />
          </ReactFlow>
        </div>
        <div className="side">
          {chosen ? (
            <Inspector
              key={chosen.id}
              document={document}
              node={chosen}
              apps={apps}
              globals={data.globals}
              problems={problemsByNode.get(chosen.id) ?? []}
              readOnly={readOnly}
              onChange={edit}
              onSelect={setSelected}
            />
          ) : (
            <p className="hint">Choose a node in the graph or the list below to see and change it.</p>
          )}
        </div>
      </div>
      <ul className="node-list" aria-label="Nodes" tabIndex={0}>
        {document.nodes.map((node) => (
          <NodeItem
            key={node.id}
            id={node.id}
            label={node.label}
            problems={problemsByNode.get(node.id)?.length ?? 0}
            current={node.id === selected}
            onSelect={setSelected}
          />
        ))}
      </ul>
      {!readOnly && <AddNode apps={apps} onAdd={onAdd} />}
      <Variables document={document} readOnly={readOnly} onChange={edit} />
      {may('execute') && (
        <RunForm
          document={document}
          unsaved={unsaved}
          onRun={async (variables) => {
            const result = await run({ id, variables });
            if (result.data) {
              window.location.hash = `#/executions/${result.data.executeWorkflow.id}`;
              return null;
            }
            return result.error?.graphQLErrors.map((e) => e.message).join('; ') ?? result.error?.message ?? 'the run was refused';
          }}
        />
      )}
      {!readOnly && roles.data && (
        <Permissions
          value={permissions}
          roles={roles.data.roles}
          onChange={(value) => {
            setPermissions(value);
            setPermissionsChanged(true);
            setUnsaved(true);
          }}
        />
      )}
    </section>
  );
}

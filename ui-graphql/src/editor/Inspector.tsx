import { useEffect, useState } from 'react';
import { CodeEditor } from '../CodeEditor';
import { Problems } from '../components';
import { ParameterField, type ApiParameter } from './ParameterField';
import { addBranch, removeBranch, removeNode, setParameter, updateNode, type DocNode, type Document } from './model';

export type Problem = {
  code: string;
  message: string;
  nodeId?: string | null;
  label?: string | null;
  field?: string | null;
  line?: number | null;
  column?: number | null;
};
export type CatalogueApp = {
  name: string;
  version: string;
  actions: { name: string; description?: string | null; parameters: ApiParameter[] }[];
};
type Choice = { id: string; name: string };

/** The newest version of `app` the catalogue has, or the one the node names. */
export function catalogueAction(apps: CatalogueApp[], node: DocNode) {
  const versions = apps.filter((a) => a.name === node.app);
  const app = versions.find((a) => a.version === node.app_version) ?? versions[versions.length - 1];
  return app?.actions.find((a) => a.name === node.action);
}

/** A trigger's schema as JSON text; what does not parse stays here with its error, unsaved. */
function TriggerSchema({ node, readOnly, onChange }: { node: DocNode; readOnly: boolean; onChange: (schema: unknown) => void }) {
  const [text, setText] = useState(() => JSON.stringify(node.schema ?? {}, null, 2));
  const [problem, setProblem] = useState<string | null>(null);
  useEffect(() => setText(JSON.stringify(node.schema ?? {}, null, 2)), [node.id]); // eslint-disable-line react-hooks/exhaustive-deps
  return (
    <label className="block">
      Schema of the data it waits for (JSON Schema)
      <textarea
        rows={6}
        readOnly={readOnly}
        value={text}
        onChange={(e) => {
          setText(e.target.value);
          try {
            onChange(JSON.parse(e.target.value));
            setProblem(null);
          } catch (error) {
            setProblem(`not JSON: ${(error as Error).message}`);
          }
        }}
      />
      {problem && (
        <span role="alert" className="error">
          {problem}
        </span>
      )}
    </label>
  );
}

/**
 * Everything about one node: its label, its parameters (actions), its code (conditions and
 * transforms) or its schema (triggers), its outgoing branches, and every problem pinned to it.
 */
export function Inspector({
  document,
  node,
  apps,
  globals,
  problems,
  readOnly,
  onChange,
  onSelect,
}: {
  document: Document;
  node: DocNode;
  apps: CatalogueApp[];
  globals: Choice[];
  problems: Problem[];
  readOnly: boolean;
  onChange: (document: Document) => void;
  onSelect: (id: string | null) => void;
}) {
  const [branchTo, setBranchTo] = useState('');
  const change = (f: (node: DocNode) => DocNode) => onChange(updateNode(document, node.id, f));
  const others = document.nodes.filter((n) => n.id !== node.id).map((n) => ({ id: n.id, name: n.label }));
  const variables = (document.variables ?? []).map((v) => ({ id: v.id, name: v.name }));
  const action = node.kind === 'action' ? catalogueAction(apps, node) : undefined;
  const parameterNames = new Set(action?.parameters.map((p) => `parameter '${p.name}'`));
  const general = problems.filter((p) => !p.field || !parameterNames.has(p.field));
  const outgoing = document.branches.filter((b) => b.from === node.id);
  const label = (id: string) => document.nodes.find((n) => n.id === id)?.label ?? id;

  return (
    <fieldset className="inspector" data-node={node.label} aria-invalid={problems.length > 0}>
      <legend>
        {node.label} <small>{node.kind === 'action' ? `${node.parallelized ? 'parallel ' : ''}action · ${node.app} · ${node.action}` : node.kind}</small>
      </legend>
      <div className="row-form">
        <label>
          Label
          <input value={node.label} readOnly={readOnly} onChange={(e) => change((n) => ({ ...n, label: e.target.value }))} />
        </label>
        {node.kind === 'action' && (
          <>
            <label>
              Priority
              <select
                disabled={readOnly}
                value={node.priority ?? 3}
                onChange={(e) => change((n) => ({ ...n, priority: Number(e.target.value) }))}
              >
                {[1, 2, 3, 4, 5].map((p) => (
                  <option key={p} value={p}>
                    {p}
                  </option>
                ))}
              </select>
            </label>
            <label className="check">
              <input
                type="checkbox"
                disabled={readOnly}
                checked={node.parallelized === true}
                onChange={(e) => change((n) => ({ ...n, parallelized: e.target.checked || undefined }))}
              />
              Parallel (one shard per item)
            </label>
          </>
        )}
        {document.start === node.id ? (
          <span className="badge">start</span>
        ) : (
          !readOnly && (
            <button type="button" onClick={() => onChange({ ...document, start: node.id })}>
              Start here
            </button>
          )
        )}
      </div>
      {node.kind === 'action' &&
        (action ? (
          <div className="parameters" aria-label={`Parameters of ${node.label}`}>
            {action.parameters.map((api) => (
              <ParameterField
                key={api.name}
                api={api}
                parameter={node.parameters?.find((p) => p.name === api.name)}
                nodes={others}
                variables={variables}
                globals={globals}
                parallel={node.parallelized === true}
                readOnly={readOnly}
                problems={problems.filter((p) => p.field === `parameter '${api.name}'`).map((p) => p.message)}
                onChange={(parameter) => onChange(setParameter(document, node.id, api.name, parameter))}
              />
            ))}
          </div>
        ) : (
          <p className="hint">No app in the catalogue offers {node.app} · {node.action}: its parameters cannot be edited here.</p>
        ))}
      {(node.kind === 'condition' || node.kind === 'transform') && (
        <div className="block">
          <span id={`code-${node.id}`}>
            Code ({node.kind === 'condition' ? 'assign selected_node' : 'assign result'})
          </span>
          <CodeEditor
            value={node.code ?? ''}
            readOnly={readOnly}
            label={`Code of ${node.label}`}
            problems={problems.filter((p) => p.line != null)}
            onChange={(code) => onChange(updateNode(document, node.id, (n) => ({ ...n, code })))}
          />
        </div>
      )}
      {node.kind === 'trigger' && (
        <TriggerSchema key={node.id} node={node} readOnly={readOnly} onChange={(schema) => change((n) => ({ ...n, schema }))} />
      )}
      <div aria-label={`Branches from ${node.label}`} role="group">
        <span>Branches to: </span>
        {outgoing.length === 0 && <span className="hint">none (the run ends here)</span>}
        {outgoing.map((b) => (
          <span key={b.to} className="branch">
            <button type="button" className="link" onClick={() => onSelect(b.to)}>
              {label(b.to)}
            </button>
            {!readOnly && (
              <button
                type="button"
                className="small"
                aria-label={`Remove branch ${node.label} to ${label(b.to)}`}
                onClick={() => onChange(removeBranch(document, node.id, b.to))}
              >
                ×
              </button>
            )}
          </span>
        ))}
        {!readOnly && (
          <span className="row-form">
            <select aria-label="Branch to" value={branchTo} onChange={(e) => setBranchTo(e.target.value)}>
              <option value="">choose a node…</option>
              {others
                .filter((o) => !outgoing.some((b) => b.to === o.id))
                .map((o) => (
                  <option key={o.id} value={o.id}>
                    {o.name}
                  </option>
                ))}
            </select>
            <button
              type="button"
              disabled={!branchTo}
              onClick={() => {
                onChange(addBranch(document, node.id, branchTo));
                setBranchTo('');
              }}
            >
              Add branch
            </button>
          </span>
        )}
      </div>
      {general.length > 0 && (
        <Problems
          label={`Problems of ${node.label}`}
          items={general.map(
            (p) =>
              `${p.field ? `${p.field}: ` : ''}${p.line != null ? `line ${p.line}${p.column != null ? `, column ${p.column}` : ''}: ` : ''}${p.message}`,
          )}
        />
      )}
      {!readOnly && (
        <button
          type="button"
          className="danger"
          onClick={() => {
            onChange(removeNode(document, node.id));
            onSelect(null);
          }}
        >
          Delete node {node.label}
        </button>
      )}
    </fieldset>
  );
}

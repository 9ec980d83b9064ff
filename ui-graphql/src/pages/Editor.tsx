import { useEffect, useMemo, useState } from 'react';
import { useClient, useMutation, useQuery } from 'urql';
import { graphql } from '../gql';

const WorkflowForEditing = graphql(`
  query WorkflowForEditing($id: ID!) {
    workflow(id: $id) {
      id
      name
      version
      document
    }
    me {
      permissions {
        name
        operations
      }
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
  mutation Save($id: ID!, $json: JSON!, $version: Int) {
    updateWorkflow(id: $id, json: $json, expectedVersion: $version) {
      id
      version
    }
  }
`);

type Parameter = { name: string; variant?: string; value?: unknown; id?: string };
type DocNode = {
  id: string;
  label: string;
  kind: string;
  action?: string;
  app?: string;
  code?: string;
  parameters?: Parameter[];
};
type Document = { name: string; nodes: DocNode[]; variables?: { id?: string; name: string }[]; [key: string]: unknown };
type Problem = { code: string; message: string; nodeId?: string | null; label?: string | null; field?: string | null };

/** Text for a static value: JSON, except that a string is shown as itself. */
function shown(value: unknown) {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** A typed value back: JSON when it reads as JSON, else the text as a string. */
function typed(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

export function Editor({ id }: { id: string }) {
  const client = useClient();
  const [{ data, error }, reload] = useQuery({ query: WorkflowForEditing, variables: { id } });
  const [document, setDocument] = useState<Document | null>(null);
  const [version, setVersion] = useState<number | null>(null);
  const [problems, setProblems] = useState<Problem[]>([]);
  const [saved, save] = useMutation(Save);
  const [notice, setNotice] = useState<string | null>(null);

  useEffect(() => {
    if (data) {
      setDocument(data.workflow.document as Document);
      setVersion(data.workflow.version);
    }
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

  const mayUpdate = useMemo(
    () => data?.me.permissions.some((p) => p.name === 'workflows' && p.operations.includes('update')) ?? false,
    [data],
  );

  if (error) return <p role="alert" className="error">{error.message}</p>;
  if (!document || version === null) return <p aria-live="polite">Loading…</p>;

  const setParameter = (nodeId: string, name: string, text: string) => {
    setNotice(null);
    setDocument({
      ...document,
      nodes: document.nodes.map((node) =>
        node.id !== nodeId
          ? node
          : {
              ...node,
              parameters: (node.parameters ?? []).map((p) => (p.name === name ? { ...p, value: typed(text) } : p)),
            },
      ),
    });
  };

  const onSave = async () => {
    setNotice(null);
    const result = await save({ id, json: document, version });
    if (result.data) {
      setVersion(result.data.updateWorkflow.version);
      setNotice(`Saved: version ${result.data.updateWorkflow.version}.`);
    } else if (result.error?.graphQLErrors.some((e) => e.extensions?.code === 'CONFLICT')) {
      setNotice('Someone saved a newer version: reload it and make your change again.');
    }
  };

  const unpinned = problems.filter((p) => !p.nodeId);
  // References by id, shown by the name a user knows them by.
  const names = new Map<string, string>([
    ...document.nodes.map((n) => [n.id, n.label] as [string, string]),
    ...(document.variables ?? []).filter((v) => v.id).map((v) => [v.id!, v.name] as [string, string]),
  ]);
  return (
    <section className="editor">
      <p>
        <strong>{document.name}</strong> — version {version}{' '}
        {mayUpdate && (
          <button type="button" onClick={onSave} disabled={saved.fetching}>
            Save
          </button>
        )}{' '}
        <button type="button" className="link" onClick={() => reload({ requestPolicy: 'network-only' })}>
          Reload
        </button>
      </p>
      {notice && <p role="status">{notice}</p>}
      {saved.error && (
        <ul role="alert" className="error" aria-label="Save problems">
          {saved.error.graphQLErrors.map((e, i) => (
            <li key={i}>{e.message}</li>
          ))}
        </ul>
      )}
      {unpinned.length > 0 && (
        <ul className="error" aria-label="Workflow problems">
          {unpinned.map((p, i) => (
            <li key={i}>{p.message}</li>
          ))}
        </ul>
      )}
      {document.nodes.map((node) => {
        const mine = problems.filter((p) => p.nodeId === node.id);
        return (
          <fieldset key={node.id} data-node={node.label} aria-invalid={mine.length > 0}>
            <legend>
              {node.label} <small>{node.kind === 'action' ? `${node.app} · ${node.action}` : node.kind}</small>
            </legend>
            {(node.parameters ?? []).map((p) =>
              (p.variant ?? 'STATIC_VALUE') === 'STATIC_VALUE' ? (
                <label key={p.name}>
                  {p.name}
                  <input
                    value={shown(p.value)}
                    readOnly={!mayUpdate}
                    onChange={(e) => setParameter(node.id, p.name, e.target.value)}
                  />
                </label>
              ) : (
                <p key={p.name}>
                  {p.name}: <code>{p.variant}</code> {names.get(String(p.value)) ?? shown(p.value)}
                </p>
              ),
            )}
            {node.code && <pre className="code">{node.code}</pre>}
            {mine.length > 0 && (
              <ul role="alert" className="error" aria-label={`Problems of ${node.label}`}>
                {mine.map((p, i) => (
                  <li key={i}>
                    {p.field ? `${p.field}: ` : ''}
                    {p.message}
                  </li>
                ))}
              </ul>
            )}
          </fieldset>
        );
      })}
    </section>
  );
}

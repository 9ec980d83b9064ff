import { useState } from 'react';
import { useClient, useMutation, useQuery } from 'urql';
import { graphql } from '../gql';
import { DeleteButton, Problems } from '../components';
import { newId } from '../editor/model';

const WorkflowList = graphql(`
  query WorkflowList($first: Int!, $after: String, $search: String) {
    workflows(first: $first, after: $after, filter: { search: $search }) {
      edges {
        cursor
        node {
          id
          name
          description
          version
          updatedAt
        }
      }
      pageInfo {
        hasNextPage
        endCursor
      }
    }
  }
`);

const ImportWorkflow = graphql(`
  mutation ImportWorkflow($json: JSON!) {
    importWorkflow(json: $json) {
      id
      name
      warnings
    }
  }
`);

const CreateWorkflow = graphql(`
  mutation CreateWorkflow($json: JSON!) {
    createWorkflow(json: $json) {
      id
    }
  }
`);

const DeleteWorkflow = graphql(`
  mutation DeleteWorkflow($id: ID!) {
    deleteWorkflow(id: $id)
  }
`);

const CopyWorkflow = graphql(`
  mutation CopyWorkflow($id: ID!) {
    copyWorkflow(id: $id) {
      id
      name
    }
  }
`);

const ExportWorkflow = graphql(`
  query ExportWorkflow($id: ID!, $format: WorkflowFormat) {
    exportWorkflow(id: $id, format: $format)
  }
`);

const ExecuteWorkflow = graphql(`
  mutation ExecuteWorkflow($id: ID!) {
    executeWorkflow(workflowId: $id) {
      id
      status
    }
  }
`);

type Problem = { message: string };

function problemsOf(error: { graphQLErrors: { message: string; extensions: Record<string, unknown> }[] }) {
  return error.graphQLErrors.flatMap((e) => {
    const problems = e.extensions?.problems as Problem[] | undefined;
    return problems?.length ? problems.map((p) => p.message) : [e.message];
  });
}

/** Offer `document` as a file to download. */
function download(name: string, document: unknown) {
  const blob = new Blob([JSON.stringify(document, null, 2)], { type: 'application/json' });
  const link = window.document.createElement('a');
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

export function Workflows() {
  const client = useClient();
  const [search, setSearch] = useState('');
  const [pages, setPages] = useState(1);
  const [{ data, fetching, error }, refetch] = useQuery({
    query: WorkflowList,
    variables: { first: 20 * pages, search: search || null },
  });
  const [text, setText] = useState('');
  const [imported, importWorkflow] = useMutation(ImportWorkflow);
  const [, deleteWorkflow] = useMutation(DeleteWorkflow);
  const [started, executeWorkflow] = useMutation(ExecuteWorkflow);
  const [, copyWorkflow] = useMutation(CopyWorkflow);
  const [created, createWorkflow] = useMutation(CreateWorkflow);
  const [newName, setNewName] = useState('');
  const [notice, setNotice] = useState<string | null>(null);

  const onImport = async (json: string = text) => {
    setNotice(null);
    const result = await importWorkflow({ json });
    if (result.data) {
      setText('');
      setNotice(`Imported “${result.data.importWorkflow.name}”.`);
      refetch({ requestPolicy: 'network-only' });
    }
  };

  // A new workflow starts with one node (a stored workflow is a valid one): a transform to build on.
  const onCreate = async () => {
    const start = newId();
    const json = {
      id: newId(),
      name: newName.trim(),
      start,
      nodes: [{ id: start, label: 'start', kind: 'transform', code: 'result = None' }],
      branches: [],
    };
    const result = await createWorkflow({ json });
    if (result.data) window.location.hash = `#/workflows/${result.data.createWorkflow.id}`;
  };

  return (
    <section>
      <div className="toolbar row-form">
        <label>
          Search
          <input type="search" value={search} onChange={(e) => setSearch(e.target.value)} />
        </label>
        <form
          className="row-form"
          aria-label="New workflow"
          onSubmit={(e) => {
            e.preventDefault();
            void onCreate();
          }}
        >
          <label>
            New workflow's name
            <input value={newName} onChange={(e) => setNewName(e.target.value)} required />
          </label>
          <button type="submit" disabled={created.fetching || !newName.trim()}>
            New workflow
          </button>
        </form>
      </div>
      {created.error && (
        <Problems label="New workflow problems" items={problemsOf(created.error)} />
      )}
      {error && <p role="alert" className="error">{error.message}</p>}
      <table>
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Description</th>
            <th scope="col">Version</th>
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          {data?.workflows.edges.map(({ node }) => (
            <tr key={node.id} data-workflow={node.name}>
              <td>
                <a href={`#/workflows/${encodeURIComponent(node.id)}`}>{node.name}</a>
              </td>
              <td>{node.description}</td>
              <td>{node.version}</td>
              <td className="actions">
                <button
                  type="button"
                  aria-label={`Run ${node.name}`}
                  onClick={async () => {
                    const result = await executeWorkflow({ id: node.id });
                    if (result.data) window.location.hash = `#/executions/${result.data.executeWorkflow.id}`;
                  }}
                >
                  Run
                </button>
                <button
                  type="button"
                  aria-label={`Copy ${node.name}`}
                  onClick={async () => {
                    await copyWorkflow({ id: node.id });
                    refetch({ requestPolicy: 'network-only' });
                  }}
                >
                  Copy
                </button>
                <button
                  type="button"
                  aria-label={`Export ${node.name}`}
                  onClick={async () => {
                    const result = await client
                      .query(ExportWorkflow, { id: node.id, format: 'WALKOFF' }, { requestPolicy: 'network-only' })
                      .toPromise();
                    if (result.data) download(`${node.name}.json`, result.data.exportWorkflow);
                  }}
                >
                  Export
                </button>
                <DeleteButton
                  name={node.name}
                  remove={() => deleteWorkflow({ id: node.id })}
                  after={() => refetch({ requestPolicy: 'network-only' })}
                />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {fetching && <p aria-live="polite">Loading…</p>}
      {started.error && <p role="alert" className="error">{problemsOf(started.error).join('; ')}</p>}
      {data?.workflows.pageInfo.hasNextPage && (
        <button type="button" onClick={() => setPages(pages + 1)}>
          Show more
        </button>
      )}
      <h2>Import a workflow</h2>
      <p>Paste a workflow exported by WALKOFF 1.0 or by walkoff, or choose its file.</p>
      <label className="block">
        Workflow file
        <input
          type="file"
          accept="application/json,.json"
          onChange={async (e) => {
            const file = e.target.files?.[0];
            if (file) await onImport(await file.text());
            e.target.value = '';
          }}
        />
      </label>
      <label className="block">
        Workflow JSON
        <textarea rows={8} value={text} onChange={(e) => setText(e.target.value)} spellCheck={false} />
      </label>
      <button type="button" onClick={() => void onImport()} disabled={!text.trim() || imported.fetching}>
        Import
      </button>
      {imported.error && (
        <Problems label="Problems" items={problemsOf(imported.error)} />
      )}
      {notice && <p role="status">{notice}</p>}
    </section>
  );
}

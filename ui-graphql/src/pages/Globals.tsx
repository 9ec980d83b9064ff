import { useState } from 'react';
import { useMutation, useQuery } from 'urql';
import { graphql } from '../gql';
import { DeleteButton } from '../components';
import { authorizedFetch } from '../auth';
import { Permissions, type PermissionsValue } from '../editor/Panels';

/** A global's value, or why it is refused. Asked directly, never cached: a value read by one
 * user must not be answered to the next from a cache. */
async function readValue(id: string): Promise<{ value?: unknown; refused?: string }> {
  const response = await authorizedFetch('/graphql', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query: 'query($id: ID!) { global(id: $id) { value } }', variables: { id } }),
  });
  const body = (await response.json()) as {
    data?: { global?: { value: unknown } } | null;
    errors?: { message: string }[];
  };
  if (body.errors?.length || !body.data?.global) return { refused: body.errors?.[0]?.message ?? 'refused' };
  return { value: body.data.global.value };
}

const GlobalList = graphql(`
  query GlobalList {
    globals {
      id
      name
      description
      permissions {
        accessLevel
        roles {
          roleId
          operations
        }
      }
    }
  }
`);

// Separate: only those who may read roles get to change who may use a global.
const GlobalRoleNames = graphql(`
  query GlobalRoleNames {
    roles {
      id
      name
    }
  }
`);

const UpdateGlobalPermissions = graphql(`
  mutation UpdateGlobalPermissions($id: ID!, $permissions: PermissionsInput!) {
    updateGlobal(id: $id, input: { permissions: $permissions }) {
      id
    }
  }
`);

const CreateGlobal = graphql(`
  mutation CreateGlobal($name: String!, $value: JSON!, $description: String!) {
    createGlobal(input: { name: $name, value: $value, description: $description }) {
      id
    }
  }
`);

const DeleteGlobal = graphql(`
  mutation DeleteGlobal($id: ID!) {
    deleteGlobal(id: $id)
  }
`);

/** Globals: names and descriptions listed, values masked until revealed (for callers who may
 * read them; the server refuses the others). */
export function Globals() {
  const [{ data, error }, refetch] = useQuery({ query: GlobalList });
  const [revealed, setRevealed] = useState<Record<string, string>>({});
  const [refusals, setRefusals] = useState<Record<string, string>>({});
  const [name, setName] = useState('');
  const [value, setValue] = useState('');
  const [description, setDescription] = useState('');
  const [created, createGlobal] = useMutation(CreateGlobal);
  const [, deleteGlobal] = useMutation(DeleteGlobal);
  const [roles] = useQuery({ query: GlobalRoleNames });
  const [savedPermissions, savePermissions] = useMutation(UpdateGlobalPermissions);
  // The global whose permissions are being changed, with the change so far.
  const [editing, setEditing] = useState<{ id: string; name: string; value: PermissionsValue } | null>(null);

  const reveal = async (id: string) => {
    const read = await readValue(id);
    if (read.refused !== undefined) {
      setRefusals({ ...refusals, [id]: read.refused });
    } else {
      setRevealed({ ...revealed, [id]: JSON.stringify(read.value) });
    }
  };

  const create = async () => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(value);
    } catch {
      parsed = value;
    }
    const result = await createGlobal({ name, value: parsed, description });
    if (result.data) {
      setName('');
      setValue('');
      setDescription('');
      refetch({ requestPolicy: 'network-only' });
    }
  };

  return (
    <section>
      {error && <p role="alert" className="error">{error.message}</p>}
      <table aria-label="Globals">
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Description</th>
            <th scope="col">Value</th>
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          {data?.globals.map((g) => (
            <tr key={g.id} data-global={g.name}>
              <td>{g.name}</td>
              <td>{g.description}</td>
              <td>
                {revealed[g.id] !== undefined ? (
                  <code>{revealed[g.id]}</code>
                ) : (
                  <span aria-label="hidden value">••••••••</span>
                )}
                {refusals[g.id] && <span className="error"> {refusals[g.id]}</span>}
              </td>
              <td className="actions">
                {revealed[g.id] === undefined ? (
                  <button type="button" aria-label={`Reveal ${g.name}`} onClick={() => void reveal(g.id)}>
                    Reveal
                  </button>
                ) : (
                  <button
                    type="button"
                    aria-label={`Hide ${g.name}`}
                    onClick={() => {
                      const { [g.id]: _, ...rest } = revealed;
                      setRevealed(rest);
                    }}
                  >
                    Hide
                  </button>
                )}
                {roles.data && (
                  <button
                    type="button"
                    aria-label={`Permissions of ${g.name}`}
                    onClick={() =>
                      setEditing({
                        id: g.id,
                        name: g.name,
                        // Without urql's __typename: this goes back as input.
                        value: {
                          accessLevel: g.permissions.accessLevel,
                          roles: g.permissions.roles.map((r) => ({ roleId: r.roleId, operations: r.operations })),
                        },
                      })
                    }
                  >
                    Permissions
                  </button>
                )}
                <DeleteButton
                  name={g.name}
                  remove={() => deleteGlobal({ id: g.id })}
                  after={() => refetch({ requestPolicy: 'network-only' })}
                />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {editing && roles.data && (
        <form
          aria-label={`Who may use ${editing.name}`}
          className="role-form"
          onSubmit={async (e) => {
            e.preventDefault();
            const result = await savePermissions({ id: editing.id, permissions: editing.value });
            if (!result.error) {
              setEditing(null);
              refetch({ requestPolicy: 'network-only' });
            }
          }}
        >
          <Permissions value={editing.value} roles={roles.data.roles} onChange={(value) => setEditing({ ...editing, value })} />
          <p className="hint">Read reveals the value; execute lets workflows use it without revealing it.</p>
          <button type="submit">Save permissions</button>{' '}
          <button type="button" className="link" onClick={() => setEditing(null)}>
            Cancel
          </button>
          {savedPermissions.error && (
            <p role="alert" className="error">
              {savedPermissions.error.graphQLErrors.map((g) => g.message).join('; ')}
            </p>
          )}
        </form>
      )}
      <h2>New global</h2>
      <form
        className="row-form"
        onSubmit={(e) => {
          e.preventDefault();
          void create();
        }}
      >
        <label>
          Name
          <input value={name} onChange={(e) => setName(e.target.value)} required />
        </label>
        <label>
          Value (JSON or text)
          <input type="password" value={value} onChange={(e) => setValue(e.target.value)} required autoComplete="off" />
        </label>
        <label>
          Description
          <input value={description} onChange={(e) => setDescription(e.target.value)} />
        </label>
        <button type="submit" disabled={created.fetching}>
          Create
        </button>
      </form>
      {created.error && <p role="alert" className="error">{created.error.graphQLErrors.map((e) => e.message).join('; ')}</p>}
    </section>
  );
}

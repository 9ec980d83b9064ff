import { useState, type FormEvent } from 'react';
import { useMutation, useQuery } from 'urql';
import { graphql } from '../gql';
import { DeleteButton } from '../components';

const UsersAndRoles = graphql(`
  query UsersAndRoles {
    users {
      id
      username
      active
      roles {
        id
        name
      }
    }
    roles {
      id
      name
      description
      builtin
      resources {
        name
        operations
      }
    }
    availableResourceActions {
      name
      operations
    }
  }
`);

const CreateRole = graphql(`
  mutation CreateRole($input: CreateRoleInput!) {
    createRole(input: $input) {
      id
    }
  }
`);

const UpdateRole = graphql(`
  mutation UpdateRole($id: ID!, $input: UpdateRoleInput!) {
    updateRole(id: $id, input: $input) {
      id
    }
  }
`);

const DeleteRole = graphql(`
  mutation DeleteRole($id: ID!) {
    deleteRole(id: $id)
  }
`);

type Grant = { name: string; operations: string[] };
type RoleDraft = { name: string; description: string; resources: Grant[] };

/** A custom role's name, description and grants: one checkbox per operation of each resource. */
function RoleForm({
  title,
  available,
  initial,
  onSubmit,
  onCancel,
}: {
  title: string;
  available: Grant[];
  initial: RoleDraft;
  onSubmit: (role: RoleDraft) => Promise<boolean>;
  onCancel?: () => void;
}) {
  const [role, setRole] = useState(initial);
  const granted = (resource: string, operation: string) =>
    role.resources.some((r) => r.name === resource && r.operations.includes(operation));
  const toggle = (resource: string, operation: string, on: boolean) => {
    const before = role.resources.find((r) => r.name === resource)?.operations ?? [];
    const operations = on ? [...before, operation] : before.filter((o) => o !== operation);
    const rest = role.resources.filter((r) => r.name !== resource);
    setRole({ ...role, resources: operations.length ? [...rest, { name: resource, operations }] : rest });
  };
  return (
    <form
      aria-label={title}
      className="role-form"
      onSubmit={async (e) => {
        e.preventDefault();
        if (await onSubmit(role)) setRole(initial);
      }}
    >
      <h3>{title}</h3>
      <div className="row-form">
        <label>
          Role name
          <input value={role.name} onChange={(e) => setRole({ ...role, name: e.target.value })} required />
        </label>
        <label>
          Role description
          <input value={role.description} onChange={(e) => setRole({ ...role, description: e.target.value })} />
        </label>
      </div>
      <table aria-label={`Grants of ${title}`}>
        <tbody>
          {available.map((resource) => (
            <tr key={resource.name}>
              <th scope="row">
                <code>{resource.name}</code>
              </th>
              <td>
                {resource.operations.map((operation) => (
                  <label key={operation} className="check">
                    <input
                      type="checkbox"
                      aria-label={`${resource.name} ${operation}`}
                      checked={granted(resource.name, operation)}
                      onChange={(e) => toggle(resource.name, operation, e.target.checked)}
                    />
                    {operation}
                  </label>
                ))}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <button type="submit">{title.startsWith('New') ? 'Create role' : 'Save role'}</button>{' '}
      {onCancel && (
        <button type="button" className="link" onClick={onCancel}>
          Cancel
        </button>
      )}
    </form>
  );
}

/** An existing user's roles and, for an administrator's reset, a new password. */
function UserForm({
  user,
  roles,
  onSubmit,
  onCancel,
}: {
  user: { id: string; username: string; roles: { id: string }[] };
  roles: { id: string; name: string }[];
  onSubmit: (input: { roleIds: string[]; password?: string }) => Promise<boolean>;
  onCancel: () => void;
}) {
  const [roleIds, setRoleIds] = useState(user.roles.map((r) => r.id));
  const [password, setPassword] = useState('');
  return (
    <form
      aria-label={`Edit ${user.username}`}
      className="row-form role-form"
      onSubmit={async (e) => {
        e.preventDefault();
        if (await onSubmit({ roleIds, password: password || undefined })) onCancel();
      }}
    >
      <h3>Edit {user.username}</h3>
      <fieldset>
        <legend>Roles</legend>
        {roles.map((role) => (
          <label key={role.id} className="check">
            <input
              type="checkbox"
              checked={roleIds.includes(role.id)}
              onChange={(e) => setRoleIds(e.target.checked ? [...roleIds, role.id] : roleIds.filter((r) => r !== role.id))}
            />
            {role.name}
          </label>
        ))}
      </fieldset>
      <label>
        New password (leave empty to keep)
        <input type="password" value={password} minLength={8} autoComplete="new-password" onChange={(e) => setPassword(e.target.value)} />
      </label>
      <button type="submit">Save user</button>
      <button type="button" className="link" onClick={onCancel}>
        Cancel
      </button>
    </form>
  );
}

const CreateUser = graphql(`
  mutation CreateUser($input: CreateUserInput!) {
    createUser(input: $input) {
      id
    }
  }
`);

const UpdateUser = graphql(`
  mutation UpdateUser($id: ID!, $input: UpdateUserInput!) {
    updateUser(id: $id, input: $input) {
      id
    }
  }
`);

const DeleteUser = graphql(`
  mutation DeleteUser($id: ID!) {
    deleteUser(id: $id)
  }
`);

const ASSIGNABLE = (name: string) => name !== 'super_admin';

/** Users and roles, for administrators: who holds which roles, and what each role grants. */
export function Users() {
  const [{ data, error }, refetch] = useQuery({ query: UsersAndRoles });
  const [, createUser] = useMutation(CreateUser);
  const [, updateUser] = useMutation(UpdateUser);
  const [, deleteUser] = useMutation(DeleteUser);
  const [, createRole] = useMutation(CreateRole);
  const [, updateRole] = useMutation(UpdateRole);
  const [, deleteRole] = useMutation(DeleteRole);
  const [editingUser, setEditingUser] = useState<string | null>(null);
  const [editingRole, setEditingRole] = useState<string | null>(null);
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [roleIds, setRoleIds] = useState<string[]>([]);
  const [problem, setProblem] = useState<string | null>(null);
  const reload = () => refetch({ requestPolicy: 'network-only' });
  const report = (result: { error?: { graphQLErrors: { message: string }[] } }) => {
    setProblem(result.error ? result.error.graphQLErrors.map((e) => e.message).join('; ') : null);
    if (!result.error) reload();
    return !result.error;
  };

  const create = async (event: FormEvent) => {
    event.preventDefault();
    const result = await createUser({ input: { username, password, roleIds } });
    report(result);
    if (!result.error) {
      setUsername('');
      setPassword('');
      setRoleIds([]);
    }
  };

  if (error) return <p role="alert" className="error">{error.message}</p>;
  return (
    <section>
      {problem && <p role="alert" className="error">{problem}</p>}
      <table aria-label="Users">
        <thead>
          <tr>
            <th scope="col">Username</th>
            <th scope="col">Roles</th>
            <th scope="col">Active</th>
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          {data?.users.map((user) => (
            <tr key={user.id} data-user={user.username}>
              <td>{user.username}</td>
              <td>{user.roles.map((r) => r.name).join(', ')}</td>
              <td>{user.active ? 'yes' : 'no'}</td>
              <td className="actions">
                <button type="button" aria-label={`Edit ${user.username}`} onClick={() => setEditingUser(user.id)}>
                  Edit
                </button>
                <button
                  type="button"
                  aria-label={`${user.active ? 'Deactivate' : 'Activate'} ${user.username}`}
                  onClick={async () => report(await updateUser({ id: user.id, input: { active: !user.active } }))}
                >
                  {user.active ? 'Deactivate' : 'Activate'}
                </button>
                <DeleteButton name={user.username} remove={async () => report(await deleteUser({ id: user.id }))} after={() => {}} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {data?.users
        .filter((u) => u.id === editingUser)
        .map((user) => (
          <UserForm
            key={user.id}
            user={user}
            roles={data.roles.filter((r) => ASSIGNABLE(r.name))}
            onSubmit={async (input) => report(await updateUser({ id: user.id, input }))}
            onCancel={() => setEditingUser(null)}
          />
        ))}
      <h2>New user</h2>
      <form className="row-form" onSubmit={create} aria-label="New user">
        <label>
          Username
          <input value={username} onChange={(e) => setUsername(e.target.value)} required autoComplete="off" />
        </label>
        <label>
          Password
          <input type="password" value={password} onChange={(e) => setPassword(e.target.value)} required minLength={8} autoComplete="new-password" />
        </label>
        <fieldset>
          <legend>Roles</legend>
          {data?.roles
            .filter((r) => ASSIGNABLE(r.name))
            .map((role) => (
              <label key={role.id} className="check">
                <input
                  type="checkbox"
                  checked={roleIds.includes(role.id)}
                  onChange={(e) =>
                    setRoleIds(e.target.checked ? [...roleIds, role.id] : roleIds.filter((r) => r !== role.id))
                  }
                />
                {role.name}
              </label>
            ))}
        </fieldset>
        <button type="submit">Create user</button>
      </form>
      <h2>Roles</h2>
      <table aria-label="Roles">
        <thead>
          <tr>
            <th scope="col">Role</th>
            <th scope="col">Grants</th>
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          {data?.roles.map((role) => (
            <tr key={role.id} data-role={role.name}>
              <td>
                {role.name}
                {role.builtin && <small> (default)</small>}
                <br />
                <small>{role.description}</small>
              </td>
              <td>
                {role.resources.map((r) => (
                  <div key={r.name}>
                    <code>{r.name}</code>: {r.operations.join(', ')}
                  </div>
                ))}
              </td>
              <td className="actions">
                {!role.builtin && (
                  <>
                    <button type="button" aria-label={`Edit role ${role.name}`} onClick={() => setEditingRole(role.id)}>
                      Edit
                    </button>
                    <DeleteButton name={role.name} remove={async () => report(await deleteRole({ id: role.id }))} after={() => {}} />
                  </>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {data?.roles
        .filter((r) => r.id === editingRole)
        .map((role) => (
          <RoleForm
            key={role.id}
            title={`Edit role ${role.name}`}
            available={data.availableResourceActions}
            // Without urql's __typename: these go back as input.
            initial={{
              name: role.name,
              description: role.description,
              resources: role.resources.map((r) => ({ name: r.name, operations: r.operations })),
            }}
            onSubmit={async (input) => {
              const ok = report(await updateRole({ id: role.id, input }));
              if (ok) setEditingRole(null);
              return ok;
            }}
            onCancel={() => setEditingRole(null)}
          />
        ))}
      {data && (
        <RoleForm
          title="New role"
          available={data.availableResourceActions}
          initial={{ name: '', description: '', resources: [] }}
          onSubmit={async (input) => report(await createRole({ input }))}
        />
      )}
    </section>
  );
}

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
  }
`);

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
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [roleIds, setRoleIds] = useState<string[]>([]);
  const [problem, setProblem] = useState<string | null>(null);
  const reload = () => refetch({ requestPolicy: 'network-only' });
  const report = (result: { error?: { graphQLErrors: { message: string }[] } }) => {
    setProblem(result.error ? result.error.graphQLErrors.map((e) => e.message).join('; ') : null);
    if (!result.error) reload();
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
          </tr>
        </thead>
        <tbody>
          {data?.roles.map((role) => (
            <tr key={role.id}>
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
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

import { useState, type FormEvent } from 'react';
import { useMutation, useQuery } from 'urql';
import { graphql } from '../gql';
import { logout } from '../auth';

const Me = graphql(`
  query Me {
    me {
      username
      roles {
        name
      }
    }
  }
`);

const ChangePassword = graphql(`
  mutation ChangePassword($old: String!, $new: String!) {
    updateMe(input: { oldPassword: $old, newPassword: $new }) {
      username
    }
  }
`);

/** Who is signed in, and changing one's password (which ends every login, this one too). */
export function Account() {
  const [{ data }] = useQuery({ query: Me });
  const [changed, change] = useMutation(ChangePassword);
  const [current, setCurrent] = useState('');
  const [next, setNext] = useState('');
  const [again, setAgain] = useState('');
  const [problem, setProblem] = useState<string | null>(null);
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setProblem(null);
    if (next !== again) {
      setProblem('the new passwords differ');
      return;
    }
    const result = await change({ old: current, new: next });
    if (result.error) {
      setProblem(result.error.graphQLErrors.map((e) => e.message).join('; '));
    } else {
      await logout();
    }
  };
  return (
    <section>
      {data && (
        <p>
          Signed in as <strong>{data.me.username}</strong> ({data.me.roles.map((r) => r.name).join(', ')})
        </p>
      )}
      <h2>Change password</h2>
      <form className="row-form" onSubmit={submit}>
        <label>
          Current password
          <input type="password" autoComplete="current-password" value={current} onChange={(e) => setCurrent(e.target.value)} required />
        </label>
        <label>
          New password
          <input type="password" autoComplete="new-password" value={next} onChange={(e) => setNext(e.target.value)} required minLength={8} />
        </label>
        <label>
          New password again
          <input type="password" autoComplete="new-password" value={again} onChange={(e) => setAgain(e.target.value)} required />
        </label>
        <button type="submit" disabled={changed.fetching}>
          Change password
        </button>
      </form>
      {problem && <p role="alert" className="error">{problem}</p>}
    </section>
  );
}

import { useState } from 'react';
import { newId, shown, typed, type Document, type Variable } from './model';

/** The workflow's variables: name, default value and description; added and removed here. */
export function Variables({
  document,
  readOnly,
  onChange,
}: {
  document: Document;
  readOnly: boolean;
  onChange: (document: Document) => void;
}) {
  const variables = document.variables ?? [];
  const set = (id: string, change: Partial<Variable>) =>
    onChange({ ...document, variables: variables.map((v) => (v.id === id ? { ...v, ...change } : v)) });
  return (
    <section aria-labelledby="variables-heading">
      <h2 id="variables-heading">Variables</h2>
      {variables.length === 0 && <p className="hint">None: parameters and scripts can read variables set here, and each run can change them.</p>}
      {variables.length > 0 && (
        <table aria-label="Variables">
          <thead>
            <tr>
              <th>Name</th>
              <th>Default value</th>
              <th>Description</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {variables.map((v, i) => (
              <tr key={v.id || i} data-variable={v.name}>
                <td>
                  <input aria-label={`Name of variable ${i + 1}`} readOnly={readOnly} value={v.name} onChange={(e) => set(v.id, { name: e.target.value })} />
                </td>
                <td>
                  <input
                    aria-label={`Default value of ${v.name}`}
                    readOnly={readOnly}
                    value={shown(v.value)}
                    onChange={(e) => set(v.id, { value: typed(e.target.value) })}
                  />
                </td>
                <td>
                  <input
                    aria-label={`Description of ${v.name}`}
                    readOnly={readOnly}
                    value={v.description ?? ''}
                    onChange={(e) => set(v.id, { description: e.target.value || undefined })}
                  />
                </td>
                <td>
                  {!readOnly && (
                    <button
                      type="button"
                      aria-label={`Remove variable ${v.name}`}
                      onClick={() => onChange({ ...document, variables: variables.filter((x) => x.id !== v.id) })}
                    >
                      Remove
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {!readOnly && (
        <button
          type="button"
          onClick={() => {
            const taken = new Set(variables.map((v) => v.name));
            let n = variables.length + 1;
            while (taken.has(`variable_${n}`)) n++;
            onChange({ ...document, variables: [...variables, { id: newId(), name: `variable_${n}`, value: '' }] });
          }}
        >
          Add variable
        </button>
      )}
    </section>
  );
}

export type AccessLevel = 'ONLY_ME' | 'EVERYONE' | 'ROLE_BASED';
export type PermissionsValue = { accessLevel: AccessLevel; roles: { roleId: string; operations: string[] }[] };
const OPERATIONS = ['read', 'update', 'delete', 'execute'];

/** Who may see, change, delete and run the workflow: WALKOFF's three access levels. */
export function Permissions({
  value,
  roles,
  onChange,
}: {
  value: PermissionsValue;
  roles: { id: string; name: string }[];
  onChange: (value: PermissionsValue) => void;
}) {
  const operationsOf = (roleId: string) => value.roles.find((r) => r.roleId === roleId)?.operations ?? [];
  const toggle = (roleId: string, operation: string, on: boolean) => {
    const operations = on ? [...operationsOf(roleId), operation] : operationsOf(roleId).filter((o) => o !== operation);
    const rest = value.roles.filter((r) => r.roleId !== roleId);
    onChange({ ...value, roles: operations.length ? [...rest, { roleId, operations }] : rest });
  };
  return (
    <section aria-labelledby="permissions-heading">
      <h2 id="permissions-heading">Permissions</h2>
      <label>
        Who may use it
        <select value={value.accessLevel} onChange={(e) => onChange({ ...value, accessLevel: e.target.value as AccessLevel })}>
          <option value="EVERYONE">Everyone, as their roles allow</option>
          <option value="ONLY_ME">Only its creator</option>
          <option value="ROLE_BASED">The roles chosen below</option>
        </select>
      </label>
      {value.accessLevel === 'ROLE_BASED' && (
        <table aria-label="Role permissions">
          <thead>
            <tr>
              <th>Role</th>
              {OPERATIONS.map((o) => (
                <th key={o}>{o}</th>
              ))}
            </tr>
          </thead>
          <tbody>
            {roles.map((role) => (
              <tr key={role.id} data-role={role.name}>
                <td>{role.name}</td>
                {OPERATIONS.map((o) => (
                  <td key={o}>
                    <input
                      type="checkbox"
                      aria-label={`${role.name} may ${o}`}
                      checked={operationsOf(role.id).includes(o)}
                      onChange={(e) => toggle(role.id, o, e.target.checked)}
                    />
                  </td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

/** A run with this run's variable values (the saved workflow runs, with these in place of its defaults). */
export function RunForm({
  document,
  unsaved,
  onRun,
}: {
  document: Document;
  unsaved: boolean;
  onRun: (variables: { name: string; value: unknown }[]) => Promise<string | null>;
}) {
  const variables = document.variables ?? [];
  const [values, setValues] = useState<Record<string, string>>({});
  const [problem, setProblem] = useState<string | null>(null);
  return (
    <form
      aria-label="Run"
      className="run-form"
      onSubmit={async (e) => {
        e.preventDefault();
        setProblem(null);
        const overrides = Object.entries(values).map(([name, text]) => ({ name, value: typed(text) }));
        setProblem(await onRun(overrides));
      }}
    >
      <h2>Run</h2>
      {unsaved && <p className="hint">Unsaved changes are not part of the run: the saved version runs.</p>}
      {variables.map((v) => (
        <label key={v.id}>
          {v.name}
          <input
            value={values[v.name] ?? shown(v.value)}
            onChange={(e) => setValues({ ...values, [v.name]: e.target.value })}
          />
        </label>
      ))}
      <button type="submit">Run {variables.length ? 'with these values' : 'now'}</button>
      {problem && (
        <p role="alert" className="error">
          {problem}
        </p>
      )}
    </form>
  );
}

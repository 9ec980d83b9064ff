import { useState, type FormEvent } from 'react';

type Schema = {
  type?: string | string[];
  properties?: Record<string, Schema>;
  required?: string[];
  enum?: unknown[];
  description?: string;
  title?: string;
};

/** Whether `schema` describes an object whose properties a form can ask for one by one. */
export function formable(schema: unknown): schema is Schema {
  const s = schema as Schema | undefined;
  return !!s && s.type === 'object' && !!s.properties && Object.keys(s.properties).length > 0;
}

/**
 * A form generated from an object's JSON Schema: a checkbox for a boolean, a number field for a
 * number, a list for an enum, a text field for a string, JSON for anything else; required
 * properties marked and required. `onSubmit` gets the object.
 */
export function SchemaForm({
  schema,
  label,
  onSubmit,
}: {
  schema: Schema;
  label: string;
  onSubmit: (value: Record<string, unknown>) => void;
}) {
  const properties = Object.entries(schema.properties ?? {});
  const required = new Set(schema.required ?? []);
  const [values, setValues] = useState<Record<string, unknown>>({});
  const [problem, setProblem] = useState<string | null>(null);
  const set = (name: string, value: unknown) => setValues({ ...values, [name]: value });
  const submit = (event: FormEvent) => {
    event.preventDefault();
    const value: Record<string, unknown> = {};
    for (const [name, property] of properties) {
      const given = values[name];
      if (property.type === 'boolean') {
        value[name] = given === true;
      } else if (given !== undefined && given !== '') {
        if (property.type === 'number' || property.type === 'integer') {
          value[name] = Number(given);
        } else if (property.type === 'string' || property.enum) {
          value[name] = given;
        } else {
          try {
            value[name] = JSON.parse(String(given));
          } catch {
            setProblem(`${name}: not JSON`);
            return;
          }
        }
      }
    }
    setProblem(null);
    onSubmit(value);
  };
  return (
    <form onSubmit={submit} aria-label={label} className="row-form">
      {properties.map(([name, property]) => {
        const title = `${property.title ?? name}${required.has(name) ? ' (required)' : ''}`;
        if (property.type === 'boolean') {
          return (
            <label key={name} className="check">
              <input type="checkbox" checked={values[name] === true} onChange={(e) => set(name, e.target.checked)} />
              {title}
            </label>
          );
        }
        if (property.enum) {
          return (
            <label key={name}>
              {title}
              <select value={String(values[name] ?? '')} onChange={(e) => set(name, e.target.value)} required={required.has(name)}>
                <option value="">choose</option>
                {property.enum.map((v) => (
                  <option key={String(v)} value={String(v)}>
                    {String(v)}
                  </option>
                ))}
              </select>
            </label>
          );
        }
        const numeric = property.type === 'number' || property.type === 'integer';
        return (
          <label key={name}>
            {title}
            <input
              type={numeric ? 'number' : 'text'}
              step={property.type === 'integer' ? 1 : 'any'}
              value={String(values[name] ?? '')}
              onChange={(e) => set(name, e.target.value)}
              required={required.has(name)}
              title={property.description}
            />
          </label>
        );
      })}
      <button type="submit">Send</button>
      {problem && <p role="alert" className="error">{problem}</p>}
    </form>
  );
}

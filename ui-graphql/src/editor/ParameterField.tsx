import { shown, typed, type Parameter, type Variant } from './model';

type Schema = { type?: string | string[]; enum?: unknown[]; description?: string };
export type ApiParameter = {
  name: string;
  required: boolean;
  parallelizable: boolean;
  schema?: unknown;
  description?: string | null;
};
type Choice = { id: string; name: string };

const VARIANTS: { variant: Variant; title: string }[] = [
  { variant: 'STATIC_VALUE', title: 'Static value' },
  { variant: 'ACTION_RESULT', title: 'Action result' },
  { variant: 'WORKFLOW_VARIABLE', title: 'Workflow variable' },
  { variant: 'GLOBAL', title: 'Global' },
];

function typeOf(schema: Schema | undefined): string | undefined {
  const t = schema?.type;
  return Array.isArray(t) ? t.find((x) => x !== 'null') : t;
}

/** A static value's control from its JSON Schema: a list, a checkbox, a number or text. */
function StaticValue({
  label,
  schema,
  value,
  readOnly,
  required,
  onChange,
}: {
  label: string;
  schema: Schema | undefined;
  value: unknown;
  readOnly: boolean;
  required: boolean;
  onChange: (value: unknown | undefined) => void;
}) {
  const type = typeOf(schema);
  if (schema?.enum) {
    return (
      <select
        aria-label={label}
        disabled={readOnly}
        value={value === undefined ? '' : JSON.stringify(value)}
        onChange={(e) => onChange(e.target.value === '' ? undefined : JSON.parse(e.target.value))}
      >
        <option value="">{required ? 'choose…' : '(not set)'}</option>
        {schema.enum.map((option) => (
          <option key={JSON.stringify(option)} value={JSON.stringify(option)}>
            {shown(option)}
          </option>
        ))}
      </select>
    );
  }
  if (type === 'boolean') {
    return (
      <input
        type="checkbox"
        aria-label={label}
        disabled={readOnly}
        checked={value === true}
        onChange={(e) => onChange(e.target.checked)}
      />
    );
  }
  return (
    <input
      aria-label={label}
      readOnly={readOnly}
      inputMode={type === 'number' || type === 'integer' ? 'decimal' : undefined}
      placeholder={type === 'string' || !type ? undefined : `${type} (JSON)`}
      value={shown(value)}
      onChange={(e) => {
        const text = e.target.value;
        // Text for a string; JSON (or, when it does not parse, the text) for anything else.
        if (text === '' && !required) onChange(undefined);
        else onChange(type === 'string' ? text : typed(text));
      }}
    />
  );
}

/**
 * One parameter of an action: where its value comes from (WALKOFF's four variants) and the value:
 * a control made from its JSON Schema, a node and a JSON Pointer into its result, a workflow
 * variable, or a global.
 */
export function ParameterField({
  api,
  parameter,
  nodes,
  variables,
  globals,
  parallel,
  readOnly,
  problems,
  onChange,
}: {
  api: ApiParameter;
  parameter: Parameter | undefined;
  nodes: Choice[];
  variables: Choice[];
  globals: Choice[];
  parallel: boolean;
  readOnly: boolean;
  problems: string[];
  onChange: (parameter: Parameter | null) => void;
}) {
  const variant = parameter?.variant ?? 'STATIC_VALUE';
  const schema = api.schema as Schema | undefined;
  const name = api.name;
  const set = (change: Partial<Parameter>) => onChange({ ...(parameter ?? { name }), name, ...change });
  const reference = (choices: Choice[], what: string) => (
    <select
      aria-label={name}
      disabled={readOnly}
      value={String(parameter?.value ?? '')}
      onChange={(e) => set({ value: e.target.value })}
    >
      <option value="">choose {what}…</option>
      {choices.map((c) => (
        <option key={c.id} value={c.id}>
          {c.name}
        </option>
      ))}
    </select>
  );
  return (
    <div className="parameter" data-parameter={name} aria-invalid={problems.length > 0}>
      <span className="parameter-name">
        {name}
        {api.required && <abbr title="required"> *</abbr>}
        {schema?.type && <small className="schema"> {String(schema.type)}</small>}
      </span>
      <select
        aria-label={`Source of ${name}`}
        disabled={readOnly}
        value={variant}
        onChange={(e) => {
          const next = e.target.value as Variant;
          // A new source starts empty: a node id is no static value, and the other way round.
          if (next === 'STATIC_VALUE') onChange(parameter ? { name, value: undefined } : null);
          else onChange({ name, variant: next, value: '' });
        }}
      >
        {VARIANTS.map((v) => (
          <option key={v.variant} value={v.variant}>
            {v.title}
          </option>
        ))}
      </select>
      {variant === 'STATIC_VALUE' && (
        <StaticValue
          label={name}
          schema={schema}
          value={parameter?.value}
          readOnly={readOnly}
          required={api.required}
          onChange={(value) => (value === undefined ? onChange(null) : set({ variant: undefined, value }))}
        />
      )}
      {variant === 'ACTION_RESULT' && (
        <>
          {reference(nodes, 'a node')}
          <input
            aria-label={`Pointer into the result for ${name}`}
            placeholder="/path/in/result"
            readOnly={readOnly}
            value={parameter?.pointer ?? ''}
            onChange={(e) => set({ pointer: e.target.value || undefined })}
          />
        </>
      )}
      {variant === 'WORKFLOW_VARIABLE' && reference(variables, 'a variable')}
      {variant === 'GLOBAL' && reference(globals, 'a global')}
      {parallel && api.parallelizable && (
        <label className="check">
          <input
            type="checkbox"
            disabled={readOnly}
            checked={parameter?.parallelized === true}
            onChange={(e) => set({ parallelized: e.target.checked || undefined })}
          />
          split into shards
        </label>
      )}
      {api.description && <small className="hint">{api.description}</small>}
      {problems.map((p, i) => (
        <span key={i} role="alert" className="error">
          {p}
        </span>
      ))}
    </div>
  );
}

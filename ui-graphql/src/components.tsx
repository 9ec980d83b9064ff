import type { ReactNode } from 'react';

/** A Delete button that asks first, then runs `remove` and `after`. */
export function DeleteButton({ name, remove, after }: { name: string; remove: () => Promise<unknown>; after: () => void }) {
  return (
    <button
      type="button"
      aria-label={`Delete ${name}`}
      onClick={async () => {
        if (window.confirm(`Delete “${name}”?`)) {
          await remove();
          after();
        }
      }}
    >
      Delete
    </button>
  );
}

/** A list of problems announced as an alert (the alert wraps the list, so the list stays a list). */
export function Problems({ label, items }: { label: string; items: ReactNode[] }) {
  return (
    <div role="alert" aria-label={label} className="error">
      <ul>
        {items.map((item, i) => (
          <li key={i}>{item}</li>
        ))}
      </ul>
    </div>
  );
}

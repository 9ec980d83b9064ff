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

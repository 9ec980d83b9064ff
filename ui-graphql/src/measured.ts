import { useCallback, useRef } from 'react';
import type { Node, NodeChange } from '@xyflow/react';

type Size = { width: number; height: number };

/**
 * React Flow node objects kept from render to render: `node(id, inputs, make)` makes a node again
 * only when one of `inputs` changed (compared by identity), so React Flow redraws just those; and
 * each node made carries the size React Flow measured for it (`record` takes the measurements),
 * so a node made again is not measured again — without it, each batch of events re-measured
 * every changed node, which cost whole frames.
 */
export function useFlowNodes() {
  const sizes = useRef(new Map<string, Size>());
  const made = useRef(new Map<string, { inputs: unknown[]; node: Node }>());
  const record = useCallback((changes: NodeChange[]) => {
    for (const change of changes) {
      if (change.type === 'dimensions' && change.dimensions) sizes.current.set(change.id, change.dimensions);
    }
  }, []);
  const node = useCallback((id: string, inputs: unknown[], make: () => Node): Node => {
    const before = made.current.get(id);
    if (before && before.inputs.length === inputs.length && before.inputs.every((input, i) => input === inputs[i])) {
      return before.node;
    }
    const fresh = { ...make(), measured: sizes.current.get(id) };
    made.current.set(id, { inputs, node: fresh });
    return fresh;
  }, []);
  return { node, record };
}

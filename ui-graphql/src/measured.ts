import { useCallback, useRef } from 'react';
import type { NodeChange } from '@xyflow/react';

type Size = { width: number; height: number };

/**
 * The size React Flow measured for each node. A node object made again (a new status, a new
 * label) carries its size, so React Flow keeps it instead of measuring the node again: without
 * it, each batch of events re-measured every changed node, which cost whole frames.
 */
export function useMeasured() {
  const sizes = useRef(new Map<string, Size>());
  const record = useCallback((changes: NodeChange[]) => {
    for (const change of changes) {
      if (change.type === 'dimensions' && change.dimensions) sizes.current.set(change.id, change.dimensions);
    }
  }, []);
  return { sizes: sizes.current, record };
}

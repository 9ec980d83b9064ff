/**
 * Where to draw each node of a workflow: the position it carries, or, for workflows without
 * positions (hand-written files, generated ones), a layered layout: each node one column right of
 * its furthest predecessor, nodes in a column ordered by where their predecessors are. Linear in
 * nodes and branches, so a 1,000-node workflow is laid out in a few milliseconds.
 */
export type Point = { x: number; y: number };

const COLUMN = 240;
const ROW = 90;

type Positioned = { id: string; position?: { x: number | string; y: number | string } | null };

export function layout(nodes: Positioned[], branches: { from: string; to: string }[], start?: string): Map<string, Point> {
  const placed = new Map<string, Point>();
  if (nodes.length > 0 && nodes.every((n) => n.position)) {
    // WALKOFF's editor placed nodes closer than these boxes are wide: spread them out.
    for (const n of nodes) placed.set(n.id, { x: Number(n.position!.x) * 2, y: Number(n.position!.y) * 1.5 });
    return placed;
  }
  const ids = new Set(nodes.map((n) => n.id));
  const next = new Map<string, string[]>();
  const incoming = new Map<string, number>(nodes.map((n) => [n.id, 0]));
  for (const b of branches) {
    if (!ids.has(b.from) || !ids.has(b.to)) continue;
    next.set(b.from, [...(next.get(b.from) ?? []), b.to]);
    incoming.set(b.to, (incoming.get(b.to) ?? 0) + 1);
  }
  // Longest path from the sources (Kahn's order); nodes on a cycle keep the column they reached.
  const column = new Map<string, number>();
  const queue = nodes.filter((n) => incoming.get(n.id) === 0 || n.id === start).map((n) => n.id);
  const remaining = new Map(incoming);
  for (const id of queue) column.set(id, 0);
  for (let i = 0; i < queue.length; i++) {
    const id = queue[i];
    for (const to of next.get(id) ?? []) {
      column.set(to, Math.max(column.get(to) ?? 0, column.get(id)! + 1));
      const left = remaining.get(to)! - 1;
      remaining.set(to, left);
      if (left === 0) queue.push(to);
    }
  }
  const columns: string[][] = [];
  for (const n of nodes) {
    const c = column.get(n.id) ?? 0;
    (columns[c] ??= []).push(n.id);
  }
  // Order each column by the mean row of its predecessors, so branches cross less.
  const row = new Map<string, number>();
  const predecessors = new Map<string, string[]>();
  for (const [from, tos] of next) for (const to of tos) predecessors.set(to, [...(predecessors.get(to) ?? []), from]);
  columns.forEach((members, c) => {
    const weight = (id: string) => {
      const rows = (predecessors.get(id) ?? []).map((p) => row.get(p)).filter((r): r is number => r !== undefined);
      return rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : 0;
    };
    const ordered = c === 0 ? members : [...members].sort((a, b) => weight(a) - weight(b));
    ordered.forEach((id, r) => {
      row.set(id, r);
      placed.set(id, { x: c * COLUMN, y: (r - (ordered.length - 1) / 2) * ROW });
    });
  });
  return placed;
}

/** Graphs larger than this open at their start node and draw only the nodes in view; smaller
 * ones fit the view. */
export const LARGE_GRAPH = 200;

/** A viewport showing `start` near the left edge, `height` pixels tall, at a readable zoom. */
export function viewportAt(start: Point | undefined, height: number, zoom = 0.75) {
  return { x: 40 - (start?.x ?? 0) * zoom, y: height / 2 - (start?.y ?? 0) * zoom, zoom };
}

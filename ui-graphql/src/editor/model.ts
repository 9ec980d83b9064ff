// The workflow document as the editor changes it (walkoff's JSON), and the edits it makes. Every
// edit returns a new document; references between nodes are by id, as the server keeps them.

export type Variant = 'STATIC_VALUE' | 'ACTION_RESULT' | 'WORKFLOW_VARIABLE' | 'GLOBAL';
export type Parameter = {
  name: string;
  variant?: Variant;
  value?: unknown;
  pointer?: string;
  parallelized?: boolean;
  id?: string;
};
export type StoredPoint = { x: number | string; y: number | string };
export type DocNode = {
  id: string;
  label: string;
  kind: 'action' | 'condition' | 'transform' | 'trigger';
  position?: StoredPoint;
  app?: string;
  app_version?: string;
  action?: string;
  priority?: number;
  parameters?: Parameter[];
  parallelized?: boolean;
  concurrency?: number;
  code?: string;
  schema?: unknown;
  [key: string]: unknown;
};
export type Variable = { id: string; name: string; value?: unknown; description?: string };
export type Branch = { id?: string; from: string; to: string };
export type Document = {
  id: string;
  name: string;
  start: string;
  nodes: DocNode[];
  branches: Branch[];
  variables?: Variable[];
  [key: string]: unknown;
};

/** Stored positions are WALKOFF's, which placed nodes closer than ours are wide. */
export const SCALE = { x: 2, y: 1.5 };
export const toStored = (p: { x: number; y: number }): StoredPoint => ({
  x: Math.round(p.x / SCALE.x),
  y: Math.round(p.y / SCALE.y),
});

export function uniqueLabel(document: Document, wanted: string): string {
  const taken = new Set(document.nodes.map((n) => n.label));
  if (!taken.has(wanted)) return wanted;
  let i = 2;
  while (taken.has(`${wanted} ${i}`)) i++;
  return `${wanted} ${i}`;
}

export function updateNode(document: Document, id: string, change: (node: DocNode) => DocNode): Document {
  return { ...document, nodes: document.nodes.map((n) => (n.id === id ? change(n) : n)) };
}

export function addNode(document: Document, node: DocNode): Document {
  return {
    ...document,
    nodes: [...document.nodes, node],
    start: document.nodes.length === 0 ? node.id : document.start,
  };
}

/** Removes a node and its branches; a start that was this node moves to the first one left. */
export function removeNode(document: Document, id: string): Document {
  const nodes = document.nodes.filter((n) => n.id !== id);
  return {
    ...document,
    nodes,
    branches: document.branches.filter((b) => b.from !== id && b.to !== id),
    start: document.start === id ? (nodes[0]?.id ?? '') : document.start,
  };
}

export function addBranch(document: Document, from: string, to: string): Document {
  if (from === to || document.branches.some((b) => b.from === from && b.to === to)) return document;
  return { ...document, branches: [...document.branches, { from, to }] };
}

export function removeBranch(document: Document, from: string, to: string): Document {
  return { ...document, branches: document.branches.filter((b) => !(b.from === from && b.to === to)) };
}

/** Sets (or, with `null`, removes) one parameter of an action node. */
export function setParameter(document: Document, nodeId: string, name: string, parameter: Parameter | null): Document {
  return updateNode(document, nodeId, (node) => {
    const rest = (node.parameters ?? []).filter((p) => p.name !== name);
    const before = (node.parameters ?? []).findIndex((p) => p.name === name);
    if (!parameter) return { ...node, parameters: rest };
    const parameters = [...rest];
    parameters.splice(before < 0 ? parameters.length : before, 0, parameter);
    return { ...node, parameters };
  });
}

/** A value typed as text: JSON when it reads as JSON, else the text itself. */
export function typed(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** Text for a value: a string as itself, anything else as JSON. */
export function shown(value: unknown): string {
  if (value === undefined) return '';
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** A version-4 UUID (`crypto.randomUUID` exists only in secure contexts; plain HTTP is not one). */
export function newId(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

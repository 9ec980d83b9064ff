// Tokens live in this module's memory only — never in localStorage or cookies — so a script
// injected into the page cannot read them from storage, and closing the tab signs out.

type Tokens = { accessToken: string; refreshToken: string };

let tokens: Tokens | null = null;
const listeners = new Set<() => void>();

export function accessToken(): string | null {
  return tokens?.accessToken ?? null;
}

export function signedIn(): boolean {
  return tokens !== null;
}

export function onAuthChange(listener: () => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function set(next: Tokens | null) {
  tokens = next;
  listeners.forEach((l) => l());
}

async function post(query: string, variables: Record<string, unknown>, token?: string | null) {
  const response = await fetch('/graphql', {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: JSON.stringify({ query, variables }),
  });
  return (await response.json()) as {
    data?: Record<string, unknown> | null;
    errors?: { message: string; extensions?: { code?: string } }[];
  };
}

/** Sign in; the error's message when refused. */
export async function login(username: string, password: string): Promise<string | null> {
  const body = await post(
    'mutation($u: String!, $p: String!) { login(username: $u, password: $p) { accessToken refreshToken } }',
    { u: username, p: password },
  );
  if (body.errors?.length) return body.errors[0].message;
  set((body.data as { login: Tokens }).login);
  return null;
}

let refreshing: Promise<boolean> | null = null;

/** Exchange the refresh token for a new pair, once at a time; false when the login has ended. */
export function refresh(): Promise<boolean> {
  if (!tokens) return Promise.resolve(false);
  refreshing ??= (async () => {
    const body = await post(
      'mutation($r: String!) { refresh(refreshToken: $r) { accessToken refreshToken } }',
      { r: tokens!.refreshToken },
    );
    refreshing = null;
    if (body.errors?.length) {
      set(null);
      return false;
    }
    set((body.data as { refresh: Tokens }).refresh);
    return true;
  })();
  return refreshing;
}

export async function logout() {
  const token = accessToken();
  set(null);
  if (token) await post('mutation { logout }', {}, token).catch(() => undefined);
}

/** `fetch` for the GraphQL client: the access token attached, refreshed once when refused. */
export async function authorizedFetch(input: RequestInfo | URL, init?: RequestInit) {
  const attempt = () =>
    fetch(input, {
      ...init,
      headers: { ...(init?.headers as Record<string, string>), authorization: `Bearer ${accessToken() ?? ''}` },
    });
  let response = await attempt();
  const text = await response.clone().text();
  if (text.includes('"UNAUTHENTICATED"') && (await refresh())) {
    response = await attempt();
  }
  return response;
}

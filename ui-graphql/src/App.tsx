import { lazy, Suspense, useEffect, useMemo, useState, useSyncExternalStore } from 'react';
import { Provider } from 'urql';
import { closeSocket, makeClient } from './client';
import { logout, onAuthChange, signedIn } from './auth';
import { Login } from './pages/Login';
import { Workflows } from './pages/Workflows';
import { Executions } from './pages/Executions';
import { Apps } from './pages/Apps';
import { Globals } from './pages/Globals';
import { Account } from './pages/Account';
import { Users } from './pages/Users';
import { ExecutionView } from './pages/Execution';
// The editor (with CodeMirror) loads when first opened: the first page stays small.
const Editor = lazy(() => import('./pages/Editor').then((m) => ({ default: m.Editor })));

const pages = {
  workflows: { title: 'Workflows', view: Workflows },
  executions: { title: 'Executions', view: Executions },
  apps: { title: 'Apps', view: Apps },
  globals: { title: 'Globals', view: Globals },
  users: { title: 'Users', view: Users },
  account: { title: 'Account', view: Account },
} as const;
type Page = keyof typeof pages;

type Route = { page: Page; id?: string };

/** `#/workflows`, `#/executions`, `#/executions/<id>`, `#/apps`. */
function currentRoute(): Route {
  const [name, id] = window.location.hash.replace(/^#\/?/, '').split('/');
  const page = name in pages ? (name as Page) : 'workflows';
  return { page, id: id ? decodeURIComponent(id) : undefined };
}

export function App() {
  const isSignedIn = useSyncExternalStore(onAuthChange, signedIn);
  const [{ page, id }, setRoute] = useState<Route>(currentRoute);
  useEffect(() => {
    const follow = () => setRoute(currentRoute());
    window.addEventListener('hashchange', follow);
    return () => window.removeEventListener('hashchange', follow);
  }, []);
  // A fresh client (and cache) for each sign-in.
  const client = useMemo(() => (isSignedIn ? makeClient() : null), [isSignedIn]);
  useEffect(() => {
    if (!isSignedIn) closeSocket();
  }, [isSignedIn]);
  if (!isSignedIn || !client) return <Login />;
  const View = pages[page].view;
  return (
    <Provider value={client}>
    <div className="shell">
      <header>
        <strong className="brand">walkoff</strong>
        <nav aria-label="Pages">
          {(Object.keys(pages) as Page[]).map((name) => (
            <a key={name} href={`#/${name}`} aria-current={name === page ? 'page' : undefined}>
              {pages[name].title}
            </a>
          ))}
        </nav>
        <button type="button" onClick={() => void logout()}>
          Sign out
        </button>
      </header>
      <main>
        {page === 'executions' && id ? (
          <>
            <h1>Execution</h1>
            <ExecutionView id={id} />
          </>
        ) : page === 'workflows' && id ? (
          <>
            <h1>Workflow</h1>
            <Suspense fallback={<p aria-live="polite">Loading the editor…</p>}>
              <Editor id={id} />
            </Suspense>
          </>
        ) : (
          <>
            <h1>{pages[page].title}</h1>
            <View />
          </>
        )}
      </main>
    </div>
    </Provider>
  );
}

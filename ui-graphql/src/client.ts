import { Client, cacheExchange, fetchExchange, stringifyDocument, subscriptionExchange, type TypedDocumentNode } from 'urql';
import { createClient as createWsClient } from 'graphql-ws';
import { accessToken, authorizedFetch } from './auth';

const socketUrl = () => {
  const url = new URL('/graphql', window.location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.toString();
};

const connectedListeners = new Set<() => void>();

/** Call `listener` each time the subscriptions' socket is (re)connected: what changed while it
 * was not must be read again. */
export function onSocketConnected(listener: () => void): () => void {
  connectedListeners.add(listener);
  return () => connectedListeners.delete(listener);
}

// One WebSocket for every subscription, authenticated in its connection_init; made again (with
// the current token) when the server closes it.
const sockets = createWsClient({
  url: socketUrl,
  lazy: true,
  connectionParams: () => ({ Authorization: `Bearer ${accessToken() ?? ''}` }),
  retryAttempts: 5,
  on: { connected: () => connectedListeners.forEach((l) => l()) },
});

/** A client for one sign-in: nothing one user read is answered from a cache to the next. */
export const makeClient = () => new Client({
  url: '/graphql',
  fetch: authorizedFetch,
  requestPolicy: 'cache-and-network',
  // The gateway takes operations by POST (GET /graphql is GraphiQL's page).
  preferGetMethod: false,
  exchanges: [
    cacheExchange,
    fetchExchange,
    subscriptionExchange({
      forwardSubscription(request) {
        const input = { ...request, query: request.query || '' };
        return {
          subscribe(sink) {
            const unsubscribe = sockets.subscribe(input, sink);
            return { unsubscribe };
          },
        };
      },
    }),
  ],
});

/** Close the subscriptions' socket (on sign-out: the next user's connects with their token). */
export function closeSocket() {
  sockets.terminate();
}

/**
 * A subscription straight on the socket, each result to `next`: for streams of thousands of
 * results (an execution's events), where urql's exchanges would cost more per result than the
 * page's own work. Returns the unsubscribe function.
 */
export function subscribeDirectly<Data, Variables extends Record<string, unknown>>(
  document: TypedDocumentNode<Data, Variables>,
  variables: Variables,
  next: (data: Data) => void,
  error: (error: unknown) => void,
): () => void {
  return sockets.subscribe<Data>(
    { query: stringifyDocument(document), variables },
    { next: (result) => result.data && next(result.data as Data), error, complete: () => {} },
  );
}

// Follows one walkoff run with graphql-ws, the protocol's reference client: subscribe to
// executionEvents under an id chosen here, start the run over HTTP, answer its trigger, and
// print every event received as one JSON array. Env: WALKOFF (http://host:port), TOKEN,
// WORKFLOW_ID, TRIGGER (label) and TRIGGER_DATA (JSON).
import { randomUUID } from "node:crypto";
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const base = process.env.WALKOFF;
const token = process.env.TOKEN;

async function gql(query, variables) {
  const response = await fetch(`${base}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors) throw new Error(JSON.stringify(body.errors));
  return body.data;
}

const client = createClient({
  url: base.replace(/^http/, "ws") + "/graphql",
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: `Bearer ${token}` },
  retryAttempts: 0,
});

const executionId = randomUUID();
const events = [];
const done = new Promise((resolve, reject) => {
  client.subscribe(
    {
      query: `subscription($e: ID!) { executionEvents(executionId: $e) {
        sequence subject status label result error } }`,
      variables: { e: executionId },
    },
    {
      next: (message) => {
        if (message.errors) return reject(new Error(JSON.stringify(message.errors)));
        const event = message.data.executionEvents;
        events.push(event);
        if (event.status === "AWAITING_DATA" && event.label === process.env.TRIGGER) {
          gql(
            "mutation($e: ID!, $t: String!, $d: JSON!) { sendTriggerData(executionId: $e, trigger: $t, data: $d) }",
            { e: executionId, t: process.env.TRIGGER, d: JSON.parse(process.env.TRIGGER_DATA) },
          ).catch(reject);
        }
      },
      error: reject,
      complete: resolve,
    },
  );
});

// Subscribed first (the connection is acknowledged before the subscription is sent); then run.
await new Promise((resolve) => client.on("connected", resolve));
await gql("mutation($w: ID!, $e: ID!) { executeWorkflow(workflowId: $w, executionId: $e) { id } }", {
  w: process.env.WORKFLOW_ID,
  e: executionId,
});
await done;
await client.dispose();
console.log(JSON.stringify(events));

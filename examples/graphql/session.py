"""A GraphQL session with `walkoff serve`, with nothing but Python's standard library: log in,
import a WALKOFF 1.0 workflow, subscribe to a run before it starts, run it, answer its trigger when
it asks, follow every event live, and read every node's result.

    WALKOFF_ADMIN_PASSWORD=... python3 examples/graphql/session.py [examples/walkoff1/semantics-mix.json]

WALKOFF (default http://127.0.0.1:8080) says where the server listens. The subscription comes
over plain HTTP as `multipart/mixed` (one JSON part per event); a client that holds a WebSocket
subscribes on the same path with `graphql-transport-ws` instead.
"""

import json
import os
import sys
import urllib.request
import uuid

URL = os.environ.get("WALKOFF", "http://127.0.0.1:8080") + "/graphql"
MULTIPART = 'multipart/mixed; boundary="graphql"; subscriptionSpec="1.0"'


def request(query, token=None, accept="application/json", **variables):
    req = urllib.request.Request(
        URL,
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"content-type": "application/json", "accept": accept},
    )
    if token:
        req.add_header("authorization", f"Bearer {token}")
    return urllib.request.urlopen(req)


def gql(query, token=None, **variables):
    with request(query, token, **variables) as response:
        body = json.load(response)
    if body.get("errors"):
        sys.exit(f"error: {json.dumps(body['errors'], indent=2)}")
    return body["data"]


def parts(response):
    """The JSON parts of a multipart/mixed response, as they arrive (heartbeats skipped)."""
    for line in response:
        line = line.strip()
        if line == b"--graphql--":
            return
        if line.startswith(b"{") and line != b"{}":
            yield json.loads(line)


password = os.environ["WALKOFF_ADMIN_PASSWORD"]
token = gql(
    'mutation($p: String!) { login(username: "admin", password: $p) { accessToken } }', p=password
)["login"]["accessToken"]

path = sys.argv[1] if len(sys.argv) > 1 else "examples/walkoff1/semantics-mix.json"
with open(path) as f:
    workflow = gql(
        "mutation($j: JSON!) { importWorkflow(json: $j) { id name } }", token, j=f.read()
    )["importWorkflow"]
print(f"imported {workflow['name']} as {workflow['id']}")

# The client picks the execution's id, so it subscribes before the run starts and misses nothing.
execution_id = str(uuid.uuid4())
events = request(
    "subscription($e: ID!) { executionEvents(executionId: $e) { sequence status label result error } }",
    token,
    accept=MULTIPART,
    e=execution_id,
)
gql(
    "mutation($w: ID!, $e: ID!) { executeWorkflow(workflowId: $w, executionId: $e) { id } }",
    token,
    w=workflow["id"],
    e=execution_id,
)
print(f"execution {execution_id}:")
with events:
    for part in parts(events):
        if part.get("errors"):
            sys.exit(f"error: {json.dumps(part['errors'], indent=2)}")
        event = part["data"]["executionEvents"]
        print(f"  {event['sequence']:>3} {event['label'] or '(workflow)':<18} {event['status']}")
        if event["label"] == "approval" and event["status"] == "AWAITING_DATA":
            gql(
                'mutation($e: ID!) { sendTriggerData(executionId: $e, trigger: "approval", data: {approved: true}) }',
                token,
                e=execution_id,
            )

run = gql(
    "query($e: ID!) { execution(id: $e) { status nodes { label status result error } } }",
    token,
    e=execution_id,
)["execution"]
for node in run["nodes"]:
    print(f"  {node['label']:<18} {node['status']:<9} {json.dumps(node['result'])}")
print(f"execution {execution_id}: {run['status']}")
sys.exit(0 if run["status"] == "COMPLETED" else 1)

"""A GraphQL session with `walkoff serve`, with nothing but Python's standard library: log in,
import a WALKOFF 1.0 workflow, run it, answer its trigger, and read every node's result.

    WALKOFF_ADMIN_PASSWORD=... python3 examples/graphql/session.py [examples/walkoff1/semantics-mix.json]

WALKOFF (default http://127.0.0.1:8080) says where the server listens.
"""

import json
import os
import sys
import time
import urllib.request

URL = os.environ.get("WALKOFF", "http://127.0.0.1:8080") + "/graphql"


def gql(query, token=None, **variables):
    request = urllib.request.Request(
        URL,
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"content-type": "application/json"},
    )
    if token:
        request.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(request) as response:
        body = json.load(response)
    if body.get("errors"):
        sys.exit(f"error: {json.dumps(body['errors'], indent=2)}")
    return body["data"]


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

execution = gql(
    "mutation($w: ID!) { executeWorkflow(workflowId: $w) { id status } }", token, w=workflow["id"]
)["executeWorkflow"]
print(f"execution {execution['id']}: {execution['status']}")

# The trigger's data may come before the run reaches it: it is kept until then.
gql(
    'mutation($e: ID!) { sendTriggerData(executionId: $e, trigger: "approval", data: {approved: true}) }',
    token,
    e=execution["id"],
)

# A client that holds a WebSocket subscribes to executionEvents instead (see the README);
# this one asks until the run is over.
query = """query($e: ID!) { execution(id: $e) {
  status nodes { label status result error } } }"""
while True:
    run = gql(query, token, e=execution["id"])["execution"]
    if run["status"] in ("COMPLETED", "FAILED", "ABORTED"):
        break
    time.sleep(0.05)
for node in run["nodes"]:
    print(f"  {node['label']:<18} {node['status']:<9} {json.dumps(node['result'])}")
print(f"execution {execution['id']}: {run['status']}")
sys.exit(0 if run["status"] == "COMPLETED" else 1)

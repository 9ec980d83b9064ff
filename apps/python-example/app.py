"""python-example: a walkoff app in Python, served over Redis.

It follows docs/redis-contract.md and nothing else: register the app's api.yaml, beat every
second, read requests from the app's five priority streams with the consumer group `executors`,
write each result to the stream the request names in `reply_to`, and acknowledge the request in the
same transaction. If this process dies, a worker hands its unanswered requests to another executor.

    python app.py --redis redis://127.0.0.1:6379 [--prefix walkoff] [--consumer NAME]
"""

import argparse
import datetime
import hashlib
import json
import os
import signal
import socket
import threading

import redis
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
GROUP = "executors"
PRIORITIES = [5, 4, 3, 2, 1]
# Scores the heartbeat with Redis's clock, as every walkoff process does.
HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
return now
"""


class ActionError(Exception):
    def __init__(self, message, retryable=True):
        super().__init__(message)
        self.retryable = retryable


def defang(text):
    if isinstance(text, list):  # a shard of a parallel action gets a one-element list
        text = " ".join(text)
    return text.replace("http", "hxxp").replace(".", "[.]")


def sha256(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fail(message):
    raise ActionError(message, retryable=False)


ACTIONS = {"defang": defang, "sha256": sha256, "fail": fail}


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def run(request):
    """The outcome of one request, as the contract's `outcome` object."""
    action = ACTIONS.get(request.get("action"))
    if action is None:
        return {"type": "failure", "error": f"unknown action {request.get('action')!r}", "retryable": False}
    try:
        return {"type": "success", "result": action(**request.get("parameters", {}))}
    except ActionError as e:
        return {"type": "failure", "error": str(e), "retryable": e.retryable}
    except TypeError as e:
        return {"type": "failure", "error": f"bad parameters: {e}", "retryable": False}
    except Exception as e:  # an app bug fails the node; it must not stop the executor
        return {"type": "failure", "error": f"{type(e).__name__}: {e}", "retryable": True}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--prefix", default="walkoff")
    parser.add_argument("--consumer", default=f"python-example-{socket.gethostname()}-{os.getpid()}")
    args = parser.parse_args()

    with open(os.path.join(HERE, "api.yaml")) as f:
        api_text = f.read()
    api = yaml.safe_load(api_text)
    app = f"{api['name']}@{api['app_version']}"
    r = redis.Redis.from_url(args.redis, decode_responses=True)
    # One transaction: the API, and the counter that tells gateways their catalogue changed.
    with r.pipeline() as registration:
        registration.hset(f"{args.prefix}:app-apis", app, api_text)
        registration.incr(f"{args.prefix}:app-apis:version")
        registration.execute()
    streams = [f"{args.prefix}:actions:{app}:p{p}" for p in PRIORITIES]
    for stream in streams:
        try:
            r.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
    r.sadd(f"{args.prefix}:apps", app)

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    heartbeat = r.register_script(HEARTBEAT)

    def beat():
        while not stopping.is_set():
            try:
                heartbeat(keys=[f"{args.prefix}:executors:{app}"], args=[args.consumer])
            except redis.RedisError as e:
                print(f"heartbeat failed: {e}", flush=True)
            stopping.wait(1.0)

    threading.Thread(target=beat, daemon=True).start()
    print(f"{args.consumer} serving {app}", flush=True)

    while not stopping.is_set():
        try:
            reply = r.xreadgroup(GROUP, args.consumer, {s: ">" for s in streams}, count=10, block=1000)
        except redis.RedisError as e:
            print(f"read failed: {e}", flush=True)
            stopping.wait(1.0)
            continue
        # Highest priority first: streams are listed from p5 down.
        for stream, entries in reply or []:
            for entry_id, fields in entries:
                pipe = r.pipeline(transaction=True)
                try:
                    request = json.loads(fields["m"])
                    started = now()
                    result = {
                        "execution_id": request["execution_id"],
                        "node_id": request["node_id"],
                        "attempt": request["attempt"],
                        "outcome": run(request),
                        "started_at": started,
                        "finished_at": now(),
                    }
                    if request.get("shard") is not None:
                        result["shard"] = request["shard"]
                    message = {"type": "result", **result}
                    pipe.xadd(request["reply_to"], {"m": json.dumps(message)})
                except (KeyError, TypeError, ValueError) as e:
                    pipe.xadd(f"{args.prefix}:dead", {"stream": stream, "id": entry_id,
                                                      "reason": f"python-example: {e}",
                                                      "m": fields.get("m", "")},
                              maxlen=100000, approximate=True)
                pipe.xack(stream, GROUP, entry_id)
                pipe.execute()
    print(f"{args.consumer} stopping", flush=True)


if __name__ == "__main__":
    main()

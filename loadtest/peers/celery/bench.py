"""Run one walkoff-loadtest scenario on Celery and print one JSON line per measured run:
{"wall_ms": ..., "latencies_ms": [...], "completions_ms": [...]}.

    python bench.py SCENARIO SIZE REPEAT     (the first run is a warm-up and is not printed)

The workloads are the same as walkoff's, expressed as Celery expresses them:
chain = chain(noop, noop, ...); fanout = chord(group(noop(i) ...))(count);
concurrent = SIZE chains of three tasks applied at once.
"""

import json
import sys
import time

from celery import chain, chord, group

from tasks import count, noop, stamp


def run(scenario, size):
    start = time.time()
    if scenario == "chain":
        chain(noop.s(0), *[noop.s() for _ in range(size - 1)]).apply_async().get(timeout=600)
        wall = time.time() - start
        return {"wall_ms": wall * 1000, "latencies_ms": [wall * 1000], "completions_ms": [wall * 1000]}
    if scenario == "fanout":
        result = chord(group(noop.s(i) for i in range(size)))(count.s()).get(timeout=600)
        assert result == size, result
        wall = time.time() - start
        return {"wall_ms": wall * 1000, "latencies_ms": [wall * 1000], "completions_ms": [wall * 1000]}
    if scenario == "concurrent":
        results = [chain(noop.s(0), noop.s(), stamp.s()).apply_async() for _ in range(size)]
        ends = [r.get(timeout=600) for r in results]
        latencies = [(end - start) * 1000 for end in ends]
        return {"wall_ms": max(latencies), "latencies_ms": latencies, "completions_ms": latencies}
    raise SystemExit(f"celery: no scenario {scenario!r} (chain, fanout, concurrent)")


def main():
    scenario, size, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    noop.delay(0).get(timeout=60)  # the worker is up
    run(scenario, size)  # warm-up
    for _ in range(repeat):
        print(json.dumps(run(scenario, size)), flush=True)


if __name__ == "__main__":
    main()

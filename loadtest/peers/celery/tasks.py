"""The Celery side of the side-by-side benchmark: no-op tasks on the same Redis server as walkoff
(broker in database 1, results in database 2), with the settings of a durable deployment:
late acknowledgement (a task is acknowledged after it ran), prefetch 4."""

import os
import time

from celery import Celery

REDIS = os.environ.get("WALKOFF_BENCH_REDIS", "redis://127.0.0.1:6379")
app = Celery("tasks", broker=f"{REDIS}/1", backend=f"{REDIS}/2")
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=4,
    broker_connection_retry_on_startup=True,
    result_expires=600,
)


@app.task
def noop(value=None):
    return value


@app.task
def count(values):
    return len(values)


@app.task
def stamp(value=None):
    """The last step of a concurrent workflow: when it finished, by the worker's clock."""
    return time.time()

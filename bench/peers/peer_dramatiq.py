"""Dramatiq with the Redis broker and the Results middleware (Redis backend).

Workers: one `dramatiq peer_dramatiq --processes 2 --threads 8` (a supervisor
and two worker processes of 8 threads, the default thread count). Dramatiq has
no bulk enqueue: `group(...).run()` sends the 1,000 messages one by one.
"""
import sys

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

import common

SYSTEM = "dramatiq"
BATCH_VARIANT = f"group {common.BATCH}"
WORKERS = "--processes 2 --threads 8 (default threads), Results middleware"
LATENCY_NOTE = "get_result(block=True) (BRPOPLPUSH)"

backend = RedisBackend(host=common.HOST, port=common.PORT, db=common.DB)
broker = RedisBroker(host=common.HOST, port=common.PORT, db=common.DB)
broker.add_middleware(Results(backend=backend))
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True)
def noop():
    return None


def worker_cmds(system):
    return [["dramatiq", "peer_dramatiq", "--processes", "2", "--threads", "8"]]


def versions():
    import redis

    return {"dramatiq": dramatiq.__version__, "redis-py": redis.__version__}


def connect():
    return None


def submit(_):
    return noop.send()


def submit_batch(_, count):
    messages = [noop.message() for _ in range(count)]
    dramatiq.group(messages).run()
    return messages


def wait_all(_, handles, deadline):
    common.wait_keys(common.redis(), [backend.build_message_key(m) for m in handles], deadline)


def roundtrip(_, timeout):
    return noop.send().get_result(block=True, timeout=int(timeout * 1000))


if __name__ == "__main__":
    common.main(sys.modules[__name__])

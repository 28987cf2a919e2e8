"""`GET /metrics` read by Prometheus's own Python parsers, in both formats,
after a known workload against a real server."""

from __future__ import annotations

import httpx
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus


def _workload(url: str) -> None:
    with httpx.Client(base_url=url) as http:
        for i in range(10):
            r = http.post("/v1/tasks", json={"name": "parse.me", "queue": "metrics", "input": {"i": i}})
            assert r.status_code == 201, r.text
        r = http.post("/v1/lease", json={"worker": "w1", "queues": ["metrics"], "max": 10, "wait_ms": 1000})
        tasks = r.json()["tasks"]
        assert len(tasks) == 10
        results = [
            {"task": t["id"], "token": t["lease"]["token"], "outcome": "succeeded", "result": 1} for t in tasks[1:]
        ]
        results.append(
            {
                "task": tasks[0]["id"],
                "token": tasks[0]["lease"]["token"],
                "outcome": "failed",
                "error": {"kind": "exception", "message": "boom"},
                "retry": False,
            }
        )
        r = http.post("/v1/complete", json={"worker": "w1", "results": results})
        assert r.status_code == 200, r.text


def _samples(families: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in families:  # type: ignore[attr-defined]
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _key(metric: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (metric, tuple(sorted(labels.items())))


def test_both_formats_parse_with_the_prometheus_parsers(server_url: str) -> None:
    _workload(server_url)
    task = {"queue": "metrics", "name": "parse.me"}
    with httpx.Client(base_url=server_url) as http:
        text = http.get("/metrics").text
        om = http.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}).text
    prometheus = _samples(parse_prometheus(text))
    openmetrics = _samples(parse_openmetrics(om))  # type: ignore[no-untyped-call]
    for samples in (prometheus, openmetrics):
        assert samples[_key("quern_tasks_submitted_total", **task)] == 10
        assert samples[_key("quern_tasks_started_total", **task)] == 10
        assert samples[_key("quern_tasks_finished_total", outcome="succeeded", **task)] == 9
        assert samples[_key("quern_tasks_finished_total", outcome="failed", **task)] == 1
        assert samples[_key("quern_task_latency_seconds_count", queue="metrics")] == 10
        assert samples[_key("quern_queue_depth", queue="metrics", status="succeeded")] == 9

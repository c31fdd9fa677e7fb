"""The apiserver audit log reader of the local cluster (localcluster.parse_audit_lines,
read_audit_log, count_audit): pure parsing, no servers."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from mlmodel_operator.localcluster import count_audit, parse_audit_lines, read_audit_log


def _event(
    audit_id: str,
    at: str,
    *,
    verb: str = "get",
    resource: str | None = "deployments",
    subresource: str | None = None,
    user: str = "op",
    agent: str = "OpenAPI-Generator/37.0.2/python",
    stage: str = "ResponseComplete",
    uri: str = "/apis/apps/v1/namespaces/a/deployments/x",
) -> str:
    event: dict[str, object] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": audit_id,
        "stage": stage,
        "requestURI": uri,
        "verb": verb,
        "user": {"username": user},
        "userAgent": agent,
        "responseStatus": {"code": 200},
        "requestReceivedTimestamp": at,
    }
    if resource:
        ref = {"resource": resource, "namespace": "a", "name": "x"}
        if subresource:
            ref["subresource"] = subresource
        event["objectRef"] = ref
    return json.dumps(event)


def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def test_a_watch_logged_at_start_and_end_counts_once() -> None:
    lines = [
        _event("w", "2026-12-02T07:00:00.000001Z", verb="watch", stage="ResponseStarted"),
        _event("g", "2026-12-02T07:00:01Z"),
        _event("w", "2026-12-02T07:00:00.000001Z", verb="watch"),
    ]
    entries = parse_audit_lines(lines)
    assert [(e.verb, e.resource) for e in entries] == [
        ("watch", "deployments"),
        ("get", "deployments"),
    ]
    assert entries[0].received == _ts("2026-12-02T07:00:00.000001+00:00")
    assert entries[1].code == 200 and entries[1].namespace == "a"
    assert [e.audit_id for e in entries] == ["w", "g"]  # to tell pieces of one watch apart


def test_subresources_non_resource_urls_and_cut_lines() -> None:
    lines = [
        _event(
            "s", "2026-12-02T07:00:00Z", verb="patch", resource="mlmodels", subresource="status"
        ),
        _event("r", "2026-12-02T07:00:00Z", resource=None, uri="/readyz?verbose=1"),
        '{"kind":"Event","auditID":"cut',
        "",
    ]
    assert [(e.verb, e.resource) for e in parse_audit_lines(lines)] == [
        ("patch", "mlmodels/status"),
        ("get", "/readyz"),
    ]


def test_count_by_fields_within_a_window_and_for_one_user() -> None:
    entries = parse_audit_lines(
        [
            _event("1", "2026-12-02T07:00:00Z"),
            _event("2", "2026-12-02T07:00:05Z"),
            _event("3", "2026-12-02T07:00:05Z", agent="kopf/1.45.2", verb="patch"),
            _event("4", "2026-12-02T07:00:05Z", user="someone-else"),
            _event("5", "2026-12-02T07:00:10Z"),  # the window's end is excluded
        ]
    )
    start, end = _ts("2026-12-02T07:00:01+00:00"), _ts("2026-12-02T07:00:10+00:00")
    assert count_audit(entries, start, end, username="op") == {
        ("OpenAPI-Generator/37.0.2/python", "get", "deployments"): 1,
        ("kopf/1.45.2", "patch", "deployments"): 1,
    }
    assert count_audit(entries, start, end, by=("username",)) == {("op",): 2, ("someone-else",): 1}


def test_read_from_an_offset_stops_at_the_last_whole_line(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    first = _event("1", "2026-12-02T07:00:00Z") + "\n"
    log.write_text(first + _event("2", "2026-12-02T07:00:01Z") + "\n" + '{"half')
    entries, offset = read_audit_log(log)
    assert len(entries) == 2 and offset == log.stat().st_size - len('{"half')
    with log.open("a") as f:
        f.write('": 1}\n' + _event("3", "2026-12-02T07:00:02Z") + "\n")
    more, end = read_audit_log(log, offset)
    assert [e.received for e in more] == [_ts("2026-12-02T07:00:02+00:00")]
    assert end == log.stat().st_size
    assert read_audit_log(log, len(first))[0][0].received == _ts("2026-12-02T07:00:01+00:00")

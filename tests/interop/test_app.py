"""app_status, app_config and app_quit."""

from __future__ import annotations

import subprocess
import time

from conftest import Api


def _status(api: Api):
    res = api.ok(app_status=True)
    assert res.HasField("app_status")
    return res.app_status


def test_app_status_fields(api: Api):
    before = int(time.time())
    st = _status(api)
    after = int(time.time())
    for field in ("start_date", "current_date", "request_counter", "graph_dot"):
        assert st.HasField(field), field
    # unix seconds, close to now
    assert before - 5 <= st.current_date <= after + 5, (st.current_date, before, after)
    assert st.start_date <= st.current_date
    assert st.current_date - st.start_date < 24 * 3600
    assert st.request_counter >= 1
    assert st.graph_dot.startswith("digraph")


def test_request_counter_counts_every_request(api: Api, pb):
    c0 = _status(api).request_counter
    c1 = _status(api).request_counter
    assert c1 == c0 + 1

    api.send_raw(b"\xff\xff\xff")                       # undecodable
    api.send_raw(b"")                                   # empty Messages
    api.send(api.messages(pb.Message(revision=6)))      # no message_0
    api.ok(nic_list=True)                               # ordinary
    c2 = _status(api).request_counter
    assert c2 == c1 + 5, (c1, c2)


def test_app_config_log_level(api: Api, pb):
    err = api.fails(app_config=pb.MessageV0.AppConfigReq(log_level="bogus"))
    assert err.description == "Application configuration failed: log level: failed "
    api.ok(app_config=pb.MessageV0.AppConfigReq(log_level="debug"))
    api.ok(app_config=pb.MessageV0.AppConfigReq(log_level="error"))


def test_app_quit_exits_zero(start_daemon, pb):
    d = start_daemon(name="bfd-quit")
    api = Api(pb, d)
    res = api.ok(app_quit=True)
    assert res.status.status is True
    try:
        code = d.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"butterflyd still running 5 s after app_quit\n{d.log()}")
    assert code == 0, f"exit code {code}\n{d.log()}"

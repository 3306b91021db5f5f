"""`tunnel-py status` load summary: when a sender says it accepts new sessions."""

from __future__ import annotations

import pytest

from tunnelpy.cli import status
from tunnelpy.supervisor import control_wire as cw


def _reply(sessions: int = 0, *, max_sessions: int = 4, pending: int = 0, max_pending: int = 0, **kw: object):  # type: ignore[no-untyped-def]
    fields = dict(mode="iroh", endpoint_id="f" * 64, ticket="t", draining=False, max_sessions=max_sessions)
    fields.update(kw)
    return cw.StatusReply(
        **fields,  # type: ignore[arg-type]
        sessions=tuple({"session_id": str(i)} for i in range(sessions)),
        pending=pending,
        max_pending=max_pending,
    )


def test_free_slots_and_no_waiting_receivers_accept(capsys: pytest.CaptureFixture[str]) -> None:
    load = status.load_of(_reply(1, pending=1, max_pending=2))
    assert load["accepting"] and load["free"] == 3 and load["pending"] == 1
    assert status.health(_reply(1, pending=1, max_pending=2), "ready") == 0
    assert "sessions 1/4 (3 free, 1 pending)  accepting" in capsys.readouterr().out


def test_max_pending_sessions_waiting_for_their_receivers_stop_accepting(capsys: pytest.CaptureFixture[str]) -> None:
    reply = _reply(2, pending=2, max_pending=2)
    assert status.load_of(reply)["accepting"] is False
    status.health(reply, "ready")  # still ready: healthy, just busy
    assert "sessions 2/4 (2 free, 2 pending)  not accepting" in capsys.readouterr().out


def test_full_draining_or_starting_senders_do_not_accept() -> None:
    assert not status.load_of(_reply(4))["accepting"]
    assert not status.load_of(_reply(draining=True))["accepting"]
    assert not status.load_of(_reply(endpoint_id=""))["accepting"]
    assert status.load_of(_reply(max_sessions=0))["accepting"]  # no limit

"""The ACL rows the web page relies on: a device may ask to see a source in its own name only; an
operator may also list, send and delete documents; a plain device none of that (lineside/security/acl.py)."""

from __future__ import annotations

from lineside.security.accounts import Account
from lineside.security.acl import render_acl


def _rules(account: Account) -> set[str]:
    text = render_acl([account])
    return {line for line in text.splitlines() if line.startswith("topic ")}


def test_a_device_may_ask_for_sources_in_its_own_name_only():
    rules = _rules(Account(name="tab-wl2", kind="device"))
    assert "topic write lineside/v1/source/tab-wl2" in rules
    assert not any("source/+" in r or "internal" in r for r in rules)


def test_an_operator_may_list_send_and_delete_documents():
    rules = _rules(Account(name="op-wl2", kind="device", role="operator", can_ingest=True))
    assert {
        "topic write lineside/v1/internal/retriever/kb",
        "topic read lineside/v1/internal/reply/op-wl2",
        "topic write lineside/v1/internal/retriever/index",
        "topic write lineside/v1/internal/ingest/document",
        "topic read lineside/v1/ingest/status",
    } <= rules
    assert "topic read lineside/v1/internal/reply/#" not in rules  # its own replies only


def test_ingest_reads_source_requests_and_answers_under_the_devices_answers():
    rules = _rules(Account(name="ingest", kind="service"))
    assert {"topic read lineside/v1/source/+", "topic write lineside/v1/answer/+/source"} <= rules


def test_lineside_user_add_makes_an_operator_shown_once(tmp_path, capsys):
    from lineside import cli
    from lineside.security import registry

    assert cli.main(["user", "add", "op-wl2", "--role", "operator", "--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("operator op-wl2 added")
    assert "password (shown once" in out
    (op,) = registry.list_devices(tmp_path)
    assert (op.role, op.can_ingest) == ("operator", True)
    assert cli.main(["device", "list", "--data", str(tmp_path)]) == 0
    assert "operator" in capsys.readouterr().out

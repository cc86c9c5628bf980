"""The operators' device accounts on the web page: the handler's decisions and the ACL around them."""

from __future__ import annotations

import pytest

from lineside.errors import ConfigError
from lineside.security import acl
from lineside.security.accounts import BUILTIN, Account
from lineside.web import handlers
from schemas import codec, topics
from schemas.messages import DeviceAddRequest, DeviceInfo, DevicesInbox, DevicesReply
from tests.unit.test_security import allowed, parse_acl

ACCOUNTS = [
    *(Account(name=n, kind="service") for n in BUILTIN),
    Account(name="op-wl2", kind="device", role="operator", can_ingest=True),
    Account(name="tab-wl2", kind="device", line="WL-2"),
    Account(name="hmi-wl9", kind="device"),
]


def _add(name: str, line: str | None = None) -> tuple[str, str | None]:
    return handlers.check_add(DeviceAddRequest(request_id="r1", name=name, line=line))


def test_add_takes_a_device_name_and_an_optional_line():
    assert _add("tab-wl3", "WL-3") == ("tab-wl3", "WL-3")
    assert _add("  tab-wl3 ", "  WL-3  ") == ("tab-wl3", "WL-3")  # typed on a tablet: spaces around
    assert _add("tab-wl3") == ("tab-wl3", None)
    assert _add("tab-wl3", "   ") == ("tab-wl3", None)  # an empty line field: plant-wide


@pytest.mark.parametrize(
    ("name", "line", "says"),
    [
        ("", None, "give the device a name"),
        ("tab wl3", None, "invalid device name 'tab wl3'"),
        ("tab/wl3", None, "cannot be part of a topic level"),
        ("web", None, "reserved for a built-in account"),
        ("Gateway", None, "reserved for a built-in account"),
        ("lineside-tab", None, "client ids of the services"),
        ("x" * 65, None, "longer than 64 characters"),
        ("tab-wl3", "W" * 65, "65 characters long: at most 64"),
        ("tab-wl3", "WL-3\nDROP", "one line of text"),
    ],
)
def test_add_refuses_bad_input_saying_what_is_wrong(name, line, says):
    with pytest.raises(ConfigError, match=None) as exc:
        _add(name, line)
    assert says in str(exc.value)


def test_remove_never_takes_the_operators_own_account_or_a_builtin_one():
    assert handlers.check_remove("op-wl2", "tab-wl2", ACCOUNTS) == "tab-wl2"
    with pytest.raises(ConfigError, match="the account you are logged in with"):
        handlers.check_remove("op-wl2", "op-wl2", ACCOUNTS)
    for name in ("web", "admin", "gateway", "Admin"):
        with pytest.raises(ConfigError, match="built-in account"):
            handlers.check_remove("op-wl2", name, ACCOUNTS)
    with pytest.raises(ConfigError, match="no device named tab-wl7"):
        handlers.check_remove("op-wl2", "tab-wl7", ACCOUNTS)
    with pytest.raises(ConfigError, match="say which device"):
        handlers.check_remove("op-wl2", " ", ACCOUNTS)


def test_only_registered_operators_are_answered_and_the_list_has_no_hashes():
    assert handlers.is_operator("op-wl2", ACCOUNTS)
    assert not handlers.is_operator("tab-wl2", ACCOUNTS)
    assert not handlers.is_operator("admin", ACCOUNTS)
    assert not handlers.is_operator("op-gone", ACCOUNTS)
    infos = handlers.device_infos(ACCOUNTS)
    assert [d.name for d in infos] == ["hmi-wl9", "op-wl2", "tab-wl2"]
    assert infos[2] == DeviceInfo(name="tab-wl2", line="WL-2", role="device", can_ingest=False)
    assert infos[1].role == "operator"


def test_the_page_s_messages_travel_as_messagepack():
    dec = codec.decoder(DevicesInbox)
    raw = b"\x84\xa4type\xaedevices.add.v1\xaarequest_id\xa2r1\xa4name\xa7tab-wl3\xa4line\xa4WL-3"  # as app.js encodes it
    assert dec.decode(raw) == DeviceAddRequest(request_id="r1", name="tab-wl3", line="WL-3")
    made_up = "s3cret-for-the-round-trip"
    reply = DevicesReply(request_id="r1", name="tab-wl3", password=made_up, done=True, devices=handlers.device_infos(ACCOUNTS))
    assert codec.decoder(DevicesReply).decode(codec.encode(reply)) == reply


def test_only_operators_may_ask_and_only_the_web_account_reads_the_requests():
    rules = parse_acl(acl.render_acl(ACCOUNTS))
    own, other = topics.admin_devices("op-wl2"), topics.admin_devices("tab-wl2")
    assert allowed(rules, "op-wl2", "write", own)
    assert not allowed(rules, "op-wl2", "write", other), "an operator asks only in its own name"
    assert not allowed(rules, "op-wl2", "read", own)
    for device in ("tab-wl2", "hmi-wl9"):
        assert not allowed(rules, device, "write", topics.admin_devices(device))
        assert not allowed(rules, device, "read", own)
        assert not allowed(rules, device, "read", topics.reply_inbox("op-wl2")), "a device never sees a new password"
    assert allowed(rules, "web", "read", own)
    assert allowed(rules, "web", "write", topics.reply_inbox("op-wl2"))
    assert not allowed(rules, "web", "write", topics.ask_device("tab-wl2"))
    assert not allowed(rules, "web", "read", topics.reply_inbox("op-wl2"))
    assert topics.operator_of_admin(own) == "op-wl2"
    assert topics.operator_of_admin(f"{own}/x") is None
    assert topics.operator_of_admin(topics.ask_device("op-wl2")) is None

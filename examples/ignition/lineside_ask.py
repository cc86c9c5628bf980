# Lineside for Ignition: ask over Cirrus Link MQTT Engine, map the flat answer to tags.
#
# Jython 2.7 (Ignition's script engine). Put this file's text into a project library script named
# `lineside` (Designer > Scripting > Project Library), then:
#
#   1. MQTT Engine > Settings > Servers: a server named like SERVER below, URL
#      ssl://<box>:8883, user name DEVICE and the password `lineside device add ign-wl2` printed,
#      the CA certificate `lineside-ca.crt` (from `lineside certs export DIR`) uploaded under
#      Certificates and chosen for the server. One Ignition gateway, one device account: a
#      second connection with the same account knocks this one off.
#   2. MQTT Engine > Settings > Custom Namespaces: a namespace subscribed to ANSWER_TOPIC,
#      JSON payload off: MQTT Engine makes one String tag that holds each answer as it arrives.
#   3. A Gateway Event Script, Tag Change, on that String tag:
#          lineside.on_answer(newValue.value)
#   4. Memory tags under TAG_ROOT: those of TAGS below (String unless marked), `Pending` (String)
#      and `Counter` (Int4).
#   5. A button on the operator screen:  lineside.ask(event.source.parent.getComponent('Question').text)
#
# Only what Python 2.7 and 3 share is used (no f-strings; text joined with +, which Jython's mix of
# str and unicode takes), so the same file is tested with CPython against a real box
# (tests/e2e/test_integration_examples.py), with Ignition's `system` played by the test.

import json

SERVER = "Lineside"
"""The MQTT Engine server connection's name."""
DEVICE = "ign-wl2"
"""The device account MQTT Engine logs in with."""
ASK_TOPIC = "lineside/v1/ask/" + DEVICE
ANSWER_TOPIC = "lineside/v1/answer/" + DEVICE
QOS = 1
TAG_ROOT = "[default]Lineside/"

# Tag name -> what it holds. Every value is flat: a string, a number or a boolean.
TAGS = [
    "RequestId",  # the question's id, as it was sent
    "Status",  # answered, fallback, rejected, busy, error
    "AnswerShort",  # at most 80 characters: for a one-line display
    "Answer",  # the whole answer
    "Reason",  # why a fallback fell back ("" otherwise)
    "ErrorCode",  # rejected / busy / error: what went wrong ("" otherwise)
    "ErrorMessage",
    "SourceDoc",  # the first source: document ...
    "SourceLocator",  # ... and where in it (page 3, sheet Faults row 23)
    "LatencyMs",  # Float
    "Cached",  # Boolean
    "Display",  # what the operator screen shows
    "Retry",  # Boolean: asking again later may help (busy, error)
]


def question_payload(question, request_id, line=None):
    """The JSON text of a question; `line` narrows it to one production line."""
    body = {"question": question, "request_id": request_id}
    if line:
        body["line"] = line
    return json.dumps(body, separators=(",", ":"))


def display(values):
    """What an operator screen shows for an answer's flat values."""
    status = values["Status"]
    if status == "answered":
        text = values["AnswerShort"] or values["Answer"]
        if values["SourceDoc"]:
            text = text + " (" + values["SourceDoc"] + ", " + values["SourceLocator"] + ")"
        return text
    if status == "fallback":
        return values["Answer"]
    if status == "rejected":
        return "Question not accepted: " + values["ErrorMessage"]
    if status == "busy":
        return "Lineside is busy: ask again in a moment"
    return "Lineside could not answer (" + values["ErrorCode"] + "): try again later"


def tag_values(payload_text):
    """The flat tag values of one answer (a dict keyed by the names in TAGS), or None when the
    payload is not an answer."""
    try:
        answer = json.loads(payload_text)
    except ValueError:
        return None
    if not isinstance(answer, dict) or "status" not in answer:
        return None
    sources = answer.get("sources") or []
    first = sources[0] if sources else {}
    error = answer.get("error") or {}
    request_id = answer.get("request_id", "")  # a string, or a number as a PLC sends it
    values = {
        "RequestId": request_id if hasattr(request_id, "upper") else str(request_id),
        "Status": answer["status"],
        "AnswerShort": answer.get("answer_short", ""),
        "Answer": answer.get("answer", ""),
        "Reason": answer.get("reason", ""),
        "ErrorCode": error.get("code", ""),
        "ErrorMessage": error.get("message", ""),
        "SourceDoc": first.get("doc", ""),
        "SourceLocator": first.get("locator", ""),
        "LatencyMs": float(answer.get("latency_ms", 0.0)),
        "Cached": bool(answer.get("cached", False)),
        "Retry": answer["status"] in ("busy", "error"),
    }
    values["Display"] = display(values)
    return values


def next_request_id(counter):
    """A request id unique to this gateway: the device name and a counter."""
    return DEVICE + "-" + str(counter)


def ask(question, line=None):
    """Publish a question (Ignition: from a button or a script). Returns its request id."""
    pending = system.tag.readBlocking([TAG_ROOT + "Counter"])[0].value or 0  # noqa: F821 - Ignition's `system`
    request_id = next_request_id(int(pending) + 1)
    system.tag.writeBlocking([TAG_ROOT + "Counter", TAG_ROOT + "Pending", TAG_ROOT + "Status"], [int(pending) + 1, request_id, "asking"])  # noqa: F821
    payload = question_payload(question, request_id, line)
    system.cirruslink.engine.publish(SERVER, ASK_TOPIC, payload.encode("utf-8"), QOS, False)  # noqa: F821
    return request_id


def on_answer(payload_text):
    """Write an answer to the tags (Ignition: the tag change script of the answer topic's tag).
    An answer to an earlier question than the pending one is ignored."""
    values = tag_values(payload_text)
    if values is None:
        return False
    pending = system.tag.readBlocking([TAG_ROOT + "Pending"])[0].value  # noqa: F821
    if values["RequestId"] != pending:
        return False
    system.tag.writeBlocking([TAG_ROOT + name for name in TAGS], [values[name] for name in TAGS])  # noqa: F821
    return True

"""Device payload decoding: what a device sends and what it is told when it is wrong."""

import json

import msgspec
import pytest

from schemas import codec
from schemas.codec import BadRequest, decode_ask, encode_answer
from schemas.messages import MAX_QUESTION_CHARS, Answer, ErrorInfo, Source


def test_plain_text_is_the_question():
    assert decode_ask(b"  What does F-311 mean?\n").question == "What does F-311 mean?"


def test_json_object_with_all_fields():
    req = decode_ask(json.dumps({"question": "Torque?", "request_id": "r-1", "line": "Line 3", "lang": "en", "stream": True}).encode())
    assert (req.question, req.request_id, req.line, req.lang, req.stream) == ("Torque?", "r-1", "Line 3", "en", True)


def test_unknown_json_fields_are_ignored():
    assert decode_ask(b'{"question": "x1", "plc_slot": 4}').question == "x1"


def test_msgpack_request():
    req = decode_ask(msgspec.msgpack.encode({"question": "3号线 F-311 是什么意思", "request_id": "7"}), codec.MSGPACK)
    assert req.question.startswith("3号线")
    assert req.request_id == "7"


def test_chinese_plain_text():
    assert decode_ask("灌装机 CIP 的碱洗浓度是多少？".encode()).question == "灌装机 CIP 的碱洗浓度是多少？"


@pytest.mark.parametrize(
    ("payload", "code", "fragment"),
    [
        (b"", "empty", "empty"),
        (b"   \n", "empty", "empty"),
        (b"\xff\xfe\xfa", "not_utf8", "UTF-8"),
        (b'{"question": "x"', "malformed_json", "not valid JSON"),
        (b"[1, 2]", "not_an_object", "object"),
        (b'{"question": 5}', "invalid_field", "$.question"),
        (b'{"question": "ok?", "stream": "yes"}', "invalid_field", "$.stream"),
        (b'{"request_id": "1"}', "missing_question", "question"),
        (b'{"question": "   "}', "empty_question", "empty"),
        (b"?!?", "not_a_question", "letters"),
        (b'{"question": "a\\u0000b"}', "control_characters", "control"),
        (b"[" * 50 + b"]" * 50, "too_deep", "nested"),
        (b'{"question": "x", "a": ' + b"[" * 20 + b"]" * 20 + b"}", "too_deep", "nested"),
        (b"x" * (codec.MAX_PAYLOAD_BYTES + 1), "payload_too_large", "limit"),
        (("q" * (MAX_QUESTION_CHARS + 1)).encode(), "question_too_long", str(MAX_QUESTION_CHARS)),
    ],
)
def test_bad_input_is_rejected_with_a_reason(payload, code, fragment):
    with pytest.raises(BadRequest) as err:
        decode_ask(payload)
    assert err.value.code == code
    assert fragment in err.value.message


def test_brackets_inside_json_strings_do_not_count_as_nesting():
    assert decode_ask(json.dumps({"question": "what is [[[[[[[[[[[[ ]]]]]"}).encode()).question.startswith("what")


def test_malformed_and_deep_msgpack_rejected():
    with pytest.raises(BadRequest) as err:
        decode_ask(b"\xc1\xc1", codec.MSGPACK)
    assert err.value.code == "malformed_msgpack"
    deep: object = "x"
    for _ in range(20):
        deep = [deep]
    with pytest.raises(BadRequest) as err:
        decode_ask(msgspec.msgpack.encode({"question": "q1", "x": deep}), codec.MSGPACK)
    assert err.value.code == "too_deep"


def test_request_id_is_recovered_from_a_rejected_json_request():
    with pytest.raises(BadRequest) as err:
        decode_ask(b'{"question": 5, "request_id": "abc"}')
    assert err.value.request_id == "abc"


def test_answer_is_json_or_msgpack_by_request():
    ans = Answer(
        request_id="r",
        status="answered",
        answer="62 N·m [1]",
        sources=[Source(doc="m.pdf", locator="page 4", score=0.7, snippet="s")],
        model="m",
        latency_ms=1.0,
    )
    as_json = json.loads(encode_answer(ans, msgpack=False))
    assert as_json["sources"][0]["locator"] == "page 4"
    assert "error" not in as_json
    assert msgspec.msgpack.decode(encode_answer(ans, msgpack=True))["answer"] == "62 N·m [1]"


def test_rejected_answer_carries_error():
    ans = Answer(
        request_id="r",
        status="rejected",
        answer="",
        sources=[],
        model="",
        latency_ms=0.1,
        error=ErrorInfo(code="empty", message="the payload is empty"),
    )
    out = json.loads(encode_answer(ans, msgpack=False))
    assert out["error"] == {"code": "empty", "message": "the payload is empty"}
    assert set(out) == {"request_id", "status", "answer", "sources", "model", "latency_ms", "error"}


def test_an_integer_request_id_is_kept_as_an_integer_also_when_the_request_is_rejected():
    assert decode_ask(b'{"question": "Torque for P-201?", "request_id": 311}').request_id == 311
    with pytest.raises(BadRequest) as err:
        decode_ask(b'{"question": "?!", "request_id": 312}')
    assert err.value.request_id == 312
    with pytest.raises(BadRequest) as err:
        decode_ask(b'{"question": "x?", "request_id": true}')  # a boolean is not an id
    assert err.value.request_id is None

"""Topic builders and parsers: a parameter always fills one whole level."""

import pytest

from schemas import topics


def test_device_topics():
    assert topics.ask_device("plc7") == "lineside/v1/ask/plc7"
    assert topics.answer_device("plc7") == "lineside/v1/answer/plc7"
    assert topics.status("gateway") == "lineside/v1/status/gateway"


@pytest.mark.parametrize("bad", ["", "a/b", "+", "dev#", "x\x00", "d" * 65])
def test_bad_levels_refused(bad):
    with pytest.raises(topics.TopicError):
        topics.answer_device(bad)


def test_device_parsed_from_ask_and_reply_topics():
    assert topics.device_of_ask("lineside/v1/ask/hmi-3") == "hmi-3"
    assert topics.device_of_ask("lineside/v1/ask") is None
    assert topics.device_of_ask("lineside/v1/ask/a/b") is None
    assert topics.device_of_reply_topic("lineside/v1/answer/hmi-3/req/9") == "hmi-3"
    assert topics.device_of_reply_topic("elsewhere/x") is None


def test_publishable_topics():
    assert topics.is_valid_publish_topic("lineside/v1/answer/x/1")
    assert not topics.is_valid_publish_topic("lineside/+/x")
    assert not topics.is_valid_publish_topic("")


def test_shared_subscription_and_worker_names():
    from services.llm.__main__ import worker_name

    assert topics.shared("llm", topics.GENERATE) == "$share/llm/lineside/v1/internal/llm/generate"
    with pytest.raises(topics.TopicError):
        topics.shared("a/b", topics.GENERATE)
    assert worker_name("lineside-llm") == "llm"
    assert worker_name("lineside-llm-2") == "llm-2"


def test_status_service_reads_the_service_from_its_status_topic_only():
    assert topics.status_service(topics.status("llm-2")) == "llm-2"
    assert topics.status_service(topics.ASK) is None
    assert topics.status_service(topics.status("llm") + "/x") is None
    assert topics.status_service(topics.ROOT + "/status/") is None


def test_lines_are_read_from_every_spelling_documents_use():
    from lineside.text import mentioned_lines

    assert mentioned_lines("Line 3 capper, 2 线, 1号线 and L3-PMP-02; not Q17 or 30 N") == ["3", "2", "1"]

from agentaudit.demo.malformed import MALFORMED
from agentaudit.sink.decode import Accepted, Reason, Rejected, decode
from tests.factories import event_dict, wire


def test_valid_event_is_accepted_with_canonical_bytes() -> None:
    verdict = decode(wire(event_dict()))
    assert isinstance(verdict, Accepted)
    assert verdict.canonical.startswith(b'{"agent_id":"support-bot"')


def test_every_malformed_sample_gets_its_reason() -> None:
    for _key, value, expected in MALFORMED:
        verdict = decode(value)
        assert isinstance(verdict, Rejected), value[:60]
        assert verdict.reason.value == expected, (value[:80], verdict)
        assert verdict.detail


def test_tombstone_is_rejected_not_raised() -> None:
    verdict = decode(None)
    assert isinstance(verdict, Rejected) and verdict.reason is Reason.INVALID_JSON


def test_same_bytes_same_verdict() -> None:
    """Exactly-once recovery relies on replayed messages landing in the same table."""
    raw = wire(event_dict(kind="llm_call"))
    first, second = decode(raw), decode(raw)
    assert isinstance(first, Accepted) and isinstance(second, Accepted)
    assert first.canonical == second.canonical

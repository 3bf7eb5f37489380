"""Payload models, one per event type. Names follow OpenTelemetry GenAI attributes where one
exists."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, NamedTuple

from pydantic import Field, Strict, StringConstraints, model_validator

from agentaudit_schemas.envelope import (
    INT64_MAX,
    Label,
    OpaqueId,
    Sha256Hex,
    Slug,
    StrictModel,
    TenantId,
)

MAX_CONTENT_CHARS = 32_768
MAX_MESSAGE_CHARS = 2_048

Content = Annotated[str, StringConstraints(max_length=MAX_CONTENT_CHARS)]
Millis = Annotated[float, Field(ge=0, le=86_400_000)]
Tokens = Annotated[int, Field(ge=0, le=100_000_000)]
Count = Annotated[int, Field(ge=0, le=INT64_MAX)]
"""A count with no natural bound (rows, bytes, a chain position): still a signed 64-bit
number, as every number of the contract. Unbounded, 2**64 validated and then could not be
written as canonical bytes (orjson stops at 64 bits): an `unencodable` dead letter for an event
the published JSON Schema calls valid."""


class StopReason(StrEnum):
    COMPLETED = "completed"
    MAX_STEPS = "max_steps"
    BUDGET_EXHAUSTED = "budget_exhausted"
    BREAKER_OPEN = "breaker_open"
    POLICY_DENIED = "policy_denied"
    ERROR = "error"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"


class CallStatus(StrEnum):
    OK = "ok"
    ERROR = "error"


class SideEffect(StrEnum):
    READ = "read"
    WRITE = "write"
    EXTERNAL = "external"


class Decision(StrEnum):
    ALLOW = "ALLOW"
    DENY = "DENY"
    REQUIRE_APPROVAL = "REQUIRE_APPROVAL"
    ALLOW_WITH_CONSTRAINTS = "ALLOW_WITH_CONSTRAINTS"


class Risk(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class ApprovalOutcome(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


class Guardrail(StrEnum):
    PROMPT_INJECTION = "prompt_injection"
    PII = "pii"
    TOKEN_FLOOD = "token_flood"
    OUTPUT_POLICY = "output_policy"


class GuardrailAction(StrEnum):
    BLOCK = "block"
    REDACT = "redact"
    FLAG = "flag"


class ContentHandling(StrEnum):
    """What happened to prompt/response text before it left the agent's process."""

    PLAIN = "plain"
    REDACTED = "redacted"
    ENCRYPTED = "encrypted"


# Enum fields accept their string value in Python mode as they already do in JSON mode: the
# SDK builds events from plain dicts, and strict mode alone would demand enum instances there.
# Only the enum's own values are accepted, so this loosens nothing else.
_BY_VALUE = Strict(False)


class RunStarted(StrictModel):
    goal_hash: Sha256Hex | None = None
    max_steps: Annotated[int, Field(ge=1, le=1_000_000)] | None = None


class RunFinished(StrictModel):
    stop_reason: Annotated[StopReason, _BY_VALUE]
    steps: Annotated[int, Field(ge=0, le=1_000_000)]
    duration_ms: Millis


class Usage(StrictModel):
    """Token usage with OpenTelemetry semantics, the same for every provider.

    `input_tokens` counts *all* prompt tokens, including those read from and written to the
    provider's cache; `output_tokens` counts all generated tokens including reasoning.
    The cache and reasoning counts are subsets. Provider responses differ here (Anthropic
    reports cache reads and writes *outside* its input count), so normalise with
    `agentaudit_sdk.usage` helpers rather than copying fields by name.
    """

    input_tokens: Tokens
    output_tokens: Tokens
    cached_input_tokens: Tokens = 0
    cache_write_tokens: Tokens = 0
    reasoning_tokens: Tokens = 0

    @model_validator(mode="after")
    def _subsets_fit(self) -> Usage:
        if self.cached_input_tokens + self.cache_write_tokens > self.input_tokens:
            raise ValueError(
                "cached_input_tokens + cache_write_tokens exceed input_tokens; "
                "input_tokens must include cached and cache-write tokens"
            )
        if self.reasoning_tokens > self.output_tokens:
            raise ValueError(
                "reasoning_tokens exceed output_tokens; output_tokens must include them"
            )
        return self


class TokenCounts(NamedTuple):
    """A validated `Usage`'s five counts as a tuple: the sink prices the plain document of an
    event (`agentaudit.sink.plain_validator`), not a model. Same names, so pricing takes either."""

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


UsageCounts = Usage | TokenCounts
"""What pricing reads token counts from (validated: the subsets fit)."""


class LlmContent(StrictModel):
    handling: Annotated[ContentHandling, _BY_VALUE]
    prompt: Content | None = None
    response: Content | None = None


class LlmCall(StrictModel):
    provider: Slug
    request_model: Slug
    response_model: Slug | None = None
    usage: Usage
    latency_ms: Millis
    ttft_ms: Millis | None = None
    finish_reason: Annotated[str, StringConstraints(max_length=64)] | None = None
    status: Annotated[CallStatus, _BY_VALUE] = CallStatus.OK
    error_type: Slug | None = None
    provider_cost_usd: Annotated[float, Field(ge=0, le=1_000_000)] | None = None
    content: LlmContent | None = None


class ToolCall(StrictModel):
    tool: Slug
    action: Label
    args_hash: Sha256Hex
    side_effect: Annotated[SideEffect, _BY_VALUE]
    idempotency_key: OpaqueId | None = None
    status: Annotated[CallStatus, _BY_VALUE] = CallStatus.OK
    latency_ms: Millis
    error_type: Slug | None = None


class PolicyDecision(StrictModel):
    rule_id: Slug
    decision: Annotated[Decision, _BY_VALUE]
    action: Label
    resource: Label
    policy_hash: Sha256Hex
    reason: Label | None = None


class ApprovalRequested(StrictModel):
    approval_id: OpaqueId
    action: Label
    risk: Annotated[Risk, _BY_VALUE]


class ApprovalDecided(StrictModel):
    approval_id: OpaqueId
    approver_id: OpaqueId
    outcome: Annotated[ApprovalOutcome, _BY_VALUE]
    latency_ms: Millis


class GuardrailTriggered(StrictModel):
    guardrail: Annotated[Guardrail, _BY_VALUE]
    action: Annotated[GuardrailAction, _BY_VALUE]
    score: Annotated[float, Field(ge=0.0, le=1.0)]


class EvalResult(StrictModel):
    gold_set_id: Slug
    case_id: OpaqueId
    metric: Slug
    score: float
    passed: bool
    evaluator: Slug


class ErrorInfo(StrictModel):
    component: Slug
    error_type: Slug
    message: Annotated[str, StringConstraints(max_length=MAX_MESSAGE_CHARS)] | None = None


MAX_STATEMENT_CHARS = 8_192


class AuditorChannel(StrEnum):
    CLI = "cli"
    HTTP = "http"


class AuditorVerdict(StrEnum):
    ALLOWED = "allowed"
    REFUSED = "refused"
    FAILED = "failed"


class AuditorQuery(StrictModel):
    """One statement an auditor sent (issue 11): recorded before its result or refusal returns.

    `statement` is the text as judged, capped at MAX_STATEMENT_CHARS (`truncated` then true);
    `statement_sha256` is of the whole text. Counters are the engine's query summary."""

    auditor: Slug
    tenants: Annotated[list[TenantId], Field(min_length=1, max_length=1_000)]
    channel: Annotated[AuditorChannel, _BY_VALUE]
    statement: Annotated[str, StringConstraints(max_length=MAX_STATEMENT_CHARS)]
    statement_sha256: Sha256Hex
    truncated: bool
    verdict: Annotated[AuditorVerdict, _BY_VALUE]
    reason: Annotated[str, StringConstraints(max_length=MAX_MESSAGE_CHARS)]
    result_rows: Count
    read_rows: Count
    read_bytes: Count
    duration_ms: Millis
    signature: Annotated[str, Field(min_length=1, max_length=1_024)] | None = None
    """The signature lines of a C2SP signed note by the deployment's checkpoint key over the
    entry (tenant, time and the fields above; `agentaudit.trail.system_signature`): anyone who
    can produce to the events topic can publish this event, only the gate can sign it.
    `agentaudit auditors log` shows an entry without a valid one as forged."""


class RetentionChanged(StrictModel):
    """A tenant's retention policy was set (issue 11): rows older than `days` may be cut, as a
    prefix of each chain (`agentaudit.retention`); `days` None = keep forever (the default)."""

    days: Annotated[int, Field(ge=1, le=100_000)] | None = None
    previous_days: Annotated[int, Field(ge=1, le=100_000)] | None = None
    reason: Label
    signature: Annotated[str, Field(min_length=1, max_length=1_024)] | None = None
    """The deployment's signature of this event (`agentaudit.trail.system_signature`): anyone
    who can produce to the events topic can publish this event, only agentaudit can sign it;
    `agentaudit system-log` shows an unsigned one as forged."""


class HoldAction(StrEnum):
    ADD = "add"
    RM = "rm"


class LegalHoldChanged(StrictModel):
    """A legal hold on a whole tenant (`subject` None) or one subject (`user_id`) was placed or
    lifted (issue 11): while it holds, retention cuts nothing of it."""

    action: Annotated[HoldAction, _BY_VALUE]
    subject: OpaqueId | None = None
    reason: Label
    signature: Annotated[str, Field(min_length=1, max_length=1_024)] | None = None
    """The deployment's signature of this event (`agentaudit.trail.system_signature`): anyone
    who can produce to the events topic can publish this event, only agentaudit can sign it;
    `agentaudit system-log` shows an unsigned one as forged."""


class RetentionApplied(StrictModel):
    """Retention is about to cut chains' prefixes (published before the delete; issue 11): the
    policy in force (`days`), the subject holds it respected (a tenant hold cuts nothing: no
    such event), and per chain of the tenant with a horizon (parallel lists, one entry per
    chain; every such chain is listed, so the newest event restates them all): its
    `partitions`, `horizons` (rows with chain_seq <= horizon may be gone), `horizon_days` (the
    retention the horizon was cut under) and `floors` (the first chain_seq of a held subject's
    rows in the chain, the horizon stays below it; 0 = none). Lists of numbers, not of objects:
    the sink's duplicate-key check counts nested objects, not objects inside lists."""

    days: Annotated[int, Field(ge=1, le=100_000)]
    held_subjects: Annotated[list[OpaqueId], Field(max_length=10_000)]
    partitions: Annotated[
        list[Annotated[int, Field(ge=0, le=1_000_000)]], Field(min_length=1, max_length=1_024)
    ]
    horizons: Annotated[list[Count], Field(min_length=1, max_length=1_024)]
    horizon_days: Annotated[
        list[Annotated[int, Field(ge=1, le=100_000)]], Field(min_length=1, max_length=1_024)
    ]
    floors: Annotated[list[Count], Field(min_length=1, max_length=1_024)]
    signature: Annotated[str, Field(min_length=1, max_length=1_024)] | None = None
    """The signature lines of a C2SP signed note by the deployment's checkpoint key over the
    claim (tenant, time and the fields above; `agentaudit.retention.evidence.claim_text`):
    anyone who can produce to the events topic can publish this event, only the deployment
    can sign it. `agentaudit verify` counts no unsigned claim."""

    @model_validator(mode="after")
    def _one_entry_per_chain(self) -> RetentionApplied:
        n = len(self.partitions)
        if not len(self.horizons) == len(self.horizon_days) == len(self.floors) == n:
            raise ValueError("partitions, horizons, horizon_days and floors differ in length")
        return self


KeyId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
"""A subject data key's id (`agentaudit.subjects`): 16 hex digits, random, never reused."""


class SubjectErased(StrictModel):
    """A data subject's content keys were destroyed (crypto-shredding, issue 11). Written by
    `agentaudit erase` BEFORE the keys are destroyed; the acting operator is the `user_id`.
    `subject` absent: the tenant's unattributed content (events without a `user_id`)."""

    subject: OpaqueId | None = None
    reason: Label
    key_ids: Annotated[list[KeyId], Field(max_length=4_096)]
    signature: Annotated[str, Field(min_length=1, max_length=1_024)] | None = None
    """The deployment's signature of this event (`agentaudit.trail.system_signature`): anyone
    who can produce to the events topic can publish this event, only agentaudit can sign it;
    `agentaudit system-log` shows an unsigned one as forged."""


class TailAccepted(StrictModel):
    """An operator vouched for a chain's rows that Kafka can no longer confirm (`agentaudit
    accept-tail`): the sink held the chain's rows `from_seq`..`through_seq` after its newest
    checkpoint as unreadable (`verdict`: why they could not be checked) and signs the chain
    again once it finds this genuine event matching what it holds (`root`: the chain's Merkle
    root at `through_seq`). The acting operator is the `user_id`."""

    partition: Annotated[int, Field(ge=0, le=1_000_000)]
    from_seq: Count
    through_seq: Count
    root: Sha256Hex
    verdict: Annotated[str, StringConstraints(min_length=1, max_length=MAX_MESSAGE_CHARS)]
    reason: Label
    signature: Annotated[str, Field(min_length=1, max_length=1_024)] | None = None
    """The deployment's signature of this event (`agentaudit.trail.system_signature`): anyone
    who can produce to the events topic can publish this event, only agentaudit can sign it;
    the sink acts on a signed one only."""

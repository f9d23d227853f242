import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from ponder.v1 import ponder_pb2 as _ponder_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tenant(_message.Message):
    __slots__ = ("name", "enabled", "balance", "created_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    enabled: bool
    balance: _ponder_pb2.Balance
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., enabled: _Optional[bool] = ..., balance: _Optional[_Union[_ponder_pb2.Balance, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateTenantRequest(_message.Message):
    __slots__ = ("name", "budget", "window")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    name: str
    budget: float
    window: str
    def __init__(self, name: _Optional[str] = ..., budget: _Optional[float] = ..., window: _Optional[str] = ...) -> None: ...

class CreateTenantResponse(_message.Message):
    __slots__ = ("tenant", "token", "key_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: Tenant
    token: str
    key_id: str
    def __init__(self, tenant: _Optional[_Union[Tenant, _Mapping]] = ..., token: _Optional[str] = ..., key_id: _Optional[str] = ...) -> None: ...

class ListTenantsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTenantsResponse(_message.Message):
    __slots__ = ("tenants",)
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    tenants: _containers.RepeatedCompositeFieldContainer[Tenant]
    def __init__(self, tenants: _Optional[_Iterable[_Union[Tenant, _Mapping]]] = ...) -> None: ...

class SetTenantEnabledRequest(_message.Message):
    __slots__ = ("name", "enabled")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    name: str
    enabled: bool
    def __init__(self, name: _Optional[str] = ..., enabled: _Optional[bool] = ...) -> None: ...

class SetTenantEnabledResponse(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: Tenant
    def __init__(self, tenant: _Optional[_Union[Tenant, _Mapping]] = ...) -> None: ...

class SetBudgetRequest(_message.Message):
    __slots__ = ("name", "budget", "window")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    name: str
    budget: float
    window: str
    def __init__(self, name: _Optional[str] = ..., budget: _Optional[float] = ..., window: _Optional[str] = ...) -> None: ...

class SetBudgetResponse(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: Tenant
    def __init__(self, tenant: _Optional[_Union[Tenant, _Mapping]] = ...) -> None: ...

class IssueKeyRequest(_message.Message):
    __slots__ = ("tenant", "scope", "label", "expires_in", "expires_at", "budget")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    scope: str
    label: str
    expires_in: int
    expires_at: _timestamp_pb2.Timestamp
    budget: float
    def __init__(self, tenant: _Optional[str] = ..., scope: _Optional[str] = ..., label: _Optional[str] = ..., expires_in: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., budget: _Optional[float] = ...) -> None: ...

class IssueKeyResponse(_message.Message):
    __slots__ = ("key_id", "token", "expires_at")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    token: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, key_id: _Optional[str] = ..., token: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RotateKeyRequest(_message.Message):
    __slots__ = ("key_id", "overlap_seconds", "expires_in")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    overlap_seconds: int
    expires_in: int
    def __init__(self, key_id: _Optional[str] = ..., overlap_seconds: _Optional[int] = ..., expires_in: _Optional[int] = ...) -> None: ...

class RotateKeyResponse(_message.Message):
    __slots__ = ("key_id", "token", "expires_at", "old_key_id", "old_expires_at")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    OLD_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    OLD_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    token: str
    expires_at: _timestamp_pb2.Timestamp
    old_key_id: str
    old_expires_at: _timestamp_pb2.Timestamp
    def __init__(self, key_id: _Optional[str] = ..., token: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., old_key_id: _Optional[str] = ..., old_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RevokeKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class RevokeKeyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class Key(_message.Message):
    __slots__ = ("key_id", "tenant", "scope", "label", "created_at", "revoked", "expires_at", "last_used_at", "replaced_by", "expired", "budget", "spent")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_AT_FIELD_NUMBER: _ClassVar[int]
    REPLACED_BY_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    SPENT_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    tenant: str
    scope: str
    label: str
    created_at: _timestamp_pb2.Timestamp
    revoked: bool
    expires_at: _timestamp_pb2.Timestamp
    last_used_at: _timestamp_pb2.Timestamp
    replaced_by: str
    expired: bool
    budget: float
    spent: float
    def __init__(self, key_id: _Optional[str] = ..., tenant: _Optional[str] = ..., scope: _Optional[str] = ..., label: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked: _Optional[bool] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_used_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., replaced_by: _Optional[str] = ..., expired: _Optional[bool] = ..., budget: _Optional[float] = ..., spent: _Optional[float] = ...) -> None: ...

class SetKeyBudgetRequest(_message.Message):
    __slots__ = ("key_id", "budget")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    budget: float
    def __init__(self, key_id: _Optional[str] = ..., budget: _Optional[float] = ...) -> None: ...

class SetKeyBudgetResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: Key
    def __init__(self, key: _Optional[_Union[Key, _Mapping]] = ...) -> None: ...

class ListKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[Key]
    def __init__(self, keys: _Optional[_Iterable[_Union[Key, _Mapping]]] = ...) -> None: ...

class SpendReportRequest(_message.Message):
    __slots__ = ("tenant", "since", "until", "records", "limit", "by_host")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    BY_HOST_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    records: bool
    limit: int
    by_host: bool
    def __init__(self, tenant: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., records: _Optional[bool] = ..., limit: _Optional[int] = ..., by_host: _Optional[bool] = ...) -> None: ...

class SpendLine(_message.Message):
    __slots__ = ("tenant", "requests", "prompt_tokens", "thinking_tokens", "answer_tokens", "cost", "by_status", "host")
    class ByStatusEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TENANT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    THINKING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ANSWER_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    BY_STATUS_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    requests: int
    prompt_tokens: int
    thinking_tokens: int
    answer_tokens: int
    cost: float
    by_status: _containers.ScalarMap[str, int]
    host: str
    def __init__(self, tenant: _Optional[str] = ..., requests: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., thinking_tokens: _Optional[int] = ..., answer_tokens: _Optional[int] = ..., cost: _Optional[float] = ..., by_status: _Optional[_Mapping[str, int]] = ..., host: _Optional[str] = ...) -> None: ...

class SpendRecord(_message.Message):
    __slots__ = ("request_id", "tenant", "at", "severity", "needs_reasoning", "level", "thinking_cap", "samples_planned", "usage", "reserved", "cost", "latency_seconds", "status", "error", "confidence_mean", "confidence_min", "model", "verified")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    NEEDS_REASONING_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    THINKING_CAP_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PLANNED_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    LATENCY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_MEAN_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_MIN_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    tenant: str
    at: _timestamp_pb2.Timestamp
    severity: _ponder_pb2.Severity
    needs_reasoning: bool
    level: str
    thinking_cap: int
    samples_planned: int
    usage: _ponder_pb2.Usage
    reserved: float
    cost: float
    latency_seconds: float
    status: str
    error: str
    confidence_mean: float
    confidence_min: float
    model: str
    verified: bool
    def __init__(self, request_id: _Optional[str] = ..., tenant: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., severity: _Optional[_Union[_ponder_pb2.Severity, str]] = ..., needs_reasoning: _Optional[bool] = ..., level: _Optional[str] = ..., thinking_cap: _Optional[int] = ..., samples_planned: _Optional[int] = ..., usage: _Optional[_Union[_ponder_pb2.Usage, _Mapping]] = ..., reserved: _Optional[float] = ..., cost: _Optional[float] = ..., latency_seconds: _Optional[float] = ..., status: _Optional[str] = ..., error: _Optional[str] = ..., confidence_mean: _Optional[float] = ..., confidence_min: _Optional[float] = ..., model: _Optional[str] = ..., verified: _Optional[bool] = ...) -> None: ...

class SpendReportResponse(_message.Message):
    __slots__ = ("lines", "records", "since", "until")
    LINES_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedCompositeFieldContainer[SpendLine]
    records: _containers.RepeatedCompositeFieldContainer[SpendRecord]
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    def __init__(self, lines: _Optional[_Iterable[_Union[SpendLine, _Mapping]]] = ..., records: _Optional[_Iterable[_Union[SpendRecord, _Mapping]]] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ReloadPolicyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadPolicyResponse(_message.Message):
    __slots__ = ("policy_version", "path", "model_version")
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    policy_version: str
    path: str
    model_version: str
    def __init__(self, policy_version: _Optional[str] = ..., path: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("text", "tenant")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    text: str
    tenant: str
    def __init__(self, text: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("assessment",)
    ASSESSMENT_FIELD_NUMBER: _ClassVar[int]
    assessment: _ponder_pb2.Assessment
    def __init__(self, assessment: _Optional[_Union[_ponder_pb2.Assessment, _Mapping]] = ...) -> None: ...

class RunJobRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RunJobResponse(_message.Message):
    __slots__ = ("summary",)
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    summary: str
    def __init__(self, summary: _Optional[str] = ...) -> None: ...

class RiskStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Retrain(_message.Message):
    __slots__ = ("at", "candidate_version", "accepted", "reason", "candidate_metrics", "incumbent_metrics", "feedback_used")
    class CandidateMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class IncumbentMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    AT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_METRICS_FIELD_NUMBER: _ClassVar[int]
    INCUMBENT_METRICS_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_USED_FIELD_NUMBER: _ClassVar[int]
    at: _timestamp_pb2.Timestamp
    candidate_version: str
    accepted: bool
    reason: str
    candidate_metrics: _containers.ScalarMap[str, float]
    incumbent_metrics: _containers.ScalarMap[str, float]
    feedback_used: int
    def __init__(self, at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., candidate_version: _Optional[str] = ..., accepted: _Optional[bool] = ..., reason: _Optional[str] = ..., candidate_metrics: _Optional[_Mapping[str, float]] = ..., incumbent_metrics: _Optional[_Mapping[str, float]] = ..., feedback_used: _Optional[int] = ...) -> None: ...

class RiskStatusResponse(_message.Message):
    __slots__ = ("model_version", "metrics", "retrains")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    RETRAINS_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    metrics: _containers.ScalarMap[str, float]
    retrains: _containers.RepeatedCompositeFieldContainer[Retrain]
    def __init__(self, model_version: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., retrains: _Optional[_Iterable[_Union[Retrain, _Mapping]]] = ...) -> None: ...

class ListAlertsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class Alert(_message.Message):
    __slots__ = ("id", "kind", "tenant", "window_start", "at", "spent", "budget", "delivered", "delivered_at", "attempts", "next_attempt_at", "last_error")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    SPENT_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_AT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    tenant: str
    window_start: _timestamp_pb2.Timestamp
    at: _timestamp_pb2.Timestamp
    spent: float
    budget: float
    delivered: bool
    delivered_at: _timestamp_pb2.Timestamp
    attempts: int
    next_attempt_at: _timestamp_pb2.Timestamp
    last_error: str
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., tenant: _Optional[str] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., spent: _Optional[float] = ..., budget: _Optional[float] = ..., delivered: _Optional[bool] = ..., delivered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempts: _Optional[int] = ..., next_attempt_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_error: _Optional[str] = ...) -> None: ...

class ListAlertsResponse(_message.Message):
    __slots__ = ("alerts",)
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    alerts: _containers.RepeatedCompositeFieldContainer[Alert]
    def __init__(self, alerts: _Optional[_Iterable[_Union[Alert, _Mapping]]] = ...) -> None: ...

import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Severity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEVERITY_UNSPECIFIED: _ClassVar[Severity]
    SEVERITY_LOW: _ClassVar[Severity]
    SEVERITY_MEDIUM: _ClassVar[Severity]
    SEVERITY_HIGH: _ClassVar[Severity]
SEVERITY_UNSPECIFIED: Severity
SEVERITY_LOW: Severity
SEVERITY_MEDIUM: Severity
SEVERITY_HIGH: Severity

class Hints(_message.Message):
    __slots__ = ("severity_floor", "max_cost", "samples", "thinking_tokens", "level", "answer_format", "answer_tokens")
    SEVERITY_FLOOR_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    THINKING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FORMAT_FIELD_NUMBER: _ClassVar[int]
    ANSWER_TOKENS_FIELD_NUMBER: _ClassVar[int]
    severity_floor: Severity
    max_cost: float
    samples: int
    thinking_tokens: int
    level: str
    answer_format: str
    answer_tokens: int
    def __init__(self, severity_floor: _Optional[_Union[Severity, str]] = ..., max_cost: _Optional[float] = ..., samples: _Optional[int] = ..., thinking_tokens: _Optional[int] = ..., level: _Optional[str] = ..., answer_format: _Optional[str] = ..., answer_tokens: _Optional[int] = ...) -> None: ...

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class AskRequest(_message.Message):
    __slots__ = ("prompt", "system", "hints", "seed", "explain", "check", "idempotency_key", "messages", "temperature", "top_p", "stop", "choices")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    HINTS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    CHECK_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    system: str
    hints: Hints
    seed: int
    explain: bool
    check: Check
    idempotency_key: str
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    temperature: float
    top_p: float
    stop: _containers.RepeatedScalarFieldContainer[str]
    choices: int
    def __init__(self, prompt: _Optional[str] = ..., system: _Optional[str] = ..., hints: _Optional[_Union[Hints, _Mapping]] = ..., seed: _Optional[int] = ..., explain: _Optional[bool] = ..., check: _Optional[_Union[Check, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., stop: _Optional[_Iterable[str]] = ..., choices: _Optional[int] = ...) -> None: ...

class Check(_message.Message):
    __slots__ = ("number", "regex", "choice", "any_of")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    REGEX_FIELD_NUMBER: _ClassVar[int]
    CHOICE_FIELD_NUMBER: _ClassVar[int]
    ANY_OF_FIELD_NUMBER: _ClassVar[int]
    number: float
    regex: str
    choice: str
    any_of: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, number: _Optional[float] = ..., regex: _Optional[str] = ..., choice: _Optional[str] = ..., any_of: _Optional[_Iterable[str]] = ...) -> None: ...

class AskStreamRequest(_message.Message):
    __slots__ = ("prompt", "system", "hints", "seed", "explain", "check", "idempotency_key", "messages", "temperature", "top_p", "stop", "choices")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    HINTS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    CHECK_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    system: str
    hints: Hints
    seed: int
    explain: bool
    check: Check
    idempotency_key: str
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    temperature: float
    top_p: float
    stop: _containers.RepeatedScalarFieldContainer[str]
    choices: int
    def __init__(self, prompt: _Optional[str] = ..., system: _Optional[str] = ..., hints: _Optional[_Union[Hints, _Mapping]] = ..., seed: _Optional[int] = ..., explain: _Optional[bool] = ..., check: _Optional[_Union[Check, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., stop: _Optional[_Iterable[str]] = ..., choices: _Optional[int] = ...) -> None: ...

class QuoteRequest(_message.Message):
    __slots__ = ("prompt", "system", "hints", "seed", "explain", "messages")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    HINTS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    system: str
    hints: Hints
    seed: int
    explain: bool
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    def __init__(self, prompt: _Optional[str] = ..., system: _Optional[str] = ..., hints: _Optional[_Union[Hints, _Mapping]] = ..., seed: _Optional[int] = ..., explain: _Optional[bool] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ...) -> None: ...

class Contribution(_message.Message):
    __slots__ = ("axis", "feature", "weight")
    AXIS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    axis: str
    feature: str
    weight: float
    def __init__(self, axis: _Optional[str] = ..., feature: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class Assessment(_message.Message):
    __slots__ = ("severity", "needs_reasoning", "severity_probs", "needs_reasoning_prob", "model_version", "adjustments", "explanation", "model_severity", "model_needs_reasoning")
    class SeverityProbsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    NEEDS_REASONING_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_PROBS_FIELD_NUMBER: _ClassVar[int]
    NEEDS_REASONING_PROB_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ADJUSTMENTS_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    MODEL_SEVERITY_FIELD_NUMBER: _ClassVar[int]
    MODEL_NEEDS_REASONING_FIELD_NUMBER: _ClassVar[int]
    severity: Severity
    needs_reasoning: bool
    severity_probs: _containers.ScalarMap[str, float]
    needs_reasoning_prob: float
    model_version: str
    adjustments: _containers.RepeatedScalarFieldContainer[str]
    explanation: _containers.RepeatedCompositeFieldContainer[Contribution]
    model_severity: Severity
    model_needs_reasoning: bool
    def __init__(self, severity: _Optional[_Union[Severity, str]] = ..., needs_reasoning: _Optional[bool] = ..., severity_probs: _Optional[_Mapping[str, float]] = ..., needs_reasoning_prob: _Optional[float] = ..., model_version: _Optional[str] = ..., adjustments: _Optional[_Iterable[str]] = ..., explanation: _Optional[_Iterable[_Union[Contribution, _Mapping]]] = ..., model_severity: _Optional[_Union[Severity, str]] = ..., model_needs_reasoning: _Optional[bool] = ...) -> None: ...

class Plan(_message.Message):
    __slots__ = ("level", "thinking_tokens", "samples", "answer_tokens", "worst_case_cost", "reasons", "policy_version", "answer_format", "vote", "model", "expected_loss", "refine", "refine_tokens", "choices")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    THINKING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    ANSWER_TOKENS_FIELD_NUMBER: _ClassVar[int]
    WORST_CASE_COST_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FORMAT_FIELD_NUMBER: _ClassVar[int]
    VOTE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_LOSS_FIELD_NUMBER: _ClassVar[int]
    REFINE_FIELD_NUMBER: _ClassVar[int]
    REFINE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    level: str
    thinking_tokens: int
    samples: int
    answer_tokens: int
    worst_case_cost: float
    reasons: _containers.RepeatedScalarFieldContainer[str]
    policy_version: str
    answer_format: str
    vote: str
    model: str
    expected_loss: float
    refine: int
    refine_tokens: int
    choices: _containers.RepeatedCompositeFieldContainer[LevelChoice]
    def __init__(self, level: _Optional[str] = ..., thinking_tokens: _Optional[int] = ..., samples: _Optional[int] = ..., answer_tokens: _Optional[int] = ..., worst_case_cost: _Optional[float] = ..., reasons: _Optional[_Iterable[str]] = ..., policy_version: _Optional[str] = ..., answer_format: _Optional[str] = ..., vote: _Optional[str] = ..., model: _Optional[str] = ..., expected_loss: _Optional[float] = ..., refine: _Optional[int] = ..., refine_tokens: _Optional[int] = ..., choices: _Optional[_Iterable[_Union[LevelChoice, _Mapping]]] = ...) -> None: ...

class LevelChoice(_message.Message):
    __slots__ = ("level", "expected_cost", "p_wrong", "expected_wrong_loss", "expected_total")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_COST_FIELD_NUMBER: _ClassVar[int]
    P_WRONG_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_WRONG_LOSS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    level: str
    expected_cost: float
    p_wrong: float
    expected_wrong_loss: float
    expected_total: float
    def __init__(self, level: _Optional[str] = ..., expected_cost: _Optional[float] = ..., p_wrong: _Optional[float] = ..., expected_wrong_loss: _Optional[float] = ..., expected_total: _Optional[float] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "thinking_tokens", "answer_tokens", "forced_tokens", "samples_run", "samples_stopped", "samples_pruned", "stop_reason")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    THINKING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ANSWER_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FORCED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_RUN_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_STOPPED_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PRUNED_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    thinking_tokens: int
    answer_tokens: int
    forced_tokens: int
    samples_run: int
    samples_stopped: int
    samples_pruned: int
    stop_reason: str
    def __init__(self, prompt_tokens: _Optional[int] = ..., thinking_tokens: _Optional[int] = ..., answer_tokens: _Optional[int] = ..., forced_tokens: _Optional[int] = ..., samples_run: _Optional[int] = ..., samples_stopped: _Optional[int] = ..., samples_pruned: _Optional[int] = ..., stop_reason: _Optional[str] = ...) -> None: ...

class Vote(_message.Message):
    __slots__ = ("answer", "count", "weight")
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    answer: str
    count: int
    weight: float
    def __init__(self, answer: _Optional[str] = ..., count: _Optional[int] = ..., weight: _Optional[float] = ...) -> None: ...

class Sample(_message.Message):
    __slots__ = ("index", "thinking", "text", "answer", "thinking_tokens", "answer_tokens", "finish_reason", "thinking_capped", "confidence")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    THINKING_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    THINKING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ANSWER_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    THINKING_CAPPED_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    index: int
    thinking: str
    text: str
    answer: str
    thinking_tokens: int
    answer_tokens: int
    finish_reason: str
    thinking_capped: bool
    confidence: float
    def __init__(self, index: _Optional[int] = ..., thinking: _Optional[str] = ..., text: _Optional[str] = ..., answer: _Optional[str] = ..., thinking_tokens: _Optional[int] = ..., answer_tokens: _Optional[int] = ..., finish_reason: _Optional[str] = ..., thinking_capped: _Optional[bool] = ..., confidence: _Optional[float] = ...) -> None: ...

class AskResponse(_message.Message):
    __slots__ = ("request_id", "text", "answer", "votes", "assessment", "plan", "usage", "cost", "balance", "samples", "latency_seconds", "verified", "voted_text", "voted_answer", "refinements", "replayed")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    VOTES_FIELD_NUMBER: _ClassVar[int]
    ASSESSMENT_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    LATENCY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    VOTED_TEXT_FIELD_NUMBER: _ClassVar[int]
    VOTED_ANSWER_FIELD_NUMBER: _ClassVar[int]
    REFINEMENTS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    text: str
    answer: str
    votes: _containers.RepeatedCompositeFieldContainer[Vote]
    assessment: Assessment
    plan: Plan
    usage: Usage
    cost: float
    balance: Balance
    samples: _containers.RepeatedCompositeFieldContainer[Sample]
    latency_seconds: float
    verified: bool
    voted_text: str
    voted_answer: str
    refinements: _containers.RepeatedCompositeFieldContainer[Refinement]
    replayed: bool
    def __init__(self, request_id: _Optional[str] = ..., text: _Optional[str] = ..., answer: _Optional[str] = ..., votes: _Optional[_Iterable[_Union[Vote, _Mapping]]] = ..., assessment: _Optional[_Union[Assessment, _Mapping]] = ..., plan: _Optional[_Union[Plan, _Mapping]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., cost: _Optional[float] = ..., balance: _Optional[_Union[Balance, _Mapping]] = ..., samples: _Optional[_Iterable[_Union[Sample, _Mapping]]] = ..., latency_seconds: _Optional[float] = ..., verified: _Optional[bool] = ..., voted_text: _Optional[str] = ..., voted_answer: _Optional[str] = ..., refinements: _Optional[_Iterable[_Union[Refinement, _Mapping]]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class Refinement(_message.Message):
    __slots__ = ("round", "text", "answer", "kept", "prompt_tokens", "answer_tokens", "finish_reason")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ANSWER_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    round: int
    text: str
    answer: str
    kept: bool
    prompt_tokens: int
    answer_tokens: int
    finish_reason: str
    def __init__(self, round: _Optional[int] = ..., text: _Optional[str] = ..., answer: _Optional[str] = ..., kept: _Optional[bool] = ..., prompt_tokens: _Optional[int] = ..., answer_tokens: _Optional[int] = ..., finish_reason: _Optional[str] = ...) -> None: ...

class QuoteResponse(_message.Message):
    __slots__ = ("assessment", "plan", "prompt_tokens", "balance")
    ASSESSMENT_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    assessment: Assessment
    plan: Plan
    prompt_tokens: int
    balance: Balance
    def __init__(self, assessment: _Optional[_Union[Assessment, _Mapping]] = ..., plan: _Optional[_Union[Plan, _Mapping]] = ..., prompt_tokens: _Optional[int] = ..., balance: _Optional[_Union[Balance, _Mapping]] = ...) -> None: ...

class TextDelta(_message.Message):
    __slots__ = ("sample", "phase", "text", "refine_round")
    class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PHASE_UNSPECIFIED: _ClassVar[TextDelta.Phase]
        PHASE_THINKING: _ClassVar[TextDelta.Phase]
        PHASE_ANSWER: _ClassVar[TextDelta.Phase]
    PHASE_UNSPECIFIED: TextDelta.Phase
    PHASE_THINKING: TextDelta.Phase
    PHASE_ANSWER: TextDelta.Phase
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    REFINE_ROUND_FIELD_NUMBER: _ClassVar[int]
    sample: int
    phase: TextDelta.Phase
    text: str
    refine_round: int
    def __init__(self, sample: _Optional[int] = ..., phase: _Optional[_Union[TextDelta.Phase, str]] = ..., text: _Optional[str] = ..., refine_round: _Optional[int] = ...) -> None: ...

class AskStreamResponse(_message.Message):
    __slots__ = ("plan", "delta", "result", "request_id")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    plan: QuoteResponse
    delta: TextDelta
    result: AskResponse
    request_id: str
    def __init__(self, plan: _Optional[_Union[QuoteResponse, _Mapping]] = ..., delta: _Optional[_Union[TextDelta, _Mapping]] = ..., result: _Optional[_Union[AskResponse, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetBalanceRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetBalanceResponse(_message.Message):
    __slots__ = ("balance",)
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    balance: Balance
    def __init__(self, balance: _Optional[_Union[Balance, _Mapping]] = ...) -> None: ...

class Balance(_message.Message):
    __slots__ = ("tenant", "budget", "spent", "reserved", "remaining", "window", "window_start", "window_end", "currency")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    SPENT_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    budget: float
    spent: float
    reserved: float
    remaining: float
    window: str
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    currency: str
    def __init__(self, tenant: _Optional[str] = ..., budget: _Optional[float] = ..., spent: _Optional[float] = ..., reserved: _Optional[float] = ..., remaining: _Optional[float] = ..., window: _Optional[str] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., currency: _Optional[str] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("request_id", "correct", "true_severity", "true_needs_reasoning", "comment")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    TRUE_SEVERITY_FIELD_NUMBER: _ClassVar[int]
    TRUE_NEEDS_REASONING_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    correct: bool
    true_severity: Severity
    true_needs_reasoning: bool
    comment: str
    def __init__(self, request_id: _Optional[str] = ..., correct: _Optional[bool] = ..., true_severity: _Optional[_Union[Severity, str]] = ..., true_needs_reasoning: _Optional[bool] = ..., comment: _Optional[str] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("feedback_id",)
    FEEDBACK_ID_FIELD_NUMBER: _ClassVar[int]
    feedback_id: str
    def __init__(self, feedback_id: _Optional[str] = ...) -> None: ...

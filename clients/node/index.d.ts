// Types for ponder-client (ponder.js). Field names are the .proto's (protos/ponder/v1/*.proto):
// the loader keeps their case. As loaded: 64-bit integers are strings, enums their names
// ("SEVERITY_HIGH"), timestamps { seconds, nanos }, and replies carry every field (defaults set).

import type * as grpc from "@grpc/grpc-js";

export { grpc };

/** Where the .proto files this package loads are (its own protos/, or PONDER_PROTOS). */
export const PROTOS: string;

export type Severity = "SEVERITY_UNSPECIFIED" | "SEVERITY_LOW" | "SEVERITY_MEDIUM" | "SEVERITY_HIGH";

export interface ConnectOptions {
  /** HOST:PORT (default PONDER_ADDRESS, else 127.0.0.1:50051). */
  address?: string;
  /** The tenant's (or, for admin calls, an admin) `pnd_…` key. */
  token?: string;
  /** PEM file of the CA that signed the daemon's certificate (TLS on). */
  ca?: string;
  /** This client's certificate and key, PEM files (mutual TLS). */
  cert?: string;
  key?: string;
  /** TLS with the system's roots. */
  tls?: boolean;
  /** The name to verify in the daemon's certificate, when the address is not one it names. */
  serverName?: string;
  /** grpc-js client interceptors, applied to every call. */
  interceptors?: grpc.Interceptor[];
}

export interface Timestamp {
  seconds: string;
  nanos: number;
}

export interface Hints {
  severity_floor?: Severity;
  max_cost?: number;
  samples?: number;
  thinking_tokens?: number;
  level?: string;
  answer_format?: "" | "auto" | "number" | "choice" | "phrase" | "free";
}

export interface Check {
  number?: number;
  regex?: string;
  choice?: string;
  any_of?: string[];
}

export interface AskRequest {
  prompt: string;
  system?: string;
  hints?: Hints;
  seed?: number | string;
  explain?: boolean;
  check?: Check;
  /** Set per call to a fresh UUID when omitted (so retries are charged once); "" sends none. */
  idempotency_key?: string;
  /** The sampler for this request's samples: 0 to 2 (0 greedy); absent: the model's. */
  temperature?: number;
  /** Nucleus sampling, above 0 and at most 1; absent: the model's. */
  top_p?: number;
  /** Up to 4 non-empty stop strings: each sample's answer ends before the first it writes. */
  stop?: string[];
  /** Full answers wanted back in AskResponse.samples (OpenAI's n): each sample runs to its end. */
  choices?: number;
}

export type QuoteRequest = Omit<AskRequest, "check" | "idempotency_key" | "temperature" | "top_p" | "stop" | "choices">;

export interface Contribution {
  axis: string;
  feature: string;
  weight: number;
}

export interface Assessment {
  severity: Severity;
  needs_reasoning: boolean;
  severity_probs: Record<string, number>;
  needs_reasoning_prob: number;
  model_version: string;
  adjustments: string[];
  explanation: Contribution[];
  model_severity: Severity;
  model_needs_reasoning: boolean;
}

export interface Plan {
  level: string;
  thinking_tokens: number;
  samples: number;
  answer_tokens: number;
  worst_case_cost: number;
  reasons: string[];
  policy_version: string;
  answer_format: string;
  vote: string;
  model: string;
  expected_loss?: number;
  refine: number;
  refine_tokens: number;
  choices: LevelChoice[];
}

export interface LevelChoice {
  level: string;
  expected_cost: number;
  p_wrong: number;
  expected_wrong_loss: number;
  expected_total: number;
}

export interface Usage {
  prompt_tokens: number;
  thinking_tokens: number;
  answer_tokens: number;
  forced_tokens: number;
  samples_run: number;
  samples_stopped: number;
  samples_pruned: number;
  stop_reason: string;
}

export interface Balance {
  tenant: string;
  budget: number;
  spent: number;
  reserved: number;
  remaining: number;
  window: string;
  window_start: Timestamp;
  window_end: Timestamp;
  currency: string;
}

export interface Vote {
  answer: string;
  count: number;
  weight: number;
}

export interface Sample {
  index: number;
  thinking: string;
  text: string;
  answer: string;
  thinking_tokens: number;
  answer_tokens: number;
  finish_reason: string;
  thinking_capped: boolean;
  confidence: number;
}

export interface AskResponse {
  request_id: string;
  text: string;
  answer: string;
  votes: Vote[];
  assessment: Assessment;
  plan: Plan;
  usage: Usage;
  cost: number;
  balance: Balance;
  samples: Sample[];
  latency_seconds: number;
  verified?: boolean;
  voted_text: string;
  voted_answer: string;
  refinements: unknown[];
  /** True: the stored answer to this idempotency key, not run or charged again. */
  replayed: boolean;
}

export interface QuoteResponse {
  assessment: Assessment;
  plan: Plan;
  prompt_tokens: number;
  balance: Balance;
}

export interface TextDelta {
  sample: number;
  phase: "PHASE_UNSPECIFIED" | "PHASE_THINKING" | "PHASE_ANSWER";
  text: string;
  refine_round: number;
}

export interface AskStreamResponse {
  /** Which of plan, delta and result this event is. */
  event: "plan" | "delta" | "result";
  plan?: QuoteResponse;
  delta?: TextDelta;
  result?: AskResponse;
  request_id: string;
}

export interface FeedbackRequest {
  request_id: string;
  correct?: boolean;
  true_severity?: Severity;
  true_needs_reasoning?: boolean;
  comment?: string;
}

type Callback<T> = (err: grpc.ServiceError | null, reply: T) => void;

interface Unary<Req, Res> {
  (request: Req, callback: Callback<Res>): grpc.ClientUnaryCall;
  (request: Req, options: Partial<grpc.CallOptions>, callback: Callback<Res>): grpc.ClientUnaryCall;
  (request: Req, metadata: grpc.Metadata, options: Partial<grpc.CallOptions>, callback: Callback<Res>): grpc.ClientUnaryCall;
}

interface ServerStream<Req, Res> {
  (request: Req, options?: Partial<grpc.CallOptions>): grpc.ClientReadableStream<Res>;
  (request: Req, metadata: grpc.Metadata, options?: Partial<grpc.CallOptions>): grpc.ClientReadableStream<Res>;
}

export interface PonderService extends grpc.Client {
  Ask: Unary<AskRequest, AskResponse>;
  AskStream: ServerStream<AskRequest, AskStreamResponse>;
  Quote: Unary<QuoteRequest, QuoteResponse>;
  GetBalance: Unary<Record<string, never>, { balance: Balance }>;
  Feedback: Unary<FeedbackRequest, { feedback_id: string }>;
}

/** The AdminService calls (protos/ponder/v1/admin.proto), with an admin key. */
export interface AdminService extends grpc.Client {
  [method: string]: Unary<Record<string, unknown>, any> | any;
}

export interface Connection {
  ponder: PonderService;
  admin: AdminService;
  close(): void;
}

export function connect(options?: ConnectOptions): Connection;

export interface DecodedError {
  code: grpc.status;
  status: string;
  message: string;
  /** The google.rpc.ErrorInfo reason, e.g. "BUDGET_EXHAUSTED" ("" when none). */
  reason: string;
  metadata: Record<string, string>;
  /** Every detail of the grpc-status-details-bin trailer, unpacked, with its `type`. */
  details: Array<{ type: string; [field: string]: unknown }>;
}

export function decodeError(err: grpc.ServiceError): DecodedError;

/** The request as sent: Ask and AskStream get a fresh UUID idempotency key unless one is given. */
export function withIdempotencyKey<T extends object>(method: string, request: T): T & { idempotency_key?: string };

"""The Ponder service: thin handlers that translate, call the transport-neutral Asking (asking.py), translate back."""

from __future__ import annotations

from typing import AsyncIterator

import grpc

from ponder.v1 import ponder_pb2, ponder_pb2_grpc
from ponderd.clock import Clock
from ponderd.errors import PermissionDenied
from ponderd.ledger.accounts import Accounts
from ponderd.ledger.budgets import Budgets
from ponderd.ledger.idempotency import Idempotency
from ponderd.planning.policy_file import PolicyHolder
from ponderd.request.pipeline import Pipeline
from ponderd.serve import convert
from ponderd.serve.asking import Asking
from ponderd.serve.auth import principal
from ponderd.serve.boundary import REQUEST_ID_HEADER, rpc, rpc_stream


class PonderService(ponder_pb2_grpc.PonderServiceServicer):
    def __init__(
        self, pipeline: Pipeline, keys: Idempotency, budgets: Budgets, policies: PolicyHolder, accounts: Accounts, clock: Clock,
    ) -> None:
        self.pipeline = pipeline
        # The request handling gRPC shares with the HTTP API (asking.py): claim, pipeline, reply.
        self.asking = Asking(pipeline, keys)
        self.keys = keys
        self.budgets = budgets
        # The currency balances are shown in.
        self.policies = policies
        # Feedback is kept by the ledger backend (ledger/sqlite/feedback.py owns its SQL).
        self.accounts = accounts
        self.clock = clock

    @rpc
    async def Ask(self, request: ponder_pb2.AskRequest, context: grpc.aio.ServicerContext) -> ponder_pb2.AskResponse:
        return await self.asking.ask(principal(), request, context.time_remaining())

    @rpc_stream
    async def AskStream(
        self, request: ponder_pb2.AskStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ponder_pb2.AskStreamResponse]:
        events = self.asking.stream(principal(), request, context.time_remaining())
        try:
            async for event in events:
                if event.HasField("plan"):
                    # With the first reply (a stream is not retried after it anyway): the error after it has it too.
                    await context.send_initial_metadata(((REQUEST_ID_HEADER, event.request_id),))
                yield event
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    @rpc
    async def Quote(self, request: ponder_pb2.QuoteRequest, context: grpc.aio.ServicerContext) -> ponder_pb2.QuoteResponse:
        return await self.asking.quote(principal(), request)

    @rpc
    async def GetBalance(self, request: ponder_pb2.GetBalanceRequest, context: grpc.aio.ServicerContext) -> ponder_pb2.GetBalanceResponse:
        who = principal()
        if who.tenant is None:
            raise PermissionDenied("an admin key has no balance; use 'ponder admin tenant list'")
        balance = convert.balance(await self.budgets.balance(who.tenant), self.policies.current().currency)
        return ponder_pb2.GetBalanceResponse(balance=balance)

    @rpc
    async def Feedback(self, request: ponder_pb2.FeedbackRequest, context: grpc.aio.ServicerContext) -> ponder_pb2.FeedbackResponse:
        who = principal()
        if who.tenant is None:
            raise PermissionDenied("feedback is given with the key of the tenant that asked")
        feedback_id = await self.accounts.record_feedback(
            who.tenant,
            request.request_id,
            request.correct if request.HasField("correct") else None,
            convert.severity(request.true_severity),
            request.true_needs_reasoning if request.HasField("true_needs_reasoning") else None,
            request.comment,
        )
        return ponder_pb2.FeedbackResponse(feedback_id=feedback_id)

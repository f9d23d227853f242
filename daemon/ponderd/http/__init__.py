"""The OpenAI-compatible HTTP API beside gRPC (docs/http.md): a Starlette app served by uvicorn in the daemon's loop."""

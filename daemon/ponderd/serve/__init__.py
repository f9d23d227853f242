"""The servers: gRPC services, transport (TCP, Unix sockets, TLS), auth, access logs, metrics, jobs, lifecycle.

The only package that knows about grpc. app.py is the composition root: it builds
the ledger backend, the engine, the classifier and the pipeline, and passes them in.
"""

"""`ponder serve`, `ponderd serve` and bare `ponderd`: the daemon's flags, and the settings they give."""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any

from ponderd.settings import Settings, load_settings


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """The daemon's flags, shared by `ponder serve`, `ponderd serve` and `ponderd`."""
    p.add_argument("--config", help="TOML config file (or PONDER_CONFIG)")
    p.add_argument("--listen", help="HOST:PORT or unix:///PATH, or several, comma-separated (or PONDER_LISTEN; default 127.0.0.1:50051)")
    p.add_argument("--state-dir", help="database and credentials directory (or PONDER_STATE_DIR)")
    p.add_argument("--policy-file", help="policy TOML (or PONDER_POLICY_FILE; default policies/default.toml)")
    p.add_argument("--log-level", help="debug, info, warning or error (or PONDER_LOG_LEVEL)")
    p.add_argument("--log-format", choices=["text", "json"], help="log lines as text or JSON objects (or PONDER_LOG_FORMAT)")
    p.add_argument("--tls-cert", help="server certificate chain, PEM (or PONDER_TLS_CERT; with --tls-key: TLS on)")
    p.add_argument("--tls-key", help="the server certificate's private key (or PONDER_TLS_KEY)")
    p.add_argument("--tls-client-ca", help="require client certificates this CA signed: mutual TLS (or PONDER_TLS_CLIENT_CA)")
    p.add_argument("--metrics-listen", help='Prometheus metrics HOST:PORT, "" for none (or PONDER_METRICS_LISTEN; default 127.0.0.1:9464)')
    p.add_argument("--http-listen", help='OpenAI-compatible HTTP API HOST:PORT, "" for none (or PONDER_HTTP_LISTEN; default off; docs/http.md)')


def cmd_serve(args: argparse.Namespace) -> int:
    from ponderd.serve.server import run
    from ponderd.settings import SettingsError

    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        print(f"{args.prog_name}: {exc}", file=sys.stderr)
        return 2
    return run(settings)


def settings_from_args(args: argparse.Namespace) -> Settings:
    def section(**values: Any) -> dict[str, Any] | None:
        given = {k: v for k, v in values.items() if v is not None}
        return given or None

    return load_settings(
        pathlib.Path(args.config) if args.config else None,
        overrides={
            "listen": args.listen,
            "state_dir": args.state_dir,
            "policy_file": args.policy_file,
            "log_level": args.log_level,
            "log_format": args.log_format,
            "tls": section(cert=args.tls_cert, key=args.tls_key, client_ca=args.tls_client_ca),
            "metrics": section(listen=args.metrics_listen),
            "http": section(listen=args.http_listen),
        },
    )

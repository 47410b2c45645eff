"""Local outbound mail sink: an SMTP server (aiosmtpd) on loopback that accepts every message and
keeps it, so the help desk's replies really travel over SMTP in the local stack and in tests.
Local only: it relays nothing and has no authentication.

    python -m cluster.local.mailsink [--host 127.0.0.1] [--port 2526] [--dir .data/mail] [--keep 500]

Each accepted message is written as `<dir>/<received>-<n>.eml` (the bytes as received, with the
envelope in `X-Sink-Mail-From` / `X-Sink-Rcpt-To` headers prepended) and listed in
`<dir>/index.json`: the newest `keep` messages, oldest first, each with its file, envelope,
Message-ID, In-Reply-To, References and Subject. Older files are deleted with their entry.
`read_index()` and `find()` are what tests use.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = ROOT / ".data" / "mail"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 2526
DEFAULT_KEEP = 500
MAX_BYTES = 50 * 1024 * 1024

log = logging.getLogger("pitboss.mailsink")


def index_path(directory: Path = DEFAULT_DIR) -> Path:
    return directory / "index.json"


def read_index(directory: Path = DEFAULT_DIR) -> list[dict[str, Any]]:
    """The kept messages, oldest first (empty when the sink has received nothing yet)."""
    try:
        data = json.loads(index_path(directory).read_text())
    except (OSError, ValueError):
        return []
    return data if isinstance(data, list) else []


def find(directory: Path = DEFAULT_DIR, **match: str) -> list[dict[str, Any]]:
    """Index entries whose fields equal every `match` value (e.g. `in_reply_to="<...>"`)."""
    return [e for e in read_index(directory) if all(e.get(k) == v for k, v in match.items())]


class Sink:
    def __init__(self, directory: Path, keep: int) -> None:
        self.directory = directory
        self.keep = keep
        self.count = 0
        self.directory.mkdir(parents=True, exist_ok=True)
        self.entries = read_index(directory)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        self.count += 1
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{self.count:06d}.eml"
        head = f"X-Sink-Mail-From: {envelope.mail_from}\r\nX-Sink-Rcpt-To: {', '.join(envelope.rcpt_tos)}\r\n"
        (self.directory / name).write_bytes(head.encode("utf-8", "replace") + raw)
        msg = BytesParser(policy=policy.default).parsebytes(raw, headersonly=True)
        self.entries.append(
            {
                "file": name,
                "mail_from": envelope.mail_from,
                "rcpt_to": list(envelope.rcpt_tos),
                "message_id": str(msg.get("Message-ID") or ""),
                "in_reply_to": str(msg.get("In-Reply-To") or ""),
                "references": str(msg.get("References") or ""),
                "subject": str(msg.get("Subject") or ""),
                "received_at": time.time(),
            }
        )
        for old in self.entries[: -self.keep]:
            with contextlib.suppress(OSError):
                (self.directory / old["file"]).unlink()
        self.entries = self.entries[-self.keep :]
        # Written whole then renamed, so a reader never sees half an index.
        tmp = index_path(self.directory).with_suffix(".tmp")
        tmp.write_text(json.dumps(self.entries, indent=1))
        tmp.replace(index_path(self.directory))
        log.info("kept %s from %s to %s", name, envelope.mail_from, envelope.rcpt_tos)
        return "250 2.0.0 kept by the local mail sink"


async def serve(host: str, port: int, directory: Path, keep: int) -> None:
    sink = Sink(directory, keep)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            sink, data_size_limit=MAX_BYTES, enable_SMTPUTF8=True, decode_data=False, ident="Pitboss local mail sink"
        ),
        host=host,
        port=port,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("mail sink on %s:%s writing to %s", host, port, directory)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.local.mailsink", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--keep", type=int, default=DEFAULT_KEEP)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every SMTP line at INFO
    asyncio.run(serve(args.host, args.port, args.dir, max(1, args.keep)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

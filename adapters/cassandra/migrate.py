"""Apply the CQL migrations in `schemas/cql/` in order, once each, and keep the keyspace's
replication equal to the configuration.

    python -m adapters.cassandra.migrate
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

from cassandra.cluster import Session

from adapters.cassandra.session import connect
from adapters.settings import Settings, get_settings

log = logging.getLogger("pitboss.migrate")
CQL_DIR = Path(__file__).resolve().parents[2] / "schemas" / "cql"
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.cql$")


def replication_cql(settings: Settings) -> str:
    parts = ", ".join(f"'{dc}': {rf}" for dc, rf in sorted(settings.replication_map().items()))
    return f"{{'class': 'NetworkTopologyStrategy', {parts}}}"


def statements(text: str) -> list[str]:
    body = "\n".join(line for line in text.splitlines() if not line.strip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def ensure_keyspace(session: Session, settings: Settings) -> None:
    ks = settings.cassandra_keyspace
    repl = replication_cql(settings)
    session.execute(f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {repl}")
    session.execute(f"ALTER KEYSPACE {ks} WITH replication = {repl}")


def migrate(settings: Settings) -> list[str]:
    cluster, session = connect(settings)
    try:
        ensure_keyspace(session, settings)
        session.set_keyspace(settings.cassandra_keyspace)
        session.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version int PRIMARY KEY, name text, checksum text, applied_at timestamp)"
        )
        done = {r["version"]: r for r in session.execute("SELECT version, name, checksum FROM schema_migrations")}
        applied = []
        for path in sorted(CQL_DIR.glob("*.cql")):
            match = _NAME.match(path.name)
            if match is None:
                raise SystemExit(f"migration file name must look like 001_name.cql: {path.name}")
            version = int(match.group(1))
            text = path.read_text()
            checksum = hashlib.sha256(text.encode()).hexdigest()
            if version in done:
                if done[version]["checksum"] != checksum:
                    log.warning("migration %s changed after it was applied; not re-applied", path.name)
                continue
            for stmt in statements(text):
                session.execute(stmt)
            session.execute(
                "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (%s, %s, %s, %s)",
                (version, path.name, checksum, datetime.now(UTC)),
            )
            applied.append(path.name)
        return applied
    finally:
        cluster.shutdown()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    applied = migrate(get_settings())
    print(f"migrations applied: {', '.join(applied) if applied else 'none (up to date)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

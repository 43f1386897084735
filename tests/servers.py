"""Private Redis servers for tests: clusters, TLS, passwords and ACL users.

Everything builds on :class:`tests.devserver.RedisProcess` (a ``redis-server`` on
``127.0.0.1`` and a free port in its own temporary directory). Nothing here touches a
Redis the test run did not start itself.
"""

from __future__ import annotations

import functools
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.devserver import RedisProcess, find_redis_cli, find_redis_server, free_port

__all__ = [
    "RedisCluster",
    "TlsFiles",
    "acl_redis",
    "make_tls_files",
    "password_redis",
    "redis_command",
    "tls_redis",
    "tls_support",
    "tls_supported",
]

CLUSTER_ARGS = (
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
)


# -- a tiny synchronous RESP client (no dependency on redis-py's connection state) ---------


def _encode(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def redis_command(port: int, *parts: str, host: str = "127.0.0.1", timeout: float = 2.0) -> str:
    """Send one command over a fresh plain TCP connection; return the reply as text.

    Simple and bulk string replies come back as text, integers as their digits, and an
    error reply raises ``RuntimeError``. Arrays are not supported (not needed here).
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(_encode(*parts))
        buf = b""
        while b"\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed before a reply")
            buf += chunk
        head, _, rest = buf.partition(b"\r\n")
        kind, value = head[:1], head[1:].decode()
        if kind == b"-":
            raise RuntimeError(value)
        if kind in (b"+", b":"):
            return value
        if kind == b"$":
            length = int(value)
            if length < 0:
                return ""
            while len(rest) < length + 2:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("connection closed in the middle of a reply")
                rest += chunk
            return rest[:length].decode()
        raise RuntimeError(f"unsupported reply type {kind!r}")


# -- cluster ------------------------------------------------------------------------------


class RedisCluster:
    """A local Redis Cluster of ``masters`` master nodes, 3 by default, each with
    ``replicas`` replicas (none by default; ``replicas=1`` makes the six-node cluster
    of the failover tests).

    ``with RedisCluster() as cluster:`` starts the nodes, joins them with
    ``redis-cli --cluster create`` and waits until every node reports
    ``cluster_state:ok`` (and every replica is linked to its master). Connect with
    ``redis.asyncio.cluster.RedisCluster.from_url(cluster.url)`` or with
    ``startup_nodes`` (``(host, port)`` pairs). ``node_timeout`` (ms) is
    ``cluster-node-timeout``: how long a master must be silent before its replica
    takes over (keep it low in failover tests).
    """

    def __init__(
        self,
        masters: int = 3,
        *args: str,
        replicas: int = 0,
        node_timeout: int = 5000,
        ready_timeout: float = 20.0,
    ) -> None:
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self.ready_timeout = ready_timeout
        self.replicas = replicas
        self._args = ("--cluster-node-timeout", str(node_timeout), *args)
        self.nodes = [self._new_node() for _ in range(masters * (1 + replicas))]

    def _new_node(self) -> RedisProcess:
        # An explicit bus port (instead of PORT+10000) lifts Redis' "port <= 55535" limit
        # for cluster nodes and keeps the bus off ports someone else may be using.
        return RedisProcess(*CLUSTER_ARGS, "--cluster-port", str(free_port()), *self._args)

    def seeds_url(self, *ports: int) -> str:
        """A URL naming several seed nodes: ``redis://127.0.0.1:P1,127.0.0.1:P2``
        (every node by default)."""
        chosen = ports or tuple(self.ports)
        return "redis://" + ",".join(f"{self.host}:{port}" for port in chosen)

    def node(self, port: int) -> RedisProcess:
        """The node listening on ``port``."""
        return next(n for n in self.nodes if n.port == port)

    def nodes_table(self, port: int | None = None) -> list[dict[str, str]]:
        """``CLUSTER NODES`` as seen by a live node: one dict per node with ``id``,
        ``port``, ``flags``, ``master`` (the master's id, or ``-``), ``slots``
        (space-separated ranges) and ``state``."""
        live = [n.port for n in self.nodes if n.is_running()]
        text = redis_command(port or live[0], "CLUSTER", "NODES")
        rows = []
        for line in text.strip().splitlines():
            f = line.split()
            rows.append(
                {
                    "id": f[0],
                    "port": f[1].split("@")[0].rsplit(":", 1)[1],
                    "flags": f[2],
                    "master": f[3],
                    "state": f[7],
                    "slots": " ".join(f[8:]),
                }
            )
        return rows

    def master_of_slot(self, slot: int, port: int | None = None) -> int | None:
        """The port of the master that serves ``slot`` as a live node sees it (None
        while none does, as during a failover)."""
        for row in self.nodes_table(port):
            if "master" not in row["flags"] or "fail" in row["flags"]:
                continue
            for part in row["slots"].split():
                if part.startswith("["):
                    continue  # a slot being migrated
                lo, _, hi = part.partition("-")
                if int(lo) <= slot <= int(hi or lo):
                    return int(row["port"])
        return None

    def keyslot(self, key: str) -> int:
        """``CLUSTER KEYSLOT key``."""
        return int(redis_command(self.ports[0], "CLUSTER", "KEYSLOT", key))

    @property
    def host(self) -> str:
        return self.nodes[0].host

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [(node.host, node.port) for node in self.nodes]

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT`` of the first node (any node works as an entry point)."""
        return f"redis://{self.host}:{self.nodes[0].port}"

    def start(self) -> Self:
        try:
            for index in range(len(self.nodes)):
                self._start_node(index)
            self._create()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, index: int, attempts: int = 3) -> None:
        for attempt in range(attempts):
            try:
                self.nodes[index].start()
                return
            except RuntimeError as exc:
                # The bus port was taken between free_port() and the bind: pick new ports.
                if "Address already in use" not in str(exc) or attempt == attempts - 1:
                    raise
                self.nodes[index].close()
                self.nodes[index] = self._new_node()

    def _create(self) -> None:
        cli = find_redis_cli()
        if cli is None:
            raise RuntimeError("redis-cli not found (needed for `redis-cli --cluster create`)")
        cmd = [
            cli,
            "--cluster",
            "create",
            *(f"{host}:{port}" for host, port in self.startup_nodes),
            "--cluster-replicas",
            str(self.replicas),
            "--cluster-yes",
        ]
        result = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=self.ready_timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"`{' '.join(cmd)}` failed with code {result.returncode}:\n"
                f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        pending = list(self.nodes)
        info = ""
        while pending:
            node = pending[0]
            try:
                info = redis_command(node.port, "CLUSTER", "INFO")
            except (OSError, RuntimeError) as exc:
                info = repr(exc)
            if "cluster_state:ok" in info and f"cluster_known_nodes:{len(self.nodes)}" in info:
                if self.replicas and not self._linked(node.port):
                    info = f"{info}\n(a replica is not linked to its master yet)"
                else:
                    pending.pop(0)
                    continue
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"cluster node {node.port} not ok after {self.ready_timeout:.0f}s:\n{info}\n"
                    f"{node.log_tail()}"
                )
            time.sleep(0.01)

    def _linked(self, port: int) -> bool:
        """A replica's link to its master is up and synced (a master is linked)."""
        info = redis_command(port, "INFO", "replication")
        return "role:master" in info or "master_link_status:up" in info

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# -- TLS ----------------------------------------------------------------------------------


@functools.cache
def tls_support() -> tuple[bool, str]:
    """Whether this ``redis-server`` build supports TLS, and the verified reason why.

    Runs ``redis-server --port 0 --tls-port 0``: a TLS build accepts the directive and
    exits with "Configured to not listen anywhere"; a build without TLS rejects
    ``tls-port`` as a bad directive.
    """
    binary = find_redis_server()
    if binary is None:
        return False, "no redis-server binary found"
    with tempfile.TemporaryDirectory(prefix="asyncjobs-tlscheck-") as tmp:
        try:
            result = subprocess.run(
                [binary, "--port", "0", "--tls-port", "0", "--save", "", "--dir", tmp],
                cwd=tmp,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False, f"{binary} --tls-port 0 --port 0 did not exit within 10s"
    output = result.stdout + result.stderr
    if "not listen anywhere" in output:
        return True, f"{binary} accepts --tls-port"
    if "Bad directive" in output:
        return False, f"{binary} rejects --tls-port (built without TLS): Bad directive"
    return False, f"{binary} --tls-port 0 gave an unexpected answer:\n{output[-1000:]}"


def tls_supported() -> bool:
    return tls_support()[0]


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA plus a server and a client certificate signed by it (PEM files).

    The server certificate is valid for ``localhost`` and ``127.0.0.1``.
    """

    dir: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def client_context(self, *, with_client_cert: bool = False) -> ssl.SSLContext:
        """An ``ssl`` client context trusting the CA (optionally presenting the client cert)."""
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        if with_client_cert:
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context

    def redis_kwargs(self, *, with_client_cert: bool = False) -> dict[str, str]:
        """Keyword arguments for ``redis.Redis(..., ssl=True, **kwargs)`` / ``from_url``."""
        kwargs = {"ssl_ca_certs": str(self.ca_cert)}
        if with_client_cert:
            kwargs |= {"ssl_certfile": str(self.client_cert), "ssl_keyfile": str(self.client_key)}
        return kwargs

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command-line tool is needed to make test certificates")
    result = subprocess.run(
        [openssl, *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stderr[-2000:]}")


def make_tls_files(directory: Path | None = None, *, days: int = 2) -> TlsFiles:
    """Create a self-signed CA and server/client certificates with the ``openssl`` CLI.

    Files go to ``directory`` (a new temporary directory by default; remove it with
    :meth:`TlsFiles.cleanup`). Uses P-256 EC keys, so this takes a few milliseconds.
    """
    out = Path(tempfile.mkdtemp(prefix="asyncjobs-tls-")) if directory is None else directory
    out.mkdir(parents=True, exist_ok=True)
    key_opts = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req", "-x509", "-new", *key_opts, "-keyout", "ca.key", "-out", "ca.crt",
        "-days", str(days), "-subj", "/CN=asyncjobs test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=out,
    )  # fmt: skip
    (out / "server.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
    )
    (out / "client.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=clientAuth\n"
    )
    for name, cn in (("server", "localhost"), ("client", "asyncjobs test client")):
        _openssl(
            "req", "-new", *key_opts, "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={cn}",
            cwd=out,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", str(days),
            "-extfile", f"{name}.ext",
            cwd=out,
        )  # fmt: skip
    return TlsFiles(
        dir=out,
        ca_cert=out / "ca.crt",
        ca_key=out / "ca.key",
        server_cert=out / "server.crt",
        server_key=out / "server.key",
        client_cert=out / "client.crt",
        client_key=out / "client.key",
    )


def tls_redis(files: TlsFiles, *args: str, auth_clients: bool = False) -> RedisProcess:
    """A (not yet started) TLS-only RedisProcess: ``--port 0 --tls-port PORT``.

    With ``auth_clients=True`` the server requires a client certificate
    (``TlsFiles.client_cert``); the readiness PING then presents it. Its ``url`` is
    ``rediss://127.0.0.1:PORT/0``; connect with ``ssl_ca_certs=files.ca_cert``.
    """
    tls_args = [
        "--tls-cert-file",
        str(files.server_cert),
        "--tls-key-file",
        str(files.server_key),
        "--tls-ca-cert-file",
        str(files.ca_cert),
        "--tls-auth-clients",
        "yes" if auth_clients else "no",
    ]
    context = files.client_context(with_client_cert=auth_clients)
    return RedisProcess(*tls_args, *args, tls=True, ssl_context=context)


# -- authentication -----------------------------------------------------------------------


def password_redis(password: str, *args: str) -> RedisProcess:
    """A (not yet started) RedisProcess with ``--requirepass password``.

    Connect with ``proc.make_url(password=password)`` or ``password=`` on the client.
    """
    return RedisProcess("--requirepass", password, *args)


def acl_redis(
    username: str,
    password: str,
    commands: Sequence[str],
    *args: str,
    key_patterns: Sequence[str] = ("{asyncjobs}:*",),
    channel_patterns: Sequence[str] = ("{asyncjobs}:*",),
    admin_password: str | None = None,
) -> RedisProcess:
    """A (not yet started) RedisProcess whose ACL file defines one restricted user.

    ``username``/``password`` may run only ``commands`` (names such as ``"get"``, or ACL
    rules such as ``"+@read"``/``"-flushall"``; bare names get a ``+``), on keys matching
    ``key_patterns`` and pub/sub channels matching ``channel_patterns``. The ``default``
    user is disabled unless ``admin_password`` is given, in which case it may do anything
    with that password. Connect with ``proc.make_url(username=..., password=...)``.
    """
    for value in (username, password, admin_password or "", *key_patterns, *channel_patterns):
        if any(ch.isspace() for ch in value):
            raise ValueError(f"ACL values cannot contain whitespace: {value!r}")
    rules = [rule if rule[:1] in "+-" else f"+{rule}" for rule in commands]
    keys = [f"~{pattern}" for pattern in key_patterns]
    channels = [f"&{pattern}" for pattern in channel_patterns]
    user = " ".join(
        ["user", username, "on", f">{password}", "resetkeys", *keys, "resetchannels", *channels]
        + ["-@all", *rules]
    )
    if admin_password is None:
        default = "user default off resetpass resetkeys resetchannels -@all"
    else:
        default = f"user default on >{admin_password} ~* &* +@all"
    proc = RedisProcess(*args)
    acl_file = proc.dir / "users.acl"
    acl_file.write_text(f"{default}\n{user}\n")
    proc.args += ["--aclfile", str(acl_file)]
    return proc

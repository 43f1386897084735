"""A local Redis Sentinel deployment for tests: a master, a replica, three Sentinels.

Every process is a :class:`tests.devserver.RedisProcess` on ``127.0.0.1`` and a free
port, in its own temporary directory; :meth:`SentinelSetup.stop` tears all down. The
Sentinels decide fast (``down-after-milliseconds`` 1000, ``failover-timeout`` 4000), so
a fault test sees a failover complete in a few seconds.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Self

from tests.devserver import RedisProcess
from tests.servers import redis_command

__all__ = ["MASTER", "SentinelProcess", "SentinelSetup"]

MASTER = "mymaster"


class SentinelProcess(RedisProcess):
    """``redis-server sentinel.conf --sentinel``: a Sentinel monitoring one master."""

    def __init__(
        self,
        master_port: int,
        *,
        name: str = MASTER,
        quorum: int = 2,
        password: str | None = None,
        master_password: str | None = None,
    ) -> None:
        super().__init__("--sentinel")
        self.conf = self.dir / "sentinel.conf"
        lines = [
            f"sentinel monitor {name} 127.0.0.1 {master_port} {quorum}",
            f"sentinel down-after-milliseconds {name} 1000",
            f"sentinel failover-timeout {name} 4000",
            f"sentinel parallel-syncs {name} 1",
        ]
        if password is not None:
            lines.append(f"requirepass {password}")
        if master_password is not None:
            lines.append(f"sentinel auth-pass {name} {master_password}")
        self.conf.write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        # A Sentinel rewrites its config file: it must come first, before the options.
        binary, *rest = super().command()
        cleaned: list[str] = []
        skip = False
        for a in rest:  # persistence options do not apply to a Sentinel
            if skip:
                skip = False
                continue
            if a in ("--save", "--appendonly"):
                skip = True
                continue
            cleaned.append(a)
        return [binary, str(self.conf), *cleaned]


class SentinelSetup:
    """A master, one replica of it (``replicas=2``: two) and three Sentinels (quorum
    2), all started by :meth:`start` (or ``with``), which returns once every Sentinel
    knows the replicas and the other Sentinels, so a failover can happen. ``replica``
    is the first replica, ``more_replicas`` the others."""

    def __init__(
        self,
        *,
        name: str = MASTER,
        sentinel_password: str | None = None,
        master_password: str | None = None,
        replicas: int = 1,
    ) -> None:
        self.name = name
        self.sentinel_password = sentinel_password
        self.master_password = master_password
        # Either server may be the master after a failover: both require the password
        # and use it to replicate.
        auth: list[str] = []
        if master_password is not None:
            auth = ["--requirepass", master_password, "--masterauth", master_password]
        # A replica's first sync at once, not after Redis's five-second wait for more
        # replicas to share it: until then a (re)joined replica is empty, and one the
        # Sentinels promote in that time takes every job with it (see rejoin).
        opts = [*auth, "--repl-diskless-sync-delay", "0"]
        self.master = RedisProcess(*opts)
        self.replica = RedisProcess(*opts)
        self.more_replicas = [RedisProcess(*opts) for _ in range(replicas - 1)]
        self.sentinels: list[SentinelProcess] = []

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", s.port) for s in self.sentinels]

    @property
    def url(self) -> str:
        """``redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/mymaster/0``."""
        hosts = ",".join(f"{h}:{p}" for h, p in self.addresses)
        query = f"?sentinel_password={self.sentinel_password}" if self.sentinel_password else ""
        auth = f":{self.master_password}@" if self.master_password else ""
        return f"redis+sentinel://{auth}{hosts}/{self.name}/0{query}"

    def server_url(self, port: int) -> str:
        """The ``redis://`` URL of one server (the master or the replica), by port."""
        auth = f":{self.master_password}@" if self.master_password else ""
        return f"redis://{auth}127.0.0.1:{port}/0"

    def start(self) -> Self:
        try:
            self.master.start()
            for replica in [self.replica, *self.more_replicas]:
                replica.args += ["--replicaof", "127.0.0.1", str(self.master.port)]
                replica.start()
            for _ in range(3):
                sentinel = SentinelProcess(
                    self.master.port,
                    name=self.name,
                    password=self.sentinel_password,
                    master_password=self.master_password,
                )
                self.sentinels.append(sentinel)
                sentinel.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def sentinel_command(self, *parts: str, index: int = 0) -> str:
        port = self.sentinels[index].port
        if self.sentinel_password:
            return _with_auth(port, self.sentinel_password, *parts)
        return redis_command(port, *parts)

    def master_port(self, index: int = 0) -> int:
        """The master's port as Sentinel ``index`` names it now."""
        info = self._info(index)
        return int(info["address"].rsplit(":", 1)[1])

    def _info(self, index: int) -> dict[str, str]:
        raw = self.sentinel_command("INFO", "sentinel", index=index)
        for line in raw.splitlines():
            if line.startswith("master0:"):
                return dict(kv.split("=", 1) for kv in line.split(":", 1)[1].split(","))
        return {}

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until every Sentinel sees the master up with its replica and two peers, and
        the replica's link to the master is up."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            try:
                infos = [self._info(i) for i in range(len(self.sentinels))]
                links = [
                    self._server_command(r.port, "INFO", "replication")
                    for r in [self.replica, *self.more_replicas]
                ]
                last = f"{infos} {links!r}"
                count = str(1 + len(self.more_replicas))
                if all("master_link_status:up" in link for link in links) and all(
                    i.get("status") == "ok"
                    and i.get("slaves") == count
                    and i.get("sentinels") == "3"
                    for i in infos
                ):
                    return
            except (OSError, RuntimeError) as exc:
                last = repr(exc)
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Sentinel setup is not ready after {timeout}s: {last}")
            time.sleep(0.05)

    def wait_new_master(self, old: int, timeout: float = 30.0) -> tuple[int, float]:
        """Until every Sentinel names one master other than ``old``: its port, and the
        seconds it took."""
        t0 = time.monotonic()
        while True:
            try:
                ports = {self.master_port(i) for i in range(len(self.sentinels))}
            except (OSError, RuntimeError, KeyError, ValueError):
                ports = set()
            if len(ports) == 1 and old not in ports:
                return ports.pop(), time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"the Sentinels still name {ports} after {timeout}s")
            time.sleep(0.05)

    def rejoin(self, server: RedisProcess, master_port: int, timeout: float = 10.0) -> None:
        """Restart ``server`` (a former master, killed) as a replica of the master on
        ``master_port``, and return once it has synced.

        Not a plain restart: with no persistence it would come back as an *empty
        master*, which the Sentinels still list as a replica and turn into one only
        seconds later. Should the new master miss their pings for a second meanwhile
        (a loaded machine), they fail over to that empty server, and the new master,
        made its replica, drops every job it held (seen once in about fifty runs of
        the Sentinel fault tests on a loaded machine: a worker that followed the
        master there found nothing to run while the jobs sat on the demoted server
        until its resync wiped them; a CI failure read as a worker slow to start
        looks the same). Redis's advice for servers without persistence: do not
        let them restart as masters."""
        args, skip = [], 0
        for a in server.args:  # an earlier --replicaof goes
            if skip:
                skip -= 1
            elif a == "--replicaof":
                skip = 2
            else:
                args.append(a)
        server.args = [*args, "--replicaof", "127.0.0.1", str(master_port)]
        server.restart()
        deadline = time.monotonic() + timeout
        while "master_link_status:up" not in self._server_command(
            server.port, "INFO", "replication"
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.port} did not sync with {master_port} in {timeout}s")
            time.sleep(0.02)

    def server(self, port: int) -> RedisProcess:
        """The master or replica process listening on ``port``."""
        return next(p for p in [self.master, self.replica, *self.more_replicas] if p.port == port)

    def wait_master(self, port: int, timeout: float = 30.0) -> float:
        """Until every Sentinel names ``port`` as the master; the seconds it took."""
        t0 = time.monotonic()
        while True:
            try:
                if all(self.master_port(i) == port for i in range(len(self.sentinels))):
                    return time.monotonic() - t0
            except (OSError, RuntimeError, KeyError, ValueError):
                pass
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"the Sentinels do not name {port} as master after {timeout}s")
            time.sleep(0.05)

    def _server_command(self, port: int, *parts: str) -> str:
        if self.master_password:
            return _with_auth(port, self.master_password, *parts)
        return redis_command(port, *parts)

    def stop(self) -> None:
        for process in [*self.sentinels, *self.more_replicas, self.replica, self.master]:
            process.close(graceful=False)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _with_auth(port: int, password: str, *parts: str) -> str:
    """One command after ``AUTH`` on one connection (``redis_command`` sends one)."""
    import socket

    from tests.servers import _encode

    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
        sock.sendall(_encode("AUTH", password) + _encode(*parts))
        buf = b""
        while buf.count(b"\r\n") < 2:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed before a reply")
            buf += chunk
        first, _, rest = buf.partition(b"\r\n")
        if not first.startswith(b"+OK"):
            raise RuntimeError(first.decode())
        head, _, body = rest.partition(b"\r\n")
        if head.startswith(b"-"):
            raise RuntimeError(head[1:].decode())
        if head.startswith(b"$"):
            length = int(head[1:])
            while len(body) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("connection closed in the middle of a reply")
                body += chunk
            return body[:length].decode()
        return head[1:].decode()

"""Network namespaces for partition runs: each nats-server on its own address behind a veth pair, cut by nftables."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass, field

log = logging.getLogger(__name__)
TABLE = "gaia_faults"


def run(*args: str, ns: str | None = None, stdin: str | None = None) -> None:
    """One ip/nft command (inside namespace `ns` when given); raises with its output when it fails."""
    cmd = [*(["ip", "netns", "exec", ns] if ns else []), *args]
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip() or done.stdout.strip()}")


def missing_tools() -> list[str]:
    """The commands partitions need that are not installed (`make netlab` installs them)."""
    return [tool for tool in ("ip", "nft") if shutil.which(tool) is None]


def available() -> str | None:
    """None when partitions can be made here (root, ip and nft), else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = missing_tools()
    return f"not installed: {', '.join(missing)}" if missing else None


@dataclass
class NetLab:
    """A bridge in this namespace and one namespace per node on it; faults are nftables rules inside them.

    Clients (kb, gateways, the harness) stay in this namespace and reach every node over the bridge;
    a partition drops traffic between nodes only, so a cut-off node still hears its clients, as in
    Jepsen's runs. Everything made here is named after this process and removed by `close`.
    """

    nodes: int = 3
    tag: str = field(default_factory=lambda: f"g{os.getpid() % 100000}")
    subnet: int = field(default_factory=lambda: 100 + os.getpid() % 150)
    made: list[str] = field(default_factory=list)
    faulty: set[str] = field(default_factory=set)

    @property
    def bridge(self) -> str:
        return f"{self.tag}br"

    def ns(self, index: int) -> str:
        return f"{self.tag}n{index + 1}"

    def host(self, index: int) -> str:
        """Node `index`'s address (10.{subnet}.0.11 and up); this namespace is .1."""
        return f"10.{self.subnet}.0.{11 + index}"

    def prefix(self, index: int) -> list[str]:
        """The command prefix that runs a program inside node `index`'s namespace."""
        return ["ip", "netns", "exec", self.ns(index)]

    def open(self) -> "NetLab":
        """Create the bridge, the namespaces and their veth pairs; returns self."""
        try:
            run("ip", "link", "add", self.bridge, "type", "bridge")
            self.made.append(self.bridge)
            run("ip", "addr", "add", f"10.{self.subnet}.0.1/24", "dev", self.bridge)
            run("ip", "link", "set", self.bridge, "up")
            for i in range(self.nodes):
                ns, outside, inside = self.ns(i), f"{self.tag}v{i + 1}", f"{self.tag}p{i + 1}"
                run("ip", "netns", "add", ns)
                self.made.append(ns)
                run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
                run("ip", "link", "set", inside, "netns", ns)
                run("ip", "link", "set", outside, "master", self.bridge)
                run("ip", "link", "set", outside, "up")
                run("ip", "link", "set", "lo", "up", ns=ns)
                run("ip", "addr", "add", f"{self.host(i)}/24", "dev", inside, ns=ns)
                run("ip", "link", "set", inside, "up", ns=ns)
        except Exception:
            self.close()
            raise
        return self

    def _rules(self, index: int, body: str, inbound: bool = True) -> None:
        """Replace node `index`'s fault table with `body` (nft rules on output, and on input if `inbound`)."""
        ns = self.ns(index)
        self._clear(index)
        incoming = body.replace("DIR", "saddr") if inbound else ""
        script = (f"table inet {TABLE} {{\n chain input {{ type filter hook input priority 0; policy accept;\n"
                  f"{incoming} }}\n chain output {{ type filter hook output priority 0; "
                  f"policy accept;\n{body.replace('DIR', 'daddr')} }}\n}}\n")
        run("nft", "-f", "-", ns=ns, stdin=script)
        self.faulty.add(ns)

    def _clear(self, index: int) -> None:
        ns = self.ns(index)
        if ns in self.faulty:
            run("nft", "delete", "table", "inet", TABLE, ns=ns)
            self.faulty.discard(ns)

    def isolate(self, index: int) -> None:
        """Cut node `index` off from the other nodes (both ways); its clients still reach it."""
        others = ", ".join(self.host(i) for i in range(self.nodes) if i != index)
        self._rules(index, f"  ip DIR {{ {others} }} drop\n")

    def lossy(self, a: int, b: int, loss_percent: int) -> None:
        """Drop `loss_percent` of the packets each way between nodes a and b (each dropped once, as it leaves)."""
        for me, other in ((a, b), (b, a)):
            self._rules(me, f"  ip DIR {self.host(other)} numgen random mod 100 < {loss_percent} drop\n", inbound=False)

    def heal(self) -> None:
        """Remove every fault rule: all nodes reach each other again."""
        for i in range(self.nodes):
            self._clear(i)

    def close(self) -> None:
        """Remove the namespaces and the bridge (their veth pairs go with them)."""
        for name in reversed(self.made):
            cmd = ("ip", "link", "del", name) if name == self.bridge else ("ip", "netns", "del", name)
            try:
                run(*cmd)
            except RuntimeError as exc:
                log.warning("cleanup: %s", exc)
        self.made.clear()
        self.faulty.clear()

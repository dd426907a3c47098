#!/usr/bin/env python3
"""Managed networks (issue 13): `network create` latency, and what a create on a managed
network costs against a create on a plain host bridge, in the same run, interleaved.

    bench/networks.py [--runs N]

Run as root after `cargo build --release -p rhyzomesrv -p rhyzomectl` and
`make -C testkernel/kernel`, with the lab up (`scripts/lab.sh up`). It reuses bench/bench.py's
daemon and lab settings, starts its own rhyzomesrv, prints a Markdown section for
docs/benchmarks.md, and removes every instance and network it made (through the daemon, so
only its own). Every packet stays inside the lab namespace. No timing fails the run.
"""

import argparse
import os
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def timed(daemon, method, path, body=None, expect=(200, 201, 204)):
    t0 = time.monotonic()
    status, data = daemon.request(method, path, body)
    elapsed = time.monotonic() - t0
    if status not in expect:
        raise RuntimeError(f"{method} {path}: {status} {data[:300]!r}")
    return elapsed, data


def create_to_banner(daemon, kernel, name, network):
    """Seconds from the request to its 201, and to the unikernel's banner on the console."""
    before = set(os.listdir(daemon.consoles)) if daemon.consoles.exists() else set()
    if network is None:
        spec = {"name": name, "kernel": kernel,
                "kernel_parameters": "--ipv4 192.168.100.240/24 --ipv4-gateway 192.168.100.1"}
    else:
        spec = {"name": name, "kernel": kernel, "network": {"name": network},
                "kernel_parameters": "--ipv4={cidr} --ipv4-gateway={gateway}"}
    t0 = time.monotonic()
    api, _ = timed(daemon, "POST", "/v1/instances", spec)
    banner, _ = bench.wait_new_console(daemon.consoles, before, bench.BANNER, t0)
    return api, banner


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rhyzome-bench-networks-"))
    kernel_dir = work / "kernels"
    kernel_dir.mkdir()
    kernel = kernel_dir / "testkernel.virtio"
    shutil.copyfile(bench.KERNEL_SRC, kernel)
    daemon = bench.Daemon(work, kernel_dir)
    made_instances, made_networks = [], []
    try:
        # network create and rm, each on its own subnet.
        creates, removes = [], []
        for i in range(args.runs):
            name = f"bench-net-{i}"
            t, _ = timed(daemon, "POST", "/v1/networks", {"name": name, "subnet": f"10.90.{i}.0/24"})
            creates.append(t)
            made_networks.append(name)
            t, _ = timed(daemon, "DELETE", f"/v1/networks/{name}")
            removes.append(t)
            made_networks.remove(name)
        dhcp = []
        for i in range(args.runs):
            name = f"bench-dhcp-{i}"
            t, _ = timed(daemon, "POST", "/v1/networks",
                         {"name": name, "subnet": f"10.91.{i}.0/24", "dhcp": True})
            dhcp.append(t)
            made_networks.append(name)
            timed(daemon, "DELETE", f"/v1/networks/{name}")
            made_networks.remove(name)

        # Instance creates, interleaved: plain bridge, then managed network.
        timed(daemon, "POST", "/v1/networks", {"name": "bench-lab", "subnet": "10.92.0.0/24"})
        made_networks.append("bench-lab")
        results = {"bridge": [], "managed": []}
        for i in range(args.runs + 1):
            for kind, network in (("bridge", None), ("managed", "bench-lab")):
                name = f"bench-{kind}-{i}"
                api, banner = create_to_banner(daemon, str(kernel), name, network)
                made_instances.append(name)
                if i > 0:  # the first round warms up
                    results[kind].append((api, banner))
                timed(daemon, "DELETE", f"/v1/instances/{name}")
                made_instances.remove(name)
        out = {
            "network_create": creates, "network_create_dhcp": dhcp, "network_rm": removes,
            "bridge": results["bridge"], "managed": results["managed"],
        }
        Path("/tmp/rhyzome-bench-networks.json").write_text(json.dumps(out, indent=1))
        ms = lambda x: f"{x * 1000:.0f} ms"  # noqa: E731
        b_api = median([a for a, _ in results["bridge"]])
        m_api = median([a for a, _ in results["managed"]])
        b_ban = median([b for _, b in results["bridge"]])
        m_ban = median([b for _, b in results["managed"]])
        print(f"""| what | median of {args.runs} | min–max |
|---|---|---|
| `POST /v1/networks` (isolated, no DHCP) | {ms(median(creates))} | {ms(min(creates))}–{ms(max(creates))} |
| `POST /v1/networks` with `dhcp` (dnsmasq) | {ms(median(dhcp))} | {ms(min(dhcp))}–{ms(max(dhcp))} |
| `DELETE /v1/networks/NAME` | {ms(median(removes))} | {ms(min(removes))}–{ms(max(removes))} |

| instance create | API answer (201) | to banner |
|---|---|---|
| on the host bridge `rzbr0` | {ms(b_api)} | {ms(b_ban)} |
| on a managed network (address given, placeholders filled in) | {ms(m_api)} | {ms(m_ban)} |
| managed / bridge | {m_api / b_api:.2f} | {m_ban / b_ban:.2f} |""")
    finally:
        for name in made_instances:
            daemon.request("DELETE", f"/v1/instances/{name}")
        for name in made_networks:
            daemon.request("DELETE", f"/v1/networks/{name}")
        daemon.proc.terminate()
        daemon.proc.wait()
        bench.PIDFILE.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

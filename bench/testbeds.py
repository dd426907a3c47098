#!/usr/bin/env python3
"""Test beds (issue 15): 100 nodes by `testbed apply --wait`, by `instance create --count` and
by 100 concurrent `virsh create` of the same domain XML, side by side in one run; re-apply of
the unchanged bed; `testbed destroy`; then density: how many test-kernel nodes at 16 MiB this
machine keeps running and answering, and the host memory per node, with its levers.

    bench/testbeds.py side [--n 100]
    bench/testbeds.py density [--steps 50,100,200,300] [--min-available-gib 5] [--memory 16] [--no-ksm]

Run as root with the lab up (`scripts/lab.sh up`), after building rhyzomesrv and rhyzomectl
(BENCH_PROFILE=release, the default, or debug) and `make -C testkernel/kernel`. It reuses
bench/bench.py's lab settings and daemon, starts its own rhyzomesrv, prints Markdown for
docs/benchmarks.md and raw numbers to /tmp/rhyzome-bench-testbeds-*.json, and removes every
instance, bed, network and domain it made (its own names only). KSM settings, when changed,
are put back as they were. Every packet stays inside the lab namespace. No timing fails the
run.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

PROFILE = os.environ.get("BENCH_PROFILE", "release")
BIN_DIR = Path(os.environ.get("BENCH_BIN_DIR", bench.REPO / f"target/{PROFILE}"))
bench.CTL = BIN_DIR / "rhyzomectl"
bench.SRV = BIN_DIR / "rhyzomesrv"
READY_TEXT = bench.READY.decode()
# The lab's libvirtd keeps its run directory next to its socket, not in /run/libvirt.
LAB_RUN = Path(bench.URI.split("socket=", 1)[1]).parent if "socket=" in bench.URI else Path("/run/libvirt")


def qemu_pid(domain):
    try:
        return int((LAB_RUN / "qemu" / f"{domain}.pid").read_text())
    except (OSError, ValueError):
        return None


bench.qemu_pid = qemu_pid
KSM = Path("/sys/kernel/mm/ksm")


def log(msg):
    print(f"==> {msg}", file=sys.stderr, flush=True)


def ctl(daemon, *args, check=True):
    t0 = time.monotonic()
    p = subprocess.run([str(bench.CTL), "--server", daemon.url, *args], capture_output=True, text=True)
    elapsed = time.monotonic() - t0
    if check and p.returncode != 0:
        raise RuntimeError(f"rhyzomectl {' '.join(args)}: {p.stderr.strip()[-500:]}")
    return elapsed, p.stdout


def watch(files_dir, before, n, needle, t0, done, timeout=600):
    """Seconds after t0 at which each of n new files of `files_dir` holds `needle`; stops
    early once `done()` says no more will come."""
    seen = {}
    done_at = None
    while len(seen) < n and time.monotonic() - t0 < timeout:
        try:
            names = [f for f in os.listdir(files_dir) if f not in before and f not in seen]
        except FileNotFoundError:
            names = []
        for f in names:
            try:
                if needle in (Path(files_dir) / f).read_bytes():
                    seen[f] = time.monotonic() - t0
            except FileNotFoundError:
                pass
        if done():
            done_at = done_at or time.monotonic()
            if time.monotonic() - done_at > 60:
                break  # the command ended a minute ago; the rest are not coming
        time.sleep(0.02)
    return seen


def consoles_before(daemon):
    return set(os.listdir(daemon.consoles)) if daemon.consoles.exists() else set()


def bed_file(name, kernel, count, memory=16, ready='{ console = "%s" }' % READY_TEXT,
             attach=None, params=None):
    attach = attach or f'bridge = "{bench.BR}"'
    params = params or f"--name {name}-n-{{i}}"
    return f"""name = "{name}"
seed = 1

[[groups]]
name = "n"
count = {count}
kernel = "{kernel}"
{attach}
kernel_parameters = "{params}"
memory_mib = {memory}
ready = {ready}
"""


def our_rhyzome_domains(prefix):
    return [d for d in bench.our_domains() if d.startswith("rhyzome-" + prefix)]


def wait_domains_gone(prefix, t0, timeout=120):
    while our_rhyzome_domains(prefix) and time.monotonic() - t0 < timeout:
        time.sleep(0.05)
    return None if our_rhyzome_domains(prefix) else time.monotonic() - t0


# ----------------------------------------------------------------------------- side by side

def side_by_side(daemon, kernel, work, n):
    res = {"n": n, "load_before": os.getloadavg()[0]}
    # 1. testbed apply --wait.
    bed = work / "bench-tb.toml"
    bed.write_text(bed_file("bench-tb", kernel, n))
    before = consoles_before(daemon)
    t0 = time.monotonic()
    p = subprocess.Popen([str(bench.CTL), "--server", daemon.url, "testbed", "apply", "-f", str(bed),
                          "--wait", "--timeout", "10m"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = watch(daemon.consoles, before, n, bench.READY, t0, lambda: p.poll() is not None)
    out, err = p.communicate()
    res["testbed_apply_wait"] = time.monotonic() - t0 if p.returncode == 0 else None
    res["testbed_consoles_ready"] = max(seen.values()) if len(seen) == n else None
    res["testbed_rc"] = p.returncode
    if p.returncode != 0:
        res["testbed_error"] = err[-300:]
    log(f"testbed apply --wait: {res['testbed_apply_wait']} s (consoles ready {res['testbed_consoles_ready']})")
    # 2. Re-apply unchanged, 5 times.
    reapply = []
    for _ in range(5):
        t, out = ctl(daemon, "testbed", "apply", "-f", str(bed))
        assert "no changes" in out, out
        reapply.append(t)
    res["reapply"] = reapply
    log(f"re-apply: {reapply}")
    # 3. destroy, until libvirt shows none of its domains.
    t0 = time.monotonic()
    t_cmd, _ = ctl(daemon, "testbed", "destroy", "bench-tb")
    res["destroy_command"] = t_cmd
    res["destroy_all_gone"] = wait_domains_gone("bench-tb-", t0)
    log(f"destroy: {res['destroy_command']} s, all gone {res['destroy_all_gone']}")

    # 4. instance create --count N, until every console holds "ready".
    before = consoles_before(daemon)
    cmd = [str(bench.CTL), "--server", daemon.url, "instance", "create", "--name", "bench-cnt-{i}",
           "--count", str(n), "--kernel", kernel, "--memory", "16",
           "--kernel-parameters", "--name bench-cnt-{i}"]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = watch(daemon.consoles, before, n, bench.READY, t0, lambda: p.poll() is not None)
    _, err = p.communicate()
    res["count_command"] = None
    res["count_ready"] = max(seen.values()) if len(seen) == n else None
    res["count_rc"] = p.returncode
    if p.returncode != 0:
        res["count_error"] = err[-300:]
    log(f"instance create --count: ready {res['count_ready']} s")
    t0 = time.monotonic()
    ctl(daemon, "instance", "delete", "--prefix", "bench-cnt-", check=False)
    res["count_delete_all_gone"] = wait_domains_gone("bench-cnt-", t0)

    # 5. N concurrent virsh create of the same domain XML.
    w = work / "virsh"
    w.mkdir(exist_ok=True)
    names = [f"bench-vtb-{i:03d}" for i in range(n)]
    consoles = {nm: w / f"{nm}.console" for nm in names}
    for i, nm in enumerate(names):
        (w / f"{nm}.xml").write_text(bench.domain_xml(nm, kernel, f"--name {nm}",
                                                      f"02:be:02:00:{i >> 8:02x}:{i & 255:02x}",
                                                      consoles[nm], memory_mib=16))
    rcs = {}

    def create(nm):
        rcs[nm] = subprocess.run(["virsh", "-q", "-c", bench.URI, "create", str(w / f"{nm}.xml")],
                                 capture_output=True).returncode

    threads = [threading.Thread(target=create, args=(nm,)) for nm in names]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    seen = watch(w, set(), n, bench.READY, t0, lambda: all(not t.is_alive() for t in threads))
    for t in threads:
        t.join()
    res["virsh_ready"] = max(seen.values()) if len(seen) == n else None
    res["virsh_created_ok"] = sum(1 for rc in rcs.values() if rc == 0)
    log(f"virsh create x{n}: ready {res['virsh_ready']} s")
    threads = [threading.Thread(target=bench.virsh, args=("destroy", nm), kwargs={"check": False}) for nm in names]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    res["virsh_destroy_all"] = time.monotonic() - t0
    res["load_after"] = os.getloadavg()[0]
    return res


# ----------------------------------------------------------------------------- density

def meminfo(key):
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def qemu_pids(prefix):
    pids = []
    for d in our_rhyzome_domains(prefix):
        p = bench.qemu_pid(d)
        if p:
            pids.append(p)
    return pids


def memory_of(pids):
    mems = []
    for p in pids:
        try:
            mems.append(bench.rollup(p))
        except OSError:
            pass
    if not mems:
        return {}
    return {
        "rss_avg_kib": sum(m["Rss"] for m in mems) / len(mems),
        "pss_avg_kib": sum(m["Pss"] for m in mems) / len(mems),
        "private_avg_kib": sum(m.get("Private_Dirty", 0) + m.get("Private_Clean", 0) for m in mems) / len(mems),
        "pss_total_kib": sum(m["Pss"] for m in mems),
        "counted": len(mems),
    }


PROBER = r"""
import socket, sys, time
ips = sys.argv[1].split(",")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.settimeout(0.2)
answered = {}
t0 = time.monotonic()
for attempt in range(3):
    for ip in ips:
        if ip not in answered:
            s.sendto(b"status", (ip, 7))
            time.sleep(0.002)
    end = time.monotonic() + 3
    while time.monotonic() < end and len(answered) < len(ips):
        try:
            data, (ip, _) = s.recvfrom(2048)
        except socket.timeout:
            continue
        if b"uptime_ms=" in data and ip not in answered:
            answered[ip] = time.monotonic() - t0
    if len(answered) == len(ips):
        break
print(len(answered), max(answered.values()) if answered else -1)
"""


def probe_all(ips):
    """UDP `status` to every node from inside the lab namespace: (answered, seconds)."""
    out = subprocess.run(["ip", "netns", "exec", bench.NS, sys.executable, "-c", PROBER, ",".join(ips)],
                         capture_output=True, text=True, timeout=120).stdout.split()
    return int(out[0]), float(out[1])


def cpu_busy(seconds=3.0):
    a = bench.machine_cpu_ticks()
    time.sleep(seconds)
    b = bench.machine_cpu_ticks()
    return (b[0] - a[0]) / max(1, b[1] - a[1])


def ksm_read():
    return {k: (KSM / k).read_text().strip() for k in ("run", "pages_to_scan", "sleep_millisecs")}


def ksm_write(values):
    for k in ("pages_to_scan", "sleep_millisecs", "run"):
        if k in values:
            (KSM / k).write_text(values[k] + "\n")


def density(daemon, kernel, work, steps, min_available_kib, ksm_too, memory=16):
    rows = []
    bed = work / "bench-dn.toml"
    try:
        for n in steps:
            avail = meminfo("MemAvailable")
            if avail < min_available_kib:
                log(f"stopping before {n}: MemAvailable {avail // 1024} MiB")
                rows.append({"n": n, "skipped": f"MemAvailable {avail // 1024} MiB"})
                break
            bed.write_text(bed_file("bench-dn", kernel, n, memory=memory, attach='network = "bench-dn-net"',
                                    params="--ipv4={cidr} --ipv4-gateway={gateway}",
                                    ready="{ ping = true }")
                           + '\n[[networks]]\nname = "bench-dn-net"\nsubnet = "10.94.0.0/20"\n')
            t0 = time.monotonic()
            p = subprocess.run([str(bench.CTL), "--server", daemon.url, "testbed", "apply", "-f", str(bed),
                                "--wait", "--timeout", "8m"], capture_output=True, text=True)
            up = time.monotonic() - t0
            row = {"n": n, "apply_wait_s": up if p.returncode == 0 else None, "rc": p.returncode,
                   "load": os.getloadavg()[0]}
            if p.returncode != 0:
                row["error"] = p.stderr[-300:]
            time.sleep(5)  # let the new guests settle
            st, data = daemon.request("GET", "/v1/networks/bench-dn-net")
            ips = [a["ip"] for a in json.loads(data)["attachments"]]
            row["answered"], row["probe_s"] = probe_all(ips)
            pids = qemu_pids("bench-dn-")
            row["qemu_processes"] = len(pids)
            row.update(memory_of(pids))
            row["mem_available_mib"] = meminfo("MemAvailable") // 1024
            row["cpu_busy"] = cpu_busy()
            rows.append(row)
            log(f"density {n}: {row}")
            if row["answered"] < n or p.returncode != 0:
                log(f"stopping: {row['answered']}/{n} answered")
                break
        levers = {}
        if ksm_too and rows and rows[-1].get("pss_avg_kib"):
            levers["ksm"] = ksm_lever(rows[-1]["n"])
        return rows, levers
    finally:
        ctl(daemon, "testbed", "destroy", "bench-dn", check=False)
        wait_domains_gone("bench-dn-", time.monotonic())


def ksm_lever(n):
    """KSM on for a while over the running nodes: PSS before and after, then put back."""
    try:
        saved = ksm_read()
        ksm_write(saved)  # writable at all?
    except OSError as e:
        return {"error": f"KSM not writable here: {e}"}
    out = {"saved": saved}
    pids = qemu_pids("bench-dn-")
    out["before"] = memory_of(pids)
    out["mem_available_before_mib"] = meminfo("MemAvailable") // 1024
    try:
        ksm_write({"run": "1", "pages_to_scan": "4000", "sleep_millisecs": "20"})
        time.sleep(40)
        out["pages_sharing"] = int((KSM / "pages_sharing").read_text())
        out["pages_shared"] = int((KSM / "pages_shared").read_text())
        out["after"] = memory_of(pids)
        out["mem_available_after_mib"] = meminfo("MemAvailable") // 1024
        out["cpu_busy_with_ksm"] = cpu_busy()
    finally:
        # Unmerge (run = 2) before putting the old mode back, so nothing stays merged.
        if saved["run"] == "0":
            try:
                (KSM / "run").write_text("2\n")
            except OSError:
                pass
        ksm_write(saved)
        out["restored"] = ksm_read() == saved
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["side", "density"])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--steps", default="50,100,200,300,400,500")
    ap.add_argument("--min-available-gib", type=float, default=5.0)
    ap.add_argument("--no-ksm", action="store_true")
    ap.add_argument("--memory", type=int, default=16, help="guest memory of each node, MiB")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rhyzome-bench-testbeds-"))
    kernel_dir = work / "kernels"
    kernel_dir.mkdir()
    kernel = kernel_dir / "testkernel.virtio"
    shutil.copyfile(bench.KERNEL_SRC, kernel)
    daemon = bench.Daemon(work, kernel_dir, extra={"LinkEmulatorNetns": f"/run/netns/{bench.NS}"})
    try:
        if args.what == "side":
            out = side_by_side(daemon, str(kernel), work, args.n)
        else:
            steps = [int(s) for s in args.steps.split(",")]
            rows, levers = density(daemon, str(kernel), work, steps,
                                   int(args.min_available_gib * 1024 * 1024), not args.no_ksm, args.memory)
            out = {"rows": rows, "levers": levers}
        path = Path(f"/tmp/rhyzome-bench-testbeds-{args.what}-{args.memory}.json")
        path.write_text(json.dumps(out, indent=1))
        print(json.dumps(out, indent=1))
    finally:
        for prefix in ("bench-tb-", "bench-cnt-", "bench-dn-"):
            if our_rhyzome_domains(prefix):
                ctl(daemon, "instance", "delete", "--prefix", prefix, check=False)
        daemon.request("DELETE", "/v1/testbeds/bench-tb")
        daemon.request("DELETE", "/v1/testbeds/bench-dn")
        for d in bench.our_domains():
            if d.startswith("bench-vtb-"):
                bench.virsh("destroy", d, check=False)
        daemon.proc.terminate()
        daemon.proc.wait()
        bench.PIDFILE.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Several hosts (issue 20): one daemon driving the lab's two libvirt hosts, `local` (the lab's
libvirtd, through its UNIX socket) and `h2` (host 2's libvirtd in its own namespace, over
`qemu+tcp://192.168.250.2/system`).

    bench/hosts.py [--n 10] [--batch 100] [--parallel 8] [--rounds 2] [--cold 3]
    bench/hosts.py --batches-only [--variants spread,local,h2]   (2 only; h2: all pinned there)

1. Deploy latency, N sequential deploys per series, interleaved (the order of the four series
   rotates every round, so that machine noise hits all alike): `POST /v1/instances` pinned to
   `local`, the same pinned to `h2`, and a plain `virsh -c URI create` of an equivalent
   transient domain XML on each host. Timed from the call's return to the guest's first
   console line (`rhyzome-testkernel:`), read from the console file itself (host 2's files
   through its directory on this machine), so that both hosts are measured alike; the call's
   own time, and when the daemon's console API (for h2, libvirt volume reads) shows the line,
   are recorded beside it. One instance stays running on each host during the series (the
   "anchors"), so that h2's kernel volume stays and the series measures deploys without upload.
2. A batch of --batch instances, `rhyzomectl instance create --count B --parallel P`, placed by
   the scheduler (spread over local and h2) against pinned `--host local`, interleaved for
   --rounds rounds: wall time until the command returned (all running) and until every guest
   printed its first console line; then `instance delete --prefix`, timed until every domain is
   gone from both hosts.
3. Kernel upload: --cold creates on h2 while no instance there uses the kernel (so it is
   uploaded into h2's `rhyzome-kernels` pool, and collected again at the delete), against the
   warm deploys of 1; the daemon's `kernel uploaded to the host` log lines give elapsed_ms.

Run as root with the lab up (`scripts/lab.sh up`), after `cargo build --release -p rhyzomesrv
-p rhyzomectl` (BENCH_PROFILE=debug for target/debug) and `make -C testkernel/kernel`. It starts
its own rhyzomesrv (its own StateDir in a temp dir, `Hosts` only), prints Markdown for
docs/benchmarks.md and writes raw numbers to /tmp/rhyzome-bench-hosts.json. It deletes every
instance, domain, console and kernel volume it made, by its own names only (bench-hs-TAG-*,
bench-hv-TAG-*, this daemon's rz-ID-* volumes), and never touches another domain. Every packet
stays on loopback, in the lab namespaces, or on the veth to host 2. No timing fails the run.
"""

import argparse
import glob
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import http.client
import random
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (lab settings, domain XML, kernel)

PROFILE = os.environ.get("BENCH_PROFILE", "release")
BIN_DIR = Path(os.environ.get("BENCH_BIN_DIR", bench.REPO / f"target/{PROFILE}"))
CTL = BIN_DIR / "rhyzomectl"
SRV = BIN_DIR / "rhyzomesrv"
NEEDLE = b"rhyzome-testkernel:"
URI_LOCAL = bench.URI
URI_H2 = bench.LAB.get("RHYZOME_LAB_HOST2_URI", "qemu+tcp://192.168.250.2/system")
H2_NS = bench.LAB.get("RHYZOME_LAB_HOST2_NETNS", bench.NS + "-h2")
# Host 2's /var/lib/libvirt is this directory of the machine (scripts/lab.sh, in_lab): its
# pools' files, console volumes included, can be watched from here without asking libvirt.
H2_LIB = Path(f"/var/lib/rhyzome-lab/{H2_NS}/lib")
H2_CONSOLES = H2_LIB / "rhyzome-consoles"
URIS = {"local": URI_LOCAL, "h2": URI_H2}
TAG = f"{random.randrange(16 ** 4):04x}"
PFX = f"bench-hs-{TAG}-"      # this run's instances (domains rhyzome-bench-hs-TAG-*)
VPFX = f"bench-hv-{TAG}-"     # this run's plain virsh domains
POLL = 0.005


def log(msg):
    print(f"==> {msg}", file=sys.stderr, flush=True)


def virsh(uri, *args, check=False):
    return subprocess.run(["virsh", "-q", "-c", uri, *args], capture_output=True, text=True, check=check)


def pct(xs, p):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    k = (len(xs) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def ms(x):
    return "n/a" if x is None else f"{x * 1000:.0f} ms"


def secs(x):
    return "n/a" if x is None else f"{x:.1f} s"


# ----------------------------------------------------------------------------- daemon

class Daemon:
    """A rhyzomesrv of this run only: `Hosts` (no `LibvirtURI`), its own StateDir."""

    def __init__(self, work, kernel_dir):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state_dir = work / "state"
        self.consoles = self.state_dir / "consoles"
        config = {
            "Hostname": f"bench-hosts-{socket.gethostname()}-{os.getpid()}",
            "Bind": f"127.0.0.1:{self.port}",
            "DomainType": "qemu",
            "BridgeInterface": bench.BR,
            "StateDir": str(self.state_dir),
            "KernelDirs": [str(kernel_dir)],
            "Hosts": [
                {"Name": "local", "URI": URI_LOCAL},
                {"Name": "h2", "URI": URI_H2, "Insecure": True},
            ],
        }
        (work / "rhyzome.conf").write_text(json.dumps(config, indent=2) + "\n")
        self.log_path = work / "rhyzomesrv.log"
        self.proc = subprocess.Popen([str(SRV), "--config", str(work / "rhyzome.conf")], cwd=work,
                                     stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while True:
            try:
                if self.request("GET", "/v1/info")[0] == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rhyzomesrv did not start; see {self.log_path}")
            time.sleep(0.05)

    def request(self, method, path, body=None, timeout=300):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            headers = {"content-type": "application/json"} if body is not None else {}
            c.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def log_text(self):
        return self.log_path.read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Run:
    def __init__(self, daemon, kernel):
        self.d = daemon
        self.kernel = kernel
        self.daemon_id = None  # learned from the first console volume on h2
        self.ids = {}          # instance name -> id

    # -- consoles, wherever the guest's host keeps them
    def console_file(self, host, iid):
        if host == "local":
            p = self.d.consoles / f"{iid}.log"
            return p if p.exists() else None
        hits = glob.glob(str(H2_CONSOLES / f"rz-*-{iid}.log"))
        if hits and self.daemon_id is None:
            self.daemon_id = Path(hits[0]).name[3:-len(f"-{iid}.log")]
        return Path(hits[0]) if hits else None

    def uploads(self):
        """(elapsed_ms, ...) of every `kernel uploaded to the host` line so far."""
        out = []
        for line in self.d.log_text().splitlines():
            if "kernel uploaded to the host" in line:
                m = re.search(r"elapsed_ms\D{0,3}(\d+)", line)
                out.append(int(m.group(1)) if m else None)
        return out

    # -- 1. one deploy through the daemon
    def deploy_rhyzome(self, host, name, keep=False, api_console=True):
        body = {"name": name, "kernel": self.kernel, "kernel_parameters": "", "host": host}
        n_up = len(self.uploads())
        t_call = time.monotonic()
        st, data = self.d.request("POST", "/v1/instances", body)
        t0 = time.monotonic()
        res = {"call": t0 - t_call}
        if st not in (200, 201):
            res["error"] = f"HTTP {st}: {data[:300]!r}"
            return res
        inst = json.loads(data)
        iid = inst["id"]
        self.ids[name] = iid
        res["placed"] = (inst.get("placement") or {}).get("host")
        res["first_line"] = None
        while time.monotonic() - t0 < 60:
            f = self.console_file(host, iid)
            if f is not None:
                try:
                    if NEEDLE in f.read_bytes():
                        res["first_line"] = time.monotonic() - t0
                        break
                except FileNotFoundError:
                    pass
            time.sleep(POLL)
        if api_console and res["first_line"] is not None:
            while time.monotonic() - t0 < 60:
                st, out = self.d.request("GET", f"/v1/instances/{name}/console")
                if st == 200 and NEEDLE in out:
                    res["api_console"] = time.monotonic() - t0
                    break
                time.sleep(POLL)
        res["uploaded_ms"] = self.uploads()[n_up:]
        if not keep:
            t1 = time.monotonic()
            st, _ = self.d.request("DELETE", f"/v1/instances/{name}")
            res["delete"] = time.monotonic() - t1
            res["delete_status"] = st
        return res

    # -- 1. one plain virsh create on a host
    def deploy_virsh(self, host, name, kernel_path, work, i):
        console = work / f"{name}.console"
        console.unlink(missing_ok=True)
        mac = "02:be:%02x:%02x:%02x:%02x" % (int(TAG[:2], 16), int(TAG[2:], 16), {"local": 1, "h2": 2}[host], i & 255)
        xml = work / f"{name}.xml"
        xml.write_text(bench.domain_xml(name, kernel_path, "", mac, console))
        t_call = time.monotonic()
        p = subprocess.run(["virsh", "-q", "-c", URIS[host], "create", str(xml)], capture_output=True, text=True)
        t0 = time.monotonic()
        res = {"call": t0 - t_call, "first_line": None}
        if p.returncode != 0:
            res["error"] = p.stderr.strip()[:300]
            return res
        while time.monotonic() - t0 < 60:
            try:
                if NEEDLE in console.read_bytes():
                    res["first_line"] = time.monotonic() - t0
                    break
            except FileNotFoundError:
                pass
            time.sleep(POLL)
        t1 = time.monotonic()
        virsh(URIS[host], "destroy", name)
        res["delete"] = time.monotonic() - t1
        console.unlink(missing_ok=True)
        return res


def kernel_path_of(host, domain):
    """The kernel path the daemon gave `domain` on `host` (the blob locally, the uploaded
    volume on h2): the virsh baseline boots the very same file."""
    out = virsh(URIS[host], "dumpxml", domain).stdout
    m = re.search(r"<kernel>([^<]+)</kernel>", out)
    return m.group(1) if m else None


def series(run, work, n, cold):
    res = {"cold_h2": [], "first_local": None}
    # 3. Cold creates on h2: no instance there uses the kernel, so each uploads it (and the
    # delete collects the volume again).
    for i in range(cold):
        r = run.deploy_rhyzome("h2", f"{PFX}cold-{i}")
        res["cold_h2"].append(r)
        log(f"cold h2 #{i}: call {ms(r['call'])}, first line {ms(r.get('first_line'))}, uploads {r.get('uploaded_ms')}")
    # Anchors: one instance on each host for the whole series (h2's uploads once more here).
    res["anchor_local"] = run.deploy_rhyzome("local", f"{PFX}anchor-local", keep=True)
    res["anchor_h2"] = run.deploy_rhyzome("h2", f"{PFX}anchor-h2", keep=True)
    log(f"anchors: {res['anchor_local']} {res['anchor_h2']}")
    kernels = {h: kernel_path_of(h, f"rhyzome-{PFX}anchor-{h}") for h in ("local", "h2")}
    res["kernel_paths"] = kernels
    methods = [("rhyzome", "local"), ("rhyzome", "h2"), ("virsh", "local"), ("virsh", "h2")]
    out = {f"{m}-{h}": [] for m, h in methods}
    for i in range(n + 1):  # round 0 is a warm-up, not recorded
        order = methods[i % 4:] + methods[:i % 4]
        for m, h in order:
            if m == "rhyzome":
                r = run.deploy_rhyzome(h, f"{PFX}{h}-{i}")
            else:
                r = run.deploy_virsh(h, f"{VPFX}{h}-{i}", kernels[h], work, i)
            r["load"] = os.getloadavg()[0]
            if i > 0:
                out[f"{m}-{h}"].append(r)
            log(f"#{i} {m:7s} {h:5s}: call {ms(r['call'])}, first line {ms(r.get('first_line'))}"
                + (f", api console {ms(r.get('api_console'))}" if m == "rhyzome" else "")
                + (f" ERROR {r['error']}" if r.get("error") else ""))
            time.sleep(0.2)
    res["series"] = out
    for h in ("local", "h2"):
        run.d.request("DELETE", f"/v1/instances/{PFX}anchor-{h}")
    return res


# ----------------------------------------------------------------------------- 2. batch

def domains(host, prefix):
    return [d for d in virsh(URIS[host], "list", "--all", "--name").stdout.split() if d.startswith(prefix)]


def batch(run, label, n, parallel, pinned):
    d = run.d
    prefix = f"{PFX}b{label}-"
    before_local = set(os.listdir(d.consoles)) if d.consoles.exists() else set()
    before_h2 = set(os.listdir(H2_CONSOLES)) if H2_CONSOLES.exists() else set()
    mine = f"rz-{run.daemon_id}-" if run.daemon_id else "rz-"
    cmd = [str(CTL), "--server", d.url, "instance", "create", "--name", prefix + "{i}", "--count", str(n),
           "--parallel", str(parallel), "--kernel", run.kernel, "--kernel-parameters", ""]
    if pinned:
        cmd += ["--host", pinned]
    n_up = len(run.uploads())
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = {}
    done_at = None
    while len(seen) < n and time.monotonic() - t0 < 900:
        for dirpath, before, want in ((d.consoles, before_local, ""), (H2_CONSOLES, before_h2, mine)):
            try:
                names = [f for f in os.listdir(dirpath) if f not in before and f.startswith(want)]
            except FileNotFoundError:
                names = []
            for f in names:
                key = (str(dirpath), f)
                if key in seen:
                    continue
                try:
                    if NEEDLE in (Path(dirpath) / f).read_bytes():
                        seen[key] = time.monotonic() - t0
                except (FileNotFoundError, PermissionError):
                    pass
        if p.poll() is not None:
            done_at = done_at or time.monotonic()
            if time.monotonic() - done_at > 60:
                break
        time.sleep(0.02)
    _, err = p.communicate()
    res = {"label": label, "n": n, "parallel": parallel, "pinned": pinned, "rc": p.returncode,
           "command": (done_at - t0) if done_at else None,
           "first_lines": max(seen.values()) if len(seen) >= n else None, "seen": len(seen),
           "uploaded_ms": run.uploads()[n_up:]}
    res["first_lines_by_host"] = {
        ("local" if k[0] == str(d.consoles) else "h2"): max(t for kk, t in seen.items() if kk[0] == k[0])
        for k in seen}
    if p.returncode != 0:
        res["error"] = err.strip()[-400:]
        res["command"] = None
    st, data = d.request("GET", "/v1/instances")
    items = json.loads(data) if st == 200 else []
    if isinstance(items, dict):
        items = items.get("items") or items.get("instances") or []
    ours = [i for i in items if i["name"].startswith(prefix)]
    res["running"] = sum(1 for i in ours if i.get("state") == "running")
    res["per_host"] = {}
    for i in ours:
        h = (i.get("placement") or {}).get("host", "?")
        res["per_host"][h] = res["per_host"].get(h, 0) + 1
    res["load"] = os.getloadavg()[0]
    log(f"batch {label}: {res}")
    # Delete, until neither host shows one of its domains.
    t1 = time.monotonic()
    p = subprocess.run([str(CTL), "--server", d.url, "instance", "delete", "--prefix", prefix],
                       capture_output=True, text=True)
    res["delete_command"] = time.monotonic() - t1
    res["delete_rc"] = p.returncode
    while any(domains(h, "rhyzome-" + prefix) for h in URIS) and time.monotonic() - t1 < 300:
        time.sleep(0.1)
    res["delete_all_gone"] = time.monotonic() - t1
    log(f"batch {label} deleted in {res['delete_all_gone']:.1f} s")
    return res


# ----------------------------------------------------------------------------- cleanup

def cleanup(run, daemon, work):
    if daemon is not None and daemon.proc.poll() is None:
        try:
            st, data = daemon.request("GET", "/v1/instances", timeout=60)
            items = json.loads(data) if st == 200 else []
            if isinstance(items, dict):
                items = items.get("items") or items.get("instances") or []
            for i in items:
                if i["name"].startswith(PFX):
                    daemon.request("DELETE", f"/v1/instances/{i['name']}", timeout=60)
        except (OSError, ValueError):
            pass
        daemon.stop()
    for h, uri in URIS.items():
        for dom in domains(h, VPFX) + domains(h, "rhyzome-" + PFX):
            virsh(uri, "destroy", dom)
            virsh(uri, "undefine", dom)
    if run is not None and run.daemon_id:
        for pool in ("rhyzome-consoles", "rhyzome-kernels"):
            for line in virsh(URI_H2, "vol-list", pool).stdout.splitlines():
                vol = line.split()[0] if line.split() else ""
                if vol.startswith(f"rz-{run.daemon_id}-"):
                    virsh(URI_H2, "vol-delete", vol, "--pool", pool)
    shutil.rmtree(work, ignore_errors=True)


# ----------------------------------------------------------------------------- report

def summary(rs, key):
    xs = [r.get(key) for r in rs]
    return pct(xs, 0.5), pct(xs, 0.9), sum(1 for x in xs if x is not None), len(xs)


def report(out, args):
    lines = batch_report(out["batches"])
    if "deploys" not in out:
        return "\n".join(lines)
    s1 = out["deploys"]["series"]
    lines = [
        "| series | the call itself, median | call return → first console line, median | p90 | call start → first console line, median | p90 | call return → line seen through the API, median |",
        "|---|---|---|---|---|---|---|",
    ]
    names = {"rhyzome-local": "`POST /v1/instances`, `host: local`",
             "rhyzome-h2": "`POST /v1/instances`, `host: h2`",
             "virsh-local": "`virsh -c LAB_URI create` (same XML)",
             "virsh-h2": "`virsh -c qemu+tcp://192.168.250.2/system create`"}
    for k, label in names.items():
        rs = s1[k]
        med, p90, ok, tot = summary(rs, "first_line")
        totals = [r["call"] + r["first_line"] for r in rs if r.get("first_line") is not None]
        total, total90 = pct(totals, 0.5), pct(totals, 0.9)
        api = pct([r.get("api_console") for r in rs], 0.5) if k.startswith("rhyzome") else None
        lines.append(f"| {label} | {ms(pct([r['call'] for r in rs], 0.5))} | {ms(med)} | {ms(p90)} | {ms(total)} | {ms(total90)}"
                     f" | {ms(api) if k.startswith('rhyzome') else '–'} |" + ("" if ok == tot else f" ({ok}/{tot})"))
    lines.append("")
    lines += batch_report(out["batches"])
    lines.append("")
    cold = out["deploys"]["cold_h2"]
    lines += ["| h2 create | call returns | call return → first line | `kernel uploaded to the host` elapsed_ms |",
              "|---|---|---|---|"]
    for i, r in enumerate(cold):
        lines.append(f"| cold #{i + 1} (kernel uploaded) | {ms(r['call'])} | {ms(r.get('first_line'))} | {r.get('uploaded_ms')} |")
    warm = s1["rhyzome-h2"]
    lines.append(f"| warm, median of {len(warm)} (kernel already there) | {ms(pct([r['call'] for r in warm], 0.5))} | "
                 f"{ms(pct([r.get('first_line') for r in warm], 0.5))} | uploads: {sum(len(r.get('uploaded_ms') or []) for r in warm)} |")
    return "\n".join(lines)


def batch_report(b):
    lines = ["| batch | round | command returns (all running) | all first console lines (last on local / h2) | placed | delete --prefix until gone | load |",
             "|---|---|---|---|---|---|---|"]
    for r in b:
        by = r.get("first_lines_by_host", {})
        lines.append(f"| {r['label']} | {r.get('round')} | {secs(r['command'])} | {secs(r['first_lines'])} ({r['seen']}/{r['n']};"
                     f" {secs(by.get('local'))} / {secs(by.get('h2'))}) | "
                     f"{', '.join(f'{h} {c}' for h, c in sorted(r['per_host'].items()))} | {secs(r['delete_all_gone'])} | {r['load']:.1f} |")
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cold", type=int, default=3)
    ap.add_argument("--variants", default="spread,local",
                    help="batches to run, each round, comma-separated: spread, local, h2")
    ap.add_argument("--batches-only", action="store_true", help="skip the deploy series (1 and 3)")
    args = ap.parse_args()
    for b in (CTL, SRV):
        if not b.exists():
            sys.exit(f"{b} is missing: cargo build --release -p rhyzomesrv -p rhyzomectl (or BENCH_PROFILE=debug)")
    if virsh(URI_H2, "version").returncode != 0:
        sys.exit(f"host 2 does not answer at {URI_H2}: scripts/lab.sh up")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="rhyzome-bench-hosts-"))
    os.chmod(work, 0o755)
    kernel_dir = work / "kernels"
    kernel_dir.mkdir()
    kernel = kernel_dir / "testkernel.virtio"
    shutil.copyfile(bench.KERNEL_SRC, kernel)
    daemon = run = None
    started = time.time()
    try:
        daemon = Daemon(work, kernel_dir)
        run = Run(daemon, str(kernel))
        log(f"daemon {daemon.url} ({PROFILE}), tag {TAG}")
        out = {"profile": PROFILE, "args": vars(args), "load_before": os.getloadavg()[0]}
        if not args.batches_only:
            out["deploys"] = series(run, work, args.n, args.cold)
        else:  # one deploy on h2 names this daemon's console volumes (rz-ID-...)
            run.deploy_rhyzome("h2", f"{PFX}probe")
        out["batches"] = []
        for rnd in range(1, args.rounds + 1):
            # Alternate which comes first.
            order = [(v, None if v == "spread" else v) for v in args.variants.split(",")]
            if rnd % 2 == 0:
                order.reverse()
            for label, pinned in order:
                r = batch(run, f"{label}{rnd}", args.batch, args.parallel, pinned)
                r["label"], r["round"] = (f"spread over local + h2" if pinned is None else f"all `--host {pinned}`"), rnd
                out["batches"].append(r)
        out["load_after"] = os.getloadavg()[0]
        out["elapsed_s"] = time.time() - started
        out["daemon_id"] = run.daemon_id
        Path("/tmp/rhyzome-bench-hosts.json").write_text(json.dumps(out, indent=1))
        print(report(out, args))
    finally:
        cleanup(run, daemon, work)
        left = [dom for h in URIS for dom in domains(h, VPFX) + domains(h, "rhyzome-" + PFX)]
        log("cleaned up" + (f"; LEFT: {left}" if left else ""))


if __name__ == "__main__":
    main()

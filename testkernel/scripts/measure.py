#!/usr/bin/env python3
"""Measure the test kernel under plain QEMU/TCG (needs root for the NIC cases).

For each configuration, boots the kernel N times and reports the median of:
  spawn -> banner line, spawn -> ready line, spawn -> QEMU gone
(the guest is booted with --exit-after=0, so it powers off right after
"ready"; the last figure includes ACPI S5 power-off and QEMU teardown).
Then finds the smallest -m (MiB) with which it still reaches "ready" with a
NIC attached.

NIC cases run inside a private network namespace created (and deleted) by
this script; no traffic leaves it.

usage: sudo testkernel/scripts/measure.py [runs]   (kernel must be built)
"""
import os
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
KERNEL = os.path.join(HERE, "..", "build", "testkernel.elf")
NS = f"rzt-measure-{os.getpid()}-0"
BANNER = b"rhyzome-testkernel: banner v1"
READY = b"rhyzome-testkernel: ready"


def qemu_argv(mem, nic, rom):
    argv = ["qemu-system-x86_64", "-machine", "pc", "-accel", "tcg", "-m", str(mem),
            "-nodefaults", "-no-user-config", "-display", "none",
            "-serial", "stdio", "-kernel", KERNEL, "-append", "--exit-after=0 --ipv4=10.66.0.2/24"]
    if nic:
        argv = ["ip", "netns", "exec", NS] + argv + [
            "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
            "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56" + ("" if rom else ",romfile=")]
    return argv


def boot_once(mem=8, nic=False, rom=False):
    t0 = time.monotonic()
    p = subprocess.Popen(qemu_argv(mem, nic, rom), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    banner = ready = None
    watchdog = threading.Timer(10, p.kill)  # a guest that hangs is killed
    watchdog.start()
    for line in p.stdout:
        now = time.monotonic()
        if line.startswith(BANNER) and banner is None:
            banner = now - t0
        if line.startswith(READY):
            ready = now - t0
    p.wait()
    gone = time.monotonic() - t0
    killed = not watchdog.is_alive()
    watchdog.cancel()
    return banner, ready, None if killed else gone


def ms(v):
    return "n/a" if v is None else f"{v * 1000:.1f} ms"


def report(name, runs, **kw):
    res = [boot_once(**kw) for _ in range(runs)]
    cols = list(zip(*res))
    meds = [statistics.median(c) if all(x is not None for x in c) else None for c in cols]
    print(f"{name:38s} banner {ms(meds[0]):>9s}  ready {ms(meds[1]):>9s}  exit {ms(meds[2]):>9s}"
          f"  (median of {runs}; banner min {ms(min(x for x in cols[0] if x))}"
          f" max {ms(max(x for x in cols[0] if x))})")


def sh(*args):
    subprocess.run(args, check=True)


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    print(f"kernel: {KERNEL} ({os.path.getsize(KERNEL)} bytes)")
    report("no NIC, -m 8", runs)
    sh("ip", "netns", "add", NS)
    try:
        sh("ip", "-n", NS, "link", "set", "lo", "up")
        sh("ip", "-n", NS, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", NS, "addr", "add", "10.66.0.1/24", "dev", "br0")
        sh("ip", "-n", NS, "link", "set", "br0", "up")
        sh("ip", "-n", NS, "tuntap", "add", "dev", "tap0", "mode", "tap")
        sh("ip", "-n", NS, "link", "set", "tap0", "master", "br0")
        sh("ip", "-n", NS, "link", "set", "tap0", "up")
        report("virtio-net, romfile= (no option ROM)", runs, nic=True)
        report("virtio-net, default iPXE option ROM", runs, nic=True, rom=True)
        for mem in range(1, 9):
            b, r, e = boot_once(mem=mem, nic=True)
            print(f"-m {mem}: {'reaches ready' if r else 'does NOT reach ready'}")
            if r:
                break
    finally:
        subprocess.run(["ip", "netns", "del", NS])


if __name__ == "__main__":
    main()

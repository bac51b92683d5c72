#!/usr/bin/env python3
"""Fault soak for ferry's live-migration path (scripts/soak N [SEED]).

Each run migrates two real filesystem images (ext4 or XFS, GPT or MBR, random sizes and files)
with `ferry send` into `ferry-init receive`, injects one fault drawn at random, then re-runs the
same command. It must end with the target equal to the source on every used block (the extents
`ferry map` reports), the digests equal (the send succeeds and verifies), and a non-zero exit
for every run the fault interrupted. Faults:

  cut              the connection is cut at a random byte (a TCP proxy)
  sender-kill      `ferry send` gets SIGKILL mid-transfer
  receiver-kill    the receiver gets SIGKILL mid-transfer, and is started again
  source-changed   a first pass, then files rewritten in place, created and deleted
  target-replaced  an interrupted pass, then the target file deleted and made again
  state-full       the receiver's state directory is full (a 4 KiB tmpfs), then grown

One line per run, then `N passed, M failed`; exit status 1 if any failed.
Needs root (loop devices, mounts) and the binaries from scripts/build.
"""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/x86_64-unknown-linux-gnu/release")
FERRY, FERRY_INIT = os.path.join(BIN, "ferry"), os.path.join(BIN, "ferry-init")
TOKEN = "soak-token-0123456789"
FAULTS = ["cut", "sender-kill", "receiver-kill", "source-changed", "target-replaced", "state-full"]
MIB = 1 << 20


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True, **kw).stdout


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def partition_of(img):
    t = json.loads(sh(f"sfdisk -J {img}"))["partitiontable"]
    p = t["partitions"][0]
    return p["start"] * 512, p["size"] * 512


class Mounted:
    """The image's first partition, mounted through an offset loop device."""

    def __init__(self, img, mnt):
        off, size = partition_of(img)
        self.dev = sh(f"losetup -f --show -o {off} --sizelimit {size} {img}").strip()
        os.makedirs(mnt, exist_ok=True)
        sh(f"mount {self.dev} {mnt}")
        self.mnt = mnt

    def close(self):
        sh(f"umount {self.mnt}")
        sh(f"losetup -d {self.dev}")


def write_files(rnd, d, n, max_kib):
    for i in range(n):
        name = os.path.join(d, f"f{rnd.randrange(1 << 30)}")
        with open(name, "wb") as f:
            f.write(rnd.randbytes(rnd.randrange(4, max_kib) * 1024))


def make_source(rnd, path, fs, table):
    size = rnd.randrange(320, 420) if fs == "xfs" else rnd.randrange(96, 200)
    sh(f"truncate -s {size}M {path}")
    if table == "gpt":
        sh(f"sgdisk -n 1:2048:0 -t 1:8300 {path}")
    else:
        sh(f"echo 'start=2048, type=83' | sfdisk -q {path}")
    off, psize = partition_of(path)
    dev = sh(f"losetup -f --show -o {off} --sizelimit {psize} {path}").strip()
    try:
        sh(f"mkfs.xfs -q -f {dev}" if fs == "xfs" else f"mkfs.ext4 -q -F {dev}")
    finally:
        sh(f"losetup -d {dev}")
    m = Mounted(path, path + ".mnt")
    try:
        write_files(rnd, m.mnt, rnd.randrange(20, 60), 1024)
    finally:
        m.close()
    return size


def change_source(rnd, path):
    m = Mounted(path, path + ".mnt")
    try:
        files = sorted(f for f in os.listdir(m.mnt) if os.path.isfile(os.path.join(m.mnt, f)))
        for name in rnd.sample(files, min(len(files), 5)):
            p = os.path.join(m.mnt, name)
            n = os.path.getsize(p)
            with open(p, "r+b") as f:
                f.seek(rnd.randrange(max(n - 4096, 1)))
                f.write(rnd.randbytes(4096))
        for name in rnd.sample(files, min(len(files), 3)):
            if os.path.exists(os.path.join(m.mnt, name)):
                os.remove(os.path.join(m.mnt, name))
        write_files(rnd, m.mnt, 5, 512)
    finally:
        m.close()


class Receiver:
    def __init__(self, port, targets, state):
        self.args = [FERRY_INIT, "receive", "--listen", f"127.0.0.1:{port}", "--token", TOKEN, "--state-dir", state]
        for t in targets:
            self.args += ["--target", t]
        self.port = port
        self.start()

    def start(self):
        self.p = subprocess.Popen(self.args, stderr=subprocess.DEVNULL)
        t = time.time()
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.time() - t > 10:
                    raise RuntimeError("the receiver did not listen")
                time.sleep(0.05)

    def kill(self):
        self.p.send_signal(signal.SIGKILL)
        self.p.wait()

    def stop(self):
        if self.p.poll() is None:
            self.kill()


def cutting_proxy(upstream, limit):
    """Forwards 127.0.0.1:<port> to upstream; cuts both ways after `limit` bytes upstream."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)

    def serve():
        c, _ = ls.accept()
        u = socket.create_connection(("127.0.0.1", upstream))
        sent = [0]

        def pump(a, b, count):
            try:
                while True:
                    d = a.recv(65536)
                    if not d:
                        break
                    if count:
                        if sent[0] + len(d) >= limit:
                            b.sendall(d[: max(limit - sent[0], 0)])
                            break
                        sent[0] += len(d)
                    b.sendall(d)
            except OSError:
                pass
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        t = threading.Thread(target=pump, args=(u, c, False), daemon=True)
        t.start()
        pump(c, u, True)
        ls.close()

    threading.Thread(target=serve, daemon=True).start()
    return ls.getsockname()[1]


def send_cmd(port, sources, targets, finalize=True):
    # 400 Mbit/s: a run lasts long enough for a fault to land inside it.
    cmd = [FERRY, "send", "--to", f"127.0.0.1:{port}", "--token", TOKEN, "--verify", "--bwlimit", "400"]
    if not finalize:
        cmd.append("--no-finalize")
    for s, t in zip(sources, targets):
        cmd += ["--disk", f"{s}={os.path.basename(t)}"]
    return cmd


def run_cmd(cmd, kill_after=None):
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if kill_after is not None:
        try:
            p.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
    _, err = p.communicate(timeout=600)
    return p.returncode, err


def extents_equal(src, tgt):
    m = json.loads(sh(f"{FERRY} map --json {src}"))
    with open(src, "rb") as a, open(tgt, "rb") as b:
        for s, e in m["extents"]:
            a.seek(s)
            b.seek(s)
            while s < e:
                n = min(e - s, 4 * MIB)
                if a.read(n) != b.read(n):
                    return f"differs in [{s}, {s + n})"
                s += n
    return None


def one(i, seed, work):
    rnd = random.Random(seed)
    fs, table, fault = rnd.choice(["ext4", "xfs"]), rnd.choice(["gpt", "mbr"]), rnd.choice(FAULTS)
    d = os.path.join(work, f"run{i}")
    os.makedirs(d)
    sources = [os.path.join(d, f"src{k}.img") for k in range(2)]
    targets = [os.path.join(d, f"tgt{k}.img") for k in range(2)]
    sizes = [make_source(rnd, s, fs, table) for s in sources]
    for t, size in zip(targets, sizes):
        sh(f"truncate -s {size + rnd.randrange(0, 64)}M {t}")
    state = os.path.join(d, "state")
    os.makedirs(state)
    if fault == "state-full":
        sh(f"mount -t tmpfs -o size=4k tmpfs {state}")
    port = free_port()
    rx = Receiver(port, targets, state)
    interrupted = []  # exit codes of runs the fault interrupted
    total = sum(sizes) * MIB
    try:
        cmd = send_cmd(port, sources, targets)
        if fault == "cut":
            proxy = cutting_proxy(port, rnd.randrange(64 * 1024, max(total // 8, 128 * 1024)))
            interrupted.append(run_cmd(send_cmd(proxy, sources, targets))[0])
        elif fault == "sender-kill":
            interrupted.append(run_cmd(cmd, kill_after=rnd.uniform(0.1, 0.8))[0])
        elif fault == "receiver-kill":
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rnd.uniform(0.1, 0.8))
            rx.kill()
            interrupted.append(p.wait(timeout=600))
            rx.start()
        elif fault == "source-changed":
            code, err = run_cmd(send_cmd(port, sources, targets, finalize=False))
            if code != 0:
                return fs, table, fault, f"first pass failed ({code}): {err.strip()[-300:]}"
            for s in sources:
                change_source(rnd, s)
        elif fault == "target-replaced":
            interrupted.append(run_cmd(cmd, kill_after=rnd.uniform(0.1, 0.8))[0])
            victim = rnd.choice(targets)
            size = os.path.getsize(victim)
            os.remove(victim)
            with open(victim, "wb") as f:
                f.truncate(size)
        elif fault == "state-full":
            interrupted.append(run_cmd(cmd)[0])
            sh(f"mount -o remount,size=64m {state}")
        if any(c == 0 for c in interrupted):
            # The fault came after the end (a fast run): the receiver finalized and exits; the
            # re-run below is then a delta pass into a new receiver.
            fault += " (after the end)"
            try:
                if fault.startswith("receiver-kill"):
                    raise subprocess.TimeoutExpired("", 0)  # already a fresh receiver
                rx.p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        if rx.p.poll() is not None:
            rx.start()
        code, err = run_cmd(cmd)
        if code != 0:
            return fs, table, fault, f"the re-run failed ({code}): {err.strip()[-400:]}"
        rx.p.wait(timeout=60)
        for s, t in zip(sources, targets):
            diff = extents_equal(s, t)
            if diff:
                return fs, table, fault, f"{os.path.basename(t)} {diff}"
        return fs, table, fault, None
    finally:
        rx.stop()
        if fault.startswith("state-full"):
            subprocess.run(["umount", state])


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else int(time.time())
    for b in (FERRY, FERRY_INIT):
        if not os.path.exists(b):
            sys.exit(f"{b} is missing: run scripts/build")
    print(f"soak: {n} runs, seed {seed}")
    passed = failed = 0
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="ferry-soak-") as work:
        for i in range(n):
            t = time.time()
            try:
                fs, table, fault, err = one(i, seed * 1000 + i, work)
            except Exception as e:  # a harness error counts as a failure, with its reason
                fs, table, fault, err = "?", "?", "?", f"harness: {e}"
            ok = err is None
            passed += ok
            failed += not ok
            print(f"run {i:3}: {fs:4} {table} {fault:<28} {'ok' if ok else 'FAILED: ' + err} ({time.time() - t:.1f} s)", flush=True)
            subprocess.run(f"rm -rf {os.path.join(work, f'run{i}')}", shell=True)
    print(f"{passed} passed, {failed} failed ({time.time() - t0:.0f} s)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

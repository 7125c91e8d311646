#!/usr/bin/env python3
"""Route (b) spike for issue 16: what QEMU's own snapshot machinery costs,
driven over QMP, for the lab-sized guest (TCG, 2 vCPUs, 512 MiB, ~200 MiB of
it filled with random data by the guest so RAM is not all zero pages).

Measures, each N times:
  migrate-file   `migrate exec:cat > /dev/shm/…` with the guest stopped
                 (stop; migrate; wait): a full-RAM save, the fastest
                 stop-and-copy QEMU 7.2 offers into host memory.
  migrate-live   the same with the guest running (pre-copy migration;
                 reports QEMU's own downtime).
  background     migrate with the background-snapshot capability (the guest
                 keeps running, RAM is write-protected with userfaultfd and
                 copied out).
  restore-new    load a saved stream into a *new* QEMU started with
                 `-incoming defer` (migrate-incoming): the only way to load a
                 migration stream; a running QEMU cannot take one in place.
  snapshot-save / snapshot-load   internal snapshots (vmstate into a qcow2
                 image on /dev/shm): the only in-place restore QEMU has.

Usage: bench/vm/qmp-spike.py [ROUNDS]   (root not needed; needs
qemu-system-x86_64, qemu-img, busybox-static and the lab's kernel:
KERNEL=/path/to/vmlinuz or the lab cache).
"""
import glob, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
FILL_MB = 200


def find_kernel():
    k = os.environ.get("KERNEL")
    if k:
        return k
    cache = os.environ.get("SELFHEAL_LAB_CACHE", os.path.expanduser("~/.cache/selfheal-lab"))
    hits = sorted(glob.glob(f"{cache}/kernel/*/boot/vmlinuz-*"))
    if not hits:
        sys.exit("no kernel: set KERNEL=/path/to/vmlinuz or run `selfheal-lab prepare` first")
    return hits[-1]


class QMP:
    def __init__(self, path, timeout=60):
        t0 = time.time()
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                if time.time() - t0 > timeout:
                    raise
                time.sleep(0.05)
        self.f = self.s.makefile("rwb", buffering=0)
        self.events, self.n = [], 0
        self.line()
        self.cmd("qmp_capabilities")

    def line(self):
        l = self.f.readline()
        if not l:
            raise EOFError("QMP closed")
        return json.loads(l)

    def cmd(self, name, **args):
        self.n += 1
        m = {"execute": name, "id": self.n}
        if args:
            m["arguments"] = args
        self.f.write((json.dumps(m) + "\n").encode())
        while True:
            r = self.line()
            if "event" in r:
                self.events.append(r)
            elif r.get("id") == self.n:
                if "error" in r:
                    raise RuntimeError(f"{name}: {r['error']}")
                return r["return"]

    def wait_migration(self):
        while True:
            st = self.cmd("query-migrate")
            if st.get("status") in ("completed", "failed", "cancelled"):
                return st
            time.sleep(0.01)

    def wait_job(self, job):
        while True:
            for j in self.cmd("query-jobs"):
                if j["id"] == job and j["status"] in ("concluded", "null"):
                    if j.get("error"):
                        raise RuntimeError(j["error"])
                    self.cmd("job-dismiss", id=job)
                    return
            time.sleep(0.01)


def initrd(dir):
    root = os.path.join(dir, "root")
    os.makedirs(f"{root}/bin")
    shutil.copy("/bin/busybox", f"{root}/bin/busybox")
    with open(f"{root}/init", "w") as f:
        f.write(f"""#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
mkdir -p /fill && mount -t tmpfs -o size={FILL_MB + 16}m tmpfs /fill
dd if=/dev/urandom of=/fill/x bs=1M count={FILL_MB} 2>/dev/null
echo FILLED
i=0
while true; do i=$((i+1)); echo "HB $i $(cat /proc/uptime)"; sleep 0.1; done
""")
    os.chmod(f"{root}/init", 0o755)
    for d in ("proc", "dev"):
        os.makedirs(f"{root}/{d}")
    out = os.path.join(dir, "initrd.cpio")
    subprocess.run(f"cd {root} && find . | cpio -o -H newc > {out} 2>/dev/null", shell=True, check=True)
    return out


def qemu(dir, kernel, rd, name, extra=()):
    sock = os.path.join(dir, f"{name}.qmp")
    log = os.path.join(dir, f"{name}.log")
    p = subprocess.Popen(
        ["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "512",
         "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-monitor", "none",
         "-kernel", kernel, "-initrd", rd, "-append", "console=ttyS0 quiet",
         "-serial", f"file:{log}",
         "-chardev", f"socket,id=qmp,path={sock},server=on,wait=off",
         "-mon", "chardev=qmp,mode=control", *extra],
        stdin=subprocess.DEVNULL)
    return p, QMP(sock), log


def wait_for(path, text, timeout=180):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if os.path.exists(path) and text in open(path, errors="replace").read():
            return
        time.sleep(0.2)
    sys.exit(f"guest never printed {text!r} in {path}")


def hb_count(path):
    return sum(1 for l in open(path, errors="replace") if l.startswith("HB "))


def ms(s):
    return f"{s * 1000:.0f} ms"


def main():
    kernel = find_kernel()
    dir = tempfile.mkdtemp(prefix="vm-qmp-spike-", dir="/dev/shm")
    res = {k: [] for k in ("migrate-file", "migrate-file-downtime", "migrate-live", "migrate-live-downtime",
                           "background", "background-downtime", "restore-new", "snapshot-save",
                           "snapshot-load")}
    sizes = []
    try:
        rd = initrd(dir)
        disk = os.path.join(dir, "vmstate.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "64M"], check=True)
        p, q, log = qemu(dir, kernel, rd, "src", [
            "-drive", f"if=none,id=drive0,file={disk},format=qcow2,node-name=d0",
            "-device", "virtio-blk-pci,drive=drive0"])
        wait_for(log, "FILLED")
        mig = os.path.join(dir, "vm.mig")
        # QEMU throttles migration to 128 MiB/s by default; lift it so the
        # numbers show the machinery, not the throttle.
        q.cmd("migrate-set-parameters", **{"max-bandwidth": 64 << 30})
        for r in range(ROUNDS):
            # Stop-and-copy into /dev/shm.
            q.cmd("stop")
            t0 = time.time()
            q.cmd("migrate", uri=f"exec:cat > {mig}")
            st = q.wait_migration()
            res["migrate-file"].append(time.time() - t0)
            res["migrate-file-downtime"].append(st.get("downtime", 0) / 1000)
            sizes.append(os.path.getsize(mig))
            q.cmd("cont")
            time.sleep(1)
            # Live pre-copy.
            t0 = time.time()
            q.cmd("migrate", uri=f"exec:cat > {mig}.live")
            st = q.wait_migration()
            res["migrate-live"].append(time.time() - t0)
            res["migrate-live-downtime"].append(st.get("downtime", 0) / 1000)
            # After a completed live migration the source stays paused: resume it.
            q.cmd("cont")
            time.sleep(1)
            # Background snapshot.
            q.cmd("migrate-set-capabilities", capabilities=[{"capability": "background-snapshot", "state": True}])
            t0 = time.time()
            try:
                q.cmd("migrate", uri=f"exec:cat > {mig}.bg")
                st = q.wait_migration()
                res["background"].append(time.time() - t0)
                res["background-downtime"].append(st.get("downtime", 0) / 1000)
            except RuntimeError as e:
                print(f"background-snapshot: {e}")
            q.cmd("migrate-set-capabilities", capabilities=[{"capability": "background-snapshot", "state": False}])
            status = q.cmd("query-status")["status"]
            if status != "running":
                q.cmd("cont")
            time.sleep(1)
            # Internal snapshot: save, let the guest run on, load in place.
            t0 = time.time()
            q.cmd("snapshot-save", **{"job-id": f"save{r}", "tag": f"s{r}", "vmstate": "d0", "devices": ["d0"]})
            q.wait_job(f"save{r}")
            res["snapshot-save"].append(time.time() - t0)
            if q.cmd("query-status")["status"] != "running":
                q.cmd("cont")
            time.sleep(1)
            before = hb_count(log)
            t0 = time.time()
            q.cmd("snapshot-load", **{"job-id": f"load{r}", "tag": f"s{r}", "vmstate": "d0", "devices": ["d0"]})
            q.wait_job(f"load{r}")
            res["snapshot-load"].append(time.time() - t0)
            if q.cmd("query-status")["status"] != "running":
                q.cmd("cont")
            time.sleep(1.5)
            if hb_count(log) <= before:
                print("warning: no heartbeat after snapshot-load")
            q.cmd("snapshot-delete", **{"job-id": f"del{r}", "tag": f"s{r}", "devices": ["d0"]})
            q.wait_job(f"del{r}")
        q.cmd("quit")
        p.wait(30)
        # Restore the stop-and-copy stream into a new QEMU.
        for r in range(ROUNDS):
            p2, q2, log2 = qemu(dir, kernel, rd, f"dst{r}", ["-incoming", "defer",
                                "-drive", f"if=none,id=drive0,file={disk},format=qcow2,node-name=d0",
                                "-device", "virtio-blk-pci,drive=drive0"])
            t0 = time.time()
            q2.cmd("migrate-incoming", uri=f"exec:cat {mig}")
            while q2.cmd("query-status")["status"] in ("inmigrate",):
                time.sleep(0.005)
            res["restore-new"].append(time.time() - t0)
            q2.cmd("cont")
            time.sleep(1.5)
            ok = hb_count(log2) > 0
            q2.cmd("quit")
            p2.wait(30)
            if not ok:
                print("warning: restored guest printed no heartbeat")
    finally:
        shutil.rmtree(dir, ignore_errors=True)
    print(f"# QMP route spike: {ROUNDS} rounds, QEMU TCG 2 vCPUs 512 MiB, {FILL_MB} MiB of guest RAM random")
    print(f"# load average at the end: {open('/proc/loadavg').read().split()[0]}")
    print(f"migration stream size: {statistics.median(sizes) / 2**20:.0f} MiB (median)")
    for k, v in res.items():
        if v:
            print(f"{k:24} median {ms(statistics.median(v)):>9}  min {ms(min(v)):>9}  max {ms(max(v)):>9}")


if __name__ == "__main__":
    main()

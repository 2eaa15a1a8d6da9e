"""Raspberry Pi OS-shaped images for the boot tests (no tests here).

A Debian root of the Pi's architecture (mmdebstrap, or debootstrap, through qemu-user-static) with the
parts of Raspberry Pi OS Lite first boot relies on (systemd, udev, python3 3.11, sudo, apt; no libVLC),
a FAT32 `bootfs` with cmdline.txt/config.txt/issue.txt, and an ext4 root, in one MBR disk image made
without loop devices (mkfs.vfat --offset, mke2fs -d -E offset). For qemu-system-aarch64's `virt`
machine the image also gets Debian's arm64 kernel and modules (extracted on the host, not installed:
Raspberry Pi OS boots its own kernel from bootfs) and a small busybox initramfs that loads virtio and
ext4 and hands over to systemd, with the kernel command line taken from the card's cmdline.txt as the
Pi firmware does.

`SPEAKER_CI_CACHE=DIR` keeps the debootstrapped base roots as tarballs between runs (an optimisation:
without it everything is built from the Debian mirror).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from provisioning.bundle_debs import AptRoot

SECTOR = 512
BOOT_START = 8192
BOOT_MB = 512  # as Raspberry Pi OS Bookworm; FAT32 needs >= 65525 clusters (mtools reads fewer as FAT16)
CMDLINE = "console=serial0,115200 console=tty1 root=PARTUUID=5e3da3da-02 rootfstype=ext4 fsck.repair=yes rootwait\n"
ISSUE = "Raspberry Pi reference 2024-11-19\nGenerated using pi-gen, https://github.com/RPi-Distro/pi-gen\n"
# What Raspberry Pi OS Lite has that first boot uses; python3 3.11, no libVLC, no python3-venv.
BASE_PACKAGES = ["systemd-sysv", "udev", "kmod", "python3", "sudo", "iproute2", "ca-certificates", "dbus"]
BUILD_PACKAGES = ["python3-dev", "python3-setuptools", "python3-wheel", "python3-pip", "gcc", "libc6-dev",
                  "libffi-dev"]
INITRD_MODULES = ["virtio_pci", "virtio_blk", "crc32c_generic", "libcrc32c", "ext4"]
MIRROR = "http://deb.debian.org/debian"


@dataclass
class Timings:
    steps: dict[str, float] = field(default_factory=dict)

    def step(self, name: str):
        timings = self

        class _Step:
            def __enter__(self):
                self.start = time.monotonic()

            def __exit__(self, *exc):
                timings.steps[name] = round(time.monotonic() - self.start, 1)
                print(f"[timing] {name}: {timings.steps[name]:.1f} s", flush=True)

        return _Step()


def run(*argv, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    return subprocess.run([str(a) for a in argv], **kw)


def missing_tools(arch: str) -> list[str]:
    need = ["mkfs.vfat", "mke2fs", "sfdisk", "mcopy", "cpio", "depmod", "dpkg-deb", "apt-get", "chroot"]
    need.append("mmdebstrap" if shutil.which("mmdebstrap") else "debootstrap")
    if arch == "arm64":
        need.append("qemu-system-aarch64")
    missing = [tool for tool in need if shutil.which(tool) is None]
    qemu = {"arm64": "qemu-aarch64", "armhf": "qemu-arm"}[arch]
    try:
        enabled = Path(f"/proc/sys/fs/binfmt_misc/{qemu}").read_text().startswith("enabled")
    except OSError:
        enabled = False
    if not enabled:
        missing.append(f"binfmt {qemu} (qemu-user-static)")
    return missing


def base_root(dest: Path, arch: str, packages: list[str], release: str = "bookworm") -> None:
    """A Debian root of ARCH at DEST, from the cache when SPEAKER_CI_CACHE has one."""
    key = hashlib.sha256(f"{release} {arch} {' '.join(sorted(packages))}".encode()).hexdigest()[:16]
    cache = os.environ.get("SPEAKER_CI_CACHE")
    tarball = Path(cache) / f"root-{release}-{arch}-{key}.tar" if cache else None
    dest.mkdir(parents=True, exist_ok=True)
    if tarball and tarball.is_file():
        run("tar", "-C", dest, "--numeric-owner", "-xpf", tarball)
        return
    if shutil.which("mmdebstrap"):
        run("mmdebstrap", f"--arch={arch}", "--variant=minbase", f"--include={','.join(packages)}", release,
            dest, MIRROR, stdout=subprocess.DEVNULL)
    else:
        run("debootstrap", f"--arch={arch}", "--variant=minbase", f"--include={','.join(packages)}", release,
            dest, MIRROR, stdout=subprocess.DEVNULL)
    if tarball:
        tarball.parent.mkdir(parents=True, exist_ok=True)
        run("tar", "-C", dest, "--numeric-owner", "-cpf", f"{tarball}.part", ".")
        os.replace(f"{tarball}.part", tarball)


def download_debs(work: Path, arch: str, names: list[str], release: str = "bookworm") -> list[Path]:
    """`apt-get download` of NAMES for ARCH with a private apt configuration (the host is untouched)."""
    apt = AptRoot(work / f"apt-{arch}", release, arch)
    conf = apt.prepare()
    env = dict(os.environ, APT_CONFIG=str(conf))
    run("apt-get", "-q", "update", env=env, stdout=subprocess.DEVNULL)
    resolved = []
    for name in names:  # metapackages (linux-image-arm64) -> the real package
        out = run("apt-cache", "depends", name, env=env, capture_output=True, text=True).stdout
        real = [m[1] for m in re.finditer(r"Depends: (linux-image-[0-9][^\s]*)", out)]
        resolved.append(real[0] if real else name)
    dest = work / f"debs-{arch}"
    dest.mkdir(exist_ok=True)
    run("apt-get", "-q", "download", *resolved, env=env, cwd=dest, stdout=subprocess.DEVNULL)
    return sorted(dest.glob("*.deb"))


def add_virt_kernel(root: Path, work: Path) -> tuple[Path, Path]:
    """Debian's arm64 kernel + modules into the root (extracted natively), and a busybox initramfs."""
    debs = download_debs(work, "arm64", ["linux-image-arm64", "busybox-static"])
    kdir, bdir = work / "kernel", work / "busybox"
    for deb in debs:
        run("dpkg-deb", "-x", deb, bdir if "busybox" in deb.name else kdir)
    version = next((kdir / "lib" / "modules").iterdir()).name
    shutil.copytree(kdir / "lib" / "modules" / version, root / "lib" / "modules" / version, dirs_exist_ok=True)
    run("depmod", "-b", root, version)
    vmlinuz = work / "vmlinuz"
    shutil.copyfile(next((kdir / "boot").glob("vmlinuz-*")), vmlinuz)
    return vmlinuz, make_initrd(work / "initrd", root, version, bdir / "bin" / "busybox")


def module_order(root: Path, version: str, wanted: list[str]) -> list[str]:
    """Module files (relative to lib/modules/VERSION) in an order insmod accepts, from modules.dep."""
    deps = {}
    for line in (root / "lib" / "modules" / version / "modules.dep").read_text().splitlines():
        name, _, rest = line.partition(":")
        deps[Path(name).name.split(".ko")[0].replace("-", "_")] = (name, rest.split())
    order: list[str] = []

    def visit(path: str) -> None:
        key = Path(path).name.split(".ko")[0].replace("-", "_")
        name, needs = deps[key]
        for dep in reversed(needs):
            visit(dep)
        if name not in order:
            order.append(name)

    for module in wanted:
        if module in deps:
            visit(deps[module][0])
    return order


INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in {modules}; do insmod "/lib/modules/{version}/$m"; done
for i in $(seq 1 100); do [ -b /dev/vda2 ] && break; sleep 0.1; done
mount -o ro /dev/vda2 /root || {{ echo "initrd: cannot mount /dev/vda2"; exec sh; }}
umount /proc /sys
mount --move /dev /root/dev
exec switch_root /root /sbin/init
"""


def make_initrd(path: Path, root: Path, version: str, busybox: Path) -> Path:
    tree = path.with_suffix(".d")
    shutil.rmtree(tree, ignore_errors=True)
    (tree / "bin").mkdir(parents=True)
    shutil.copyfile(busybox, tree / "bin" / "busybox")
    (tree / "bin" / "busybox").chmod(0o755)
    modules = module_order(root, version, INITRD_MODULES)
    for module in modules:
        target = tree / "lib" / "modules" / version / module
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / "lib" / "modules" / version / module, target)
    (tree / "init").write_text(INIT.format(modules=" ".join(modules), version=version))
    (tree / "init").chmod(0o755)
    files = "\n".join(str(p.relative_to(tree)) for p in sorted(tree.rglob("*"))) + "\n"
    archive = run("cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0", cwd=tree, input=files.encode(),
                  capture_output=True).stdout
    path.write_bytes(gzip.compress(archive, compresslevel=1))
    return path


def shape_like_raspios(root: Path) -> None:
    """What pi-gen adds around the Debian base that first boot depends on, for the virt machine."""
    (root / "boot" / "firmware").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "fstab").write_text(
        "/dev/vda2  /              ext4  defaults,noatime  0 1\n"
        "/dev/vda1  /boot/firmware vfat  defaults          0 2\n")
    (root / "etc" / "hostname").write_text("raspberrypi\n")
    (root / "etc" / "hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n")
    network = root / "etc" / "systemd" / "network" / "10-wired.network"
    network.parent.mkdir(parents=True, exist_ok=True)
    network.write_text("[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n")
    wants = root / "etc" / "systemd" / "system" / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "systemd-networkd.service"
    if not link.exists():
        link.symlink_to("/lib/systemd/system/systemd-networkd.service")


def make_disk(path: Path, root: Path, root_free_mb: int = 1200, work: Path | None = None) -> Path:
    """MBR + FAT32 bootfs + ext4 root made from ROOT; no root-only tools, no loop device."""
    work = work or path.parent
    used_mb = int(run("du", "-sm", root, capture_output=True, text=True).stdout.split()[0])
    root_mb = used_mb + root_free_mb
    root_start = BOOT_START + BOOT_MB * 2048
    with open(path, "wb") as f:
        f.truncate((root_start * SECTOR) + root_mb * 1024 * 1024)
    table = (f"label: dos\nlabel-id: 0x5e3da3da\nstart={BOOT_START}, size={BOOT_MB * 2048}, type=c\n"
             f"start={root_start}, type=83\n")
    run("sfdisk", "--no-reread", "-q", path, input=table.encode())
    run("mkfs.vfat", "-F", "32", "-n", "bootfs", "--offset", BOOT_START, path, BOOT_MB * 1024,
        stdout=subprocess.DEVNULL)
    staging = work / "bootfs-staging"
    staging.mkdir(exist_ok=True)
    for name, text in {"cmdline.txt": CMDLINE, "config.txt": "arm_64bit=1\ndtparam=audio=on\n",
                       "issue.txt": ISSUE}.items():
        (staging / name).write_text(text)
        run("mcopy", "-i", f"{path}@@{BOOT_START * SECTOR}", staging / name, f"::/{name}",
            env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
    run("mke2fs", "-q", "-F", "-t", "ext4", "-d", root, "-E", f"offset={root_start * SECTOR}", path,
        f"{root_mb}M")
    return path


def fat(image: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([args[0], "-i", f"{image}@@{BOOT_START * SECTOR}", *args[1:]], capture_output=True,
                          env=dict(os.environ, MTOOLS_SKIP_CHECK="1"), check=False)


def fat_read(image: Path, path: str) -> bytes | None:
    proc = fat(image, "mcopy", "-n", f"::{path}", "-")
    return proc.stdout if proc.returncode == 0 else None


def boot_partition_bytes(image: Path) -> bytes:
    with open(image, "rb") as f:
        f.seek(BOOT_START * SECTOR)
        return f.read(BOOT_MB * 1024 * 1024)


def kernel_args(cmdline: str) -> str:
    """What the Pi firmware hands the kernel, for `virt`: serial0 is the PL011 (ttyAMA0), the root the
    second virtio disk partition."""
    args = cmdline.strip().split()
    out = []
    for arg in args:
        if arg.startswith("root="):
            arg = "root=/dev/vda2"
        elif arg == "console=serial0,115200":
            arg = "console=ttyAMA0,115200"
        elif arg == "console=tty1":
            continue
        out.append(arg)
    return " ".join(out)


def boot(image: Path, vmlinuz: Path, initrd: Path, serial_log: Path, timeout: float,
         until: str | None = None) -> tuple[int | None, str]:
    """Boot the image once (reboot = exit); returns (qemu exit status or None on timeout, serial text).
    With `until`, stop as soon as that text appears on the console."""
    args = kernel_args(fat_read(image, "/cmdline.txt").decode())
    argv = ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a57", "-smp", "2", "-m", "1024",
            "-display", "none", "-monitor", "none", "-no-reboot", "-serial", f"file:{serial_log}",
            "-kernel", str(vmlinuz), "-initrd", str(initrd), "-append", args,
            "-drive", f"file={image},format=raw,if=none,id=disk0", "-device", "virtio-blk-pci,drive=disk0",
            "-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0,romfile=",  # no PXE ROM: -kernel boots
            "-device", "virtio-rng-pci"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    status = None
    try:
        while time.monotonic() < deadline:
            status = proc.poll()
            if status is not None:
                break
            if until and serial_log.exists() and until in serial_log.read_text(errors="replace"):
                proc.wait(timeout=120)  # the report powers the machine off
                status = proc.returncode
                break
            time.sleep(2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    serial = serial_log.read_text(errors="replace") if serial_log.exists() else ""
    if status not in (0, None) or not serial:
        serial += f"\n[qemu exit {status}] {proc.stderr.read().decode(errors='replace')[-2000:]}"
    return status, serial


def chroot_mounts(root: Path):
    """/proc, /sys and /dev inside a root for the time of a chroot session; unmounted in reverse."""
    import contextlib

    @contextlib.contextmanager
    def mounted():
        done = []
        try:
            for kind, where in (("proc", "proc"), ("sysfs", "sys")):
                run("mount", "-t", kind, kind, root / where)
                done.append(root / where)
            run("mount", "--rbind", "/dev", root / "dev")  # with /dev/pts: apt and dpkg want a terminal log
            done.append(root / "dev")
            yield root
        finally:
            for where in reversed(done):
                subprocess.run(["umount", "-R", "-l", str(where)], check=False)

    return mounted()


def extract(tar: Path, dest: Path) -> None:
    with tarfile.open(tar) as archive:
        archive.extractall(dest, filter="fully_trusted")

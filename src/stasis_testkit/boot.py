"""The test guest's boot files: the host's Debian cloud kernel and a busybox initramfs.

Nothing is downloaded: the kernel comes from linux-image-cloud-amd64, the userland
is busybox-static, the drivers are the kernel's own virtio modules, the guest agent
is the host's own ``/usr/sbin/qemu-ga`` (package qemu-guest-agent) with the shared
libraries ``ldd`` names for it, at the same paths, so that the loader finds them with
no ``ld.so.cache``. The initramfs holds busybox, the modules (decompressed: busybox
insmod reads plain ``.ko`` only), qemu-ga when the host has it, ``/init`` and the
guest-side scripts of the kit. The result is cached under ``<kit_dir>/boot/<key>/``,
where the key hashes every input (paths, sizes, mtimes of the files, the text of the
scripts), so a build is a few stat calls (and one ``ldd``) when nothing changed and
a rebuild when anything did.

ext4 needs no module: the Debian cloud kernel has it (and jbd2, crc16, crc32c) built
in (``CONFIG_EXT4_FS=y``), so a guest mounts an ``ext4_from`` disk as it is.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from stasis_testkit.control import CONTROL_LOOP
from stasis_testkit.cpio import Entry, write_newc
from stasis_testkit.errors import BootFilesError
from stasis_testkit.workload import SEQLOG_SCRIPT

FORMAT = 2  # bump when the layout of the initramfs changes in a way the inputs do not show

# Load order matters: each module needs the ones before it (no modprobe/depmod in the guest).
CORE_MODULES = (
    "virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
    "virtio_blk",
)
# Loaded when present: the guest-agent channel (virtio-serial) and an optional NIC.
EXTRA_MODULES = ("virtio_console", "failover", "net_failover", "virtio_net")

READY_MARKER = "STASIS-GUEST-READY"
QEMU_GA = Path("/usr/sbin/qemu-ga")
# What /init prints once qemu-ga runs: the host then knows an agent is coming up.
AGENT_STARTED = "stasis-init: qemu-ga started on"

INIT_SCRIPT = r"""#!/bin/busybox sh
# /init of the Stasis test guest (built by stasis_testkit/boot.py).
/bin/busybox --install -s /bin
export PATH=/bin HOME=/
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /lib/modules/order); do
    insmod "/lib/modules/$m.ko" || echo "stasis-init: insmod $m failed"
done
name=unknown
for arg in $(cat /proc/cmdline); do
    case "$arg" in stasis.name=*) name=${arg#stasis.name=} ;; esac
done
hostname "$name"
ip link set lo up 2>/dev/null
# A NIC, when the domain has one, takes an address by DHCP (recovery drills reach the
# guest across their isolated network); stasis.listen=PORT serves a page on that port.
if [ -e /sys/class/net/eth0 ]; then
    ip link set eth0 up
    udhcpc -f -i eth0 -s /bin/stasis-dhcp </dev/null >/dev/null 2>&1 &
fi
for arg in $(cat /proc/cmdline); do
    case "$arg" in stasis.listen=*)
        mkdir -p /www && echo "stasis-guest $name" > /www/index.html
        httpd -p "${arg#stasis.listen=}" -h /www ;;
    esac
done
# The guest agent, when the domain has its channel. There is no udev: the port is found
# by its name in sysfs (the name arrives from QEMU a moment after virtio_console binds),
# and the symlink udev would make is made here. Its state and pidfile are in /run, on
# the initramfs root, which fsfreeze never freezes (qemu-ga skips filesystems with no
# block device), so the command loop below keeps working while the disks are frozen.
start_agent() {
    [ -x /usr/sbin/qemu-ga ] || { echo "stasis-init: no qemu-ga in this initramfs"; return; }
    # virtio device id 3 is virtio-serial: libvirt adds one only for a <channel>.
    grep -qx 0x0003 /sys/bus/virtio/devices/*/device 2>/dev/null || return
    i=0
    while [ $i -lt 100 ]; do
        for p in /sys/class/virtio-ports/vport*; do
            if [ "$(cat "$p/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] \
                    && [ -c "/dev/${p##*/}" ]; then
                dev=/dev/${p##*/}
                mkdir -p /dev/virtio-ports /run/qemu-ga
                ln -sf "$dev" /dev/virtio-ports/org.qemu.guest_agent.0
                /usr/sbin/qemu-ga -m virtio-serial -p "$dev" -t /run/qemu-ga \
                    -f /run/qemu-ga.pid -l /run/qemu-ga.log </dev/null >/dev/null 2>&1 &
                echo "__AGENT__ $dev"
                return
            fi
        done
        sleep 0.1
        i=$((i + 1))
    done
    echo "stasis-init: no virtio port named org.qemu.guest_agent.0; no guest agent"
}
start_agent
# Keep the command port open from here on: the 8250 driver resets its FIFO when the
# port is opened after a close, which would drop bytes the host already sent.
exec 3<>/dev/ttyS1
stty raw -echo -iexten cs8 -parenb clocal <&3
echo "__READY__ $name"
while :; do
    stasis-ctl <&3 >&3 2>/dev/console
    sleep 1
done
""".replace("__READY__", READY_MARKER).replace("__AGENT__", AGENT_STARTED)

# udhcpc's script: apply the lease it got (busybox's udhcpc sets $ip, $mask in bits).
DHCP_SCRIPT = r"""#!/bin/busybox sh
case "$1" in
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface" ;;
    deconfig) ip addr flush dev "$interface" ;;
esac
"""


@dataclass(frozen=True)
class BootFiles:
    """A built kernel + initramfs pair, ready for ``<os><kernel>/<initrd>``."""

    kernel: Path
    initrd: Path
    kernel_version: str
    key: str
    built: bool  # False when the cache already held them
    agent: bool = False  # whether the initramfs holds qemu-ga


def _version_key(version: str) -> list[tuple[int, str]]:
    return [(int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.\-+~]", version)]


def find_kernel(boot_dir: Path = Path("/boot")) -> tuple[Path, str]:
    """The newest Debian cloud kernel: (vmlinuz path, kernel version)."""
    found = sorted(
        boot_dir.glob("vmlinuz-*-cloud-amd64"),
        key=lambda p: _version_key(p.name.removeprefix("vmlinuz-")),
    )
    if not found:
        raise BootFilesError(f"no {boot_dir}/vmlinuz-*-cloud-amd64")
    kernel = found[-1]
    return kernel, kernel.name.removeprefix("vmlinuz-")


def find_busybox() -> Path:
    for candidate in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
        if candidate.is_file():
            with open(candidate, "rb") as f:
                head = f.read(1 << 16)
            # A dynamically linked busybox names its interpreter in the ELF header.
            if b"/lib64/ld-linux" not in head and b"/lib/ld-linux" not in head:
                return candidate
    raise BootFilesError("no statically linked busybox (package busybox-static)")


def find_modules(modules_dir: Path, names: tuple[str, ...]) -> dict[str, Path]:
    """Module name → file (``.ko`` or compressed) under ``modules_dir``, from modules.dep."""
    dep = modules_dir / "modules.dep"
    files: dict[str, Path] = {}
    if dep.is_file():
        for line in dep.read_text().splitlines():
            rel = line.split(":", 1)[0]
            files[re.sub(r"\.ko(\.(xz|zst|gz))?$", "", Path(rel).name)] = modules_dir / rel
    else:
        for path in modules_dir.rglob("*.ko*"):
            files[re.sub(r"\.ko(\.(xz|zst|gz))?$", "", path.name)] = path
    return {n: files[n].resolve() for n in names if n in files}


def shared_libraries(binary: Path) -> list[Path]:
    """The shared objects ``binary`` loads, the dynamic loader included, as ``ldd`` names them.

    The paths are kept as they are (``/lib/x86_64-linux-gnu/libc.so.6``, not the file a
    symlink leads to): those are the names the loader looks for in the guest.
    """
    proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"})
    if proc.returncode != 0:
        raise BootFilesError(f"ldd {binary} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    libs: list[Path] = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if "=>" in line:
            soname, target = (part.strip() for part in line.split("=>", 1))
            if target.startswith("not found"):
                raise BootFilesError(f"{binary} needs {soname}, which is not installed")
            path = target.split(" (", 1)[0].strip()
        else:
            path = line.split(" (", 1)[0].strip()  # the loader, or the vDSO (no file)
        if path.startswith("/") and Path(path) not in libs:
            libs.append(Path(path))
    if not any(p.name.startswith("ld-linux") for p in libs):
        raise BootFilesError(f"ldd {binary} names no dynamic loader: {proc.stdout.strip()!r}")
    return libs


def find_agent(qemu_ga: Path = QEMU_GA) -> list[Path]:
    """qemu-ga and every file it needs to run, or [] when it is not installed."""
    if not qemu_ga.is_file():
        return []
    return [qemu_ga, *shared_libraries(qemu_ga)]


def _module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".zst":
        import zstandard

        return bytes(zstandard.ZstdDecompressor().decompressobj().decompress(data))
    return data


def _file_id(path: Path) -> str:
    st = path.stat()  # follows a symlink: the id is the file's, under the name used
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


def build_boot_files(kit_dir: Path, *, kernel: Path | None = None,
                     modules_dir: Path | None = None, qemu_ga: Path | None = QEMU_GA,
                     force: bool = False) -> BootFiles:
    """Build (or find in the cache) the kernel and initramfs of the test guest.

    ``qemu_ga`` is the guest agent to put in (with its libraries); ``None``, or a path
    that does not exist, builds guests without an agent.
    """
    if kernel is None:
        kernel, version = find_kernel()
    else:
        version = kernel.name.removeprefix("vmlinuz-")
    if not kernel.is_file():
        raise BootFilesError(f"kernel {kernel} does not exist")
    modules_dir = modules_dir or Path("/lib/modules") / version
    busybox = find_busybox()
    core = find_modules(modules_dir, CORE_MODULES)
    missing = [m for m in CORE_MODULES if m not in core]
    if missing:
        raise BootFilesError(f"modules {', '.join(missing)} not found under {modules_dir}")
    extra = find_modules(modules_dir, EXTRA_MODULES)
    # An extra module is only loadable with the ones it depends on, listed before it.
    order = list(CORE_MODULES)
    if "virtio_console" in extra:
        order.append("virtio_console")
    if all(m in extra for m in ("failover", "net_failover", "virtio_net")):
        order += ["failover", "net_failover", "virtio_net"]
    modules = {**core, **extra}
    agent_files = find_agent(qemu_ga) if qemu_ga is not None else []

    digest = hashlib.sha256()
    for part in (str(FORMAT), _file_id(kernel), _file_id(busybox), INIT_SCRIPT, CONTROL_LOOP,
                 SEQLOG_SCRIPT, DHCP_SCRIPT, *(f"{m}={_file_id(modules[m])}" for m in order),
                 *(f"agent={_file_id(p)}" for p in agent_files)):
        digest.update(part.encode() + b"\0")
    key = digest.hexdigest()[:16]
    dest = kit_dir / "boot" / key
    agent = bool(agent_files)
    if (dest / "BUILD.json").is_file() and not force:
        return BootFiles(dest / "vmlinuz", dest / "initrd.img", version, key, built=False,
                         agent=agent)

    (kit_dir / "boot").mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=kit_dir / "boot"))
    try:
        shutil.copyfile(kernel, tmp / "vmlinuz")
        entries = [
            *(Entry.directory(d) for d in (
                "bin", "dev", "proc", "sys", "run", "tmp", "root", "etc", "lib", "lib/modules")),
            Entry.char_device("dev/console", 5, 1),
            Entry.char_device("dev/null", 1, 3, 0o666),
            Entry.file("bin/busybox", busybox.read_bytes(), 0o755),
            Entry.file("init", INIT_SCRIPT.encode(), 0o755),
            Entry.file("bin/stasis-ctl", CONTROL_LOOP.encode(), 0o755),
            Entry.file("bin/stasis-seqlog", SEQLOG_SCRIPT.encode(), 0o755),
            Entry.file("bin/stasis-dhcp", DHCP_SCRIPT.encode(), 0o755),
            Entry.file("lib/modules/order", ("\n".join(order) + "\n").encode()),
            *(Entry.file(f"lib/modules/{m}.ko", _module_bytes(modules[m])) for m in order),
            *_file_entries(agent_files),
        ]
        raw = io.BytesIO()
        write_newc(raw, entries)
        with open(tmp / "initrd.img", "wb") as f:
            f.write(gzip.compress(raw.getvalue(), compresslevel=6, mtime=0))
        info = {"kernel": str(kernel), "kernel_version": version, "busybox": str(busybox),
                "modules": {m: str(modules[m]) for m in order},
                "agent": [str(p) for p in agent_files], "format": FORMAT}
        (tmp / "BUILD.json").write_text(json.dumps(info, indent=2) + "\n")
        for p in tmp.iterdir():
            os.chmod(p, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
        os.chmod(tmp, 0o755)
        if dest.exists():
            shutil.rmtree(dest)
        try:
            tmp.rename(dest)
        except OSError:
            # Another process built the same key at the same time: theirs is as good.
            if not (dest / "BUILD.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return BootFiles(dest / "vmlinuz", dest / "initrd.img", version, key, built=True,
                     agent=agent)


def _file_entries(paths: list[Path]) -> list[Entry]:
    """Host files at their own paths in the archive, with the directories above them.

    Each is stored as a regular file under the name given (a library's soname symlink
    becomes the file it points to): the guest needs only the names the loader asks for.
    """
    dirs: set[str] = set()
    entries: list[Entry] = []
    for path in paths:
        rel = path.relative_to("/")
        dirs.update(str(parent) for parent in rel.parents if str(parent) != ".")
        entries.append(Entry.file(str(rel), path.read_bytes(), 0o755))
    # "lib" and "lib/modules" are already in the archive.
    entries += [Entry.directory(d) for d in sorted(dirs - {"lib", "lib/modules"})]
    return entries

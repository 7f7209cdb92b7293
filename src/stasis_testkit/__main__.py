"""``python -m stasis_testkit``: build boot files, create, list and destroy test guests."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import libvirt

from stasis_testkit.disks import DiskSpec
from stasis_testkit.errors import GuestKitError
from stasis_testkit.guest import DEFAULT_PREFIX, GuestKit, default_kit_dir


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stasis_testkit",
                                description="Small libvirt test guests for Stasis.")
    p.add_argument("--kit-dir", type=Path, default=None,
                   help="kit directory (default: $STASIS_TESTKIT_DIR or <state dir>/testkit)")
    p.add_argument("--uri", default="qemu:///system", help="libvirt URI (%(default)s)")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help="domain name prefix (%(default)s)")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build (or find cached) kernel + initramfs")
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    c = sub.add_parser("create", help="create and boot a guest")
    c.add_argument("name", help="guest name (the prefix is added if missing)")
    c.add_argument("--disks", nargs="+", metavar="SPEC", default=["vda:qcow2:64M"],
                   help="TARGET:FORMAT:SIZE[:ext4[=DIR]], e.g. vdb:raw:32M vdc:qcow2:128M:ext4")
    c.add_argument("--no-start", action="store_true", help="define only")
    c.add_argument("--no-wait", action="store_true", help="do not wait for the boot marker")
    c.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for boot")
    c.add_argument("--network", default=None, help="add a virtio NIC on this libvirt network")
    c.add_argument("--guest-agent", action="store_true",
                   help="add the guest-agent channel; qemu-ga answers on it in the guest")
    c.add_argument("--memory", type=int, default=256, help="MiB of RAM (%(default)s)")
    c.add_argument("--machine", choices=("pc", "q35"), default="pc",
                   help="QEMU machine type (%(default)s)")
    r = sub.add_parser("run", help="run a shell command in a running guest")
    r.add_argument("name")
    r.add_argument("cmd", help="shell command")
    r.add_argument("--timeout", type=float, default=60.0)
    a = sub.add_parser("restart-agent", help="stop and start qemu-ga in a running guest "
                       "(its virtio-serial port closes and opens again)")
    a.add_argument("name")
    d = sub.add_parser("destroy", help="destroy guests: domain, disks, logs, sockets")
    d.add_argument("names", nargs="*", metavar="NAME")
    d.add_argument("--all", action="store_true", help="every guest of the kit directory")
    d.add_argument("--stale", action="store_true",
                   help="guests of any kit directory whose creating process is gone")
    sub.add_parser("list", help="list the test guests of the kit directory")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # libvirt prints every error to stderr by default; the errors raised say enough.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    kit_dir = args.kit_dir or default_kit_dir()
    try:
        with GuestKit(kit_dir=kit_dir, uri=args.uri, prefix=args.prefix) as kit:
            if args.command == "build":
                boot = kit.build(force=args.force)
                state = "built" if boot.built else "cached"
                print(f"{state}: kernel {boot.kernel} ({boot.kernel_version})")
                print(f"{state}: initrd {boot.initrd}")
                print(f"{state}: guest agent "
                      + ("qemu-ga" if boot.agent else "none (install qemu-guest-agent)"))
            elif args.command == "create":
                specs = [DiskSpec.parse(s) for s in args.disks]
                guest = kit.create(args.name, specs, start=not args.no_start,
                                   network=args.network, guest_agent=args.guest_agent,
                                   memory_mib=args.memory, machine=args.machine, owned=False)
                kit.release(guest.name)  # the guest outlives this command
                print(f"{guest.name}: dir {guest.dir}")
                for disk in guest.disks.values():
                    print(f"  {disk.target}: {disk.path} ({disk.fmt})")
                print(f"  console: {guest.console_log}")
                print(f"  commands: {guest.control_socket}")
                if not args.no_start and not args.no_wait:
                    seconds = guest.wait_ready(args.timeout)
                    print(f"{guest.name}: ready in {seconds:.1f} s"
                          + (", guest agent answering" if guest.has_agent else ""))
            elif args.command == "run":
                status, output = kit.get(args.name).run(args.cmd, timeout=args.timeout)
                sys.stdout.write(output)
                return status
            elif args.command == "restart-agent":
                kit.get(args.name).restart_agent()
            elif args.command == "destroy":
                if args.all or args.stale:
                    names = kit.destroy_stale() if args.stale else []
                    names += kit.destroy_all() if args.all else []
                    for name in names:
                        print(f"destroyed {name}")
                    return 0
                missing = 0
                for name in args.names:
                    if kit.destroy(name):
                        print(f"destroyed {kit.domain_name(name)}")
                    else:
                        print(f"no test guest {kit.domain_name(name)}", file=sys.stderr)
                        missing += 1
                return 1 if missing else 0
            elif args.command == "list":
                for info in kit.guests():
                    print(f"{info.name}\t{info.state}\t{info.dir}")
    except GuestKitError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except libvirt.libvirtError as e:
        print(f"error: libvirt: {e}", file=sys.stderr)
        return 22  # the project's code for "libvirt failed or cannot be reached"
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CLI for the DPS emulator's enrollments (wired into `iothub-emulator` by cli.py, or run as
`python -m iothub_emulator.dps_cli --state DIR ...`):

    enrollment add REG_ID [--key B64 | --x509-thumbprint HEX] [--device-id ID] [--disabled]
    enrollment add-group GROUP_ID [--key B64 | --x509-ca [PEM]] [--disabled]
    enrollment list
    enrollment registrations
    enrollment enable|disable (REG_ID | --group GROUP_ID)
    enrollment compute-key --key GROUP_KEY REG_ID     (like `az iot dps compute-device-key`)

The commands edit <state>/dps.json; a running DPS emulator on that state directory picks the
changes up at the next registration. For `serve`, add_serve_options()/start_dps() add
`--dps-port` (and `--id-scope`) and start a DPSEmulator beside the hub.
"""

import argparse
import json
import os
import sys

from .cli import CLIError  # the main CLI reports these
from .dps_store import EnrollmentError, Store, derive_device_key

STATE_FILE = "dps-emulator.json"


def add_parser(sub):
    """Add the `enrollment` command to an argparse subparsers object."""
    p = sub.add_parser("enrollment", help="DPS enrollments: add, add-group, list, enable/disable")
    es = p.add_subparsers(dest="action", required=True)
    a = es.add_parser("add", help="individual enrollment")
    a.add_argument("registration_id")
    g = a.add_mutually_exclusive_group()
    g.add_argument("--key", help="base64 symmetric key (default: generate one)")
    g.add_argument(
        "--x509-thumbprint", help="SHA-1 or SHA-256 thumbprint of the device certificate"
    )
    a.add_argument("--device-id", help="hub device id (default: the registration id)")
    a.add_argument("--disabled", action="store_true")
    gr = es.add_parser("add-group", help="enrollment group")
    gr.add_argument("group_id")
    g = gr.add_mutually_exclusive_group()
    g.add_argument("--key", help="base64 group key (default: generate one)")
    g.add_argument(
        "--x509-ca",
        nargs="?",
        const="device-ca",
        metavar="PEM",
        help="X.509 group on a CA certificate (default: the emulator's device CA)",
    )
    gr.add_argument("--disabled", action="store_true")
    es.add_parser("list", help="enrollments (no keys)")
    es.add_parser("registrations", help="registration states (assigned hub, device id)")
    for name in ("enable", "disable"):
        x = es.add_parser(name)
        x.add_argument("registration_id", nargs="?")
        x.add_argument("--group", metavar="GROUP_ID")
    ck = es.add_parser("compute-key", help="derive a device key from a group key")
    ck.add_argument("registration_id")
    ck.add_argument("--key", required=True, help="the enrollment group key (base64)")
    p.set_defaults(fn=cmd_enrollment)
    return p


def _device_ca_pem(state):
    # read the file rather than TestPKI.load_or_create(): that would regenerate a PKI made for
    # another hub name under a running emulator
    path = os.path.join(state, "pki", "device-ca.pem")
    if not os.path.exists(path):
        raise EnrollmentError(
            "no device CA in %s yet: run `iothub-emulator --state %s serve` once, or give "
            "--x509-ca PEM" % (os.path.abspath(state), state)
        )
    with open(path, "rb") as f:
        return f.read()


def cmd_enrollment(args):
    try:
        return _run(args)
    except EnrollmentError as e:
        raise CLIError(str(e)) from None
    except OSError as e:
        where = getattr(e, "filename", None) or "state"
        raise CLIError("%s: %s" % (where, e.strerror or e)) from None


def _run(args):
    act = args.action
    if act == "compute-key":
        print(derive_device_key(args.key, args.registration_id))
        return 0
    os.makedirs(args.state, exist_ok=True)
    store = Store(args.state)
    if act == "add":
        key = store.add_individual(
            args.registration_id,
            args.key,
            args.x509_thumbprint,
            args.device_id,
            not args.disabled,
        )
        how = "x509 thumbprint" if args.x509_thumbprint else "symmetric key"
        print("added individual enrollment %s (%s)" % (args.registration_id, how))
        if key:
            print("generated key: %s" % key)
        return 0
    if act == "add-group":
        ca = None
        if args.x509_ca == "device-ca":
            ca = _device_ca_pem(args.state)
        elif args.x509_ca:
            with open(args.x509_ca, "rb") as f:
                ca = f.read()
        key = store.add_group(args.group_id, args.key, ca, not args.disabled)
        print(
            "added enrollment group %s (%s)"
            % (args.group_id, "x509 CA" if ca is not None else "symmetric key")
        )
        if key:
            print("generated group key: %s" % key)
            print(
                "derive device keys with: enrollment compute-key --key <group key> <registration id>"
            )
        return 0
    if act == "list":
        for e in store.listing():
            extra = (
                "device %s" % e["device_id"] if e["kind"] == "individual" else e["ca_sha256"] or ""
            )
            print(
                "%-10s %-30s %-10s %-8s %s"
                % (
                    e["kind"],
                    e["id"],
                    e["attestation"],
                    "enabled" if e["enabled"] else "DISABLED",
                    extra,
                )
            )
        return 0
    if act == "registrations":
        for r in store.registration_list():
            print(
                json.dumps(
                    {
                        k: r.get(k)
                        for k in (
                            "registrationId",
                            "deviceId",
                            "assignedHub",
                            "status",
                            "substatus",
                            "enrollment",
                            "lastUpdatedDateTimeUtc",
                        )
                    },
                    sort_keys=True,
                )
            )
        return 0
    # enable / disable
    if bool(args.registration_id) == bool(args.group):
        raise EnrollmentError("give a registration id or --group GROUP_ID")
    store.set_enabled(act == "enable", args.registration_id, args.group)
    print(
        "%sd %s"
        % (
            act,
            "group " + args.group if args.group else "enrollment " + args.registration_id,
        )
    )
    return 0


# ---- serve ----------------------------------------------------------------------------------


def add_serve_options(parser):
    """Options for `serve` that start a DPS beside the hub."""
    parser.add_argument(
        "--dps-port", type=int, default=None, help="also serve DPS on this port (0: any free port)"
    )
    parser.add_argument(
        "--dps-ws-port",
        type=int,
        default=None,
        help="also serve DPS as MQTT over WebSockets on this port (0: any free port)",
    )
    parser.add_argument("--id-scope", default=None, help="the DPS ID scope (default 0ne00000E41)")
    parser.add_argument(
        "--dps-retry-after", type=int, default=1, help="retry-after of 202 replies (seconds)"
    )


def start_dps(emu, args):
    """Start a DPSEmulator for the running hub emulator when --dps-port was given; write
    <state>/dps-emulator.json. Returns it (stop it with .stop()) or None."""
    if getattr(args, "dps_port", None) is None:
        return None
    from .dps import DEFAULT_ID_SCOPE, DPSEmulator

    dps = DPSEmulator(
        emu.state_dir,
        emu,
        host=emu.host,
        port=args.dps_port,
        id_scope=args.id_scope or DEFAULT_ID_SCOPE,
        retry_after=args.dps_retry_after,
        ws_port=getattr(args, "dps_ws_port", None),
    ).start()
    path = os.path.join(emu.state_dir, STATE_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(dps.state_info(), f, indent=1)
    os.replace(path + ".tmp", path)
    print(
        "  DPS:                                  %s on %s:%d, ID scope %s"
        % (dps.hostname, dps.host, dps.port, dps.id_scope),
        flush=True,
    )
    if dps.ws_port is not None:
        print("  DPS over WebSockets:                  port %d" % dps.ws_port, flush=True)
    return dps


def main(argv=None):
    p = argparse.ArgumentParser(prog="iothub-emulator-dps", description=__doc__.split("\n")[0])
    p.add_argument("--state", default=os.environ.get("IOTHUB_EMULATOR_STATE", "state"))
    sub = p.add_subparsers(dest="cmd", required=True)
    add_parser(sub)
    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except CLIError as e:
        print("iothub-emulator: error: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

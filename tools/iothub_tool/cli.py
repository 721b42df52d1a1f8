"""`iothub-tool`: host-side helpers for iothub devices.

iothub-tool sas --connection-string CS [--ttl S]
iothub-tool sas --host H --device D [--module M] --key K [--key-name POLICY] [--ttl S]
iothub-tool cert create --cn ID [--rsa] [--ca-cert PEM --ca-key PEM] --out-cert F --out-key F [--days N]
iothub-tool dps-key --group-key K --registration-id R
"""

import argparse
import sys

from iothub_emulator.files import write_private

from . import certs
from .sas import ToolError, derive_device_key, parse_connection_string, token_from_args


def cmd_sas(args):
    if args.connection_string:
        if args.host or args.device or args.key or args.module:
            raise ToolError("use either --connection-string or --host/--device/--key, not both")
        cs = parse_connection_string(args.connection_string)
        if not cs.get("SharedAccessKey"):
            raise ToolError(
                "connection string has no SharedAccessKey (an X.509 identity needs no token)"
            )
        host, device, module, key = (
            cs["HostName"],
            cs["DeviceId"],
            cs.get("ModuleId"),
            cs["SharedAccessKey"],
        )
        key_name = cs.get("SharedAccessKeyName")
    else:
        missing = [
            n
            for n, v in (("--host", args.host), ("--device", args.device), ("--key", args.key))
            if not v
        ]
        if missing:
            raise ToolError("missing %s (or give --connection-string)" % ", ".join(missing))
        host, device, module, key, key_name = (
            args.host,
            args.device,
            args.module,
            args.key,
            args.key_name,
        )
    print(token_from_args(host, device, key, module, args.ttl, key_name))
    return 0


def _read(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ToolError("cannot read %s %s: %s" % (what, path, e.strerror)) from None


def cmd_cert(args):
    ca_cert = _read(args.ca_cert, "--ca-cert") if args.ca_cert else None
    ca_key = _read(args.ca_key, "--ca-key") if args.ca_key else None
    cert_pem, key_pem, sha1, sha256 = certs.create(args.cn, args.rsa, ca_cert, ca_key, args.days)
    with open(args.out_cert, "wb") as f:
        f.write(cert_pem)
    write_private(args.out_key, key_pem)  # 0600, also over an existing file
    print(
        "certificate: %s (%s, CN=%s, %s)"
        % (
            args.out_cert,
            "RSA-2048" if args.rsa else "EC P-256",
            args.cn,
            "signed by the given CA" if ca_cert else "self-signed",
        )
    )
    print("private key: %s" % args.out_key)
    print("SHA-1 thumbprint:   %s" % sha1)
    print("SHA-256 thumbprint: %s" % sha256)
    return 0


def cmd_dps_key(args):
    print(derive_device_key(args.group_key, args.registration_id))
    return 0


def build_parser():
    p = argparse.ArgumentParser(
        prog="iothub-tool",
        description="Host helpers for iothub devices: SAS tokens, device certificates, DPS keys.",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sas", help="make a SAS token for a device or module")
    s.add_argument("--connection-string")
    s.add_argument("--host", help="hub host name, e.g. myhub.azure-devices.net")
    s.add_argument("--device")
    s.add_argument("--module")
    s.add_argument("--key", help="base64 device/module key (or policy key with --key-name)")
    s.add_argument("--key-name", help="shared access policy name (adds skn=)")
    s.add_argument(
        "--ttl", type=int, default=3600, help="seconds until expiry (default %(default)s)"
    )
    s.set_defaults(fn=cmd_sas)

    c = sub.add_parser("cert", help="device certificates")
    csub = c.add_subparsers(dest="action", required=True)
    cc = csub.add_parser(
        "create", help="create a device certificate and key; prints its thumbprints"
    )
    cc.add_argument("--cn", required=True, help="subject CN: the device id")
    cc.add_argument("--rsa", action="store_true", help="RSA-2048 instead of EC P-256")
    cc.add_argument("--ca-cert", help="sign with this CA certificate (PEM) instead of self-signing")
    cc.add_argument("--ca-key", help="the CA's private key (PEM)")
    cc.add_argument("--out-cert", required=True)
    cc.add_argument("--out-key", required=True)
    cc.add_argument("--days", type=int, default=365)
    cc.set_defaults(fn=cmd_cert)

    d = sub.add_parser("dps-key", help="derive a device key from a DPS group enrollment key")
    d.add_argument("--group-key", required=True)
    d.add_argument("--registration-id", required=True)
    d.set_defaults(fn=cmd_dps_key)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ToolError as e:
        print("iothub-tool: error: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

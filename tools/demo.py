"""`make demo`: the local hub emulator and a device on the MicroPython unix port.

The emulator (CPython) serves the hub over real TLS on loopback; the device client runs on
the real `micropython` binary. The device connects, sends telemetry with properties, reads
the twin and reports a property; the service side then patches a desired property, invokes
a method and sends a cloud-to-device message, and both sides print what they saw.
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import threading

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from iothub_emulator import Emulator  # noqa: E402
from iothub_emulator.files import write_private  # noqa: E402


def hub(text):
    print("hub    | " + text, flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", choices=("ecc", "rsa"), default="ecc")
    ap.add_argument("--auth", choices=("sas", "x509"), default="sas")
    ap.add_argument("--mode", choices=("hub", "dps"), default="hub")
    ap.add_argument(
        "--state", default=None, help="emulator state directory (default: a temporary one)"
    )
    ap.add_argument(
        "--micropython",
        default=os.environ.get("MICROPYTHON") or str(ROOT / ".venv/bin/micropython"),
    )
    args = ap.parse_args(argv)
    if args.mode == "dps":
        import demo_dps

        raise SystemExit(
            demo_dps.main(
                ["--profile", args.profile] + (["--state", args.state] if args.state else [])
            )
        )

    state = args.state or tempfile.mkdtemp(prefix="iothub-demo-")
    with Emulator(state, profile=args.profile) as emu:
        hub(
            "emulator up: %s on 127.0.0.1:%d, %s profile, CA %s"
            % (emu.hostname, emu.port, args.profile, emu.root_pem_path)
        )
        root_der = pathlib.Path(state) / ("root-%s.der" % args.profile)
        root_der.write_bytes(emu.root_der)
        device_id = "demo-device"
        if args.auth == "sas":
            emu.add_device(device_id)
            cred = [emu.connection_string(device_id, gateway=False)]
            hub("device %s registered with a symmetric key (SAS)" % device_id)
        else:
            cert_pem, key_pem, sha1, sha256 = emu.pki.issue_client_cert(device_id, kind="ec256")
            emu.add_device(device_id, x509_thumbprint=sha256)
            cert_path = pathlib.Path(state) / "device-cert.pem"
            key_path = pathlib.Path(state) / "device-key.pem"
            cert_path.write_bytes(cert_pem)
            write_private(str(key_path), key_pem)
            cred = [device_id, str(cert_path), str(key_path)]
            hub(
                "device %s registered with an EC P-256 certificate, SHA-256 %s"
                % (device_id, sha256)
            )

        env = dict(os.environ, MICROPYPATH=str(ROOT / "firmware"))
        cmd = [
            args.micropython,
            str(ROOT / "tools/demo_device.py"),
            emu.hostname,
            str(emu.port),
            args.profile,
            str(root_der),
            args.auth,
        ] + cred
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        ready = threading.Event()
        lines = []

        def reader():
            for line in proc.stdout:
                lines.append(line)
                print(line.rstrip(), flush=True)
                if "device | READY" in line:
                    ready.set()
            ready.set()

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        if not ready.wait(60) or proc.poll() not in (None, 0):
            proc.kill()
            t.join(5)
            raise SystemExit("demo failed: the device did not get ready")
        conn = emu.endpoint.connections[-1]
        hub(
            "TLS: %s %s, SNI %s, client certificate %s"
            % (conn.version, conn.cipher, conn.sni, conn.client_cert_sha256 or "none")
        )
        for msg in emu.telemetry(device_id):
            hub(
                "telemetry %s properties=%s system=%s"
                % (msg["payload"].decode(), msg["properties"], msg["system_properties"])
            )
        hub("twin reported: %s" % (emu.twin(device_id)["reported"],))
        v = emu.patch_desired(device_id, {"interval_s": 30})
        hub("patched desired properties -> version %d" % v)
        status, payload = emu.invoke_method(device_id, "reboot", {"delay": 5}, timeout=15)
        hub("method reboot answered %d %s" % (status, payload))
        emu.send_c2d(
            device_id, b"led:on", properties={"command": "led", "state": "on"}, message_id="c2d-1"
        )
        hub("sent C2D message led:on")
        rc = proc.wait(60)
        t.join(5)
        hub(
            "bytes on the wire this connection: in %d, out %d; TLS records in %d, out %d"
            % (conn.bytes_in, conn.bytes_out, conn.records_in, conn.records_out)
        )
        if rc != 0:
            raise SystemExit("demo failed: device exited with %d" % rc)
        hub(
            "demo complete: real round trip over TLS (%s profile, %s auth)"
            % (args.profile, args.auth)
        )


if __name__ == "__main__":
    main()

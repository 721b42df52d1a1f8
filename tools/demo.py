"""`make demo`: the local hub emulator and a device on the MicroPython unix port.

With --transport websockets (`make demo TRANSPORT=websockets`) the device speaks MQTT over
WebSockets (wss, as on port 443) through a real HTTP CONNECT proxy (tinyproxy, with basic
credentials), as a device behind a company firewall would.

The emulator (CPython) serves the hub over real TLS on loopback; the device client runs on
the real `micropython` binary. The device connects, sends telemetry with properties, reads
the twin and reports a property; the service side then patches a desired property, invokes
a method and sends a cloud-to-device message, and both sides print what they saw.
"""

import argparse
import contextlib
import os
import pathlib
import secrets
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


def proxy_line(text):
    print("proxy  | " + text, flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", choices=("ecc", "rsa"), default="ecc")
    ap.add_argument("--auth", choices=("sas", "x509"), default="sas")
    ap.add_argument("--mode", choices=("hub", "dps", "pnp"), default="hub")
    ap.add_argument("--transport", choices=("mqtt", "websockets"), default="mqtt")
    ap.add_argument(
        "--state",
        default=None,
        help="emulator state directory (default: a temporary one, removed at the end: it holds "
        "the test PKI's private keys)",
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
                ["--profile", args.profile, "--auth", args.auth]
                + (["--state", args.state] if args.state else [])
            )
        )

    if args.mode == "pnp":
        import demo_pnp

        raise SystemExit(
            demo_pnp.main(
                ["--profile", args.profile] + (["--state", args.state] if args.state else [])
            )
        )

    with contextlib.ExitStack() as stack:
        if args.state is None:
            state = stack.enter_context(tempfile.TemporaryDirectory(prefix="iothub-demo-"))
        else:
            state = args.state
        run(args, state)


def run(args, state):
    ws = args.transport == "websockets"
    with contextlib.ExitStack() as stack:
        emu = stack.enter_context(Emulator(state, profile=args.profile, ws_port=0 if ws else None))
        hub(
            "emulator up: %s on 127.0.0.1:%d, %s profile, CA %s"
            % (emu.hostname, emu.port, args.profile, emu.root_pem_path)
        )
        port = emu.port
        env = dict(os.environ, MICROPYPATH=str(ROOT / "firmware"))
        env["IOTHUB_DEMO_TRANSPORT"] = args.transport
        proxy = None
        if ws:
            from proxyrun import Tinyproxy

            port = emu.ws_port
            hub("MQTT over WebSockets: wss://127.0.0.1:%d/$iothub/websocket" % port)
            password = secrets.token_urlsafe(12)
            proxy = stack.enter_context(Tinyproxy(state, auth=("demo", password)))
            env["IOTHUB_DEMO_PROXY"] = "127.0.0.1:%d:demo:%s" % (proxy.port, password)
            proxy_line("tinyproxy on 127.0.0.1:%d (basic auth, user demo)" % proxy.port)
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

        cmd = [
            args.micropython,
            str(ROOT / "tools/demo_device.py"),
            emu.hostname,
            str(port),
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
        conn = (emu.ws_endpoint if ws else emu.endpoint).connections[-1]
        hub(
            "TLS: %s %s, SNI %s, client certificate %s"
            % (conn.version, conn.cipher, conn.sni, conn.client_cert_sha256 or "none")
        )
        if ws:
            req = conn.ws_request
            hub(
                "WebSocket upgrade: %s, Host %s, subprotocol %s"
                % (
                    req["request_line"],
                    req["headers"]["host"],
                    req["headers"]["sec-websocket-protocol"],
                )
            )
        if proxy is not None:
            proxy_line("CONNECT requests: %s" % ", ".join(proxy.connects()))
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
        if ws:
            hub(
                "WebSocket frames: in %d, out %d (one frame per MQTT packet)"
                % (conn.ws_frames_in, conn.ws_frames_out)
            )
        if rc != 0:
            raise SystemExit("demo failed: device exited with %d" % rc)
        hub(
            "demo complete: real round trip over %s (%s profile, %s auth)"
            % (
                "MQTT over WebSockets over TLS through an HTTP proxy" if ws else "TLS",
                args.profile,
                args.auth,
            )
        )


if __name__ == "__main__":
    main()

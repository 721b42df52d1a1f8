"""`make demo MODE=pnp`: IoT Plug and Play against the local hub emulator.

The device (boards/examples/pnp_thermostat.py on the MicroPython unix port) announces its model
id, sends component telemetry and reports its properties; the service side then sets the writable
property targetTemperature of thermostat1 and waits for the device's acknowledgement (av must
equal the desired version that set it), invokes a command the model does not have and the
command getMaxMinReport of thermostat2 (after which the device stops), and prints what the hub
saw.
"""

import argparse
import contextlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import threading

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from iothub_emulator import Emulator  # noqa: E402


def hub(text):
    print("hub    | " + text, flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", choices=("ecc", "rsa"), default="ecc")
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
    with contextlib.ExitStack() as stack:
        if args.state is None:
            state = stack.enter_context(tempfile.TemporaryDirectory(prefix="iothub-pnp-demo-"))
        else:
            state = args.state
        run(args, state)


def run(args, state):
    with Emulator(state, profile=args.profile) as emu:
        hub("emulator up: %s on 127.0.0.1:%d" % (emu.hostname, emu.port))
        root_der = pathlib.Path(state) / ("root-%s.der" % args.profile)
        root_der.write_bytes(emu.root_der)
        device_id = "pnp-thermostat"
        emu.add_device(device_id)
        env = dict(
            os.environ, MICROPYPATH="%s:%s" % (ROOT / "firmware", ROOT / "boards" / "examples")
        )
        cmd = [
            args.micropython,
            str(ROOT / "tools/demo_pnp_device.py"),
            str(emu.port),
            args.profile,
            str(root_der),
            emu.connection_string(device_id, gateway=False),
        ]
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        ready = threading.Event()

        def reader():
            for line in proc.stdout:
                print(line.rstrip(), flush=True)
                if "device | READY" in line:
                    ready.set()
            ready.set()

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        try:
            if not ready.wait(60) or proc.poll() not in (None, 0):
                raise SystemExit("demo failed: the device did not get ready")
            hub("device announced model %s" % emu.connect_info(device_id)["model_id"])
            for msg in emu.telemetry(device_id):
                hub(
                    "telemetry component=%s %s"
                    % (msg["component"] or "(root)", msg["payload"].decode())
                )
            reported = emu.twin(device_id)["reported"]
            hub("reported thermostat1: %s" % json.dumps(reported.get("thermostat1")))

            v = emu.set_writable(device_id, "targetTemperature", 23.5, component="thermostat1")
            hub("set writable thermostat1/targetTemperature = 23.5 -> desired $version %d" % v)
            st = emu.wait_writable_ack(device_id, "targetTemperature", "thermostat1", v, 30)
            ack = st["ack"]
            hub(
                "acknowledged: ac=%d av=%d ad=%s value=%s -> %s"
                % (ack["ac"], ack["av"], json.dumps(ack.get("ad")), ack["value"], st["state"])
            )
            if ack["av"] != v or st["state"] != "accepted":
                raise SystemExit("demo failed: the ack does not answer desired $version %d" % v)
            hub("av equals the desired version: the property shows as accepted")

            status, payload = emu.invoke_command(
                device_id, "selfDestruct", None, "thermostat1", timeout=30
            )
            hub("command thermostat1*selfDestruct -> %d %s" % (status, json.dumps(payload)))
            status, payload = emu.invoke_command(
                device_id, "getMaxMinReport", "2026-01-01T00:00:00Z", "thermostat2", timeout=30
            )
            hub("command thermostat2*getMaxMinReport -> %d %s" % (status, json.dumps(payload)))
            if status != 200:
                raise SystemExit("demo failed: the command answered %d" % status)
            rc = proc.wait(60)
            t.join(5)
            if rc != 0:
                raise SystemExit("demo failed: device exited with %d" % rc)
        finally:
            if proc.poll() is None:
                proc.kill()
        hub("demo complete: component telemetry, writable property acknowledged, commands")


if __name__ == "__main__":
    main()

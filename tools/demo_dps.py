"""`make demo MODE=dps`: zero-touch provisioning on loopback.

The hub emulator and the DPS emulator (CPython) serve real TLS on 127.0.0.1; the device runs
on the real `micropython` binary. The factory derives the device's key from an enrollment
group key (the group key never reaches the device), or, with --auth x509, issues the device an
EC P-256 certificate signed by the CA registered on an X.509 enrollment group (CN = registration
id); at first boot the device registers with
DPS over MQTT (202 assigning, waits the retry-after, polls, 200 assigned), saves the
assignment, connects to the assigned hub and sends telemetry. A second boot uses the saved
assignment and goes straight to the hub. Both sides print what they saw; exit status 0 when
the hub received both boots' telemetry.

    .venv/bin/python tools/demo_dps.py [--profile ecc|rsa] [--dps-profile rsa|ecc] [--auth sas|x509]
        [--state DIR]     # default: a temporary directory, removed at the end (it holds keys)
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
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from iothub_emulator import Emulator  # noqa: E402
from iothub_emulator.dps import DPSEmulator  # noqa: E402
from iothub_emulator.dps_store import derive_device_key  # noqa: E402
from iothub_emulator.files import write_private  # noqa: E402

# The device program (MicroPython). argv: config JSON path.
DEVICE = r"""
import json, sys, time
from iothub.provisioning import ProvisioningClient, provision_or_load

with open(sys.argv[1]) as f:
    cfg = json.load(f)

def rd(p):
    with open(p, "rb") as f:
        return f.read()

def log(level, text):
    if level <= 2:
        print("device | " + text)

if cfg.get("cert"):
    cred = {"cert": rd(cfg["cert"]), "key": rd(cfg["key"])}   # X.509: CN = registration id
else:
    cred = {"symmetric_key": cfg["device_key"]}  # derived in the factory, not the group key
pc = ProvisioningClient(
    cfg["id_scope"], cfg["registration_id"], **cred,
    host="127.0.0.1", port=cfg["dps_port"],   # endpoint stays global.azure-devices-provisioning.net
    tls=cfg["dps_profile"], roots=[rd(cfg["dps_root"])],
    payload={"modelId": "dtmi:com:example:Thermostat;1"},
    log=log,
)
t0 = time.ticks_ms()
result = provision_or_load(pc, cfg["state_file"])
print("device | assignment (%s) in %d ms: %s on %s, substatus %s" % (
    result.source, time.ticks_diff(time.ticks_ms(), t0), result.device_id,
    result.assigned_hub, result.substatus))
if result.source == "dps":
    print("device | DPS round: %d requests, waited %s ms as asked (retry-after)" % (
        pc.stats["requests"], pc.stats["waits_ms"]))
client = result.client(tls=cfg["hub_profile"], roots=[rd(cfg["hub_root"])],
                       host="127.0.0.1", port=cfg["hub_port"], log=log)
client.connect()
print("device | connected to %s with %s" % (result.assigned_hub, client.tls_info()["cipher"][0]))
client.send({"temperature": 21.5, "boot": cfg["boot"]}, properties={"source": result.source})
print("device | telemetry acknowledged by the hub (QoS 1 PUBACK)")
client.disconnect()
"""


_print_lock = threading.Lock()


def out(line):
    with _print_lock:
        print(line, flush=True)


def say(side, text):
    out("%-6s | %s" % (side, text))


def _describe(event, detail):
    if event == "reply":
        body = detail["body"]
        st = body.get("registrationState") or {}
        extra = " -> %s on %s" % (st["deviceId"], st["assignedHub"]) if "assignedHub" in st else ""
        return "reply %s %s%s" % (detail["topic"], body.get("status", ""), extra)
    if event in ("register", "query"):
        op = detail.get("operationId")
        return "%s $rid=%s%s" % (event, detail["rid"], " operationId=%s" % op if op else "")
    if event == "connect":
        return "CONNECT client id %s, user %s, auth %s, SNI %s, %s" % (
            detail["client_id"],
            detail["username"],
            detail.get("auth"),
            detail.get("sni"),
            detail.get("cipher"),
        )
    if event == "telemetry":
        return "telemetry %s" % json.dumps(detail.get("properties"))
    return "%s %s" % (event, "" if detail is None else detail)


class Transcript:
    """Prints DPS and hub events as they happen (polled), next to the device's lines."""

    def __init__(self, dps, hub):
        self.sources = [("dps", dps), ("hub", hub)]
        self.seen = {"dps": 0, "hub": 0}
        self.lock = threading.Lock()
        self.stop = self.t = None

    def flush(self):
        with self.lock:
            new = []
            for name, src in self.sources:
                evs = list(src.events)
                new += [(e[0], name, e) for e in evs[self.seen[name] :]]
                self.seen[name] = len(evs)
            for _, name, (_t, who, event, detail) in sorted(new, key=lambda x: x[0]):
                if event in ("connack", "subscribe") and detail in (0, None):
                    continue
                say(name, "%s: %s" % (who or "-", _describe(event, detail)))

    def _run(self):
        while not self.stop.wait(0.05):
            self.flush()

    def __enter__(self):
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join(2)
        self.flush()


def run_device(binary, cfg_path, env, transcript):
    """Run the device program, printing its lines as they come (between the emulators')."""
    proc = subprocess.Popen(
        [binary, "-c", DEVICE, str(cfg_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    timer = threading.Timer(120, proc.kill)  # bounded: a stuck device ends the demo
    timer.start()
    try:
        for line in proc.stdout:
            transcript.flush()  # what the emulators saw up to now comes first
            out(line.rstrip("\n"))
        return proc.wait()
    finally:
        timer.cancel()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", choices=("ecc", "rsa"), default="ecc", help="hub TLS profile")
    ap.add_argument(
        "--dps-profile",
        choices=("ecc", "rsa"),
        default="rsa",
        help="DPS TLS profile (Azure's DPS serves an RSA chain)",
    )
    ap.add_argument(
        "--auth",
        choices=("sas", "x509"),
        default="sas",
        help="sas: symmetric key derived from a group key; x509: a CA-signed device certificate",
    )
    ap.add_argument(
        "--state",
        default=None,
        help="state directory (default: a temporary one, removed at the end: it holds the test "
        "PKI's private keys)",
    )
    ap.add_argument(
        "--micropython",
        default=os.environ.get("MICROPYTHON") or str(ROOT / ".venv/bin/micropython"),
    )
    args = ap.parse_args(argv)
    with contextlib.ExitStack() as stack:
        if args.state is None:
            state = stack.enter_context(tempfile.TemporaryDirectory(prefix="iothub-demo-dps-"))
        else:
            state = args.state
        return run(args, pathlib.Path(state))


def run(args, state):
    state.mkdir(parents=True, exist_ok=True)
    reg = "thermostat-0042"

    with (
        Emulator(str(state), profile=args.profile) as hub,
        DPSEmulator(str(state), hub, profile=args.dps_profile, retry_after=1) as dps,
    ):
        say("hub", "%s on 127.0.0.1:%d (%s profile)" % (hub.hostname, hub.port, args.profile))
        say(
            "dps",
            "%s on 127.0.0.1:%d (%s profile), ID scope %s"
            % (dps.hostname, dps.port, args.dps_profile, dps.id_scope),
        )
        payload = {"telemetry_interval_s": 30}
        secrets = []
        cert_cfg = {}
        if args.auth == "x509":
            dps.add_group("thermostats", x509_ca=True, allocation_payload=payload)
            say("dps", "enrollment group 'thermostats' (X.509, the emulator's device CA) created")
            cert, key, _sha1, sha256 = dps.pki.issue_client_cert(reg, kind="ec256", ca="device-ca")
            (state / "device-cert.pem").write_bytes(cert)
            (state / "device-key.pem").write_bytes(key)
            cert_cfg = {
                "cert": str(state / "device-cert.pem"),
                "key": str(state / "device-key.pem"),
            }
            secrets.append(key.decode())
            device_key = None
            say("fab", "factory issued %s an EC P-256 certificate, SHA-256 %s" % (reg, sha256))
        else:
            group_key = dps.add_group("thermostats", allocation_payload=payload)
            say("dps", "enrollment group 'thermostats' (symmetric key) created")
            device_key = derive_device_key(group_key, reg)
            secrets += [group_key, device_key]
            say("fab", "factory derived the key of %s from the group key (HMAC-SHA256)" % reg)
        (state / "dps-root.der").write_bytes(dps.root_der)
        (state / "hub-root.der").write_bytes(hub.root_der)
        cfg = {
            "id_scope": dps.id_scope,
            "registration_id": reg,
            "device_key": device_key,
            "dps_port": dps.port,
            "dps_profile": args.dps_profile,
            "dps_root": str(state / "dps-root.der"),
            "hub_port": hub.port,
            "hub_profile": args.profile,
            "hub_root": str(state / "hub-root.der"),
            "state_file": str(state / "provisioning.json"),
        }
        cfg.update(cert_cfg)
        env = dict(os.environ, MICROPYPATH=str(ROOT / "firmware"))
        transcript = Transcript(dps, hub)
        for boot in (1, 2):
            cfg["boot"] = boot
            cfg_path = state / "device-config.json"
            write_private(str(cfg_path), json.dumps(cfg))  # holds the device key
            say("demo", "---- boot %d ----" % boot)
            n_dps = len(dps.connections)
            with transcript:
                t0 = time.monotonic()
                rc = run_device(args.micropython, cfg_path, env, transcript)
            if rc != 0:
                raise SystemExit("demo failed: the device exited with %d" % rc)
            conns = dps.connections[n_dps:]
            if conns:
                c = conns[0]
                say(
                    "dps",
                    "wire: %d B out / %d B in (TLS handshake %d / %d B), %d / %d records"
                    % (
                        c.bytes_in,
                        c.bytes_out,
                        c.handshake_bytes_in,
                        c.handshake_bytes_out,
                        c.records_in,
                        c.records_out,
                    ),
                )
            else:
                say("dps", "no connection this boot: the device used its saved assignment")
            say("demo", "boot %d took %.2f s" % (boot, time.monotonic() - t0))
        got = hub.wait_telemetry(2, reg, timeout=10)
        saved = (state / "provisioning.json").read_text()
        if any(secret in saved for secret in secrets):
            raise SystemExit("demo failed: the saved assignment holds key material")
        say("hub", "received %d telemetry messages from %s:" % (len(got), reg))
        for m in got:
            say("hub", "  %s %s" % (m["payload"].decode(), m["properties"]))
        say("demo", "saved assignment (no keys): %s" % saved)
        say(
            "demo",
            "done: provisioned over DPS (%s), then connected to the assigned hub" % args.auth,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

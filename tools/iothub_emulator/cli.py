"""`iothub-emulator`: run the local IoT Hub emulator and act on it as the service side.

    iothub-emulator --state DIR serve [--port 8883] [--profile ecc|rsa] [--host 127.0.0.1] [--admin-port N]
                          [--ws-port N] [--dps-port N [--dps-ws-port N]]
    iothub-emulator device add ID [--key B64 | --x509-thumbprint HEX | --x509-ca] [--module M]
    iothub-emulator device list | connection-string ID [--module M] [--no-gateway]
    iothub-emulator c2d DEVICE PAYLOAD [--prop k=v ...] [--message-id ID] [--correlation-id ID]
    iothub-emulator method DEVICE NAME [--payload JSON] [--timeout S]
    iothub-emulator desired DEVICE JSON
    iothub-emulator telemetry [DEVICE] [--component C] | twin DEVICE | events
    iothub-emulator writable DEVICE NAME [JSON] [--component C] [--wait S]   (Plug and Play)
    iothub-emulator command DEVICE NAME [--component C] [--payload JSON] [--timeout S]
    iothub-emulator fault NAME=VALUE ... | fault --reset

`serve` writes emulator.json into the state directory (ports, admin URL, CA paths) and the admin
API's random bearer token into admin-token (mode 0600, also printed); the other commands find the
running emulator's loopback admin API and its token there. `--state` and `--admin` may also
follow the command (`iothub-emulator serve --state DIR`). `device add/list/connection-string`
also work with no emulator running, on the registry file in the state directory.
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request

from .admin import TOKEN_FILE, AdminError, call
from .emulator import STATE_FILE
from .registry import Registry, RegistryError

DEFAULT_STATE = os.environ.get("IOTHUB_EMULATOR_STATE", "state")
TOKEN_ENV = "IOTHUB_EMULATOR_ADMIN_TOKEN"  # with --admin URL, when the state dir is elsewhere


class CLIError(Exception):
    pass


def _state_file(state):
    return os.path.join(state, STATE_FILE)


def _read_token(state):
    try:
        with open(os.path.join(state, TOKEN_FILE)) as f:
            return f.read().strip()
    except OSError:
        return None


def _running(state):
    """The state info of a running emulator, or None. info["admin"] is (url, token)."""
    try:
        with open(_state_file(state)) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    url = info.get("admin_url")
    token = _read_token(state)
    if not url or not token:
        return None
    info["admin"] = (url, token)
    try:
        _call(info["admin"], "GET", "/status", timeout=2)
    except CLIError:
        return None
    return info


def _call(admin, method, path, body=None, timeout=60):
    url, token = admin
    try:
        return call(url, token, method, path, body, timeout)
    except AdminError as e:
        raise CLIError(str(e)) from None


def _admin(args):
    """(url, token) of the admin API to talk to."""
    if args.admin:
        token = os.environ.get(TOKEN_ENV) or _read_token(args.state)
        if not token:
            raise CLIError(
                "--admin needs the admin token: set %s or give the --state directory holding %s"
                % (TOKEN_ENV, TOKEN_FILE)
            )
        return args.admin.rstrip("/"), token
    info = _running(args.state)
    if info is None:
        raise CLIError(
            "no running emulator found in state dir %r (start one with "
            "`iothub-emulator --state %s serve`)" % (args.state, args.state)
        )
    return info["admin"]


def _print_event(ev):
    t, name, event, detail = ev
    stamp = time.strftime("%H:%M:%S", time.localtime(t)) + ".%03d" % int((t % 1) * 1000)
    if isinstance(detail, (dict, list)):
        detail = json.dumps(detail, default=repr)
    print(
        "%s %-14s %-20s %s" % (stamp, name or "-", event, "" if detail is None else detail),
        flush=True,
    )


# ---- commands -----------------------------------------------------------------------------------


def cmd_serve(args):
    from .emulator import Emulator

    emu = Emulator(
        args.state,
        profile=args.profile,
        host=args.host,
        port=args.port,
        hub_name=args.hub_name,
        ws_port=args.ws_port,
    )
    try:
        emu.start()
    except OSError as e:
        emu.stop()
        ports = "%d" % args.port if args.ws_port is None else "%d/%d" % (args.port, args.ws_port)
        raise CLIError("cannot listen on %s:%s: %s" % (args.host, ports, e.strerror or e)) from None
    emu.start_admin(args.admin_port)
    info = emu.state_info()
    path = _state_file(emu.state_dir)
    with open(path + ".tmp", "w") as f:
        json.dump(info, f, indent=1)
    os.replace(path + ".tmp", path)
    print(
        "iothub-emulator: hub %s on %s:%d (profile %s)"
        % (emu.hostname, emu.host, emu.port, emu.profile)
    )
    if emu.ws_port is not None:
        print(
            "  MQTT over WebSockets:                 wss://%s:%d/$iothub/websocket"
            % (emu.host, emu.ws_port)
        )
    print("  CA certificate (%s root, trust this): %s" % (emu.profile, info["root_pem"]))
    print(
        "  CA certificates (both profiles):      %s %s"
        % (info["root_pem_rsa"], info["root_pem_ecc"])
    )
    print("  device CA (for --x509-ca devices):    %s" % info["device_ca_pem"])
    print("  admin API:                            %s" % info["admin_url"])
    print(
        "  admin token (also in %s, 0600): %s" % (info["admin_token_file"], emu.admin_token),
        flush=True,
    )
    from . import dps_cli

    dps = dps_cli.start_dps(emu, args)  # prints its own line when --dps-port is given
    print("  state:                                %s" % path, flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *a: stop.set())
    seen = 0
    try:
        while not stop.wait(0.2):
            if not args.quiet:
                evs = emu.events
                for ev in evs[seen:]:
                    _print_event(ev)
                seen = len(evs)
    finally:
        if dps is not None:
            dps.stop()
        emu.stop()
        try:
            os.remove(path)
        except OSError:
            pass
        print("iothub-emulator: stopped", flush=True)
    return 0


def cmd_device(args):
    if args.action == "add":
        body = {
            "device_id": args.id,
            "key": args.key,
            "x509_thumbprint": args.x509_thumbprint,
            "x509_ca": args.x509_ca,
            "module_id": args.module,
        }
        info = None if args.offline else _running(args.state)
        if info is not None:
            key = _call(info["admin"], "POST", "/devices", body)["key"]
            where = "running emulator at %s" % info["admin_url"]
        else:
            os.makedirs(args.state, exist_ok=True)
            key = Registry(args.state).add(
                args.id, args.key, args.x509_thumbprint, args.x509_ca, args.module
            )
            where = "registry in %s" % os.path.abspath(args.state)
        name = args.id + ("/" + args.module if args.module else "")
        auth = (
            "x509 thumbprint" if args.x509_thumbprint else "x509 CA" if args.x509_ca else "SAS key"
        )
        print("added %s (%s) to the %s" % (name, auth, where))
        if key:
            print("generated key: %s" % key)
        return 0
    reg = Registry(args.state)
    if args.action == "list":
        for e in reg.listing():
            print(
                "%-30s %s"
                % (e["device_id"] + ("/" + e["module_id"] if e["module_id"] else ""), e["auth"])
            )
        return 0
    # connection-string
    entry = reg.get(args.id, args.module)
    if entry is None:
        raise CLIError("unknown identity %r in %s" % (args.id, os.path.abspath(args.state)))
    info = _running(args.state)
    host = info["hostname"] if info else "emulated-hub.azure-devices.net"
    parts = ["HostName=" + host, "DeviceId=" + args.id]
    if args.module:
        parts.append("ModuleId=" + args.module)
    parts.append("SharedAccessKey=" + entry["key"] if entry["auth"] == "sas" else "x509=true")
    if not args.no_gateway:
        parts.append("GatewayHostName=" + (info["host"] if info else "127.0.0.1"))
    print(";".join(parts))
    return 0


def _props(items):
    out = {}
    for item in items or []:
        k, eq, v = item.partition("=")
        if not eq or not k:
            raise CLIError("--prop %r is not NAME=VALUE" % item)
        out[k] = v
    return out


def _json_arg(s, what):
    try:
        return json.loads(s)
    except ValueError as e:
        raise CLIError("%s is not valid JSON: %s" % (what, e)) from None


def cmd_c2d(args):
    body = {
        "device_id": args.device,
        "payload": args.payload,
        "properties": _props(args.prop),
        "message_id": args.message_id,
        "correlation_id": args.correlation_id,
    }
    r = _call(_admin(args), "POST", "/c2d", body)
    print("queued C2D message %s for %s" % (r["message_id"], args.device))
    return 0


def cmd_method(args):
    payload = _json_arg(args.payload, "--payload") if args.payload is not None else None
    body = {
        "device_id": args.device,
        "name": args.name,
        "payload": payload,
        "timeout": args.timeout,
        "module_id": args.module,
    }
    r = _call(_admin(args), "POST", "/method", body, timeout=args.timeout + 10)
    print("status: %d" % r["status"])
    print("payload: %s" % json.dumps(r["payload"]))
    return 0


def cmd_desired(args):
    patch = _json_arg(args.patch, "the desired patch")
    r = _call(
        _admin(args),
        "POST",
        "/desired",
        {"device_id": args.device, "patch": patch, "module_id": args.module},
    )
    print("desired $version: %d" % r["version"])
    return 0


def _query(**kw):
    q = "&".join(
        "%s=%s" % (k, urllib.request.quote(v, safe="")) for k, v in kw.items() if v is not None
    )
    return "?" + q if q else ""


def cmd_telemetry(args):
    path = "/telemetry" + _query(device_id=args.device, component=args.component)
    for rec in _call(_admin(args), "GET", path):
        print(json.dumps(rec, sort_keys=True))
    return 0


def _print_writable(st):
    where = (st["component"] + "/" if st["component"] else "") + st["name"]
    print("%s: %s" % (where, st["state"]))
    print(
        "  desired: %s (set at desired $version %s)"
        % (json.dumps(st["desired"]), st["desired_version"])
    )
    ack = st["ack"]
    if ack is None:
        print("  ack: none")
    else:
        print(
            "  ack: ac=%s av=%s ad=%s value=%s"
            % (
                ack.get("ac"),
                ack.get("av"),
                json.dumps(ack.get("ad")),
                json.dumps(ack.get("value")),
            )
        )


def cmd_writable(args):
    url = _admin(args)
    if args.value is None:
        st = _call(
            url,
            "GET",
            "/writable"
            + _query(
                device_id=args.device,
                name=args.name,
                component=args.component,
                module_id=args.module,
            ),
        )
        _print_writable(st)
        return 0
    body = {
        "device_id": args.device,
        "name": args.name,
        "value": _json_arg(args.value, "the property value"),
        "component": args.component,
        "module_id": args.module,
        "wait": args.wait,
    }
    r = _call(url, "POST", "/writable", body, timeout=args.wait + 10)
    print("desired $version: %d" % r["version"])
    _print_writable(r["status"])
    return 0 if r["status"]["state"] in ("accepted", "rejected") or not args.wait else 1


def cmd_command(args):
    payload = _json_arg(args.payload, "--payload") if args.payload is not None else None
    body = {
        "device_id": args.device,
        "name": args.name,
        "component": args.component,
        "payload": payload,
        "timeout": args.timeout,
        "module_id": args.module,
    }
    r = _call(_admin(args), "POST", "/command", body, timeout=args.timeout + 10)
    print("status: %d" % r["status"])
    print("payload: %s" % json.dumps(r["payload"]))
    return 0


def cmd_twin(args):
    path = "/twin?device_id=" + urllib.request.quote(args.device, safe="")
    if args.module:
        path += "&module_id=" + urllib.request.quote(args.module, safe="")
    print(json.dumps(_call(_admin(args), "GET", path), indent=1, sort_keys=True))
    return 0


def cmd_events(args):
    for ev in _call(_admin(args), "GET", "/events"):
        _print_event(ev)
    return 0


def cmd_fault(args):
    admin = _admin(args)
    if args.reset:
        r = _call(admin, "POST", "/faults/reset", {})
    else:
        body = {}
        for item in args.settings:
            k, eq, v = item.partition("=")
            if not eq:
                raise CLIError(
                    "fault setting %r is not NAME=VALUE (VALUE as JSON: 5, true, null, 0.5)" % item
                )
            body[k] = _json_arg(v, "fault value for %s" % k)
        r = _call(admin, "POST", "/faults", body)
    print(json.dumps(r, sort_keys=True))
    return 0


def build_parser():
    p = argparse.ArgumentParser(
        prog="iothub-emulator",
        description="Local Azure IoT Hub emulator (MQTT over TLS, IoT Hub semantics).",
    )
    p.add_argument(
        "--state",
        default=DEFAULT_STATE,
        help="state directory: PKI, registry, emulator.json (default %(default)s, env IOTHUB_EMULATOR_STATE)",
    )
    p.add_argument(
        "--admin",
        help="admin API URL (default: read from the state directory); its token comes from "
        "%s or the state directory's %s" % (TOKEN_ENV, TOKEN_FILE),
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="run the hub until Ctrl-C")
    s.add_argument("--port", type=int, default=8883)
    s.add_argument(
        "--ws-port",
        type=int,
        default=None,
        help="also serve MQTT over WebSockets (wss, path /$iothub/websocket) on this port "
        "(IoT Hub: 443; 0: any free port)",
    )
    s.add_argument("--profile", choices=("ecc", "rsa"), default="ecc")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument(
        "--admin-port", type=int, default=0, help="loopback admin API port (default: any free port)"
    )
    s.add_argument("--hub-name", default="emulated-hub")
    s.add_argument("--quiet", action="store_true", help="do not print hub events")
    from . import dps_cli

    dps_cli.add_serve_options(s)
    s.set_defaults(fn=cmd_serve)

    dps_cli.add_parser(sub)

    d = sub.add_parser("device", help="registry: add, list, connection-string")
    dsub = d.add_subparsers(dest="action", required=True)
    a = dsub.add_parser("add")
    a.add_argument("id")
    g = a.add_mutually_exclusive_group()
    g.add_argument("--key", help="base64 symmetric key (default: generate one)")
    g.add_argument(
        "--x509-thumbprint", help="SHA-1 or SHA-256 thumbprint of a self-signed device certificate"
    )
    g.add_argument(
        "--x509-ca",
        action="store_true",
        help="authenticate by a certificate signed by the emulator's device CA",
    )
    a.add_argument("--module")
    a.add_argument(
        "--offline", action="store_true", help="edit the registry file even if an emulator runs"
    )
    dsub.add_parser("list")
    c = dsub.add_parser("connection-string")
    c.add_argument("id")
    c.add_argument("--module")
    c.add_argument("--no-gateway", action="store_true", help="omit GatewayHostName")
    d.set_defaults(fn=cmd_device)

    c = sub.add_parser("c2d", help="send a cloud-to-device message")
    c.add_argument("device")
    c.add_argument("payload")
    c.add_argument("--prop", action="append", metavar="K=V")
    c.add_argument("--message-id")
    c.add_argument("--correlation-id")
    c.set_defaults(fn=cmd_c2d)

    m = sub.add_parser("method", help="invoke a direct method and print the response")
    m.add_argument("device")
    m.add_argument("name")
    m.add_argument("--payload", help="JSON")
    m.add_argument("--timeout", type=float, default=30)
    m.add_argument("--module")
    m.set_defaults(fn=cmd_method)

    ds = sub.add_parser("desired", help="patch desired properties")
    ds.add_argument("device")
    ds.add_argument("patch", help="JSON object")
    ds.add_argument("--module")
    ds.set_defaults(fn=cmd_desired)

    t = sub.add_parser("telemetry", help="list received telemetry (JSON lines)")
    t.add_argument("device", nargs="?")
    t.add_argument("--component", help="only telemetry of this Plug and Play component ($.sub)")
    t.set_defaults(fn=cmd_telemetry)

    w = sub.add_parser(
        "writable",
        help="Plug and Play: set a writable property and show the device's acknowledgement "
        "(without JSON: show it only)",
    )
    w.add_argument("device")
    w.add_argument("name")
    w.add_argument("value", nargs="?", help="JSON value to set")
    w.add_argument("--component")
    w.add_argument("--module")
    w.add_argument(
        "--wait", type=float, default=10, help="seconds to wait for the ack (0: do not wait)"
    )
    w.set_defaults(fn=cmd_writable)

    cm = sub.add_parser("command", help="Plug and Play: invoke a (component) command")
    cm.add_argument("device")
    cm.add_argument("name")
    cm.add_argument("--component")
    cm.add_argument("--payload", help="JSON")
    cm.add_argument("--timeout", type=float, default=30)
    cm.add_argument("--module")
    cm.set_defaults(fn=cmd_command)

    tw = sub.add_parser("twin", help="print a twin")
    tw.add_argument("device")
    tw.add_argument("--module")
    tw.set_defaults(fn=cmd_twin)

    e = sub.add_parser("events", help="print the hub's event log")
    e.set_defaults(fn=cmd_events)

    f = sub.add_parser("fault", help="set fault injection switches (see iothub_emulator/faults.py)")
    f.add_argument("settings", nargs="*", metavar="NAME=JSON")
    f.add_argument("--reset", action="store_true")
    f.set_defaults(fn=cmd_fault)
    _accept_global_options_after_commands(p)
    return p


def _accept_global_options_after_commands(parser):
    """Let --state and --admin also follow a command (`serve --state DIR`), as users type them.
    SUPPRESS keeps the value given before the command when the command gives none."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                sub.add_argument("--state", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
                sub.add_argument("--admin", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
                _accept_global_options_after_commands(sub)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (CLIError, RegistryError) as e:
        print("iothub-emulator: error: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

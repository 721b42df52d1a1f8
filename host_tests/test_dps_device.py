"""Zero-touch provisioning end to end: iothub.provisioning on the real MicroPython unix port,
over real TLS, against the DPS emulator (tools/iothub_emulator/dps.py), which assigns devices
to the hub emulator. Every flow and error of docs/protocol.md section 4, retry-after honoured
(measured on the emulator's clock), and a whole boot: provision -> assigned hub -> telemetry.

The device driver is host_tests/device/dps_device.py; each run prints one JSON line.
"""

import json
import time

import pytest

import mpyrun
from iothub import sas as device_sas
from iothub_emulator import Emulator
from iothub_emulator.dps import DEFAULT_HOSTNAME, DPSEmulator
from iothub_emulator.dps_store import derive_device_key, new_key

pytestmark = pytest.mark.timeout(120)


class Env:
    def __init__(self, hub, dps, tmp):
        self.hub = hub
        self.dps = dps
        self.tmp = tmp
        self.root = dps.root_der_file
        self.hub_root = hub.root_der_file

    def cfg(self, registration_id, **kw):
        c = {
            "id_scope": self.dps.id_scope,
            "registration_id": registration_id,
            "dps_port": self.dps.port,
            "profile": self.dps.profile,
            "root": str(self.root),
            "min_retry_s": 0,
            "timeout_ms": 20000,
            "hub_port": self.hub.port,
            "state": str(self.tmp / ("%s.json" % registration_id)),
        }
        if self.hub.profile != self.dps.profile:
            c["hub_profile"] = self.hub.profile
            c["hub_root"] = str(self.hub_root)
        c.update(kw)
        return c

    def x509(self, cn, ca="self", name=None):
        cert, key, sha1, sha256 = self.dps.pki.issue_client_cert(cn, kind="ec256", ca=ca)
        name = name or cn
        (self.tmp / (name + "-cert.pem")).write_bytes(cert)
        (self.tmp / (name + "-key.pem")).write_bytes(key)
        return str(self.tmp / (name + "-cert.pem")), str(self.tmp / (name + "-key.pem")), sha256


def _env(pki, tmp_path, hub_profile="ecc", dps_profile=None, **dps_kw):
    hub = Emulator(str(tmp_path), profile=hub_profile, pki=pki).start()
    dps_kw.setdefault("retry_after", 0)
    dps = DPSEmulator(str(tmp_path), hub, profile=dps_profile, **dps_kw).start()
    return Env(hub, dps, tmp_path)


@pytest.fixture
def env(pki, tmp_path):
    e = _env(pki, tmp_path)
    yield e
    e.dps.stop()
    e.hub.stop()


def device(cfg, entry="register", timeout=60):
    code = "CFG = %r\nimport dps_device\ndps_device.%s(CFG)\n" % (cfg, entry)
    proc = mpyrun.run(code, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert proc.returncode == 0 and lines, "device run failed:\n%s\n%s" % (proc.stdout, proc.stderr)
    out = json.loads(lines[-1])
    out["log"] = lines[:-1]
    return out


def events(dps, name=None, kind=None):
    with dps.lock:
        evs = list(dps.events)
    return [e for e in evs if (name is None or e[1] == name) and (kind is None or e[2] == kind)]


def _assigned(out, hub, device_id):
    assert out["ok"], out
    r = out["result"]
    assert r["status"] == "assigned" and r["assigned_hub"] == hub.hostname
    assert r["device_id"] == device_id
    return r


# ---- flows ----------------------------------------------------------------------------------


def test_individual_key_202_then_200_honours_retry_after(env):
    env.dps.retry_after = 2
    key = env.dps.add_enrollment("dev-ind")
    out = device(env.cfg("dev-ind", symmetric_key=key, min_retry_s=1))
    r = _assigned(out, env.hub, "dev-ind")
    assert r["substatus"] == "initialAssignment" and r["registration_id"] == "dev-ind"
    assert r["id_scope"] == env.dps.id_scope
    # one register, one status query, waiting the 2 s the DPS asked for
    assert out["stats"] == {"requests": 2, "polls": 1, "retries": 0, "waits_ms": [2000]}
    reply = [e for e in events(env.dps, "dev-ind", "reply") if e[3]["status"] == 202][0]
    assert reply[3]["topic"].endswith("&retry-after=2")
    query = events(env.dps, "dev-ind", "query")[0]
    gap = query[0] - reply[0]
    assert 1.95 <= gap < 3.5, "polled %.3f s after a retry-after of 2 s" % gap
    assert query[3]["operationId"] == reply[3]["body"]["operationId"]
    # what was on the wire: TLS 1.2 with the DPS host name as SNI, the DPS CONNECT fields
    conn = env.dps.connections[-1]
    assert conn.sni == DEFAULT_HOSTNAME and conn.version == "TLSv1.2"
    c = events(env.dps, "dev-ind", "connect")[0][3]
    assert c["client_id"] == "dev-ind" and c["clean_session"] is True and c["auth"] == "sas"
    assert c["username"] == "%s/registrations/dev-ind/api-version=2019-03-31" % env.dps.id_scope
    assert events(env.dps, "dev-ind", "subscribe")[0][3] == ["$dps/registrations/res/#"]
    # the hub knows the device now, with its enrollment key
    assert env.hub.device_key("dev-ind") == key
    assert env.dps.registration("dev-ind")["assignedHub"] == env.hub.hostname


def test_whole_boot_group_key_derived_on_device(env):
    group_key = env.dps.add_group("line-1")
    cfg = env.cfg("sensor-42", group_key=group_key, payload={"modelId": "dtmi:com:example:T;1"})
    out = device(cfg, "boot")
    assert out["ok"], out
    assert out["source"] == "dps" and out["result"]["device_id"] == "sensor-42"
    t = env.hub.wait_telemetry(1, "sensor-42")[0]
    assert json.loads(t["payload"]) == {"boot": 1, "source": "dps"}
    # the hub holds the derived key, computed the same way on CPython and on the device
    derived = derive_device_key(group_key, "sensor-42")
    assert derived == device_sas.derive_device_key(group_key, "sensor-42")
    assert env.hub.device_key("sensor-42") == derived
    assert env.hub.connect_info("sensor-42")["auth"] == "sas"
    reg = env.dps.registration("sensor-42")
    assert reg["enrollment"] == "line-1"
    assert reg["devicePayload"] == {"modelId": "dtmi:com:example:T;1"}
    # the saved assignment holds no key material
    saved = (env.tmp / "sensor-42.json").read_text()
    assert json.loads(saved)["assigned_hub"] == env.hub.hostname
    assert group_key not in saved and derived not in saved
    # second boot: from flash, no DPS connection, straight to the hub
    n_dps = len(env.dps.connections)
    out = device(dict(cfg, boot_no=2), "boot")
    assert out["ok"] and out["source"] == "saved", out
    assert len(env.dps.connections) == n_dps
    t = env.hub.wait_telemetry(2, "sensor-42")[1]
    assert json.loads(t["payload"]) == {"boot": 2, "source": "saved"}


def test_factory_derived_key_and_skn_variants(env):
    group_key = env.dps.add_group("factory")
    derived = derive_device_key(group_key, "fac-1")
    for key_name in ("registration", None):
        out = device(env.cfg("fac-1", symmetric_key=derived, key_name=key_name))
        _assigned(out, env.hub, "fac-1")
    # a token with another key name is refused
    out = device(env.cfg("fac-1", symmetric_key=derived, key_name="device"))
    assert not out["ok"] and out["error"]["status"] == 401


def test_x509_individual_thumbprint_then_hub(env):
    cert, key, sha256 = env.x509("x509-dev")
    env.dps.add_enrollment("x509-dev", x509_thumbprint=sha256)
    out = device(env.cfg("x509-dev", cert=cert, key=key), "boot")
    assert out["ok"], out
    assert env.hub.connect_info("x509-dev")["auth"] == "x509"
    assert env.hub.wait_telemetry(1, "x509-dev")
    conn = events(env.dps, "x509-dev", "connect")[0][3]
    assert conn["auth"] == "x509"
    assert env.dps.connections[0].client_cert_sha256 == sha256


def test_x509_group_on_device_ca_then_hub(env):
    cert, key, _ = env.x509("ca-dev-7", ca="device-ca")
    env.dps.add_group("x509-line", x509_ca=True)
    out = device(env.cfg("ca-dev-7", cert=cert, key=key), "boot")
    assert out["ok"], out
    assert env.dps.registration("ca-dev-7")["enrollment"] == "x509-line"
    assert env.hub.connect_info("ca-dev-7")["auth"] == "x509_ca"
    assert env.hub.wait_telemetry(1, "ca-dev-7")


def test_rsa_dps_ecc_hub(pki, tmp_path):
    # Azure's DPS serves an RSA chain; a hub may be ECC: two profiles, two roots.
    e = _env(pki, tmp_path, hub_profile="ecc", dps_profile="rsa")
    try:
        key = e.dps.add_enrollment("two-profiles")
        out = device(e.cfg("two-profiles", symmetric_key=key), "boot")
        assert out["ok"], out
        assert "ECDHE-RSA" in e.dps.connections[0].cipher
        assert "ECDSA" in out["tls"][0]
        assert e.hub.wait_telemetry(1, "two-profiles")
    finally:
        e.dps.stop()
        e.hub.stop()


def test_throttled_429_then_assigned(env):
    env.dps.retry_after = 1
    env.dps.throttle = 1
    key = env.dps.add_enrollment("thr-1")
    out = device(env.cfg("thr-1", symmetric_key=key))
    _assigned(out, env.hub, "thr-1")
    assert out["stats"]["retries"] == 1 and out["stats"]["requests"] == 3
    replies = [e for e in events(env.dps, "thr-1", "reply")]
    assert [e[3]["status"] for e in replies] == [429, 202, 200]
    regs = events(env.dps, "thr-1", "register")
    # the device decided to wait retry-after (its own figure), and the wire agrees with a
    # margin for the emulator's threads being descheduled on a loaded machine
    assert out["stats"]["waits_ms"] == [1000, 1000], out["stats"]
    assert regs[1][0] - replies[0][0] >= 0.5


def test_no_retry_after_backoff_and_default_poll(env):
    # 429 without retry-after: exponential backoff with jitter; 202 without it: the default
    # poll interval, both clamped to max_retry_s
    env.dps.retry_after = None
    env.dps.throttle = 1
    key = env.dps.add_enrollment("thr-2")
    out = device(env.cfg("thr-2", symmetric_key=key, max_retry_s=1))
    _assigned(out, env.hub, "thr-2")
    replies = [e[3] for e in events(env.dps, "thr-2", "reply")]
    assert [r["status"] for r in replies] == [429, 202, 200]
    assert all("retry-after" not in r["topic"] for r in replies)
    backoff, poll = out["stats"]["waits_ms"]
    assert 0 <= backoff <= 1000 and poll == 1000


def test_assigning_polls_retry_after_first_and_missing_operation_ids(env):
    env.dps.assigning_polls = 2
    env.dps.retry_after_first = True  # $dps/registrations/res/202/?retry-after=0&$rid=1
    env.dps.omit_operation_id = 1  # first register reply: 202 without operationId -> register again
    env.dps.omit_operation_id_query = (
        1  # a 202 to a query without operationId -> keep the cached one
    )
    key = env.dps.add_enrollment("slow-1")
    out = device(env.cfg("slow-1", symmetric_key=key))
    _assigned(out, env.hub, "slow-1")
    replies = [e[3] for e in events(env.dps, "slow-1", "reply")]
    assert [r["status"] for r in replies] == [202, 202, 202, 202, 200]
    assert "?retry-after=0&$rid=" in replies[0]["topic"]
    assert "operationId" not in replies[0]["body"] and "operationId" not in replies[2]["body"]
    assert [e[2] for e in events(env.dps, "slow-1") if e[2] in ("register", "query")] == [
        "register",
        "register",
        "query",
        "query",
        "query",
    ]
    assert out["stats"]["polls"] == 3


def test_payloads_both_ways(env):
    key = env.dps.add_enrollment("pl-1", allocation_payload={"fw": "2.0", "slot": 3})
    model = {"modelId": "dtmi:com:example:Thermostat;1"}
    out = device(env.cfg("pl-1", symmetric_key=key, payload=model))
    r = _assigned(out, env.hub, "pl-1")
    assert r["payload"] == {"fw": "2.0", "slot": 3}
    assert env.dps.registration("pl-1")["devicePayload"] == model


def test_model_id_in_the_registration_and_the_hub_connect(env):
    # IoT Central: DPS with the ID scope and a group key, the model id in the registration
    model = "dtmi:com:example:iothub:TemperatureController;1"
    gkey = env.dps.add_group("central-group")
    out = device(env.cfg("pnp-1", group_key=gkey, model_id=model, payload={"site": "lab"}), "boot")
    assert out["ok"], out
    assert env.dps.registration("pnp-1")["devicePayload"] == {"site": "lab", "modelId": model}
    # the assigned hub's client announces the same model id
    assert env.hub.connect_info("pnp-1")["model_id"] == model
    # the saved assignment gives it too on the next boot (no DPS this time)
    out = device(env.cfg("pnp-1", group_key=gkey, model_id=model, boot_no=2), "boot")
    assert out["ok"] and out["source"] == "saved", out
    connects = [e[3] for e in env.hub.events if e[1] == "pnp-1" and e[2] == "connect"]
    assert [c.get("model_id") for c in connects] == [model, model]


def test_model_id_bad_input_is_a_config_error():
    code = (
        "from iothub.provisioning import ProvisioningClient\n"
        "for kw in ({'model_id': ''}, {'model_id': 5}, {'model_id': 'dtmi:a;1', 'payload': [1]},\n"
        "           {'model_id': 'dtmi:a;1', 'payload': {'modelId': 'dtmi:b;1'}}):\n"
        "    try:\n"
        "        ProvisioningClient('0ne00000001', 'r1', symmetric_key='a2V5a2V5a2V5a2V5a2V5', **kw)\n"
        "        print('ACCEPTED', kw)\n"
        "    except ValueError as e:\n"
        "        print('REFUSED', type(e).__name__, e)\n"
    )
    proc = mpyrun.run(code, timeout=60)
    lines = proc.stdout.splitlines()
    assert len(lines) == 4 and all(ln.startswith("REFUSED ConfigError") for ln in lines), (
        proc.stdout + proc.stderr
    )
    assert "model_id" in lines[0] and "dict" in lines[2] and "another modelId" in lines[3]


# ---- errors ---------------------------------------------------------------------------------


def _err(out):
    assert not out["ok"], out
    return out["error"]


def test_401_bad_key_individual_and_group(env):
    env.dps.add_enrollment("bad-1")
    e = _err(device(env.cfg("bad-1", symmetric_key=new_key(32))))
    assert e["type"] == "RegistrationError" and e["status"] == 401
    assert e["error_code"] == 401002 and e["retriable"] is False
    assert "401" in e["text"] and e["tracking_id"]
    env.dps.add_group("grp")
    e = _err(device(env.cfg("not-in-any-group", group_key=new_key(32))))
    assert e["status"] == 401
    assert env.hub.registry.get("bad-1") is None  # nothing was assigned
    assert "SharedAccessSignature" not in json.dumps(events(env.dps), default=repr)


def test_404_unknown_registration(env):
    e = _err(device(env.cfg("nobody", symmetric_key=new_key(32))))
    assert e["type"] == "RegistrationError" and e["status"] == 404 and e["error_code"] == 404201
    assert "unknown" in e["text"]


def test_401_x509_wrong_certificate_and_cn(env):
    cert, key, _ = env.x509("x-bad")
    _, _, other_sha = env.x509("x-bad", name="other")
    env.dps.add_enrollment("x-bad", x509_thumbprint=other_sha)
    e = _err(device(env.cfg("x-bad", cert=cert, key=key)))
    assert e["status"] == 401 and e["message"] == "Invalid certificate."
    # a device-CA certificate whose CN is not the registration id
    env.dps.add_group("x509-line", x509_ca=True)
    cert, key, _ = env.x509("someone-else", ca="device-ca")
    e = _err(device(env.cfg("x-cn", cert=cert, key=key)))
    assert e["status"] == 401


def test_disabled_individual_and_group(env):
    key = env.dps.add_enrollment("dis-1", enabled=False)
    e = _err(device(env.cfg("dis-1", symmetric_key=key)))
    assert e["type"] == "EnrollmentDisabled" and e["status"] == "disabled"
    gk = env.dps.add_group("g-off")
    env.dps.disable(group_id="g-off")
    e = _err(device(env.cfg("dis-2", group_key=gk)))
    assert e["type"] == "EnrollmentDisabled"
    reply = events(env.dps, "dis-2", "reply")[0][3]
    assert reply["status"] == 200 and reply["body"]["operationId"] == ""
    env.dps.enable(group_id="g-off")
    _assigned(device(env.cfg("dis-2", group_key=gk)), env.hub, "dis-2")


def test_failed_assignment(env):
    env.dps.fail_assignment = (400207, "Custom allocation failed with status code: 400")
    key = env.dps.add_enrollment("fail-1")
    e = _err(device(env.cfg("fail-1", symmetric_key=key)))
    assert e["type"] == "ProvisioningError" and e["status"] == "failed"
    assert e["error_code"] == 400207 and "Custom allocation failed" in e["text"]
    assert env.hub.registry.get("fail-1") is None


def test_wrong_id_scope_is_refused_at_connect(env):
    key = env.dps.add_enrollment("scope-1")
    e = _err(device(env.cfg("scope-1", symmetric_key=key, id_scope="0ne99999999")))
    assert e["type"] == "AuthenticationError" and e["code"] == 5


def test_dps_host_name_is_verified(env):
    key = env.dps.add_enrollment("tls-1")
    e = _err(device(env.cfg("tls-1", symmetric_key=key, endpoint="wrong-host.example.net")))
    assert e["type"] == "TLSError" and e["reason"] == "hostname"
    assert env.dps.connections[-1].sni == "wrong-host.example.net"


def test_timeouts_are_bounded(env):
    key = env.dps.add_enrollment("slow-dps")
    # retry-after longer than the time left: fail at once, do not sleep through it
    env.dps.retry_after = 30
    out = device(env.cfg("slow-dps", symmetric_key=key, timeout_ms=5000))
    e = _err(out)
    assert e["type"] == "Timeout" and "wait 30 s" in e["text"]
    assert out["elapsed_ms"] < 4000
    # a DPS that stops answering
    env.dps.retry_after = 0
    env.dps.service.faults.stall = True
    t0 = time.monotonic()
    out = device(env.cfg("slow-dps", symmetric_key=key, timeout_ms=1500))
    e = _err(out)
    assert e["type"] == "Timeout" and "CONNACK" in e["text"]
    assert 1.4 <= out["elapsed_ms"] / 1000 < 4 and time.monotonic() - t0 < 10
    # a DPS that accepts the connection and the subscription, then never answers
    env.dps.service.faults.stall = False
    env.dps.ignore_requests = True
    out = device(env.cfg("slow-dps", symmetric_key=key, timeout_ms=2000))
    e = _err(out)
    assert e["type"] == "Timeout" and "did not answer the register request" in e["text"]
    assert out["elapsed_ms"] < 4000


# ---- re-provisioning --------------------------------------------------------------------------


def test_reprovision_after_the_hub_refuses_the_identity(env):
    key = env.dps.add_enrollment("re-1")
    cfg = env.cfg("re-1", symmetric_key=key)
    assert device(cfg, "boot")["ok"]
    # the device's hub identity changes behind its back (moved, key rotated by the service)
    env.hub.add_device("re-1", key=new_key(32))
    out = device(cfg, "reprovision")
    assert out["ok"], out
    assert out["steps"][0] == "loaded:saved"
    assert out["steps"][1] == "connect failed: AuthenticationError"
    assert out["steps"][2].startswith("reprovision: the hub refused the identity")
    assert out["steps"][3:] == ["provisioned:dps", "connected"]
    assert env.hub.device_key("re-1") == key
    assert env.dps.registration("re-1")["substatus"] == "reprovisionedToInitialAssignment"
    t = env.hub.wait_telemetry(2, "re-1")[-1]
    assert json.loads(t["payload"]) == {"after": "reprovision"}


def test_saved_result_is_per_registration(env):
    key = env.dps.add_enrollment("keep-1")
    cfg = env.cfg("keep-1", symmetric_key=key)
    assert device(cfg, "boot")["ok"]
    assert device(cfg, "load_only")["found"] is True
    other = dict(cfg, registration_id="keep-2")
    assert device(other, "load_only")["found"] is False
    (env.tmp / "keep-1.json").write_text("{damaged")
    out = device(cfg, "boot")  # a damaged file means: ask DPS again
    assert out["ok"] and out["source"] == "dps"


# ---- cost -----------------------------------------------------------------------------------


def test_device_that_does_not_provision_does_not_load_it():
    code = (
        "import sys, iothub\n"
        "iothub.DeviceClient\n"
        "a = sorted(m for m in sys.modules if m.startswith('iothub'))\n"
        "from iothub.provisioning import ProvisioningClient\n"
        "b = sorted(m for m in sys.modules if m.startswith('iothub'))\n"
        "import json; print(json.dumps([a, b]))\n"
    )
    before, after = mpyrun.run_json(code)
    assert "iothub.provisioning" not in before and "iothub.dps_topics" not in before
    assert "iothub.provisioning" in after and "iothub.dps_topics" in after
    # importing provisioning alone loads neither the hub client nor the link code
    code = (
        "import sys\n"
        "from iothub.provisioning import ProvisioningClient, provision_or_load\n"
        "import json; print(json.dumps(sorted(m for m in sys.modules if m.startswith('iothub'))))\n"
    )
    alone = set(mpyrun.run_json(code))
    assert alone.isdisjoint(
        {
            "iothub.client",
            "iothub.outbox",
            "iothub.session",
            "iothub.transport",
            "iothub.tlsprofile",
        }
    ), alone


def test_device_log_has_no_secrets(env):
    # what the device logs during a registration names no key, token or signature
    key = env.dps.add_enrollment("quiet-1")
    out = device(env.cfg("quiet-1", symmetric_key=key))
    assert out["ok"] and any("DPS: assigned" in ln for ln in out["log"])
    text = "\n".join(out["log"])
    assert key not in text and "SharedAccessSignature" not in text and "sig=" not in text

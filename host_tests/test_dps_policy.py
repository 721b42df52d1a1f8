"""iothub.provisioning without a network (CPython): argument checks, the result's hand-over to
DeviceClient, persistence, and the re-provisioning policy driven through DeviceClient's
on_connection_state callback by a duck-typed stand-in."""

import json

import pytest

from iothub import sas
from iothub.errors import AuthenticationError, ConfigError, ConnectionLost, StatusError
from iothub.provisioning import (
    ProvisioningClient,
    ProvisioningResult,
    Reprovision,
    provision_or_load,
)

# A one-element DER SEQUENCE: taken as a custom root without parsing (no tls module here).
ROOT = b"\x30\x82\x00\x01\x00"
KEY = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg="
STATE = {
    "registrationId": "dev-1",
    "assignedHub": "contoso.azure-devices.net",
    "deviceId": "dev-1-hub",
    "status": "assigned",
    "substatus": "initialAssignment",
    "createdDateTimeUtc": "2020-04-10T03:11:13.0276997Z",
    "lastUpdatedDateTimeUtc": "2020-04-10T03:11:13.2096201Z",
    "etag": "IjYxMDA4ZDQ2In0=",
    "payload": {"fw": "2.0"},
}


def test_argument_checks():
    bad = [
        dict(),  # no credential
        dict(symmetric_key=KEY, group_key=KEY),
        dict(symmetric_key=KEY, cert=b"x", key=b"y"),
        dict(cert=b"x"),
        dict(symmetric_key="not base64"),
        dict(group_key="abc"),
        dict(symmetric_key=KEY, payload={"x": object()}),
        dict(symmetric_key=KEY, min_retry_s=5, max_retry_s=2),
        dict(symmetric_key=KEY, min_retry_s=-1),
        dict(symmetric_key=KEY, sas_ttl=10),
        dict(symmetric_key=KEY, endpoint=""),
    ]
    for kw in bad:
        with pytest.raises(ConfigError):
            ProvisioningClient("0ne1", "dev-1", **kw)
    with pytest.raises(ConfigError):
        ProvisioningClient("0ne1", "dev 1", symmetric_key=KEY)
    with pytest.raises(ConfigError):
        ProvisioningClient("", "dev-1", symmetric_key=KEY)
    with pytest.raises(ConfigError) as ei:
        ProvisioningClient("0ne1", "x" * 65, cert=b"c", key=b"k")
    assert "64" in str(ei.value)
    # a damaged key: the message does not echo it
    with pytest.raises(ConfigError) as ei:
        ProvisioningClient("0ne1", "dev-1", symmetric_key=KEY[:-2])
    assert KEY[:10] not in str(ei.value)


def test_group_key_is_derived_and_not_kept():
    pc = ProvisioningClient("0ne1", "dev-1", group_key=KEY)
    assert pc.device_key == sas.derive_device_key(KEY, "dev-1")
    assert KEY not in repr(vars(pc))
    assert pc.credentials() == {"shared_access_key": pc.device_key}
    assert pc.host == pc.endpoint == "global.azure-devices-provisioning.net" and pc.port == 8883


def test_result_hands_over_to_device_client():
    pc = ProvisioningClient("0ne1", "dev-1", symmetric_key=KEY, tls="ecc", roots=[ROOT])
    r = ProvisioningResult.from_state(STATE, "0ne1").attach(pc.credentials(), pc.tls_settings())
    assert (r.assigned_hub, r.device_id, r.substatus, r.payload) == (
        "contoso.azure-devices.net",
        "dev-1-hub",
        "initialAssignment",
        {"fw": "2.0"},
    )
    c = r.client(port=18883, host="127.0.0.1")
    assert c.hostname == "contoso.azure-devices.net" and c.device_id == "dev-1-hub"
    assert c.host == "127.0.0.1" and c.port == 18883
    assert c._tls_profile == "ecc" and c._roots == [ROOT]
    assert c._key == sas.decode_key(KEY)
    # another profile for the hub: the DPS roots are not carried over
    c = r.client(tls="rsa")
    assert c._tls_profile == "rsa" and c._roots is None
    # X.509 credentials carry over as cert/key
    px = ProvisioningClient("0ne1", "dev-1", cert=b"CERT", key=b"KEY")
    assert px.credentials() == {"cert": b"CERT", "key": b"KEY"}
    # a result without credentials says how to get them
    with pytest.raises(ConfigError) as ei:
        ProvisioningResult.from_state(STATE).client()
    assert "provision_or_load" in str(ei.value)


def test_save_load_without_secrets(tmp_path):
    path = str(tmp_path / "prov.json")
    pc = ProvisioningClient("0ne1", "dev-1", group_key=KEY)
    r = ProvisioningResult.from_state(STATE, "0ne1")
    r.save(path)
    r.save(path)  # replacing an existing file works
    text = open(path).read()
    assert KEY not in text and pc.device_key not in text
    d = json.loads(text)
    assert d["assigned_hub"] == "contoso.azure-devices.net" and d["format"] == 1
    back = ProvisioningResult.load(path, pc)
    assert (
        back.source == "saved" and back.device_id == "dev-1-hub" and back.payload == {"fw": "2.0"}
    )
    assert back.client()._key == sas.decode_key(pc.device_key)
    # for another registration or scope: not ours
    assert ProvisioningResult.load(path, ProvisioningClient("0ne1", "dev-2", group_key=KEY)) is None
    assert ProvisioningResult.load(path, ProvisioningClient("0ne2", "dev-1", group_key=KEY)) is None
    assert ProvisioningResult.load(str(tmp_path / "missing.json")) is None
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(ConfigError):
        ProvisioningResult.load(str(tmp_path / "bad.json"))
    (tmp_path / "bad.json").write_text('{"format": 1, "assigned_hub": ""}')
    with pytest.raises(ConfigError):
        ProvisioningResult.load(str(tmp_path / "bad.json"))


def test_provision_or_load_uses_dps_only_when_needed(tmp_path):
    path = str(tmp_path / "prov.json")

    class PC(ProvisioningClient):
        calls = 0

        def register(self, timeout_ms=None):
            PC.calls += 1
            return ProvisioningResult.from_state(STATE, self.id_scope).attach(self.credentials())

    pc = PC("0ne1", "dev-1", symmetric_key=KEY)
    assert provision_or_load(pc, path).source == "dps" and PC.calls == 1
    assert provision_or_load(pc, path).source == "saved" and PC.calls == 1
    assert provision_or_load(pc, path, force=True).source == "dps" and PC.calls == 2
    open(path, "w").write("{broken")
    assert provision_or_load(pc, path).source == "dps" and PC.calls == 3
    # an unwritable path does not fail the registration
    assert provision_or_load(pc, str(tmp_path / "no" / "dir.json")).source == "dps"


class FakeClient:
    """What Reprovision.watch needs of a DeviceClient: the on_connection_state attribute."""

    on_connection_state = None


def test_policy_counts_failed_reconnects():
    seen = []
    c = FakeClient()
    c.on_connection_state = lambda s, d: seen.append(s)
    p = Reprovision(max_failures=3)
    p.watch(c)
    cb = c.on_connection_state
    cb("connected", None)
    cb("retrying", 1000)  # the link dropped: not a failed attempt yet
    assert p.failures == 0
    cb("retrying", 2000)  # attempt 1 failed
    cb("retrying", 4000)  # attempt 2 failed
    assert p.failures == 2 and not p.due
    cb("connected", None)  # a success resets the count
    assert p.failures == 0
    for _ in range(4):
        cb("retrying", 1)
    assert p.due and p.failures == 3 and "3 consecutive" in p.reason
    assert seen[:2] == ["connected", "retrying"]  # the app's own callback still runs
    p.reset()
    assert not p.due and p.failures == 0


def test_policy_auth_refusals_are_due_at_once():
    p = Reprovision()
    assert p.failed(ConnectionLost("reset")) is False and p.failures == 1
    assert p.failed(AuthenticationError(5)) is True
    assert "refused the identity" in p.reason
    for status, due in ((401, True), (403, True), (404, True), (500, False), (429, False)):
        q = Reprovision()
        assert q.failed(StatusError(status)) is due
    q = Reprovision()
    c = FakeClient()
    q.watch(c)
    c.on_connection_state("auth_failed", 5)
    assert q.due and "CONNACK 5" in q.reason
    # Microsoft's default: ten failures
    q = Reprovision()
    assert [q.failed() for _ in range(10)] == [False] * 9 + [True]
    with pytest.raises(ConfigError):
        Reprovision(0)

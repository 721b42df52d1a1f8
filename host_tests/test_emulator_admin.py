"""The emulator's admin API refuses what a web page in the developer's browser could send
(cross-site requests, DNS rebinding), and every file that holds a key is private (0600)."""

import http.client
import json
import os
import stat

import pytest

from iothub_emulator import Emulator
from iothub_emulator.files import write_private
from iothub_emulator.jsonfile import JsonFile
from iothub_emulator.registry import Registry


@pytest.fixture
def emu(pki, tmp_path):
    e = Emulator(str(tmp_path / "state"), pki=pki).start()
    e.start_admin()
    yield e
    e.stop()


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def raw(emu, method, path, headers=None, body=None):
    """One request with exactly these headers (http.client adds Host unless given)."""
    conn = http.client.HTTPConnection("127.0.0.1", emu.admin.port, timeout=10)
    try:
        hdrs = dict(headers or {})
        skip_host = "Host" in hdrs
        conn.putrequest(method, path, skip_host=skip_host, skip_accept_encoding=True)
        data = body.encode() if isinstance(body, str) else body
        if data is not None:
            hdrs.setdefault("Content-Length", str(len(data)))
        for k, v in hdrs.items():
            conn.putheader(k, v)
        conn.endheaders(data)
        r = conn.getresponse()
        text = r.read().decode()
        return r.status, (json.loads(text) if text.startswith("{") else text)
    finally:
        conn.close()


def auth(emu):
    return {"Authorization": "Bearer " + emu.admin_token}


def test_token_file_is_private_and_matches(emu):
    path = os.path.join(emu.state_dir, "admin-token")
    assert mode(path) == 0o600
    with open(path) as f:
        assert f.read().strip() == emu.admin_token
    assert len(emu.admin_token) >= 40  # 32 random bytes, URL-safe base64
    assert emu.state_info()["admin_token_file"] == path


def test_authorized_json_requests_work(emu):
    key = emu.admin_call("POST", "/devices", {"device_id": "dev1"})["key"]
    assert emu.device_key("dev1") == key
    assert [d["device_id"] for d in emu.admin_call("GET", "/devices")] == ["dev1"]
    # loopback names other than 127.0.0.1 are fine too
    for host in ("localhost:%d" % emu.admin.port, "[::1]:%d" % emu.admin.port, "LOCALHOST"):
        status, body = raw(emu, "GET", "/status", dict(auth(emu), Host=host))
        assert status == 200 and body["hostname"] == emu.hostname, (host, body)


def test_cross_site_form_post_is_refused(emu):
    # What a page can send without a CORS preflight: a "simple" POST with a form or text body,
    # its Origin, and no Authorization header. Nothing must happen.
    body = json.dumps({"device_id": "evil"})
    for ctype in ("text/plain", "application/x-www-form-urlencoded"):
        status, reply = raw(
            emu,
            "POST",
            "/devices",
            {"Content-Type": ctype, "Origin": "http://attacker.example"},
            body,
        )
        assert status == 403 and "Origin" in reply["error"], reply
    # the same without Origin (a page that managed to drop it): no token, refused
    status, reply = raw(emu, "POST", "/devices", {"Content-Type": "text/plain"}, body)
    assert status == 401 and "admin token" in reply["error"], reply
    # preflighted methods are never answered with a CORS grant
    status, _ = raw(emu, "OPTIONS", "/devices", {"Origin": "http://attacker.example"})
    assert status >= 400
    assert emu.device_key("evil") is None and emu.registry.listing() == []


def test_dns_rebinding_host_is_refused_even_with_the_token(emu):
    key = emu.add_device("dev1")
    for host in ("attacker.example:%d" % emu.admin.port, "attacker.example", "127.0.0.1.nip.io"):
        status, reply = raw(emu, "GET", "/devices", dict(auth(emu), Host=host))
        assert status == 403 and "loopback" in reply["error"], (host, reply)
        assert key not in json.dumps(reply)
    status, reply = raw(emu, "GET", "/devices", {"Host": ""})
    assert status == 403


def test_wrong_or_missing_token_and_non_json_post(emu):
    token = emu.admin_token
    for hdrs in ({}, {"Authorization": "Bearer " + token[:-1] + "x"}, {"Authorization": token}):
        status, reply = raw(emu, "GET", "/devices", hdrs)
        assert status == 401, (hdrs, reply)
        assert token not in json.dumps(reply)
    status, reply = raw(
        emu, "POST", "/faults", dict(auth(emu), **{"Content-Type": "text/plain"}), '{"a":1}'
    )
    assert status == 415 and "JSON" in reply["error"]
    status, reply = raw(
        emu,
        "POST",
        "/faults",
        dict(auth(emu), **{"Content-Type": "application/json; charset=utf-8"}),
        '{"refuse_connack": 5}',
    )
    assert status == 200 and reply["refuse_connack"] == 5
    assert emu.faults.refuse_connack == 5


def test_token_file_goes_with_the_admin_api(pki, tmp_path):
    e = Emulator(str(tmp_path), pki=pki).start()
    try:
        e.start_admin()
        path = os.path.join(e.state_dir, "admin-token")
        assert os.path.exists(path)
    finally:
        e.stop()
    assert not os.path.exists(path)


# ---- files that hold keys --------------------------------------------------------------------


def test_registry_file_is_private_also_when_it_existed(tmp_path):
    path = tmp_path / "registry.json"
    path.write_text('{"devices": {}, "policies": {}}')
    os.chmod(path, 0o644)
    Registry(str(tmp_path)).add("dev1")
    assert mode(path) == 0o600
    assert "dev1" in json.loads(path.read_text())["devices"]


def test_json_state_files_are_private_over_a_leftover_temporary(tmp_path):
    # a crash between writing the temporary file and renaming it leaves one behind, 0644
    path = tmp_path / "dps.json"
    tmp = tmp_path / "dps.json.tmp"
    tmp.write_text("old")
    os.chmod(tmp, 0o644)
    JsonFile(str(path)).save({"groups": {"g": {"key": "secret"}}})
    assert mode(path) == 0o600 and not tmp.exists()


def test_write_private_replaces_a_world_readable_file(tmp_path):
    path = tmp_path / "key.pem"
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    old_umask = os.umask(0)  # a permissive umask changes nothing
    try:
        write_private(str(path), b"new key")
    finally:
        os.umask(old_umask)
    assert mode(path) == 0o600 and path.read_bytes() == b"new key"


def test_pki_private_keys_are_private(pki):
    keys = [n for n in os.listdir(os.path.dirname(pki.device_ca_pem_path)) if "key" in n]
    assert len(keys) >= 5, keys
    for name in keys:
        assert mode(os.path.join(os.path.dirname(pki.device_ca_pem_path), name)) == 0o600, name

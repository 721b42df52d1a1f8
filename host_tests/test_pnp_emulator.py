"""The emulator's Plug and Play service side: writable-property state from the twin (CPython
units), and the CLI (`writable`, `command`, `telemetry --component`) against a served emulator
with a paho device that acknowledges the way azure-sdk-for-c shapes acks."""

import json
import pathlib
import shutil
import ssl
import threading
import time

import paho.mqtt.client as pmqtt
import pytest
from test_tool_cli import KEY, Serve, emucli

from iothub_emulator.pnp import command_name, writable_patch, writable_status
from iothub_emulator.twin import Twin


def test_writable_status_follows_the_version_that_set_the_property():
    t = Twin()
    st = writable_status(t, "targetTemperature", "thermostat1")
    assert (st["state"], st["desired"], st["desired_version"], st["ack"]) == (
        "not set",
        None,
        None,
        None,
    )
    v1 = t.patch_desired(writable_patch("targetTemperature", 21, "thermostat1"))
    assert t.desired["thermostat1"] == {"__t": "c", "targetTemperature": 21}
    assert writable_status(t, "targetTemperature", "thermostat1")["state"] == "pending"
    t.patch_reported(
        {"thermostat1": {"__t": "c", "targetTemperature": {"ac": 200, "av": v1, "value": 21}}}
    )
    st = writable_status(t, "targetTemperature", "thermostat1")
    assert st["state"] == "accepted" and st["desired_version"] == v1
    # another property changes: this one's ack still answers the version that set it
    v2 = t.patch_desired(writable_patch("mode", "eco"))
    assert writable_status(t, "targetTemperature", "thermostat1")["state"] == "accepted"
    assert writable_status(t, "mode")["desired_version"] == v2
    # set again: the old ack is stale until the device answers the new version
    v3 = t.patch_desired(writable_patch("targetTemperature", 90, "thermostat1"))
    assert writable_status(t, "targetTemperature", "thermostat1")["state"] == "pending"
    t.patch_reported(
        {"thermostat1": {"targetTemperature": {"ac": 400, "av": v3, "ad": "too hot", "value": 90}}}
    )
    st = writable_status(t, "targetTemperature", "thermostat1")
    assert st["state"] == "rejected" and st["ack"]["ad"] == "too hot"
    # a root property is not the component's, and a non-ack value is no ack
    t.patch_reported({"mode": "eco"})
    assert writable_status(t, "mode")["ack"] is None
    # deleting the desired component forgets its versions
    t.patch_desired({"thermostat1": None})
    assert writable_status(t, "targetTemperature", "thermostat1")["state"] == "not set"
    assert command_name("getMaxMinReport", "thermostat1") == "thermostat1*getMaxMinReport"
    assert command_name("reboot") == "reboot"
    with pytest.raises(ValueError):
        writable_patch("", 1)
    with pytest.raises(ValueError):
        command_name("", "c")


@pytest.fixture
def state(tmp_path, pki):
    d = tmp_path / "state"
    shutil.copytree(pathlib.Path(pki.device_ca_pem_path).parent, d / "pki")
    return d


@pytest.mark.timeout(60)
def test_cli_writable_command_and_component_telemetry(state):
    srv = Serve(state)
    try:
        info = srv.info
        emucli(state, "device", "add", "pnp1", "--key", KEY)
        from iothub_tool.sas import resource_uri, sas_token

        c = pmqtt.Client(client_id="pnp1", clean_session=False, protocol=pmqtt.MQTTv311)
        c.username_pw_set(
            info["hostname"] + "/pnp1/?api-version=2021-04-12",
            sas_token(resource_uri(info["hostname"], "pnp1"), KEY, int(time.time()) + 600),
        )
        c.tls_set_context(ssl.create_default_context(cafile=info["root_pem"]))

        def on_message(cl, u, m):
            if m.topic.startswith("$iothub/twin/PATCH/properties/desired/"):
                patch = json.loads(m.payload)
                v = patch["$version"]
                comp = patch["thermostat1"]
                value = comp["targetTemperature"]
                ok = value <= 80
                ack = {
                    "ac": 200 if ok else 400,
                    "av": v,
                    "ad": "ok" if ok else "too hot",
                    "value": value,
                }
                body = {"thermostat1": {"__t": "c", "targetTemperature": ack}}
                cl.publish(
                    "$iothub/twin/PATCH/properties/reported/?$rid=%d" % v, json.dumps(body), 1
                )
            elif m.topic.startswith("$iothub/methods/POST/"):
                name = m.topic.split("/")[3]
                cl.publish(
                    "$iothub/methods/res/200/?$rid=" + m.topic.split("$rid=")[1],
                    json.dumps({"name": name, "payload": json.loads(m.payload or b"null")}),
                    1,
                )

        subscribed = threading.Event()
        c.on_message = on_message
        c.on_subscribe = lambda *a: subscribed.set()
        c.connect("127.0.0.1", info["port"])
        c.loop_start()
        try:
            c.subscribe(
                [
                    ("$iothub/methods/POST/#", 1),
                    ("$iothub/twin/res/#", 1),
                    ("$iothub/twin/PATCH/properties/desired/#", 1),
                ]
            )
            assert subscribed.wait(5)
            c.publish(
                "devices/pnp1/messages/events/%24.sub=thermostat1", b'{"temperature":20}', 1
            ).wait_for_publish(5)
            c.publish("devices/pnp1/messages/events/", b'{"workingSet":1}', 1).wait_for_publish(5)

            out = emucli(
                state, "writable", "pnp1", "targetTemperature", "23.5", "--component", "thermostat1"
            ).stdout
            assert out.splitlines() == [
                "desired $version: 2",
                "thermostat1/targetTemperature: accepted",
                "  desired: 23.5 (set at desired $version 2)",
                '  ack: ac=200 av=2 ad="ok" value=23.5',
            ]
            out = emucli(
                state, "writable", "pnp1", "targetTemperature", "99", "--component", "thermostat1"
            ).stdout
            assert "thermostat1/targetTemperature: rejected" in out and "ac=400 av=3" in out
            out = emucli(
                state, "writable", "pnp1", "targetTemperature", "--component", "thermostat1"
            ).stdout
            assert out.splitlines()[0] == "thermostat1/targetTemperature: rejected"
            out = emucli(state, "writable", "pnp1", "nothing").stdout
            assert out.splitlines()[0] == "nothing: not set"

            out = emucli(
                state,
                "command",
                "pnp1",
                "getMaxMinReport",
                "--component",
                "thermostat1",
                "--payload",
                '"2026-01-01"',
            ).stdout
            assert out.splitlines() == [
                "status: 200",
                'payload: {"name": "thermostat1*getMaxMinReport", "payload": "2026-01-01"}',
            ]
            recs = [
                json.loads(x)
                for x in emucli(
                    state, "telemetry", "pnp1", "--component", "thermostat1"
                ).stdout.splitlines()
            ]
            assert [(r["component"], r["payload"]) for r in recs] == [
                ("thermostat1", '{"temperature":20}')
            ]
            all_recs = emucli(state, "telemetry", "pnp1").stdout.splitlines()
            assert [json.loads(x)["component"] for x in all_recs] == ["thermostat1", None]
        finally:
            c.disconnect()
            c.loop_stop()
        # nobody acknowledges now: the CLI says so and exits 1 after --wait
        p = emucli(
            state,
            "writable",
            "pnp1",
            "targetTemperature",
            "20",
            "--component",
            "thermostat1",
            "--wait",
            "0.5",
            check=False,
        )
        assert p.returncode == 1 and "thermostat1/targetTemperature: pending" in p.stdout
        p = emucli(state, "writable", "pnp1", "t", "{bad", check=False)
        assert p.returncode == 2 and "not valid JSON" in p.stderr
    finally:
        assert srv.stop() == 0

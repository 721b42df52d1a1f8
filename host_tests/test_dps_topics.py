"""DPS names, payloads and reply decisions: the same cases on CPython and the unix port, plus
CPython-only cross-checks against the official python SDK."""

import corerun
import pytest

from iothub import dps_topics, sas

corerun.install("dps_cases", globals())


def test_sas_token_matches_azure_iot_device():
    # The python SDK's provisioning token for the same resource, key and expiry.
    pytest.importorskip("azure.iot.device")
    from azure.iot.device.common.auth import sastoken, signing_mechanism

    key = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg="
    uri = sas.dps_resource_uri("0neFEEDC0DE", "myRegistrationId")
    sm = signing_mechanism.SymmetricKeySigningMechanism(key)
    theirs = sastoken.RenewableSasToken(uri, sm, ttl=3600)
    expiry = theirs.expiry_time
    assert str(theirs) == sas.sas_token(uri, key, expiry)
    # the DPS doc's skn=registration variant only appends the key name
    assert sas.sas_token(uri, key, expiry, "registration") == str(theirs) + "&skn=registration"


def test_string_to_sign_matches_sdk_for_c_vector():
    # azure-sdk-for-c's provisioning test vector (it signs lower-case %2f; the service accepts both)
    uri = sas.dps_resource_uri("0neFEEDC0DE", "myRegistrationId")
    got = sas.string_to_sign(uri, 1578941692)
    assert got.lower() == "0neFEEDC0DE%2fregistrations%2fmyRegistrationId\n1578941692".lower()


def test_username_matches_azure_iot_device():
    pytest.importorskip("azure.iot.device")
    # the python SDK's user name is this plus "&ClientVersion=..." (azure-iot-device provisioning MQTT pipeline)
    assert dps_topics.username("0ne1", "r1") == "0ne1/registrations/r1/api-version=2019-03-31"

"""CONNECT checks of the hub: client id, user name, SAS password or X.509 identity (docs/protocol.md
§1.9, §2.2, §3.2). Returns an MQTT 3.1.1 return code and a reason; reasons never contain secrets."""

import datetime
import hashlib

from . import sas
from .topics import decode_bag

OK = 0
BAD_PROTOCOL = 1
BAD_CLIENT_ID = 2
UNAVAILABLE = 3
BAD_USERNAME = 4
NOT_AUTHORIZED = 5


class AuthResult:
    def __init__(self, rc, reason, device_id=None, module_id=None, **info):
        self.rc = rc
        self.reason = reason
        self.device_id = device_id
        self.module_id = module_id
        self.info = info  # api_version, model_id, device_client_type, auth, token_expiry, ...


def parse_username(username):
    """'{host}/{d}[/{m}]/?k=v&...' (also '/api-version=...' and no query) ->
    (host, device_id, module_id, query dict). Raises ValueError when malformed."""
    if not username:
        raise ValueError("no user name")
    if "/?" in username:
        path, _, query = username.partition("/?")
    elif "/api-version=" in username:
        path, _, rest = username.partition("/api-version=")
        query = "api-version=" + rest
    else:
        path, query = username[:-1] if username.endswith("/") else username, ""
    segs = path.split("/")
    if len(segs) not in (2, 3) or not all(segs):
        raise ValueError("user name path is not {host}/{deviceId}[/{moduleId}]")
    try:
        params = dict(decode_bag(query))
    except UnicodeDecodeError:
        raise ValueError("user name query is not valid percent-encoded UTF-8") from None
    return segs[0], segs[1], segs[2] if len(segs) == 3 else None, params


def _cert_identity(cert_der):
    from cryptography import x509  # imported lazily: only X.509 connections pay for it

    return x509.load_der_x509_certificate(cert_der)


def _common_name(cert):
    from cryptography.x509.oid import NameOID

    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return attrs[0].value if attrs else None


def _within_validity(cert, now):
    t = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    return cert.not_valid_before_utc <= t <= cert.not_valid_after_utc


def authenticate(pkt, hostname, registry, client_cert_der, device_ca_der, now):
    """Check a decoded CONNECT packet. Returns AuthResult (rc 0 on success)."""
    cid = pkt.client_id
    if not cid:
        return AuthResult(BAD_CLIENT_ID, "empty client id")
    parts = cid.split("/")
    if len(parts) > 2 or not all(parts):
        return AuthResult(
            BAD_CLIENT_ID, "client id %r is not {deviceId} or {deviceId}/{moduleId}" % cid
        )
    device_id = parts[0]
    module_id = parts[1] if len(parts) == 2 else None
    try:
        host, u_dev, u_mod, params = parse_username(pkt.username)
    except ValueError as e:
        return AuthResult(BAD_USERNAME, "malformed user name: %s" % e, device_id, module_id)
    info = {
        "client_id": cid,
        "username": pkt.username,
        "api_version": params.get("api-version"),
        "model_id": params.get("model-id"),
        "device_client_type": params.get("DeviceClientType"),
        "query": params,
        "clean_session": pkt.clean_session,
        "keepalive": pkt.keepalive,
    }

    def fail(reason, rc=NOT_AUTHORIZED):
        return AuthResult(rc, reason, device_id, module_id, **info)

    if host.lower() != hostname.lower():
        return fail("user name host %r is not this hub %r" % (host, hostname))
    if (u_dev, u_mod) != (device_id, module_id):
        return fail(
            "user name identity %r does not match client id %r"
            % ("/".join(filter(None, (u_dev, u_mod))), cid)
        )
    entry = registry.get(device_id, module_id)
    if entry is None:
        return fail("unknown identity %r" % cid)
    path = ["devices", device_id] + (["modules", module_id] if module_id else [])
    password = pkt.password
    if password:
        try:
            token = password.decode("utf-8")
        except UnicodeDecodeError:
            return fail("password is not UTF-8")
        try:
            fields = sas.parse(token)
            if "skn" in fields:
                pol = registry.policy(fields["skn"])
                if pol is None:
                    return fail("SAS token names unknown shared access policy (skn)")
                checked = sas.verify(token, pol["key"], hostname, path, now, exact=False)
                info["auth"] = "sas-policy"
            elif entry["auth"] != "sas":
                return fail("identity %r authenticates with X.509; password must be empty" % cid)
            else:
                checked = sas.verify(token, entry["key"], hostname, path, now, exact=True)
                info["auth"] = "sas"
        except sas.SASError as e:
            return fail("SAS: %s" % e)
        info["token_expiry"] = checked["expiry"]
        return AuthResult(OK, "ok", device_id, module_id, **info)
    # No password: X.509 from the TLS handshake.
    if entry["auth"] == "sas":
        return fail("no SAS token in the password for SAS identity %r" % cid)
    if not client_cert_der:
        return fail("no client certificate in the TLS handshake for X.509 identity %r" % cid)
    sha1 = hashlib.sha1(client_cert_der).hexdigest().upper()
    sha256 = hashlib.sha256(client_cert_der).hexdigest().upper()
    info["cert_sha1"] = sha1
    info["cert_sha256"] = sha256
    try:
        cert = _cert_identity(client_cert_der)
    except ValueError:
        return fail("client certificate does not parse")
    if not _within_validity(cert, now):
        return fail("client certificate is outside its validity period")
    if entry["auth"] == "x509":
        if sha1 not in entry["thumbprints"] and sha256 not in entry["thumbprints"]:
            return fail("client certificate thumbprint does not match the registered one")
        info["auth"] = "x509"
        return AuthResult(OK, "ok", device_id, module_id, **info)
    # x509_ca: signed by the emulator's device CA, CN == the client id.
    if not device_ca_der:
        return fail("no device CA configured")
    ca = _cert_identity(device_ca_der)
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # ValueError (issuer name), InvalidSignature, TypeError (key type)
        return fail("client certificate is not signed by the registered device CA")
    cn = _common_name(cert)
    if cn != cid:
        return fail("client certificate CN %r is not the client id %r" % (cn, cid))
    info["auth"] = "x509_ca"
    return AuthResult(OK, "ok", device_id, module_id, **info)

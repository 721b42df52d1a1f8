"""The DPS emulator's enrollments and registrations, persisted as JSON (dps.json in the state
directory) so the CLI can add enrollments while an emulator runs (it reloads on change).

Individual enrollments (keyed by registration id, case-insensitive as in DPS) attest with a
symmetric key or an X.509 thumbprint; enrollment groups attest with a symmetric group key
(devices present keys derived from it) or an X.509 CA certificate (default: the test PKI's
device CA). Either kind can be disabled. Keys are stored here as the service would hold them;
listings never show them.
"""

import base64
import contextlib
import fcntl
import hashlib
import hmac
import os
import re
import secrets
import threading

from .jsonfile import JsonFile
from .registry import RegistryError, normalize_thumbprint

FILENAME = "dps.json"
_REG_RE = re.compile(r"^[A-Za-z0-9\-._:]{0,127}[A-Za-z0-9\-]$")  # docs/protocol.md 4.1
_GROUP_RE = re.compile(r"^[A-Za-z0-9\-._:]{1,128}$")


class EnrollmentError(ValueError):
    pass


def new_key(nbytes=64):
    """A random symmetric key, base64 (DPS auto-generates 64-byte keys, section 4.1)."""
    return base64.b64encode(secrets.token_bytes(nbytes)).decode()


def check_key(key):
    try:
        raw = base64.b64decode(key, validate=True)
    except (ValueError, TypeError):
        raise EnrollmentError("key is not valid base64") from None
    if not 16 <= len(raw) <= 64:
        raise EnrollmentError("key must decode to 16..64 bytes (got %d)" % len(raw))
    return key


def derive_device_key(group_key, registration_id):
    """base64(HMAC-SHA256(b64decode(group key), registration id)) (section 4.2)."""
    raw = base64.b64decode(check_key(group_key), validate=True)
    return base64.b64encode(
        hmac.new(raw, registration_id.encode("utf-8"), hashlib.sha256).digest()
    ).decode()


def check_registration_id(rid):
    if not isinstance(rid, str) or not _REG_RE.match(rid):
        raise EnrollmentError(
            "registration id %r: 1..128 of A-Z a-z 0-9 - . _ :, ending with a letter, digit or -"
            % (rid,)
        )
    return rid


def _normalize_thumbprint(tp):
    try:
        return normalize_thumbprint(tp)
    except RegistryError as e:
        raise EnrollmentError(str(e)) from None


def ca_der_from(data):
    """DER of a CA certificate given as DER or PEM bytes (or a PEM str)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if isinstance(data, str):
        data = data.encode()
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            cert = x509.load_pem_x509_certificate(data)
        else:
            cert = x509.load_der_x509_certificate(data)
    except ValueError:
        raise EnrollmentError("the X.509 CA is not a PEM or DER certificate") from None
    return cert.public_bytes(serialization.Encoding.DER)


class Store:
    """Enrollments and registrations in <state_dir>/dps.json (thread- and process-safe)."""

    def __init__(self, state_dir):
        self.path = os.path.join(state_dir, FILENAME)
        self.lock = threading.RLock()
        self.individual = {}  # lower-case registration id -> entry
        self.groups = {}  # group id -> entry
        self.registrations = {}  # lower-case registration id -> record
        self._file = JsonFile(self.path)
        self.refresh()

    # ---- persistence ------------------------------------------------------------------------

    def refresh(self):
        """Reload if another process changed the file since we last read or wrote it."""
        with self.lock:
            data = self._file.load_if_changed()
            if data is not None:
                self.individual = data.get("individual", {})
                self.groups = data.get("groups", {})
                self.registrations = data.get("registrations", {})

    @contextlib.contextmanager
    def editing(self):
        """Read-modify-write under a file lock shared with other processes (the CLI)."""
        with self.lock:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(self.path + ".lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    self.refresh()
                    yield self
                    self._save()
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)

    def _save(self):
        self._file.save(
            {
                "individual": self.individual,
                "groups": self.groups,
                "registrations": self.registrations,
            }
        )

    # ---- enrollments ------------------------------------------------------------------------

    def add_individual(
        self,
        registration_id,
        key=None,
        x509_thumbprint=None,
        device_id=None,
        enabled=True,
        allocation_payload=None,
    ):
        """Add or replace an individual enrollment. Returns the generated key, if one was made."""
        check_registration_id(registration_id)
        if key is not None and x509_thumbprint is not None:
            raise EnrollmentError("choose one attestation: key or x509_thumbprint")
        generated = None
        if x509_thumbprint is not None:
            tps = (
                x509_thumbprint if isinstance(x509_thumbprint, (list, tuple)) else [x509_thumbprint]
            )
            entry = {"attestation": "x509", "thumbprints": [_normalize_thumbprint(t) for t in tps]}
        else:
            if key is None:
                key = generated = new_key()
            entry = {"attestation": "symmetric", "key": check_key(key)}
        entry.update(
            registration_id=registration_id,
            device_id=device_id or registration_id,
            enabled=bool(enabled),
            allocation_payload=allocation_payload,
        )
        with self.editing():
            self.individual[registration_id.lower()] = entry
        return generated

    def add_group(self, group_id, key=None, x509_ca=None, enabled=True, allocation_payload=None):
        """Add or replace an enrollment group: symmetric (key, generated if None) or X.509
        (x509_ca: the CA certificate as DER/PEM). Returns the generated key, if one was made."""
        if not isinstance(group_id, str) or not _GROUP_RE.match(group_id):
            raise EnrollmentError("group id %r: 1..128 of A-Z a-z 0-9 - . _ :" % (group_id,))
        generated = None
        if x509_ca is not None:
            if key is not None:
                raise EnrollmentError("choose one attestation: key or x509_ca")
            der = ca_der_from(x509_ca)
            entry = {
                "attestation": "x509",
                "ca_der": base64.b64encode(der).decode(),
                "ca_sha256": hashlib.sha256(der).hexdigest().upper(),
            }
        else:
            if key is None:
                key = generated = new_key()
            entry = {"attestation": "symmetric", "key": check_key(key)}
        entry.update(
            group_id=group_id, enabled=bool(enabled), allocation_payload=allocation_payload
        )
        with self.editing():
            self.groups[group_id] = entry
        return generated

    def set_enabled(self, enabled, registration_id=None, group_id=None):
        with self.editing():
            if registration_id is not None:
                e = self.individual.get(registration_id.lower())
                what = "individual enrollment %r" % registration_id
            else:
                e = self.groups.get(group_id)
                what = "enrollment group %r" % group_id
            if e is None:
                raise EnrollmentError("no %s" % what)
            e["enabled"] = bool(enabled)

    def remove(self, registration_id=None, group_id=None):
        with self.editing():
            if registration_id is not None:
                self.individual.pop(registration_id.lower(), None)
            if group_id is not None:
                self.groups.pop(group_id, None)

    def get_individual(self, registration_id):
        with self.lock:
            self.refresh()
            e = self.individual.get(registration_id.lower())
            return dict(e) if e else None

    def group_list(self):
        with self.lock:
            self.refresh()
            return [dict(g) for _, g in sorted(self.groups.items())]

    def listing(self):
        """Enrollments without key material (for the CLI and tests)."""
        with self.lock:
            self.refresh()
            out = []
            for _, e in sorted(self.individual.items()):
                out.append(
                    {
                        "kind": "individual",
                        "id": e["registration_id"],
                        "attestation": e["attestation"],
                        "device_id": e["device_id"],
                        "enabled": e["enabled"],
                        "thumbprints": e.get("thumbprints"),
                    }
                )
            for gid, g in sorted(self.groups.items()):
                out.append(
                    {
                        "kind": "group",
                        "id": gid,
                        "attestation": g["attestation"],
                        "enabled": g["enabled"],
                        "ca_sha256": g.get("ca_sha256"),
                    }
                )
            return out

    # ---- registrations ----------------------------------------------------------------------

    def record_registration(self, record):
        with self.editing():
            self.registrations[record["registrationId"].lower()] = record

    def registration(self, registration_id):
        with self.lock:
            self.refresh()
            r = self.registrations.get(registration_id.lower())
            return dict(r) if r else None

    def registration_list(self):
        with self.lock:
            self.refresh()
            return [dict(r) for _, r in sorted(self.registrations.items())]

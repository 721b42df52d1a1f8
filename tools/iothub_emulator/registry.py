"""The emulator's identity registry: devices, modules and hub-level shared access policies, persisted as
JSON in the state directory (registry.json) so the CLI can edit it offline.

An identity authenticates with exactly one of: a symmetric key (SAS), a registered X.509 thumbprint
(SHA-1 or SHA-256, as the Azure portal shows both), or a certificate signed by the emulator's device CA
(`x509_ca`, CN == device id).
"""

import base64
import os
import re
import secrets
import threading

from .jsonfile import JsonFile

FILENAME = "registry.json"
_ID_RE = re.compile(
    r"^[A-Za-z0-9\-:.+%_#*?!(),=@$']{1,128}$"
)  # device/module id characters (IoT Hub docs)


class RegistryError(ValueError):
    pass


def normalize_thumbprint(tp):
    s = re.sub(r"[\s:]", "", str(tp)).upper()
    if len(s) not in (40, 64) or not re.fullmatch(r"[0-9A-F]+", s):
        raise RegistryError("x509 thumbprint must be 40 (SHA-1) or 64 (SHA-256) hex digits")
    return s


def check_key(key):
    try:
        raw = base64.b64decode(key, validate=True)
    except (ValueError, TypeError):
        raise RegistryError("key is not valid base64") from None
    if not 16 <= len(raw) <= 64:
        raise RegistryError("key must decode to 16..64 bytes (got %d)" % len(raw))
    return key


def new_key():
    return base64.b64encode(secrets.token_bytes(32)).decode()


def _check_id(what, s):
    if not isinstance(s, str) or not _ID_RE.match(s):
        raise RegistryError(
            "%s %r: 1..128 characters of A-Z a-z 0-9 - : . + %% _ # * ? ! ( ) , = @ $ '" % (what, s)
        )


def make_identity(key=None, x509_thumbprint=None, x509_ca=False):
    """-> (entry, generated_key_or_None)."""
    chosen = sum(1 for x in (key, x509_thumbprint, x509_ca or None) if x)
    if chosen > 1:
        raise RegistryError("choose one authentication: key, x509_thumbprint or x509_ca")
    if x509_thumbprint:
        tps = x509_thumbprint if isinstance(x509_thumbprint, (list, tuple)) else [x509_thumbprint]
        return {"auth": "x509", "thumbprints": [normalize_thumbprint(t) for t in tps]}, None
    if x509_ca:
        return {"auth": "x509_ca"}, None
    generated = None
    if key is None:
        key = generated = new_key()
    return {"auth": "sas", "key": check_key(key)}, generated


class Registry:
    def __init__(self, state_dir=None):
        self.path = os.path.join(state_dir, FILENAME) if state_dir else None
        self._file = JsonFile(self.path) if self.path else None
        self.lock = threading.RLock()
        self.devices = {}
        self.policies = {}
        self._refresh()

    def _refresh(self):
        """Reload when another process (the CLI) changed the file since we last read or wrote it."""
        if self._file is None:
            return
        with self.lock:
            data = self._file.load_if_changed()
            if data is not None:
                self.devices = data.get("devices", {})
                self.policies = data.get("policies", {})

    def save(self):
        if self._file is None:
            return
        with self.lock:
            self._file.save({"devices": self.devices, "policies": self.policies})

    def add(self, device_id, key=None, x509_thumbprint=None, x509_ca=False, module_id=None):
        """Add or replace a device or module identity. Returns the generated key, if any."""
        _check_id("device id", device_id)
        if module_id is not None:
            _check_id("module id", module_id)
        entry, generated = make_identity(key, x509_thumbprint, x509_ca)
        with self.lock:
            self._refresh()
            if module_id is None:
                modules = self.devices.get(device_id, {}).get("modules", {})
                entry["modules"] = modules
                self.devices[device_id] = entry
            else:
                dev = self.devices.get(device_id)
                if dev is None:
                    dev, _ = make_identity()
                    dev["modules"] = {}
                    self.devices[device_id] = dev
                dev.setdefault("modules", {})[module_id] = entry
            self.save()
        return generated

    def remove(self, device_id, module_id=None):
        with self.lock:
            self._refresh()
            if module_id is None:
                self.devices.pop(device_id, None)
            else:
                self.devices.get(device_id, {}).get("modules", {}).pop(module_id, None)
            self.save()

    def get(self, device_id, module_id=None):
        """The identity entry (a copy) or None."""
        with self.lock:
            self._refresh()
            dev = self.devices.get(device_id)
            if dev is None:
                return None
            if module_id is None:
                return dict(dev)
            m = dev.get("modules", {}).get(module_id)
            return dict(m) if m is not None else None

    def add_policy(self, name, key=None):
        """A hub-level shared access policy with DeviceConnect (tokens carry skn=name)."""
        _check_id("policy name", name)
        generated = None
        if key is None:
            key = generated = new_key()
        with self.lock:
            self._refresh()
            self.policies[name] = {"key": check_key(key), "rights": ["DeviceConnect"]}
            self.save()
        return generated

    def policy(self, name):
        with self.lock:
            self._refresh()
            p = self.policies.get(name)
            return dict(p) if p else None

    def listing(self):
        """Identities without keys (for the CLI and admin API)."""
        with self.lock:
            self._refresh()
            out = []
            for d, e in sorted(self.devices.items()):
                out.append({"device_id": d, "module_id": None, "auth": e["auth"]})
                for m, me in sorted(e.get("modules", {}).items()):
                    out.append({"device_id": d, "module_id": m, "auth": me["auth"]})
            return out

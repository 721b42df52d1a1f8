"""Device twin documents with versions (docs/protocol.md 2.8).

Desired and reported sections each carry `$version`, bumped by one per accepted patch. A patch merges
recursively; a member set to null is deleted. Each section is limited to 32 KB (quotas doc).
"""

import copy
import json

SECTION_LIMIT = 32 * 1024


class TwinError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def merge(doc, patch):
    """Merge `patch` into `doc` in place: objects merge recursively, null deletes, others replace."""
    for k, v in patch.items():
        if v is None:
            doc.pop(k, None)
        elif isinstance(v, dict):
            cur = doc.get(k)
            if not isinstance(cur, dict):
                cur = {}
                doc[k] = cur
            merge(cur, v)
            # An object left empty by nulls stays as {} (the service keeps the key).
        else:
            doc[k] = copy.deepcopy(v)


def _check_keys(obj, what):
    # Twin keys exclude control characters, '.', '$' and space (device twins doc, "Keys").
    for k, v in obj.items():
        if not k or any(c in ".$ " or ord(c) < 32 or 127 <= ord(c) < 160 for c in k):
            raise TwinError(
                400,
                "%s patch member %r: key is empty or has '.', '$', space or a control character"
                % (what, k),
            )
        if isinstance(v, dict):
            _check_keys(v, what)


def _check_patch(patch, what):
    if not isinstance(patch, dict):
        raise TwinError(400, "%s patch must be a JSON object" % what)
    _check_keys(patch, what)


def _record_updates(updated, patch, prefix, version):
    for k, v in patch.items():
        path = prefix + (k,)
        for old in [p for p in updated if p[: len(path)] == path]:
            del updated[old]  # replaced or deleted below this path
        if isinstance(v, dict):
            _record_updates(updated, v, path, version)
        elif v is not None:
            updated[path] = version


class Twin:
    def __init__(self, desired=None, reported=None, desired_version=1, reported_version=1):
        self.desired = desired or {}
        self.reported = reported or {}
        self.desired_version = desired_version
        self.reported_version = reported_version
        # desired leaf path (tuple of keys) -> desired $version that last set it, like the
        # service's $metadata.$lastUpdatedVersion (what a Plug and Play ack must answer)
        self.desired_updated = {}

    def document(self):
        d = copy.deepcopy(self.desired)
        d["$version"] = self.desired_version
        r = copy.deepcopy(self.reported)
        r["$version"] = self.reported_version
        return {"desired": d, "reported": r}

    def _apply(self, section, patch, what):
        _check_patch(patch, what)
        trial = copy.deepcopy(section)
        merge(trial, patch)
        size = len(json.dumps(trial, separators=(",", ":")).encode("utf-8"))
        if size > SECTION_LIMIT:
            raise TwinError(
                413, "%s properties would be %d bytes (limit %d)" % (what, size, SECTION_LIMIT)
            )
        return trial

    def patch_reported(self, patch):
        """Apply a reported patch; returns the new reported $version. Raises TwinError(400/413)."""
        self.reported = self._apply(self.reported, patch, "reported")
        self.reported_version += 1
        return self.reported_version

    def patch_desired(self, patch):
        """Apply a desired patch (service side); returns the new desired $version."""
        self.desired = self._apply(self.desired, patch, "desired")
        self.desired_version += 1
        _record_updates(self.desired_updated, patch, (), self.desired_version)
        return self.desired_version

    def to_json(self):
        return {
            "desired": self.desired,
            "reported": self.reported,
            "desired_version": self.desired_version,
            "reported_version": self.reported_version,
        }

    @classmethod
    def from_json(cls, d):
        return cls(
            d.get("desired"),
            d.get("reported"),
            d.get("desired_version", 1),
            d.get("reported_version", 1),
        )

# What a DPS registration can end with besides an assignment. Kept out of errors.py so that a
# device that never provisions does not load these classes.
from .errors import IoTHubError, StatusError


class RegistrationError(StatusError):
    """DPS refused the request: 401 (bad key or certificate), 404 (unknown registration),
    400, 403... `status`, `error_code` (e.g. 401002), `message` and `tracking_id` come
    from the reply; `retriable` is False for these statuses."""

    def __init__(self, status, error_code=None, message=None, tracking_id=None):
        detail = ""
        if error_code is not None:
            detail += ", errorCode %s" % (error_code,)
        if message:
            detail += ": %s" % (message,)
        if status == 401:
            detail += " (wrong key or certificate, or the registration id is not enrolled)"
        elif status == 404:
            detail += " (the registration id is unknown to this ID scope)"
        super().__init__(status, "DPS registration", None, detail)
        self.error_code = error_code
        self.message = message
        self.tracking_id = tracking_id


class ProvisioningError(IoTHubError):
    """The registration completed without an assignment: `status` is "failed" (e.g. no
    hub could be allocated, errorCode 400207/400208) or "disabled". Not retriable: the
    enrollment must change first."""

    retriable = False

    def __init__(self, status, error_code=None, message=None, state=None):
        self.status = status
        self.error_code = error_code
        self.message = message
        self.registration_state = state
        text = "DPS registration %s" % status
        if error_code is not None:
            text += ", errorCode %s" % (error_code,)
        if message:
            text += ": %s" % (message,)
        super().__init__(text)


class EnrollmentDisabled(ProvisioningError):
    """The device's enrollment (individual or group) is disabled on the DPS."""

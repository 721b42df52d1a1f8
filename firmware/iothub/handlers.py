# Setting a handler (on_message, on_method, on_desired, on_writable, on_command: the
# descriptors of iothub.clientbase, or the asyncio client's properties): loaded for that
# call (errors.explained) and dropped again, so a client that sets none never holds it.
try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_RXBUF = const(512)  # the receive buffer of a client with handlers (iothub.session)


def set_handler(c, name, fn):
    had = c._handlers.get(name) is not None
    c._handlers[name] = fn
    if fn is not None:
        # A client with handlers receives messages and sends SUBSCRIBE/UNSUBSCRIBE and
        # QoS 0 answers: its buffers are made now, before it connects (iothub.session).
        s = c._s
        s.tx_full()
        if len(s.decoder._base) < _RXBUF:
            s.decoder._base = bytearray(_RXBUF)
    # The twin's state is made when the first twin response or desired patch comes
    # (iothub.inbound.twin_of), not here.
    if c.is_connected and (fn is not None or had):
        # The asyncio client (un)subscribes with its own method, from its loop; the
        # blocking one with iothub.clientrun (a method would be resident code).
        f = getattr(c, "_handler_changed", None)
        if f is None:
            from .clientrun import handler_changed

            handler_changed(c, name, fn is not None)
        else:
            f(name, fn is not None)

"""The two kinds of wire errors, split the h11 way."""


class ProtocolError(Exception):
    """The peer broke the protocol. Close that connection; nothing else is affected."""


class LocalProtocolError(Exception):
    """We misused the codec (a bug on our side), e.g. sending before the handshake."""

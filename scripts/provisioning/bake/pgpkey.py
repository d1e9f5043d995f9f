"""OpenPGP v4 key fingerprints of a public key, ASCII-armored or binary (pure, stdlib only).

Enough to pin a downloaded signing key by its fingerprint before handing it to
rpm or apt: packets are read only as far as the key packets.  No signature is
checked here; rpm and apt check them with the key once it is trusted.
"""

import base64
import binascii
import hashlib

PUBLIC_KEY = 6
PUBLIC_SUBKEY = 14
ARMOR_BEGIN = "-----BEGIN PGP "
ARMOR_END = "-----END PGP "


class PgpError(ValueError):
    """The data is not an OpenPGP public key this module can read."""


def dearmor(text):
    """The binary OpenPGP data of every ASCII-armor block in ``text``, concatenated."""
    blocks = []
    lines = None
    for raw in text.splitlines():
        line = raw.strip()
        if lines is None:
            if line.startswith(ARMOR_BEGIN):
                lines = []
        elif line.startswith(ARMOR_END):
            try:
                blocks.append(base64.b64decode("".join(lines), validate=True))
            except (binascii.Error, ValueError) as exc:
                raise PgpError("bad base64 in the armor: %s" % exc) from exc
            lines = None
        # header lines ("Key: value") hold a colon, which base64 never does; the
        # checksum line is "=" and 4 characters, and no base64 line starts with "="
        elif line and ":" not in line and not line.startswith("="):
            lines.append(line)
    if lines is not None:
        raise PgpError("ASCII armor without an END line")
    if not blocks:
        raise PgpError("no ASCII armor found")
    return b"".join(blocks)


def key_data(data):
    """Binary OpenPGP data from ``data`` (bytes): dearmored if it is ASCII armor."""
    start = data.lstrip()[:1]
    if start and not start[0] & 0x80:
        return dearmor(data.decode("ascii", "replace"))
    return data


def _take(data, pos, count):
    chunk = data[pos : pos + count]
    if len(chunk) != count:
        raise PgpError("data ends inside a packet (offset %d)" % pos)
    return chunk


def packets(data):
    """(tag, body) of each packet in binary OpenPGP data, old- and new-format headers."""
    pos = 0
    while pos < len(data):
        first = data[pos]
        pos += 1
        if not first & 0x80:
            raise PgpError("no packet header at offset %d" % (pos - 1))
        if first & 0x40:  # new format: tag in 6 bits, then a 1, 2 or 5 octet length
            tag = first & 0x3F
            octet = _take(data, pos, 1)[0]
            if octet < 192:
                length, pos = octet, pos + 1
            elif octet < 224:
                length = ((octet - 192) << 8) + _take(data, pos + 1, 1)[0] + 192
                pos += 2
            elif octet == 255:
                length = int.from_bytes(_take(data, pos + 1, 4), "big")
                pos += 5
            else:
                # partial body lengths are for data packets, never for keys
                raise PgpError("partial body length in packet %d" % tag)
        else:  # old format: tag in 4 bits, length type in 2
            tag = (first >> 2) & 0x0F
            length_type = first & 0x03
            if length_type == 3:  # indeterminate: to the end of the data
                length = len(data) - pos
            else:
                size = (1, 2, 4)[length_type]
                length = int.from_bytes(_take(data, pos, size), "big")
                pos += size
        yield tag, _take(data, pos, length)
        pos += length


def fingerprint(body):
    """The v4 fingerprint of a public-key or public-subkey packet body (upper-case hex)."""
    if len(body) > 0xFFFF:
        raise PgpError("key packet of %d bytes is too long for a v4 key" % len(body))
    return hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest().upper()


def fingerprints(data):
    """[(tag, fingerprint)] of every v4 public key (tag 6) and subkey (tag 14), in order.

    ``data`` is a key or keyring as bytes, ASCII-armored or binary; keys of other
    versions are left out.
    """
    return [
        (tag, fingerprint(body))
        for tag, body in packets(key_data(data))
        if tag in (PUBLIC_KEY, PUBLIC_SUBKEY) and body[:1] == b"\x04"
    ]


def normalize(fingerprint_text):
    """A fingerprint as written by people ("bca4 3417 ...") in the form computed here."""
    return "".join(fingerprint_text.split()).upper()

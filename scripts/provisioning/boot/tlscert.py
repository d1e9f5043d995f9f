"""api_tls self-signed: an OpenSSL request config for this instance's certificate.

`openssl req -x509 -config` with a config file, not `-addext`: Amazon Linux 2's
OpenSSL 1.0.2 has no `-addext`, and the same file works on 1.0.2 and 3.x.
"""

import ipaddress

# About ten years: the life of an instance; nobody renews a self-signed certificate.
DAYS = 3650
KEY = "rsa:2048"


def subject_alt_names(names, addresses):
    """DNS:/IP: entries, deduplicated, in a stable order (names first)."""
    seen, entries = set(), []
    for kind, values in (("DNS", names), ("IP", addresses)):
        for given in values:
            if not given:
                continue
            value = str(ipaddress.ip_address(given)) if kind == "IP" else given
            if (kind, value) not in seen:
                seen.add((kind, value))
                entries.append("%s:%s" % (kind, value))
    return entries


def request_config(common_name, alt_names):
    """The config of `openssl req -x509`: a server certificate valid for ``alt_names``."""
    return "\n".join(
        [
            "[req]",
            "prompt = no",
            "distinguished_name = dn",
            "x509_extensions = server",
            "[dn]",
            "CN = %s" % common_name[:64],
            "O = airflow-ami self-signed",
            "[server]",
            "basicConstraints = critical, CA:FALSE",
            "keyUsage = critical, digitalSignature, keyEncipherment",
            "extendedKeyUsage = serverAuth",
            "subjectKeyIdentifier = hash",
            "subjectAltName = %s" % ", ".join(alt_names),
            "",
        ]
    )


def openssl_argv(config_path, key_path, cert_path):
    return [
        "openssl",
        "req",
        "-x509",
        "-nodes",
        "-newkey",
        KEY,
        "-days",
        str(DAYS),
        "-sha256",
        "-config",
        config_path,
        "-keyout",
        key_path,
        "-out",
        cert_path,
    ]

#!/usr/bin/env python3
"""Writes DIR/sp.key (RSA 2048, PKCS#8 PEM) and DIR/sp.crt (self-signed, 30 days):
a service provider's key pair for the SAML tests and benchmark.

Usage: make_sp_keys.py DIR
"""

import datetime
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "torii sp")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (
    x509.CertificateBuilder()
    .subject_name(name)
    .issuer_name(name)
    .public_key(key.public_key())
    .serial_number(x509.random_serial_number())
    .not_valid_before(now - datetime.timedelta(days=1))
    .not_valid_after(now + datetime.timedelta(days=30))
    .sign(key, hashes.SHA256())
)
with open(sys.argv[1] + "/sp.key", "wb") as f:
    f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
with open(sys.argv[1] + "/sp.crt", "wb") as f:
    f.write(cert.public_bytes(serialization.Encoding.PEM))

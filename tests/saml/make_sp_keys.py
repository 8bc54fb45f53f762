#!/usr/bin/env python3
"""Writes DIR/sp.key (RSA 2048, PEM) and DIR/sp.crt (self-signed): a
service provider's key pair for the SAML tests and benchmark, made as the
test IdP (idp.py, beside this file) makes its own.

Usage: make_sp_keys.py DIR
"""

import sys

from idp import make_key_and_cert

make_key_and_cert(sys.argv[1], "sp", "torii sp")

#!/usr/bin/env python3
"""A real SAML 2.0 Identity Provider for torii's integration tests.

Built on pysaml2 (which drives the xmlsec1 binary) and `cryptography`; no
other dependency beyond the stdlib. The test plays the browser: it gets an
HTTP-Redirect AuthnRequest from torii, calls GET /sso here, and posts the
returned SAMLResponse to torii's ACS. The next answer (user, signing,
encryption, overridden conditions...) is chosen with /_test/next-login; every
overridden value is still correctly signed by the chosen key, so when torii
refuses a response it is because of torii's own checks.

Usage: idp.py --port 0 --dir DIR
Binds 127.0.0.1 only; entity id http://127.0.0.1:<port>/idp. Writes its keys,
certificates and the SP metadata into DIR. Prints exactly one line
"LISTENING <port>" to stdout once it accepts connections; logs every request
to stderr; exits 0 on SIGTERM/SIGINT.

Routes:
  GET  /metadata               IdP metadata (SSO: HTTP-Redirect at /sso)
  GET  /sso?SAMLRequest=..&RelayState=..[&SigAlg=..&Signature=..]
                               logs the next-login user in without a prompt;
                               200 text/html auto-submitting form (HTTP-POST
                               binding) with SAMLResponse (+ RelayState) to
                               the request's AssertionConsumerServiceURL
  GET  /_test/cert             IdP certificate (PEM)
  GET  /_test/impostor-cert    certificate of the unrelated "impostor" key
  POST /_test/sp-metadata      body: SP metadata XML; the only SP known
  POST /_test/users            {"<uid>": {"<attr>": ["v", ...]}, ...}
  POST /_test/next-login       {"user": uid, "sign_response": true,
                                "sign_assertion": true, "sign_alg":
                                "sha256"|"sha1", "encrypt_assertion": false,
                                "block_cipher": "aes128-cbc"|"aes256-gcm"|
                                "aes192-cbc"|"aes256-cbc"|"aes128-gcm"|
                                "tripledes-cbc", "key_transport":
                                "rsa-oaep-mgf1p"|"rsa-1_5", "audience": s,
                                "not_before": -60, "not_on_or_after": 300,
                                "in_response_to": s, "destination": s,
                                "impostor": false, "name_id": s,
                                "name_id_format": uri}
                               kept until changed; audience/in_response_to/
                               destination set to null omit the element or
                               attribute (absent = default)
  GET  /_test/next-login       the current options
  GET  /_test/last             what the last successful /sso saw and sent
  POST /_test/reset            forget SP, users, next-login and last
"""

import argparse
import base64
import datetime
import html
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from http.server import ThreadingHTTPServer
from urllib.parse import unquote_plus, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testhttp  # noqa: E402
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, saml, samlp
from saml2.config import IdPConfig
from saml2.metadata import entity_descriptor, metadata_tostring_fix
from saml2.s_utils import sid
from saml2.server import Server
from saml2.sigver import pre_encryption_part, pre_signature_part
from saml2.validate import valid_instance
from saml2.xmldsig import DIGEST_SHA1, DIGEST_SHA256, SIG_RSA_SHA1, SIG_RSA_SHA256

NS_SAML = saml.NAMESPACE
NS_SAMLP = samlp.NAMESPACE
NS_DS = "http://www.w3.org/2000/09/xmldsig#"
NS_XENC = "http://www.w3.org/2001/04/xmlenc#"
NSPAIR = {"samlp": NS_SAMLP, "saml": NS_SAML, "ds": NS_DS, "xenc": NS_XENC}
MD_NSPAIR = {
    "md": "urn:oasis:names:tc:SAML:2.0:metadata",
    "ds": NS_DS,
    "alg": "urn:oasis:names:tc:SAML:metadata:algsupport",
    "xs": "http://www.w3.org/2001/XMLSchema",
}

NODE_ASSERTION = NS_SAML + ":Assertion"
NODE_RESPONSE = NS_SAMLP + ":Response"
ASSERTION_XPATH = "/*[local-name()='Response']/*[local-name()='EncryptedAssertion']/*[local-name()='Assertion']"

SIGN_ALGS = {"sha256": (SIG_RSA_SHA256, DIGEST_SHA256), "sha1": (SIG_RSA_SHA1, DIGEST_SHA1)}
# name -> (EncryptionMethod URI, xmlsec1 --session-key)
BLOCK_CIPHERS = {
    "aes128-cbc": ("http://www.w3.org/2001/04/xmlenc#aes128-cbc", "aes-128"),
    "aes192-cbc": ("http://www.w3.org/2001/04/xmlenc#aes192-cbc", "aes-192"),
    "aes256-cbc": ("http://www.w3.org/2001/04/xmlenc#aes256-cbc", "aes-256"),
    "aes128-gcm": ("http://www.w3.org/2009/xmlenc11#aes128-gcm", "aes-128"),
    "aes256-gcm": ("http://www.w3.org/2009/xmlenc11#aes256-gcm", "aes-256"),
    "tripledes-cbc": ("http://www.w3.org/2001/04/xmlenc#tripledes-cbc", "des-192"),
}
KEY_TRANSPORTS = {
    "rsa-oaep-mgf1p": "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p",
    "rsa-1_5": "http://www.w3.org/2001/04/xmlenc#rsa-1_5",
}
# redirect-binding SigAlg -> hash
REDIRECT_SIG_HASHES = {
    "http://www.w3.org/2000/09/xmldsig#rsa-sha1": hashes.SHA1,
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256": hashes.SHA256,
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384": hashes.SHA384,
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512": hashes.SHA512,
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha1": hashes.SHA1,
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256": hashes.SHA256,
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384": hashes.SHA384,
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512": hashes.SHA512,
}
NEXT_LOGIN_KEYS = {
    "user", "sign_response", "sign_assertion", "sign_alg", "encrypt_assertion",
    "block_cipher", "key_transport", "audience", "not_before", "not_on_or_after",
    "in_response_to", "destination", "impostor", "name_id", "name_id_format",
}
AUTHN_CLASS = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"

LOCK = threading.Lock()
CTX = {}  # base, entity_id, dir, xmlsec, key/cert files, metadata, server
STATE = {"sp_entity_id": None, "users": {}, "next": None, "last": None}


class Refuse(Exception):
    """An answer with a plain-text reason (status, text)."""

    def __init__(self, status, reason):
        Exception.__init__(self, reason)
        self.status = status
        self.reason = reason


# ---- keys and certificates ---------------------------------------------------


def make_key_and_cert(directory, name, common_name):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    key_file = os.path.join(directory, name + ".key")
    cert_file = os.path.join(directory, name + ".crt")
    with open(key_file, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
    with open(cert_file, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return key_file, cert_file


def pem_body(cert_file):
    """The base64 of a PEM certificate, on one line (for ds:X509Certificate)."""
    with open(cert_file) as f:
        text = f.read()
    return "".join(l.strip() for l in text.splitlines() if l.strip() and not l.startswith("-----"))


def b64_to_pem(b64):
    b64 = re.sub(r"\s+", "", b64)
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


# ---- pysaml2 server --------------------------------------------------------


def build_server(sp_metadata_file=None):
    conf = IdPConfig()
    conf.load(
        {
            "entityid": CTX["entity_id"],
            "xmlsec_binary": CTX["xmlsec"],
            "key_file": CTX["key_file"],
            "cert_file": CTX["cert_file"],
            "metadata": {"local": [sp_metadata_file]} if sp_metadata_file else {},
            "service": {
                "idp": {
                    "endpoints": {"single_sign_on_service": [(CTX["base"] + "/sso", BINDING_HTTP_REDIRECT)]},
                    "name_id_format": [saml.NAMEID_FORMAT_EMAILADDRESS, saml.NAMEID_FORMAT_UNSPECIFIED],
                    "want_authn_requests_signed": False,
                }
            },
            "metadata_key_usage": "signing",
            "accepted_time_diff": 60,
            "delete_tmpfiles": True,
        }
    )
    return conf, Server(config=conf)


def sp_descriptors(server, entity_id):
    try:
        return server.metadata[entity_id].get("spsso_descriptor", [])
    except Exception:
        return []


def sp_certs(server, entity_id, use):
    out = []
    for _name, cert in server.metadata.certs(entity_id, "spsso", use):
        if cert not in out:
            out.append(cert)
    return out


def sp_acs_locations(server, entity_id):
    """[(location, binding, index, is_default)] from the SP's metadata."""
    out = []
    for desc in sp_descriptors(server, entity_id):
        for acs in desc.get("assertion_consumer_service", []):
            out.append((acs.get("location"), acs.get("binding"), acs.get("index"), acs.get("is_default")))
    return out


# ---- redirect-binding signature ----------------------------------------------


def raw_query_params(query):
    """[(name, raw value, decoded value)] in order, as sent."""
    out = []
    for part in query.split("&"):
        if not part:
            continue
        name, _, raw = part.partition("=")
        out.append((unquote_plus(name), raw, unquote_plus(raw)))
    return out


def verify_redirect_signature(raw, decoded, certs):
    """The SAML redirect binding signs "SAMLRequest=..&RelayState=..&SigAlg=.."
    with the values exactly as they were URL-encoded on the wire."""
    sig_alg = decoded["SigAlg"]
    hash_cls = REDIRECT_SIG_HASHES.get(sig_alg)
    if hash_cls is None:
        raise Refuse(400, "unsupported SigAlg: %s" % sig_alg)
    signed = "&".join("%s=%s" % (k, raw[k]) for k in ("SAMLRequest", "RelayState", "SigAlg") if k in raw).encode()
    try:
        signature = base64.b64decode(decoded["Signature"], validate=False)
    except Exception:
        raise Refuse(400, "Signature is not base64")
    if not certs:
        raise Refuse(400, "the SP's metadata has no signing certificate to check the request's Signature")
    for b64 in certs:
        try:
            public_key = x509.load_der_x509_certificate(base64.b64decode(re.sub(r"\s+", "", b64))).public_key()
            if isinstance(public_key, rsa.RSAPublicKey):
                public_key.verify(signature, signed, padding.PKCS1v15(), hash_cls())
            elif isinstance(public_key, ec.EllipticCurvePublicKey):
                public_key.verify(signature, signed, ec.ECDSA(hash_cls()))
            else:
                continue
            return True
        except (InvalidSignature, ValueError):
            continue
    return False


# ---- the Response ------------------------------------------------------------


def instant(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def strip_xml_decl(text):
    return re.sub(r"^\s*<\?xml[^>]*\?>\s*", "", text)


def to_xml(obj):
    text = obj.to_string(NSPAIR)
    return strip_xml_decl(text.decode("utf-8") if isinstance(text, bytes) else text)


def build_assertion(opts, uid, attrs, request_id, acs, sp_entity_id, sign_template):
    now = time.time()
    issuer = saml.Issuer(text=CTX["entity_id"], format=saml.NAMEID_FORMAT_ENTITY)

    if "name_id" in opts:
        name_id = saml.NameID(
            text=opts["name_id"], format=opts.get("name_id_format") or saml.NAMEID_FORMAT_UNSPECIFIED
        )
    elif attrs.get("mail"):
        name_id = saml.NameID(text=attrs["mail"][0], format=opts.get("name_id_format") or saml.NAMEID_FORMAT_EMAILADDRESS)
    else:
        name_id = saml.NameID(text=uid, format=opts.get("name_id_format") or saml.NAMEID_FORMAT_UNSPECIFIED)

    not_before = now + int(opts.get("not_before", -60))
    not_on_or_after = now + int(opts.get("not_on_or_after", 300))
    in_response_to = opts["in_response_to"] if "in_response_to" in opts else request_id
    recipient = opts["destination"] if "destination" in opts else acs
    audience = opts["audience"] if "audience" in opts else sp_entity_id

    scd = saml.SubjectConfirmationData(not_on_or_after=instant(not_on_or_after))
    if in_response_to is not None:
        scd.in_response_to = in_response_to
    if recipient is not None:
        scd.recipient = recipient
    subject = saml.Subject(
        name_id=name_id,
        subject_confirmation=[saml.SubjectConfirmation(method=saml.SCM_BEARER, subject_confirmation_data=scd)],
    )

    conditions = saml.Conditions(not_before=instant(not_before), not_on_or_after=instant(not_on_or_after))
    if audience is not None:
        conditions.audience_restriction = [saml.AudienceRestriction(audience=[saml.Audience(text=audience)])]

    authn = saml.AuthnStatement(
        authn_instant=instant(now),
        session_index=sid(),
        session_not_on_or_after=instant(now + 8 * 3600),
        authn_context=saml.AuthnContext(authn_context_class_ref=saml.AuthnContextClassRef(text=AUTHN_CLASS)),
    )

    attributes = []
    for name, values in attrs.items():
        attributes.append(
            saml.Attribute(
                name=name,
                name_format=saml.NAME_FORMAT_BASIC,
                attribute_value=[saml.AttributeValue(text=v) for v in values],
            )
        )

    assertion = saml.Assertion(
        id=sid(),
        version="2.0",
        issue_instant=instant(now),
        issuer=issuer,
        subject=subject,
        conditions=conditions,
        authn_statement=[authn],
    )
    if attributes:
        assertion.attribute_statement = [saml.AttributeStatement(attribute=attributes)]
    if sign_template is not None:
        assertion.signature = sign_template(assertion.id)
    return assertion


def build_response(opts, uid, attrs, request_id, acs, sp_entity_id):
    """The signed (and maybe encrypted) Response XML, as a str."""
    server = CTX["server"]
    sec = server.sec
    sign_alg, digest_alg = SIGN_ALGS[opts.get("sign_alg", "sha256")]
    if opts.get("impostor"):
        key_file, cert_b64 = CTX["impostor_key_file"], pem_body(CTX["impostor_cert_file"])
    else:
        key_file, cert_b64 = CTX["key_file"], pem_body(CTX["cert_file"])
    sign_response = opts.get("sign_response", True)
    sign_assertion = opts.get("sign_assertion", True)
    encrypt = opts.get("encrypt_assertion", False)

    def template(ident):
        return pre_signature_part(ident, public_key=cert_b64, sign_alg=sign_alg, digest_alg=digest_alg)

    assertion = build_assertion(
        opts, uid, attrs, request_id, acs, sp_entity_id, template if sign_assertion else None
    )

    response = samlp.Response(
        id=sid(),
        version="2.0",
        issue_instant=instant(time.time()),
        issuer=saml.Issuer(text=CTX["entity_id"], format=saml.NAMEID_FORMAT_ENTITY),
        status=samlp.Status(status_code=samlp.StatusCode(value=samlp.STATUS_SUCCESS)),
    )
    in_response_to = opts["in_response_to"] if "in_response_to" in opts else request_id
    destination = opts["destination"] if "destination" in opts else acs
    if in_response_to is not None:
        response.in_response_to = in_response_to
    if destination is not None:
        response.destination = destination
    if sign_response:
        response.signature = template(response.id)

    # The assertion carries all its namespace declarations itself, so that it
    # stays well-formed once encrypted and decrypted on its own.
    assertion_xml = to_xml(assertion)
    if encrypt:
        assertion_xml = '<saml:EncryptedAssertion xmlns:saml="%s">%s</saml:EncryptedAssertion>' % (
            NS_SAML,
            assertion_xml,
        )
    doc = to_xml(response)
    m = re.search(r"</samlp:Response>\s*$", doc)
    if not m:
        raise Refuse(500, "unexpected pysaml2 serialization of the Response")
    doc = doc[: m.start()] + assertion_xml + doc[m.start():]

    if encrypt:
        certs = sp_certs(server, sp_entity_id, "encryption")
        if not certs:
            raise Refuse(409, "encrypt_assertion: the SP's metadata has no encryption certificate")
    if sign_assertion:
        doc = sec.sign_statement(doc, NODE_ASSERTION, key_file=key_file, node_id=assertion.id)
    if encrypt:
        msg_enc, session_key = BLOCK_CIPHERS[opts.get("block_cipher", "aes128-cbc")]
        key_enc = KEY_TRANSPORTS[opts.get("key_transport", "rsa-oaep-mgf1p")]
        cert_b64_sp = re.sub(r"\s+", "", certs[0])
        tmpl = pre_encryption_part(msg_enc=msg_enc, key_enc=key_enc, encrypt_cert=cert_b64_sp)
        with tempfile.NamedTemporaryFile("w", suffix=".pem", dir=CTX["dir"], delete=False) as f:
            f.write(b64_to_pem(cert_b64_sp))
            sp_cert_file = f.name
        try:
            doc = sec.crypto.encrypt_assertion(
                doc, sp_cert_file, to_xml(tmpl), key_type=session_key, node_xpath=ASSERTION_XPATH
            )
        finally:
            os.unlink(sp_cert_file)
        if isinstance(doc, bytes):
            doc = doc.decode("utf-8")
    if sign_response:
        doc = sec.sign_statement(doc, NODE_RESPONSE, key_file=key_file, node_id=response.id)
    return doc


def post_form(acs, saml_response, relay_state):
    fields = '<input type="hidden" name="SAMLResponse" value="%s"/>' % html.escape(saml_response, quote=True)
    if relay_state is not None:
        fields += '<input type="hidden" name="RelayState" value="%s"/>' % html.escape(relay_state, quote=True)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>SAML POST</title></head>"
        '<body onload="document.forms[0].submit()">'
        '<form method="post" action="%s">%s<noscript><input type="submit" value="Continue"/></noscript>'
        "</form></body></html>\n" % (html.escape(acs, quote=True), fields)
    )


# ---- option checks -------------------------------------------------------------


def check_next_login(spec):
    if not isinstance(spec, dict):
        raise Refuse(400, "next-login: a JSON object is expected")
    unknown = sorted(set(spec) - NEXT_LOGIN_KEYS)
    if unknown:
        raise Refuse(400, "next-login: unknown option(s): %s" % ", ".join(unknown))
    if not isinstance(spec.get("user"), str) or not spec["user"]:
        raise Refuse(400, "next-login: user (a uid) is required")
    for key in ("sign_response", "sign_assertion", "encrypt_assertion", "impostor"):
        if key in spec and not isinstance(spec[key], bool):
            raise Refuse(400, "next-login: %s must be a boolean" % key)
    for key in ("not_before", "not_on_or_after"):
        if key in spec and (not isinstance(spec[key], int) or isinstance(spec[key], bool)):
            raise Refuse(400, "next-login: %s must be an integer (seconds from now)" % key)
    for key in ("audience", "in_response_to", "destination"):
        if key in spec and spec[key] is not None and not isinstance(spec[key], str):
            raise Refuse(400, "next-login: %s must be a string or null" % key)
    for key in ("name_id", "name_id_format"):
        if key in spec and not isinstance(spec[key], str):
            raise Refuse(400, "next-login: %s must be a string" % key)
    if spec.get("sign_alg", "sha256") not in SIGN_ALGS:
        raise Refuse(400, "next-login: sign_alg must be one of %s" % ", ".join(SIGN_ALGS))
    if spec.get("block_cipher", "aes128-cbc") not in BLOCK_CIPHERS:
        raise Refuse(400, "next-login: block_cipher must be one of %s" % ", ".join(BLOCK_CIPHERS))
    if spec.get("key_transport", "rsa-oaep-mgf1p") not in KEY_TRANSPORTS:
        raise Refuse(400, "next-login: key_transport must be one of %s" % ", ".join(KEY_TRANSPORTS))
    return dict(spec)


def check_users(spec):
    if not isinstance(spec, dict):
        raise Refuse(400, "users: a JSON object {uid: {attribute: [values]}} is expected")
    users = {}
    for uid, attrs in spec.items():
        if not isinstance(attrs, dict):
            raise Refuse(400, "users: the attributes of %r must be an object" % uid)
        clean = {}
        for name, values in attrs.items():
            if isinstance(values, str):
                values = [values]
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise Refuse(400, "users: %r.%r must be a list of strings" % (uid, name))
            clean[name] = list(values)
        users[uid] = clean
    return users


# ---- HTTP --------------------------------------------------------------------


class Handler(testhttp.Handler):
    server_version = "torii-test-idp/1.0"
    log_name = "saml_idp"

    def send(self, status, body=None, content_type=None):
        super().send(status, body, content_type, {"Cache-Control": "no-store"})

    def handle_any(self):
        url = urlsplit(self.path)
        try:
            raw = self.read_body()
            self.route(url, raw)
        except Refuse as e:
            self.send(e.status, e.reason + "\n")
        except Exception as e:  # noqa: BLE001 -- never let a request kill the server
            traceback.print_exc(file=sys.stderr)
            self.send(500, "internal error: %s: %s\n" % (type(e).__name__, e))

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = handle_any

    def route(self, url, raw):
        m, path = self.command, url.path
        if path == "/metadata" and m in ("GET", "HEAD"):
            return self.send(200, CTX["metadata"], "application/samlmetadata+xml")
        if path == "/sso":
            if m != "GET":
                raise Refuse(405, "only the HTTP-Redirect binding (GET) is supported")
            return self.sso(url.query)
        if path == "/_test/cert" and m == "GET":
            return self.send(200, open(CTX["cert_file"]).read(), "text/plain; charset=utf-8")
        if path == "/_test/impostor-cert" and m == "GET":
            return self.send(200, open(CTX["impostor_cert_file"]).read(), "text/plain; charset=utf-8")
        if path == "/_test/sp-metadata" and m == "POST":
            return self.load_sp_metadata(raw)
        if path == "/_test/users" and m == "POST":
            users = check_users(self.json(raw))
            with LOCK:
                STATE["users"] = users
            return self.send(204)
        if path == "/_test/next-login":
            if m == "POST":
                spec = check_next_login(self.json(raw))
                with LOCK:
                    STATE["next"] = spec
                return self.send(204)
            if m == "GET":
                with LOCK:
                    return self.send(200, STATE["next"])
        if path == "/_test/last" and m == "GET":
            with LOCK:
                last = STATE["last"]
            if last is None:
                raise Refuse(404, "no successful /sso yet")
            return self.send(200, last)
        if path == "/_test/reset" and m == "POST":
            with LOCK:
                _conf, CTX["server"] = build_server(None)
                STATE.update({"sp_entity_id": None, "users": {}, "next": None, "last": None})
            return self.send(204)
        raise Refuse(404, "not found: %s %s" % (m, path))

    @staticmethod
    def json(raw):
        try:
            return json.loads(raw.decode("utf-8") or "null")
        except Exception as e:
            raise Refuse(400, "body is not JSON: %s" % e)

    def load_sp_metadata(self, raw):
        if not raw.strip():
            raise Refuse(400, "sp-metadata: empty body")
        path = os.path.join(CTX["dir"], "sp-metadata.xml")
        candidate = path + ".new"
        with LOCK:
            with open(candidate, "wb") as f:
                f.write(raw)
            try:
                try:
                    _conf, server = build_server(candidate)
                except Exception as e:
                    raise Refuse(400, "sp-metadata: pysaml2 cannot load it: %s: %s" % (type(e).__name__, e))
                sps = sorted(server.metadata.with_descriptor("spsso"))
                if len(sps) != 1:
                    raise Refuse(400, "sp-metadata: expected exactly one SP (SPSSODescriptor), found %d" % len(sps))
                entity_id = sps[0]
                os.replace(candidate, path)  # pysaml2 has read it already
            finally:
                if os.path.exists(candidate):
                    os.unlink(candidate)
            CTX["server"] = server
            STATE["sp_entity_id"] = entity_id
        return self.send(204)

    def sso(self, query):
        params = raw_query_params(query)
        raw, decoded = {}, {}
        for name, r, d in params:
            if name in raw:
                raise Refuse(400, "duplicate query parameter: %s" % name)
            raw[name], decoded[name] = r, d
        if not decoded.get("SAMLRequest"):
            raise Refuse(400, "missing SAMLRequest")
        if ("SigAlg" in decoded) != ("Signature" in decoded):
            raise Refuse(400, "SigAlg and Signature come together")
        relay_state = decoded.get("RelayState")

        with LOCK:
            server = CTX["server"]
            sp_entity_id = STATE["sp_entity_id"]
            opts = STATE["next"]
            users = STATE["users"]

            try:
                req = server.parse_authn_request(decoded["SAMLRequest"], BINDING_HTTP_REDIRECT)
            except Exception as e:
                raise Refuse(400, "malformed AuthnRequest: %s: %s" % (type(e).__name__, e))
            if req is None or req.message is None:
                raise Refuse(400, "malformed AuthnRequest")
            msg = req.message
            issuer = msg.issuer.text.strip() if msg.issuer is not None and msg.issuer.text else None
            if not issuer:
                raise Refuse(400, "AuthnRequest has no Issuer")
            if sp_entity_id is None:
                raise Refuse(403, "unknown SP %s: no SP metadata loaded (POST /_test/sp-metadata)" % issuer)
            if issuer != sp_entity_id:
                raise Refuse(403, "unknown SP %s (the known SP is %s)" % (issuer, sp_entity_id))

            signed = "Signature" in decoded
            valid = None
            if signed:
                valid = verify_redirect_signature(raw, decoded, sp_certs(server, sp_entity_id, "signing"))
                if not valid:
                    raise Refuse(400, "the AuthnRequest's redirect Signature does not verify with the SP's certificate")

            if msg.protocol_binding and msg.protocol_binding != BINDING_HTTP_POST:
                raise Refuse(400, "unsupported ProtocolBinding %s (only HTTP-POST)" % msg.protocol_binding)
            known = sp_acs_locations(server, sp_entity_id)
            post_acs = [a for a in known if a[1] == BINDING_HTTP_POST]
            if msg.assertion_consumer_service_url:
                acs = msg.assertion_consumer_service_url
                if acs not in [a[0] for a in post_acs]:
                    raise Refuse(400, "AssertionConsumerServiceURL %s is not an HTTP-POST ACS of the SP's metadata" % acs)
            elif msg.assertion_consumer_service_index is not None:
                match = [a for a in post_acs if a[2] == msg.assertion_consumer_service_index]
                if not match:
                    raise Refuse(400, "no HTTP-POST ACS with index %s" % msg.assertion_consumer_service_index)
                acs = match[0][0]
            else:
                if not post_acs:
                    raise Refuse(400, "the SP's metadata has no HTTP-POST ACS")
                default = [a for a in post_acs if str(a[3]).lower() == "true"]
                acs = (default or post_acs)[0][0]

            if opts is None:
                raise Refuse(409, "no next-login configured (POST /_test/next-login)")
            uid = opts["user"]
            if uid not in users:
                raise Refuse(403, "unknown user %s" % uid)

            xml = build_response(opts, uid, users[uid], msg.id, acs, sp_entity_id)
            saml_response = base64.b64encode(xml.encode("utf-8")).decode("ascii")
            STATE["last"] = {
                "saml_response": saml_response,
                "response_xml": xml,
                "request_id": msg.id,
                "request_signed": signed,
                "request_signature_valid": valid,
                "request_sig_alg": decoded.get("SigAlg"),
                "acs": acs,
                "relay_state": relay_state,
                "user": uid,
            }
        return self.send(200, post_form(acs, saml_response, relay_state), "text/html; charset=utf-8")


def find_xmlsec():
    for candidate in ("/usr/bin/xmlsec1", shutil.which("xmlsec1")):
        if candidate and os.path.exists(candidate):
            return candidate
    sys.stderr.write("saml_idp: xmlsec1 not found\n")
    sys.exit(2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--dir", required=True, help="writable directory for keys and metadata")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    port = server.server_address[1]

    CTX["dir"] = os.path.abspath(args.dir)
    CTX["base"] = "http://127.0.0.1:%d" % port
    CTX["entity_id"] = CTX["base"] + "/idp"
    CTX["xmlsec"] = find_xmlsec()
    CTX["key_file"], CTX["cert_file"] = make_key_and_cert(CTX["dir"], "idp", "torii test IdP")
    CTX["impostor_key_file"], CTX["impostor_cert_file"] = make_key_and_cert(CTX["dir"], "impostor", "impostor")
    conf, CTX["server"] = build_server(None)
    descriptor = entity_descriptor(conf)
    valid_instance(descriptor)
    metadata = metadata_tostring_fix(descriptor, MD_NSPAIR)
    CTX["metadata"] = metadata.decode("utf-8") if isinstance(metadata, bytes) else metadata
    with open(os.path.join(CTX["dir"], "idp-metadata.xml"), "w") as f:
        f.write(CTX["metadata"])

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    sys.stdout.write("LISTENING %d\n" % port)
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        sys.stderr.write("saml_idp: stopped\n")
        sys.stderr.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

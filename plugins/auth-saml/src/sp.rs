//! The service provider's keys and documents: the IdP's metadata read,
//! our metadata written, AuthnRequests made for the HTTP-Redirect binding.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1v15::Pkcs1v15Sign;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::der::{Decode, DecodePem, Encode};

use crate::xml::{self, DSIG, METADATA, escape};

const REDIRECT: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
const POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";
pub const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";

/// The identity provider as its metadata describes it.
pub struct Idp {
    pub entity_id: String,
    pub sso_url: String,
    pub keys: Vec<RsaPublicKey>,
}

fn key_of_certificate(der: &[u8]) -> Result<RsaPublicKey, String> {
    let cert = Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let spki = cert.tbs_certificate.subject_public_key_info.to_der().map_err(|e| e.to_string())?;
    RsaPublicKey::from_public_key_der(&spki).map_err(|e| format!("the certificate's key is not an RSA key: {e}"))
}

/// Reads IdP metadata: the `EntityDescriptor` (alone, or the one named
/// `entity_id` in an `EntitiesDescriptor`) with an IDPSSODescriptor.
pub fn read_idp_metadata(text: &str, entity_id: Option<&str>) -> Result<Idp, String> {
    let doc = xml::parse(text).map_err(|e| format!("idp metadata: {e}"))?;
    let root = doc.root_element();
    let candidates: Vec<_> = if xml::is(root, METADATA, "EntityDescriptor") {
        vec![root]
    } else if xml::is(root, METADATA, "EntitiesDescriptor") {
        xml::children(root, METADATA, "EntityDescriptor").collect()
    } else {
        return Err("idp metadata: expected an EntityDescriptor or EntitiesDescriptor".into());
    };
    let entity = candidates
        .into_iter()
        .filter(|e| xml::children(*e, METADATA, "IDPSSODescriptor").next().is_some())
        .find(|e| entity_id.is_none_or(|id| e.attribute("entityID") == Some(id)))
        .ok_or_else(|| match entity_id {
            Some(id) => format!("idp metadata: no identity provider {id:?}"),
            None => "idp metadata: no identity provider (IDPSSODescriptor)".into(),
        })?;
    let descriptor = xml::only_child(entity, METADATA, "IDPSSODescriptor")?;
    let sso_url = xml::children(descriptor, METADATA, "SingleSignOnService")
        .find(|s| s.attribute("Binding") == Some(REDIRECT))
        .and_then(|s| s.attribute("Location"))
        .ok_or("idp metadata: no SingleSignOnService with the HTTP-Redirect binding")?
        .to_string();
    let mut keys = Vec::new();
    for descriptor in xml::children(descriptor, METADATA, "KeyDescriptor") {
        if descriptor.attribute("use").is_some_and(|u| u != "signing") {
            continue;
        }
        for cert in descriptor.descendants().filter(|n| xml::is(*n, DSIG, "X509Certificate")) {
            let der = crate::dsig::base64_text(cert).map_err(|e| format!("idp metadata: {e}"))?;
            keys.push(key_of_certificate(&der).map_err(|e| format!("idp metadata: {e}"))?);
        }
    }
    if keys.is_empty() {
        return Err("idp metadata: no signing certificate".into());
    }
    Ok(Idp { entity_id: entity.attribute("entityID").unwrap_or_default().to_string(), sso_url, keys })
}

/// The SP's key pair: the key signs requests and decrypts assertions; the
/// certificate is published in our metadata.
pub struct SpKeys {
    pub key: RsaPrivateKey,
    pub certificate_der: Vec<u8>,
}

pub fn read_sp_keys(key_pem: &str, cert_pem: &str) -> Result<SpKeys, String> {
    let key = RsaPrivateKey::from_pkcs8_pem(key_pem)
        .or_else(|_| RsaPrivateKey::from_pkcs1_pem(key_pem))
        .map_err(|e| format!("sp_key: not an RSA private key in PEM (PKCS#8 or PKCS#1): {e}"))?;
    let cert = Certificate::from_pem(cert_pem.as_bytes()).map_err(|e| format!("sp_cert: not a PEM certificate: {e}"))?;
    let certificate_der = cert.to_der().map_err(|e| e.to_string())?;
    let public = key_of_certificate(&certificate_der).map_err(|e| format!("sp_cert: {e}"))?;
    if public != key.to_public_key() {
        return Err("sp_cert does not hold the public key of sp_key".into());
    }
    Ok(SpKeys { key, certificate_der })
}

/// Our EntityDescriptor.
pub fn metadata(entity_id: &str, acs_url: &str, keys: Option<&SpKeys>, sign_requests: bool, want_signed_assertions: bool) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<md:EntityDescriptor xmlns:md=\"{METADATA}\" xmlns:ds=\"{DSIG}\" entityID=\"{}\">\
         <md:SPSSODescriptor AuthnRequestsSigned=\"{sign_requests}\" WantAssertionsSigned=\"{want_signed_assertions}\" \
         protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\">",
        escape(entity_id)
    );
    if let Some(keys) = keys {
        let cert = STANDARD.encode(&keys.certificate_der);
        for usage in ["signing", "encryption"] {
            out.push_str(&format!(
                "<md:KeyDescriptor use=\"{usage}\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"
            ));
        }
    }
    out.push_str(&format!(
        "<md:NameIDFormat>urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress</md:NameIDFormat>\
         <md:AssertionConsumerService Binding=\"{POST}\" Location=\"{}\" index=\"0\" isDefault=\"true\"/>\
         </md:SPSSODescriptor></md:EntityDescriptor>\n",
        escape(acs_url)
    ));
    out
}

/// An AuthnRequest for the IdP: the deflated and base64 request (tsuru's
/// `saml_request`) and the HTTP-Redirect URL, signed when `key`.
pub struct AuthnRequest {
    pub encoded: String,
    pub url: String,
}

pub fn authn_request(
    id: &str,
    now: i64,
    sp_entity_id: &str,
    acs_url: &str,
    idp: &Idp,
    force_authn: bool,
    key: Option<&RsaPrivateKey>,
) -> Result<AuthnRequest, String> {
    let xml = format!(
        "<samlp:AuthnRequest xmlns:samlp=\"{}\" xmlns:saml=\"{}\" ID=\"{id}\" Version=\"2.0\" IssueInstant=\"{}\" \
         Destination=\"{}\" AssertionConsumerServiceURL=\"{}\" ProtocolBinding=\"{POST}\" ForceAuthn=\"{force_authn}\">\
         <saml:Issuer>{}</saml:Issuer>\
         <samlp:NameIDPolicy Format=\"urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified\" AllowCreate=\"true\"/>\
         </samlp:AuthnRequest>",
        xml::PROTOCOL,
        xml::ASSERTION,
        crate::time::format(now),
        escape(&idp.sso_url),
        escape(acs_url),
        escape(sp_entity_id),
    );
    let encoded = STANDARD.encode(miniz_oxide::deflate::compress_to_vec(xml.as_bytes(), 6));
    let mut query = format!("SAMLRequest={}", url_encode(&encoded));
    if let Some(key) = key {
        query.push_str(&format!("&SigAlg={}", url_encode(RSA_SHA256)));
        let signature = key
            .sign(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(query.as_bytes()))
            .map_err(|e| format!("cannot sign the request: {e}"))?;
        query.push_str(&format!("&Signature={}", url_encode(&STANDARD.encode(signature))));
    }
    let separator = if idp.sso_url.contains('?') { '&' } else { '?' };
    Ok(AuthnRequest { encoded, url: format!("{}{separator}{query}", idp.sso_url) })
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

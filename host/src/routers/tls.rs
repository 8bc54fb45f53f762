//! App certificates: loading a PEM pair and checking it the way tsuru does
//! (the pair must load and the certificate must be valid for the name).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use std::sync::Arc;

/// Loads a certificate chain and its private key (PEM), checking they match.
pub fn load(certificate: &str, key: &str) -> Result<Arc<CertifiedKey>, String> {
    let chain = CertificateDer::pem_slice_iter(certificate.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls: failed to parse certificate PEM data: {e}"))?;
    if chain.is_empty() {
        return Err("tls: failed to find any PEM data in certificate input".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|_| "tls: failed to find any PEM data in key input".to_string())?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => "tls: private key does not match public key".to_string(),
        other => format!("tls: failed to load the key pair: {other}"),
    })?;
    Ok(Arc::new(certified))
}

/// Checks that the pair's certificate is valid for `name` (an address or a
/// cname; a wildcard cname `*.x.com` needs a certificate for its names).
pub fn check_name(certified: &CertifiedKey, name: &str) -> Result<(), String> {
    let der = certified.end_entity_cert().map_err(|e| format!("x509: {e}"))?;
    let cert = webpki::EndEntityCert::try_from(der).map_err(|e| format!("x509: failed to parse certificate: {e}"))?;
    let probe = match name.strip_prefix("*.") {
        Some(rest) => format!("wildcard-probe.{rest}"),
        None => name.to_string(),
    };
    let server_name = ServerName::try_from(probe).map_err(|_| format!("x509: {name:?} is not a valid host name"))?;
    cert.verify_is_valid_for_subject_name(&server_name).map_err(|_| format!("x509: certificate is not valid for {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let c = rcgen::generate_simple_self_signed(names).unwrap();
        (c.cert.pem(), c.key_pair.serialize_pem())
    }

    #[test]
    fn a_pair_loads_and_is_checked_against_the_name() {
        let (cert, key) = pair(&["app.apps.test", "*.example.com"]);
        let loaded = load(&cert, &key).unwrap();
        assert!(check_name(&loaded, "app.apps.test").is_ok());
        assert!(check_name(&loaded, "www.example.com").is_ok());
        assert!(check_name(&loaded, "*.example.com").is_ok());
        assert_eq!(check_name(&loaded, "other.apps.test").unwrap_err(), "x509: certificate is not valid for other.apps.test");
    }

    #[test]
    fn broken_pairs_say_why() {
        let (cert, key) = pair(&["a.test"]);
        let (_, other_key) = pair(&["a.test"]);
        assert_eq!(load("garbage", &key).unwrap_err(), "tls: failed to find any PEM data in certificate input");
        assert_eq!(load(&cert, "garbage").unwrap_err(), "tls: failed to find any PEM data in key input");
        assert_eq!(load(&cert, &other_key).unwrap_err(), "tls: private key does not match public key");
    }
}

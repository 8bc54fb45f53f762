//! XML signatures (<https://www.w3.org/TR/xmldsig-core1/>) as SAML uses
//! them: one enveloped signature, a direct child of the element it signs,
//! whose one Reference points at that element's own ID. Anything else is
//! refused, so the element that was verified is the element that is read.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use roxmltree::Node;
use rsa::RsaPublicKey;
use rsa::pkcs1v15::Pkcs1v15Sign;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

use crate::xml::{self, DSIG, EXC_C14N};

const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hash {
    Sha1,
    Sha256,
    Sha512,
}

impl Hash {
    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha1 => Sha1::digest(data).to_vec(),
            Hash::Sha256 => Sha256::digest(data).to_vec(),
            Hash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    fn padding(self) -> Pkcs1v15Sign {
        match self {
            Hash::Sha1 => Pkcs1v15Sign::new::<Sha1>(),
            Hash::Sha256 => Pkcs1v15Sign::new::<Sha256>(),
            Hash::Sha512 => Pkcs1v15Sign::new::<Sha512>(),
        }
    }

    fn of_digest_method(uri: &str) -> Option<Hash> {
        match uri {
            "http://www.w3.org/2000/09/xmldsig#sha1" => Some(Hash::Sha1),
            "http://www.w3.org/2001/04/xmlenc#sha256" => Some(Hash::Sha256),
            "http://www.w3.org/2001/04/xmlenc#sha512" => Some(Hash::Sha512),
            _ => None,
        }
    }

    fn of_signature_method(uri: &str) -> Option<Hash> {
        match uri {
            "http://www.w3.org/2000/09/xmldsig#rsa-sha1" => Some(Hash::Sha1),
            "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256" => Some(Hash::Sha256),
            "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512" => Some(Hash::Sha512),
            _ => None,
        }
    }
}

/// What checking an element's signature found.
#[derive(Debug, PartialEq, Eq)]
pub enum Signed {
    /// The element carries no signature.
    No,
    /// Its signature verifies with one of the trusted keys.
    Yes,
}

/// Checks the enveloped signature of `element`, if it has one, against
/// `keys`. A signature that is there and does not verify is an error.
pub fn verify(element: Node, keys: &[RsaPublicKey], allow_sha1: bool) -> Result<Signed, String> {
    let what = element.tag_name().name();
    let Some(signature) = xml::optional_child(element, DSIG, "Signature")? else {
        return Ok(Signed::No);
    };
    let id = element.attribute("ID").ok_or_else(|| format!("the signed {what} has no ID"))?;
    let signed_info = xml::only_child(signature, DSIG, "SignedInfo")?;
    let c14n = xml::only_child(signed_info, DSIG, "CanonicalizationMethod")?;
    if c14n.attribute("Algorithm") != Some(EXC_C14N) {
        return Err(format!("the signature of the {what} uses canonicalisation {:?}; only exclusive c14n is accepted", c14n.attribute("Algorithm").unwrap_or("")));
    }
    let method = xml::only_child(signed_info, DSIG, "SignatureMethod")?.attribute("Algorithm").unwrap_or("");
    let signature_hash = Hash::of_signature_method(method).ok_or_else(|| format!("signature method {method:?} is not accepted"))?;
    let reference = xml::only_child(signed_info, DSIG, "Reference")?;
    if reference.attribute("URI") != Some(&format!("#{id}")) {
        return Err(format!(
            "the signature of the {what} signs {:?}, not the {what} itself (#{id})",
            reference.attribute("URI").unwrap_or("")
        ));
    }
    let mut inclusive = Vec::new();
    let mut enveloped = false;
    let mut canonical = false;
    if let Some(transforms) = xml::optional_child(reference, DSIG, "Transforms")? {
        for transform in xml::children(transforms, DSIG, "Transform") {
            match transform.attribute("Algorithm").unwrap_or("") {
                ENVELOPED if !enveloped && !canonical => enveloped = true,
                EXC_C14N if !canonical => {
                    canonical = true;
                    inclusive = prefix_list(transform);
                }
                other => return Err(format!("the signature of the {what} uses transform {other:?}, which is not accepted here")),
            }
        }
    }
    if !enveloped || !canonical {
        return Err(format!("the signature of the {what} must be enveloped and exclusively canonicalised"));
    }
    let digest_method = xml::only_child(reference, DSIG, "DigestMethod")?.attribute("Algorithm").unwrap_or("");
    let digest_hash = Hash::of_digest_method(digest_method).ok_or_else(|| format!("digest method {digest_method:?} is not accepted"))?;
    if !allow_sha1 && (digest_hash == Hash::Sha1 || signature_hash == Hash::Sha1) {
        return Err(format!("the {what} is signed with SHA-1, which this torii does not accept (allow_sha1)"));
    }
    let expected = base64_text(xml::only_child(reference, DSIG, "DigestValue")?)?;
    let digest = digest_hash.digest(xml::exc_c14n(element, Some(signature.id()), &inclusive)?.as_bytes());
    if digest != expected {
        return Err(format!("the {what} was changed after it was signed (its digest does not match)"));
    }

    let value = base64_text(xml::only_child(signature, DSIG, "SignatureValue")?)?;
    let signed = signature_hash.digest(xml::exc_c14n(signed_info, None, &prefix_list(c14n))?.as_bytes());
    if keys.iter().any(|key| key.verify(signature_hash.padding(), &signed, &value).is_ok()) {
        Ok(Signed::Yes)
    } else {
        Err(format!("the signature of the {what} does not verify with the identity provider's certificate"))
    }
}

/// The `PrefixList` of an exclusive c14n `InclusiveNamespaces` child.
fn prefix_list(method: Node) -> Vec<String> {
    method
        .children()
        .find(|c| xml::is(*c, EXC_C14N, "InclusiveNamespaces"))
        .and_then(|n| n.attribute("PrefixList"))
        .map(|l| {
            let mut prefixes: Vec<String> = l.split_ascii_whitespace().take(xml::MAX_INCLUSIVE + 1).map(String::from).collect();
            prefixes.sort();
            prefixes.dedup();
            prefixes
        })
        .unwrap_or_default()
}

/// Base64 element content, whitespace allowed.
pub fn base64_text(node: Node) -> Result<Vec<u8>, String> {
    let text: String = xml::text(node).chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(text).map_err(|e| format!("{} is not base64: {e}", node.tag_name().name()))
}

//! What a SAML Response proves, checked the way a service provider must:
//! signatures first (on the very elements that are then read), then who
//! it is from, who it is for, when it is valid and which request it
//! answers. Only the Response's own children are read; nothing is looked
//! up by searching the document.

use roxmltree::{Document, Node};
use rsa::{RsaPrivateKey, RsaPublicKey};

use crate::dsig::{self, Signed};
use crate::xml::{self, ASSERTION, PROTOCOL};
use crate::xmlenc;

const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";

/// What a response must match, from the config and the IdP's metadata.
pub struct Expect<'a> {
    pub idp_entity_id: &'a str,
    pub idp_keys: &'a [RsaPublicKey],
    pub sp_entity_id: &'a str,
    pub acs_url: &'a str,
    pub sp_key: Option<&'a RsaPrivateKey>,
    pub require_signed_response: bool,
    pub require_signed_assertion: bool,
    pub allow_sha1: bool,
    pub skew: i64,
    pub email_attribute: &'a str,
    pub groups_attribute: &'a str,
    pub now: i64,
}

/// A verified login.
#[derive(Debug)]
pub struct Proven {
    /// The AuthnRequest this answers (`InResponseTo`).
    pub request_id: String,
    pub assertion_id: String,
    /// Until when the assertion could be replayed (Unix seconds).
    pub replayable_until: i64,
    /// The email attribute, or the NameID when there is none.
    pub identity: String,
    pub groups: Vec<String>,
}

pub fn check(doc: &Document, expect: &Expect) -> Result<Proven, String> {
    let response = doc.root_element();
    if !xml::is(response, PROTOCOL, "Response") {
        return Err(format!("expected a samlp:Response, got {}", response.tag_name().name()));
    }
    xml::ids_unique(doc)?;
    if response.attribute("Version") != Some("2.0") {
        return Err("the response is not SAML 2.0".into());
    }
    let response_signed = dsig::verify(response, expect.idp_keys, expect.allow_sha1)? == Signed::Yes;
    if expect.require_signed_response && !response_signed {
        return Err("the response is not signed, and this service provider requires it".into());
    }
    if let Some(issuer) = xml::optional_child(response, ASSERTION, "Issuer")? {
        issued_by(issuer, expect)?;
    }
    match response.attribute("Destination") {
        Some(d) if d != expect.acs_url => {
            return Err(format!("the response is addressed to {d:?}, not to this service provider ({:?})", expect.acs_url));
        }
        None if response_signed => return Err("the signed response names no Destination".into()),
        _ => {}
    }
    let status = xml::only_child(xml::only_child(response, PROTOCOL, "Status")?, PROTOCOL, "StatusCode")?;
    let code = status.attribute("Value").unwrap_or("");
    if code != SUCCESS {
        let message = xml::optional_child(status.parent().unwrap_or(status), PROTOCOL, "StatusMessage")?.map(xml::text).unwrap_or_default();
        return Err(format!("the identity provider refused the login: {code} {message}").trim_end().to_string());
    }

    let plain: Vec<Node> = xml::children(response, ASSERTION, "Assertion").collect();
    let encrypted: Vec<Node> = xml::children(response, ASSERTION, "EncryptedAssertion").collect();
    let proven = match (plain.as_slice(), encrypted.as_slice()) {
        ([assertion], []) => assertion_facts(*assertion, response_signed, expect)?,
        ([], [sealed]) => {
            let key = expect.sp_key.ok_or("the assertion is encrypted, but no sp_key is configured to decrypt it")?;
            let text = xmlenc::decrypt(*sealed, key, response_signed)?;
            // The plaintext declares its own prefixes (as xmlsec writes it);
            // if not, only the prefix of the EncryptedAssertion itself is lent.
            let wrapped;
            let inner = match xml::parse(&text) {
                Ok(doc) => doc,
                Err(_) => {
                    let source = sealed.document().input_text().get(sealed.range().start + 1..).unwrap_or("");
                    let qname = source.split(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/').next().unwrap_or("");
                    let Some((prefix, _)) = qname.split_once(':') else {
                        return Err("the decrypted assertion is not well-formed XML".into());
                    };
                    wrapped = format!("<decrypted xmlns:{prefix}=\"{ASSERTION}\">{text}</decrypted>");
                    xml::parse(&wrapped)?
                }
            };
            xml::ids_unique(&inner)?;
            let root = inner.root_element();
            let assertion = if xml::is(root, ASSERTION, "Assertion") {
                root
            } else {
                let mut elements = root.children().filter(|n| n.is_element());
                match (elements.next(), elements.next()) {
                    (Some(a), None) if xml::is(a, ASSERTION, "Assertion") => a,
                    _ => return Err("the encrypted assertion does not hold one Assertion".into()),
                }
            };
            assertion_facts(assertion, response_signed, expect)?
        }
        _ => return Err("the response must hold exactly one assertion".into()),
    };
    if let Some(answered) = response.attribute("InResponseTo")
        && answered != proven.request_id
    {
        return Err("the response and its assertion answer different requests".into());
    }
    Ok(proven)
}

fn issued_by(issuer: Node, expect: &Expect) -> Result<(), String> {
    let name = xml::text(issuer);
    if name != expect.idp_entity_id {
        return Err(format!("issued by {name:?}, not by the configured identity provider ({:?})", expect.idp_entity_id));
    }
    Ok(())
}

fn instant(node: Node, attribute: &str) -> Result<Option<i64>, String> {
    node.attribute(attribute).map(crate::time::parse).transpose()
}

fn assertion_facts(assertion: Node, response_signed: bool, expect: &Expect) -> Result<Proven, String> {
    let assertion_signed = dsig::verify(assertion, expect.idp_keys, expect.allow_sha1)? == Signed::Yes;
    if expect.require_signed_assertion && !assertion_signed {
        return Err("the assertion is not signed, and this service provider requires it".into());
    }
    if !response_signed && !assertion_signed {
        return Err("neither the response nor the assertion is signed".into());
    }
    let id = assertion.attribute("ID").ok_or("the assertion has no ID")?.to_string();
    issued_by(xml::only_child(assertion, ASSERTION, "Issuer")?, expect)?;
    let (now, skew) = (expect.now, expect.skew);

    let conditions = xml::only_child(assertion, ASSERTION, "Conditions")?;
    if let Some(not_before) = instant(conditions, "NotBefore")?
        && now + skew < not_before
    {
        return Err(format!("the assertion is not valid yet (NotBefore {})", crate::time::format(not_before)));
    }
    let mut until = i64::MAX;
    if let Some(not_after) = instant(conditions, "NotOnOrAfter")? {
        if now - skew >= not_after {
            return Err(format!("the assertion has expired (NotOnOrAfter {})", crate::time::format(not_after)));
        }
        until = not_after;
    }
    let restrictions: Vec<Node> = xml::children(conditions, ASSERTION, "AudienceRestriction").collect();
    if restrictions.is_empty() {
        return Err("the assertion names no audience".into());
    }
    for restriction in restrictions {
        let audiences: Vec<String> = xml::children(restriction, ASSERTION, "Audience").map(xml::text).collect();
        if !audiences.iter().any(|a| a == expect.sp_entity_id) {
            return Err(format!(
                "the assertion is meant for {}, not for this service provider ({:?})",
                audiences.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", "),
                expect.sp_entity_id
            ));
        }
    }

    let subject = xml::only_child(assertion, ASSERTION, "Subject")?;
    let mut request_id = None;
    let mut refusal = String::from("the assertion has no bearer subject confirmation");
    for confirmation in xml::children(subject, ASSERTION, "SubjectConfirmation") {
        if confirmation.attribute("Method") != Some(BEARER) {
            continue;
        }
        match bearer(confirmation, expect) {
            Ok((answered, not_after)) => {
                request_id = Some(answered);
                until = until.min(not_after);
                break;
            }
            Err(e) => refusal = e,
        }
    }
    let request_id = request_id.ok_or(refusal)?;

    let name_id = xml::optional_child(subject, ASSERTION, "NameID")?.map(xml::text).unwrap_or_default();
    let values = |name: &str| -> Vec<String> {
        xml::children(assertion, ASSERTION, "AttributeStatement")
            .flat_map(|s| xml::children(s, ASSERTION, "Attribute"))
            .filter(|a| a.attribute("Name") == Some(name) || a.attribute("FriendlyName") == Some(name))
            .flat_map(|a| xml::children(a, ASSERTION, "AttributeValue"))
            .map(xml::text)
            .filter(|v| !v.is_empty())
            .collect()
    };
    let identity = values(expect.email_attribute).into_iter().next().unwrap_or(name_id);
    if identity.is_empty() {
        return Err(format!("the assertion names no user: no attribute {:?} and no NameID", expect.email_attribute));
    }
    Ok(Proven {
        request_id,
        assertion_id: id,
        replayable_until: until.saturating_add(skew),
        identity,
        groups: values(expect.groups_attribute),
    })
}

/// A bearer confirmation: for us, in time, answering a request.
fn bearer(confirmation: Node, expect: &Expect) -> Result<(String, i64), String> {
    let data = xml::only_child(confirmation, ASSERTION, "SubjectConfirmationData")?;
    match data.attribute("Recipient") {
        Some(r) if r == expect.acs_url => {}
        other => {
            return Err(format!("the assertion's recipient is {:?}, not this service provider ({:?})", other.unwrap_or(""), expect.acs_url));
        }
    }
    let not_after = instant(data, "NotOnOrAfter")?.ok_or("the subject confirmation has no NotOnOrAfter")?;
    if expect.now - expect.skew >= not_after {
        return Err(format!("the assertion has expired (subject confirmation NotOnOrAfter {})", crate::time::format(not_after)));
    }
    if let Some(not_before) = instant(data, "NotBefore")?
        && expect.now + expect.skew < not_before
    {
        return Err(format!("the assertion is not valid yet (subject confirmation NotBefore {})", crate::time::format(not_before)));
    }
    let answered = data.attribute("InResponseTo").ok_or("the assertion answers no request of this service provider (no InResponseTo)")?;
    Ok((answered.to_string(), not_after))
}

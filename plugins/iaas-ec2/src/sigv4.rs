//! AWS Signature Version 4 for query-API requests (a form body, or a query
//! string): the canonical request, the string to sign, the derived key and
//! the `Authorization` header.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Who signs, and for what.
pub struct Signer<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

/// A request to sign: `host` as sent in `Host`; `query` already encoded
/// (sorted by the caller is not required: it is sorted here).
pub struct Unsigned<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub content_type: &'a str,
    pub body: &'a [u8],
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Percent-encodes as SigV4 wants: everything but `A-Za-z0-9-_.~`.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `name=value` pairs, encoded and joined with `&` (a form body or query).
pub fn form(pairs: &[(String, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

impl Signer<'_> {
    /// The `Authorization` header of `req` sent at `amz_date` (`YYYYMMDDThhmmssZ`).
    pub fn authorization(&self, req: &Unsigned, amz_date: &str) -> String {
        let date = &amz_date[..8];
        let mut query: Vec<&str> = if req.query.is_empty() { Vec::new() } else { req.query.split('&').collect() };
        query.sort_unstable();
        let signed_headers = "content-type;host;x-amz-date";
        let canonical = format!(
            "{}\n{}\n{}\ncontent-type:{}\nhost:{}\nx-amz-date:{}\n\n{}\n{}",
            req.method,
            req.path,
            query.join("&"),
            req.content_type,
            req.host,
            amz_date,
            signed_headers,
            sha256_hex(req.body)
        );
        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
        let to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", sha256_hex(canonical.as_bytes()));
        let key = hmac(&hmac(&hmac(&hmac(format!("AWS4{}", self.secret_access_key).as_bytes(), date), self.region), self.service), "aws4_request");
        let signature = hex::encode(hmac(&key, &to_sign));
        format!("AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}", self.access_key_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's worked example of Signature V4 (IAM ListUsers, 2015-08-30),
    /// from "Create a signed AWS API request" in the IAM user guide.
    #[test]
    fn signs_as_aws_documents() {
        let signer = Signer { access_key_id: "AKIDEXAMPLE", secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", region: "us-east-1", service: "iam" };
        let req = Unsigned {
            method: "GET",
            host: "iam.amazonaws.com",
            path: "/",
            query: "Version=2010-05-08&Action=ListUsers",
            content_type: "application/x-www-form-urlencoded; charset=utf-8",
            body: b"",
        };
        assert_eq!(
            signer.authorization(&req, "20150830T123600Z"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    #[test]
    fn encodes_as_sigv4_wants() {
        assert_eq!(encode("a b/c~d_e.f-g+h=i"), "a%20b%2Fc~d_e.f-g%2Bh%3Di");
        assert_eq!(form(&[("Tag.1.Key".into(), "Name".into()), ("UserData".into(), "a=b".into())]), "Tag.1.Key=Name&UserData=a%3Db");
    }
}

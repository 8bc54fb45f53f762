//! Encrypted assertions (<https://www.w3.org/TR/xmlenc-core1/>): the key
//! comes wrapped with RSA-OAEP to the service provider's key, the assertion
//! is AES-CBC or AES-GCM. RSA PKCS#1 v1.5 key transport is refused. Every
//! failure reads the same, so the answers leak nothing about padding; and
//! CBC, which a changed ciphertext still decrypts, is accepted only inside
//! a signed response (the caller says), so no one can probe it.

use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::NoPadding};
use aes_gcm::aead::{Aead, KeyInit};
use roxmltree::Node;
use rsa::{Oaep, RsaPrivateKey};
use sha1::Sha1;
use sha2::Sha256;

use crate::dsig::base64_text;
use crate::xml::{self, DSIG, XENC, XENC11};

const FAILED: &str = "the encrypted assertion cannot be decrypted with this service provider's key";

/// The plaintext of `encrypted` (an `EncryptedAssertion`): the assertion's
/// XML. `allow_cbc`: the ciphertext is covered by a verified signature.
pub fn decrypt(encrypted: Node, key: &RsaPrivateKey, allow_cbc: bool) -> Result<String, String> {
    let data = xml::only_child(encrypted, XENC, "EncryptedData")?;
    let cipher = xml::only_child(data, XENC, "EncryptionMethod")?.attribute("Algorithm").unwrap_or("").to_string();
    if cipher.ends_with("-cbc") && !allow_cbc {
        return Err("an assertion encrypted with AES-CBC is accepted only in a signed response (or use AES-GCM)".into());
    }
    let wrapped = match xml::optional_child(data, DSIG, "KeyInfo")?.map(|k| xml::optional_child(k, XENC, "EncryptedKey")).transpose()?.flatten() {
        Some(k) => k,
        None => xml::only_child(encrypted, XENC, "EncryptedKey")?,
    };
    let content_key = unwrap_key(wrapped, key)?;
    let ciphertext = base64_text(xml::only_child(xml::only_child(data, XENC, "CipherData")?, XENC, "CipherValue")?)?;
    let plain = match cipher.as_str() {
        "http://www.w3.org/2001/04/xmlenc#aes128-cbc" => cbc::<aes::Aes128>(&content_key, &ciphertext),
        "http://www.w3.org/2001/04/xmlenc#aes192-cbc" => cbc::<aes::Aes192>(&content_key, &ciphertext),
        "http://www.w3.org/2001/04/xmlenc#aes256-cbc" => cbc::<aes::Aes256>(&content_key, &ciphertext),
        "http://www.w3.org/2009/xmlenc11#aes128-gcm" => gcm::<aes_gcm::Aes128Gcm>(&content_key, &ciphertext),
        "http://www.w3.org/2009/xmlenc11#aes256-gcm" => gcm::<aes_gcm::Aes256Gcm>(&content_key, &ciphertext),
        other => return Err(format!("the assertion is encrypted with {other:?}, which is not accepted")),
    }
    .ok_or_else(|| FAILED.to_string())?;
    String::from_utf8(plain).map_err(|_| FAILED.to_string())
}

fn unwrap_key(wrapped: Node, key: &RsaPrivateKey) -> Result<Vec<u8>, String> {
    let method = xml::only_child(wrapped, XENC, "EncryptionMethod")?;
    let algorithm = method.attribute("Algorithm").unwrap_or("");
    let digest = xml::optional_child(method, DSIG, "DigestMethod")?.and_then(|d| d.attribute("Algorithm"));
    let sha256_digest = match digest {
        None | Some("http://www.w3.org/2000/09/xmldsig#sha1") => false,
        Some("http://www.w3.org/2001/04/xmlenc#sha256") => true,
        Some(other) => return Err(format!("key transport digest {other:?} is not accepted")),
    };
    let sha256_mgf = match algorithm {
        "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p" => false,
        "http://www.w3.org/2009/xmlenc11#rsa-oaep" => {
            match xml::optional_child(method, XENC11, "MGF")?.and_then(|m| m.attribute("Algorithm")) {
                None | Some("http://www.w3.org/2009/xmlenc11#mgf1sha1") => false,
                Some("http://www.w3.org/2009/xmlenc11#mgf1sha256") => true,
                Some(other) => return Err(format!("key transport mask {other:?} is not accepted")),
            }
        }
        other => return Err(format!("key transport {other:?} is not accepted (RSA-OAEP only)")),
    };
    let padding = match (sha256_digest, sha256_mgf) {
        (false, false) => Oaep::new::<Sha1>(),
        (true, false) => Oaep::new_with_mgf_hash::<Sha256, Sha1>(),
        (false, true) => Oaep::new_with_mgf_hash::<Sha1, Sha256>(),
        (true, true) => Oaep::new::<Sha256>(),
    };
    let ciphertext = base64_text(xml::only_child(xml::only_child(wrapped, XENC, "CipherData")?, XENC, "CipherValue")?)?;
    key.decrypt_blinded(&mut crate::Random, padding, &ciphertext).map_err(|_| FAILED.to_string())
}

/// AES-CBC with the IV first and XML Encryption's padding (the last byte
/// counts the padding bytes).
fn cbc<C>(key: &[u8], data: &[u8]) -> Option<Vec<u8>>
where
    C: aes::cipher::BlockCipher + aes::cipher::BlockDecrypt + aes::cipher::KeyInit,
    cbc::Decryptor<C>: KeyIvInit,
{
    if data.len() < 32 || data.len() % 16 != 0 {
        return None;
    }
    let (iv, body) = data.split_at(16);
    let decryptor = cbc::Decryptor::<C>::new_from_slices(key, iv).ok()?;
    let mut plain = decryptor.decrypt_padded_vec_mut::<NoPadding>(body).ok()?;
    let pad = usize::from(*plain.last()?);
    if pad == 0 || pad > 16 || pad > plain.len() {
        return None;
    }
    plain.truncate(plain.len() - pad);
    Some(plain)
}

/// AES-GCM with a 96-bit IV first and the 128-bit tag last.
fn gcm<C: KeyInit + Aead>(key: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < 12 + 16 {
        return None;
    }
    let cipher = C::new_from_slice(key).ok()?;
    let (iv, body) = data.split_at(12);
    cipher.decrypt(aes_gcm::aead::generic_array::GenericArray::from_slice(iv), body).ok()
}

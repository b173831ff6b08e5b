//! Signed plugins: an ed25519 signature carried inside the `.wasm` file.
//!
//! `switchyard plugin sign` appends one custom section named
//! [`SECTION`] to the component. Its payload is a format byte (`1`), the
//! signer's 32-byte public key and the 64-byte signature of
//! `"switchyard plugin signature v1\n" || sha256(everything before the
//! section)`. The signature travels with the file, so a hot reload can
//! never see a new plugin beside an old signature, and wasmtime ignores the
//! section. Signing again replaces the section.
//!
//! A file whose signature section is damaged or does not verify is always
//! refused (it was changed after it was signed). A file signed by a key the
//! configuration does not trust, or not signed, is refused when the
//! configuration sets `require_signed` ([`SigningPolicy`]).
//!
//! Keys: the secret key is a PKCS#8 PEM file (`switchyard plugin keygen`
//! writes one; `openssl genpkey -algorithm ed25519` does too); a public key
//! is written `ed25519:<base64 of its 32 bytes>`, the form `trusted_keys`
//! takes.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Name of the custom section that carries the signature.
pub const SECTION: &str = "switchyard-signature";

const FORMAT: u8 = 1;
const DOMAIN: &[u8] = b"switchyard plugin signature v1\n";
const PAYLOAD_LEN: usize = 1 + 32 + 64;

/// An ed25519 public key, written `ed25519:<base64>` (its 32 bytes, checked
/// to be a valid point when made).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl From<VerifyingKey> for PublicKey {
    fn from(key: VerifyingKey) -> PublicKey {
        PublicKey(key.to_bytes())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ed25519:{}",
            base64::engine::general_purpose::STANDARD.encode(self.0)
        )
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for PublicKey {
    type Err = SignatureError;

    fn from_str(text: &str) -> Result<PublicKey, SignatureError> {
        let bad = |why: &str| SignatureError::BadKey(format!("`{text}`: {why}"));
        let b64 = text
            .trim()
            .strip_prefix("ed25519:")
            .ok_or_else(|| bad("a public key is written ed25519:<base64>"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| bad(&format!("not base64 ({e})")))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| bad("an ed25519 public key is 32 bytes"))?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey::from)
            .map_err(|_| bad("not a valid ed25519 point"))
    }
}

/// A key that signs plugins.
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// A new random key.
    pub fn generate() -> Result<SecretKey, SignatureError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed)
            .map_err(|e| SignatureError::BadKey(format!("no randomness from the OS: {e}")))?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    /// Read a PKCS#8 PEM secret key.
    pub fn from_pem(pem: &str) -> Result<SecretKey, SignatureError> {
        SigningKey::from_pkcs8_pem(pem)
            .map(SecretKey)
            .map_err(|e| SignatureError::BadKey(format!("not an ed25519 PKCS#8 PEM key: {e}")))
    }

    /// The key as PKCS#8 PEM.
    pub fn to_pem(&self) -> Result<String, SignatureError> {
        self.0
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|e| SignatureError::BadKey(e.to_string()))
    }

    /// Its public key.
    pub fn public(&self) -> PublicKey {
        PublicKey::from(self.0.verifying_key())
    }
}

/// Why a signature or key was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A key that cannot be read.
    #[error("bad key: {0}")]
    BadKey(String),
    /// The file is not a wasm binary whose sections can be walked.
    #[error("not a wasm binary: {0}")]
    Malformed(String),
    /// A signature section that is damaged, not last, or does not verify.
    #[error("the signature does not verify: {0}")]
    Invalid(String),
}

/// A signature that verified against the key it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    /// Who signed.
    pub key: PublicKey,
}

/// Where a top-level custom section named [`SECTION`] starts, if the file
/// has one, and its payload.
fn find_section(bytes: &[u8]) -> Result<Option<(usize, &[u8])>, SignatureError> {
    if bytes.len() < 8 || !bytes.starts_with(b"\0asm") {
        return Err(SignatureError::Malformed(
            "the file does not start with the wasm magic number".into(),
        ));
    }
    let mut at = 8;
    let mut found = None;
    while at < bytes.len() {
        let start = at;
        let id = bytes[at];
        at += 1;
        let (size, used) = leb_u32(&bytes[at..])
            .ok_or_else(|| SignatureError::Malformed(format!("bad section size at {at}")))?;
        at += used;
        let end = at
            .checked_add(size as usize)
            .filter(|end| *end <= bytes.len())
            .ok_or_else(|| {
                SignatureError::Malformed(format!("a section at {start} runs past the end"))
            })?;
        if id == 0 {
            let body = &bytes[at..end];
            if let Some((len, used)) = leb_u32(body) {
                let name = body.get(used..used + len as usize);
                if name == Some(SECTION.as_bytes()) {
                    if found.is_some() {
                        return Err(SignatureError::Invalid(
                            "the file has two signature sections".into(),
                        ));
                    }
                    found = Some((start, &body[used + len as usize..], end));
                }
            }
        }
        at = end;
    }
    match found {
        Some((start, _, end)) if end != bytes.len() => Err(SignatureError::Invalid(format!(
            "bytes were appended after the signature (section at {start})"
        ))),
        Some((start, payload, _)) => Ok(Some((start, payload))),
        None => Ok(None),
    }
}

fn leb_u32(bytes: &[u8]) -> Option<(u32, usize)> {
    let mut value: u32 = 0;
    for (i, byte) in bytes.iter().take(5).enumerate() {
        let part = u32::from(byte & 0x7f);
        if i == 4 && part > 0x0f {
            return None;
        }
        value |= part << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn push_leb(out: &mut Vec<u8>, mut value: u32) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn message(content: &[u8]) -> Vec<u8> {
    let mut message = DOMAIN.to_vec();
    message.extend_from_slice(&Sha256::digest(content));
    message
}

/// The file signed with `key`: any earlier signature is replaced.
pub fn sign(bytes: &[u8], key: &SecretKey) -> Result<Vec<u8>, SignatureError> {
    let content = match find_section(bytes) {
        Ok(Some((start, _))) => &bytes[..start],
        Ok(None) => bytes,
        // A damaged signature is replaced only if it is the last section.
        Err(e) => return Err(e),
    };
    let signature = key.0.sign(&message(content));
    let mut payload = Vec::with_capacity(PAYLOAD_LEN);
    payload.push(FORMAT);
    payload.extend_from_slice(&key.public().0);
    payload.extend_from_slice(&signature.to_bytes());
    let mut body = Vec::new();
    push_leb(&mut body, SECTION.len() as u32);
    body.extend_from_slice(SECTION.as_bytes());
    body.extend_from_slice(&payload);
    let mut out = content.to_vec();
    out.push(0);
    push_leb(&mut out, body.len() as u32);
    out.extend_from_slice(&body);
    Ok(out)
}

/// The file's signature, checked against the key it names: `None` if the
/// file is not signed, an error if the signature is damaged or does not
/// verify.
pub fn verify(bytes: &[u8]) -> Result<Option<Signature>, SignatureError> {
    let Some((start, payload)) = find_section(bytes)? else {
        return Ok(None);
    };
    if payload.len() != PAYLOAD_LEN || payload[0] != FORMAT {
        return Err(SignatureError::Invalid(format!(
            "the signature section is {} bytes of format {}; this host reads format {FORMAT} ({PAYLOAD_LEN} bytes)",
            payload.len(),
            payload.first().copied().unwrap_or_default()
        )));
    }
    let key: [u8; 32] = payload[1..33].try_into().unwrap_or([0; 32]);
    let key = VerifyingKey::from_bytes(&key)
        .map_err(|_| SignatureError::Invalid("the signer's key is not a valid key".into()))?;
    let signature = ed25519_dalek::Signature::from_slice(&payload[33..])
        .map_err(|e| SignatureError::Invalid(e.to_string()))?;
    key.verify_strict(&message(&bytes[..start]), &signature)
        .map_err(|_| {
            SignatureError::Invalid(format!(
                "the file was changed after {} signed it",
                PublicKey::from(key)
            ))
        })?;
    Ok(Some(Signature {
        key: PublicKey::from(key),
    }))
}

/// Which plugin files a host accepts (`require_signed`, `trusted_keys`).
#[derive(Debug, Clone, Default)]
pub struct SigningPolicy {
    /// Refuse files not signed by one of `trusted`.
    pub require_signed: bool,
    /// Keys whose signatures are trusted.
    pub trusted: Vec<PublicKey>,
}

/// How a loaded plugin was signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signer {
    /// The key.
    pub key: PublicKey,
    /// Whether the key is in `trusted_keys`.
    pub trusted: bool,
}

/// Why a policy refused a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Damaged, changed after signing, or not a wasm binary.
    Invalid(SignatureError),
    /// Not signed, and `require_signed` is set.
    Unsigned,
    /// Signed by a key not in `trusted_keys`, and `require_signed` is set.
    Untrusted(PublicKey),
}

impl SigningPolicy {
    /// Check a file's bytes: who signed it, or why it is refused.
    pub fn check(&self, bytes: &[u8]) -> Result<Option<Signer>, Refusal> {
        let signer = verify(bytes).map_err(Refusal::Invalid)?.map(|s| Signer {
            key: s.key,
            trusted: self.trusted.contains(&s.key),
        });
        if self.require_signed {
            match signer {
                None => return Err(Refusal::Unsigned),
                Some(s) if !s.trusted => return Err(Refusal::Untrusted(s.key)),
                Some(_) => {}
            }
        }
        Ok(signer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The smallest component: magic, version 0x0d, layer 1.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn a_signed_file_verifies_and_resigning_replaces_the_signature() {
        let key = SecretKey::generate().unwrap();
        let signed = sign(EMPTY_COMPONENT, &key).unwrap();
        assert!(signed.starts_with(EMPTY_COMPONENT));
        assert_eq!(verify(&signed).unwrap().unwrap().key, key.public());
        let other = SecretKey::generate().unwrap();
        let resigned = sign(&signed, &other).unwrap();
        assert_eq!(resigned.len(), signed.len());
        assert_eq!(verify(&resigned).unwrap().unwrap().key, other.public());
        assert_eq!(verify(EMPTY_COMPONENT).unwrap(), None);
    }

    #[test]
    fn a_changed_byte_or_appended_bytes_break_the_signature() {
        let key = SecretKey::generate().unwrap();
        let mut content = EMPTY_COMPONENT.to_vec();
        // A custom section named "x" holding "abc", to flip a byte in.
        content.extend_from_slice(&[0, 5, 1, b'x', b'a', b'b', b'c']);
        let signed = sign(&content, &key).unwrap();
        let mut changed = signed.clone();
        changed[12] ^= 1;
        assert!(
            matches!(verify(&changed), Err(SignatureError::Invalid(m)) if m.contains("changed after"))
        );
        let mut appended = signed.clone();
        appended.extend_from_slice(&[0, 2, 1, b'y']);
        assert!(
            matches!(verify(&appended), Err(SignatureError::Invalid(m)) if m.contains("appended"))
        );
        let mut truncated = signed.clone();
        truncated.pop();
        assert!(verify(&truncated).is_err());
        // Every truncation and every single-byte change: an error or no
        // signature, never a panic and never a pass.
        for cut in 0..signed.len() {
            assert!(!matches!(verify(&signed[..cut]), Ok(Some(_))), "cut {cut}");
        }
        for at in 0..signed.len() {
            let mut b = signed.clone();
            b[at] ^= 0x40;
            assert!(!matches!(verify(&b), Ok(Some(_))), "byte {at}");
        }
    }

    #[test]
    fn the_policy_refuses_unsigned_and_untrusted_files_only_when_signatures_are_required() {
        let key = SecretKey::generate().unwrap();
        let stranger = SecretKey::generate().unwrap();
        let trusted = SigningPolicy {
            require_signed: true,
            trusted: vec![key.public()],
        };
        let signed = sign(EMPTY_COMPONENT, &key).unwrap();
        let by_stranger = sign(EMPTY_COMPONENT, &stranger).unwrap();
        assert_eq!(
            trusted.check(&signed),
            Ok(Some(Signer {
                key: key.public(),
                trusted: true
            }))
        );
        assert_eq!(trusted.check(EMPTY_COMPONENT), Err(Refusal::Unsigned));
        assert_eq!(
            trusted.check(&by_stranger),
            Err(Refusal::Untrusted(stranger.public()))
        );
        let lax = SigningPolicy::default();
        assert_eq!(lax.check(EMPTY_COMPONENT), Ok(None));
        assert!(!lax.check(&by_stranger).unwrap().unwrap().trusted);
        let mut broken = signed.clone();
        *broken.last_mut().unwrap() ^= 1;
        assert!(matches!(lax.check(&broken), Err(Refusal::Invalid(_))));
    }

    #[test]
    fn keys_round_trip_through_pem_and_text() {
        let key = SecretKey::generate().unwrap();
        let pem = key.to_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
        assert_eq!(SecretKey::from_pem(&pem).unwrap().public(), key.public());
        let text = key.public().to_string();
        assert_eq!(text.parse::<PublicKey>().unwrap(), key.public());
        for bad in [
            "",
            "ed25519:",
            "rsa:AAAA",
            "ed25519:not base64!",
            "ed25519:AAAA",
        ] {
            assert!(bad.parse::<PublicKey>().is_err(), "{bad}");
        }
        assert!(
            SecretKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .is_err()
        );
    }
}

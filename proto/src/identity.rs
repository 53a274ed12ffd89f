//! Node identities on the wire: Ed25519 public keys and signatures (lower-case hex in JSON),
//! fingerprints for people, and signature checks.
//!
//! Signing needs the secret key and lives in chatd; this module only verifies, so the registry,
//! chatd and chatctl all check signatures the same way.

use std::fmt;

use ed25519_dalek::{Signature as DalekSignature, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// An Ed25519 public key: a node's identity. JSON: 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

/// An Ed25519 signature. JSON: 128 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl PublicKey {
    /// What people compare: the first 16 bytes of SHA-256 of the key, as 8 groups of 4 hex digits
    /// (`3f2a:9c1b:...`).
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0);
        let hex = hex::encode(&digest[..16]);
        let groups: Vec<&str> = (0..8).map(|i| &hex[i * 4..i * 4 + 4]).collect();
        groups.join(":")
    }

    /// True if `sig` is this key's signature of `message` (strict verification: no malleable
    /// or small-order keys).
    pub fn verify(&self, message: &[u8], sig: &Signature) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        key.verify_strict(message, &DalekSignature::from_bytes(&sig.0))
            .is_ok()
    }

    /// The X25519 public key a node with this identity uses as its Noise static key (the
    /// birational map of the Edwards point to Montgomery form, as computed by curve25519-dalek).
    /// `None` if the bytes are not a valid Ed25519 key.
    pub fn to_x25519(&self) -> Option<[u8; 32]> {
        VerifyingKey::from_bytes(&self.0)
            .ok()
            .map(|k| k.to_montgomery().to_bytes())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<PublicKey> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(PublicKey(out))
    }
}

impl Signature {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Signature> {
        let mut out = [0u8; 64];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Signature(out))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", &self.to_hex()[..16])
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        PublicKey::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("a key is 64 hexadecimal digits"))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Signature::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("a signature is 128 hexadecimal digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_as_hex() {
        let k = PublicKey([7; 32]);
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(json.len(), 66);
        assert_eq!(serde_json::from_str::<PublicKey>(&json).unwrap(), k);
        assert!(serde_json::from_str::<PublicKey>("\"abc\"").is_err());
        assert_eq!(k.fingerprint().len(), 39);
    }

    #[test]
    fn garbage_never_verifies() {
        assert!(!PublicKey([0; 32]).verify(b"x", &Signature([0; 64])));
        assert!(!PublicKey([0xff; 32]).verify(b"x", &Signature([1; 64])));
    }
}

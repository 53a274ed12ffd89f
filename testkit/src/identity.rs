//! Signed registry requests made by hand, for tests that act as a node (or an impostor).

use ed25519_dalek::{Signer as _, SigningKey};
use peerchat_proto::registry::{Rotation, Statement};
use peerchat_proto::{Name, PublicKey, Signature};

/// An Ed25519 key pair from a fixed seed (tests want repeatable keys).
pub struct Signer {
    key: SigningKey,
}

impl Signer {
    pub fn new(seed: u8) -> Signer {
        Signer {
            key: SigningKey::from_bytes(&[seed; 32]),
        }
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.key.verifying_key().to_bytes())
    }

    pub fn sign(&self, st: Statement<'_>) -> Signature {
        Signature(self.key.sign(&st.to_bytes()).to_bytes())
    }

    /// The Noise static secret that goes with this identity.
    pub fn noise_secret(&self) -> [u8; 32] {
        self.key.to_scalar_bytes()
    }

    /// A `register` request line (id 1) for `name` at `port` with sequence number `seq`.
    pub fn register(&self, name: &str, port: u16, seq: u64) -> String {
        self.register_full(name, port, None, seq, None)
    }

    pub fn register_full(
        &self,
        name: &str,
        port: u16,
        host: Option<&str>,
        seq: u64,
        rotation: Option<&Rotation>,
    ) -> String {
        let n = Name::new(name).expect("valid name");
        let key = self.public();
        let sig = self.sign(Statement::Register {
            name: &n,
            key: &key,
            port,
            host,
            seq,
        });
        let mut v = serde_json::json!({
            "id": 1, "op": "register", "name": name, "port": port,
            "key": key, "seq": seq, "sig": sig,
        });
        if let Some(h) = host {
            v["host"] = h.into();
        }
        if let Some(r) = rotation {
            v["rotation"] = serde_json::to_value(r).expect("rotation");
        }
        v.to_string()
    }

    /// `offline` or `unregister` (`op`) request line for `name`.
    pub fn owner_op(&self, op: &str, name: &str, seq: u64) -> String {
        let n = Name::new(name).expect("valid name");
        let key = self.public();
        let st = match op {
            "offline" => Statement::Offline {
                name: &n,
                key: &key,
                seq,
            },
            _ => Statement::Unregister {
                name: &n,
                key: &key,
                seq,
            },
        };
        let sig = self.sign(st);
        serde_json::json!({"id": 1, "op": op, "name": name, "key": key, "seq": seq, "sig": sig})
            .to_string()
    }

    /// A rotation of `name` from this key to `to`.
    pub fn rotation_to(&self, name: &str, to: &PublicKey, seq: u64) -> Rotation {
        let n = Name::new(name).expect("valid name");
        let from = self.public();
        Rotation {
            from,
            to: *to,
            seq,
            sig: self.sign(Statement::Rotate {
                name: &n,
                from: &from,
                to,
                seq,
            }),
        }
    }
}

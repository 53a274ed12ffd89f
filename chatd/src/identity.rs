//! This node's identity: an Ed25519 key made at first start and kept in the state directory
//! (`chatd.key` beside `chatd.db`, mode 0600, 64 hex digits of the secret seed). It signs our registrations,
//! and its X25519 form is our Noise static key, so a peer link proves the same identity that
//! the registry record names.
//!
//! `rotate` makes a new key and keeps a rotation statement signed by the old one (the key path
//! with extension `.rotation`, e.g. `chatd.rotation`); every registration carries it, so the registry and peers that pinned
//! the old key can follow.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use ed25519_dalek::{Signer, SigningKey};
use peerchat_proto::registry::{Rotation, Statement};
use peerchat_proto::{Name, PublicKey, Signature};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
/// I/O errors are part of the message, not a `source()` (which would print them twice).
pub enum IdentityError {
    #[error("cannot read key file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot write key file {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("key file {0} is not 64 hexadecimal digits; move it away to make a new identity (peers will see a key change)")]
    Malformed(PathBuf),
    // File modes only exist on Unix.
    #[cfg_attr(windows, allow(dead_code))]
    #[error("key file {path} is readable by others (mode {mode:o}); run `chmod 600 {path}`")]
    Exposed { path: PathBuf, mode: u32 },
    #[error("the system's random number generator failed: {0}")]
    Random(String),
}

struct Keys {
    signing: SigningKey,
    rotation: Option<Rotation>,
}

pub struct Identity {
    path: PathBuf,
    keys: RwLock<Keys>,
}

impl Identity {
    /// Loads the key at `path`, or makes one (and the file) if there is none.
    pub fn load_or_create(path: &Path) -> Result<Identity, IdentityError> {
        let signing = match std::fs::read_to_string(path) {
            Ok(text) => {
                check_mode(path)?;
                parse_key(&text).ok_or_else(|| IdentityError::Malformed(path.to_path_buf()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let k = generate()?;
                write_secret(path, &k)?;
                tracing::info!(key = %path.display(), fingerprint = %public_of(&k).fingerprint(), "created a new identity");
                k
            }
            Err(error) => {
                return Err(IdentityError::Read {
                    path: path.to_path_buf(),
                    error,
                })
            }
        };
        let rotation = std::fs::read(rotation_path(path))
            .ok()
            .and_then(|b| serde_json::from_slice::<Rotation>(&b).ok())
            .filter(|r| r.to == public_of(&signing));
        Ok(Identity {
            path: path.to_path_buf(),
            keys: RwLock::new(Keys { signing, rotation }),
        })
    }

    fn keys(&self) -> std::sync::RwLockReadGuard<'_, Keys> {
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn public(&self) -> PublicKey {
        public_of(&self.keys().signing)
    }

    /// Our key and a signature by it, read under one lock (a rotation cannot fall in between).
    pub fn key_and_sign(&self, make: impl Fn(&PublicKey) -> Vec<u8>) -> (PublicKey, Signature) {
        let keys = self.keys();
        let public = public_of(&keys.signing);
        let sig = Signature(keys.signing.sign(&make(&public)).to_bytes());
        (public, sig)
    }

    /// The rotation that led to the current key, if the key came from `rotate`.
    pub fn rotation(&self) -> Option<Rotation> {
        self.keys().rotation.clone()
    }

    /// The X25519 secret for Noise (the Ed25519 secret scalar, as libsodium's
    /// `crypto_sign_ed25519_sk_to_curve25519` computes it).
    pub fn noise_secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.keys().signing.to_scalar_bytes())
    }

    /// Replaces the key with a new one and records a rotation signed by the old key. The new
    /// key is on disk (and the old one kept with extension `.key.old`) before this returns.
    pub fn rotate(&self, name: &Name, seq: u64) -> Result<(PublicKey, PublicKey), IdentityError> {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let old = public_of(&keys.signing);
        let new_key = generate()?;
        let new = public_of(&new_key);
        let st = Statement::Rotate {
            name,
            from: &old,
            to: &new,
            seq,
        };
        let rotation = Rotation {
            from: old,
            to: new,
            seq,
            sig: Signature(keys.signing.sign(&st.to_bytes()).to_bytes()),
        };
        let old_path = self.path.with_extension("key.old");
        write_secret(&old_path, &keys.signing)?;
        let rot_json = serde_json::to_vec(&rotation).unwrap_or_default();
        let rot_path = rotation_path(&self.path);
        std::fs::write(&rot_path, rot_json).map_err(|error| IdentityError::Write {
            path: rot_path,
            error,
        })?;
        write_secret(&self.path, &new_key)?;
        *keys = Keys {
            signing: new_key,
            rotation: Some(rotation),
        };
        Ok((old, new))
    }
}

fn public_of(k: &SigningKey) -> PublicKey {
    PublicKey(k.verifying_key().to_bytes())
}

fn rotation_path(key: &Path) -> PathBuf {
    key.with_extension("rotation")
}

fn generate() -> Result<SigningKey, IdentityError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut()).map_err(|e| IdentityError::Random(e.to_string()))?;
    Ok(SigningKey::from_bytes(&seed))
}

fn parse_key(text: &str) -> Option<SigningKey> {
    let mut seed = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), seed.as_mut()).ok()?;
    Some(SigningKey::from_bytes(&seed))
}

/// Writes the secret seed to a temporary file of mode 0600 and renames it over `path`.
fn write_secret(path: &Path, key: &SigningKey) -> Result<(), IdentityError> {
    let err = |error| IdentityError::Write {
        path: path.to_path_buf(),
        error,
    };
    let text = Zeroizing::new(format!("{}\n", hex::encode(key.to_bytes())));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp).map_err(err)?;
        f.write_all(text.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)?;
    Ok(())
}

#[cfg(unix)]
fn check_mode(path: &Path) -> Result<(), IdentityError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|error| IdentityError::Read {
            path: path.to_path_buf(),
            error,
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(IdentityError::Exposed {
            path: path.to_path_buf(),
            mode: mode & 0o777,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_path: &Path) -> Result<(), IdentityError> {
    // The state directory's ACL protects it on Windows.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        let a = Identity::load_or_create(&path).unwrap();
        let b = Identity::load_or_create(&path).unwrap();
        assert_eq!(a.public(), b.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                Identity::load_or_create(&path),
                Err(IdentityError::Exposed { .. })
            ));
        }
    }

    #[test]
    fn noise_key_matches_the_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::load_or_create(&dir.path().join("k")).unwrap();
        let secret = id.noise_secret();
        let public = x25519_public(&secret);
        assert_eq!(Some(public), id.public().to_x25519());
    }

    fn x25519_public(secret: &[u8; 32]) -> [u8; 32] {
        // snow computes the public half the same way when given the private key.
        let mut hs = snow::Builder::new(peerchat_proto::peer::NOISE_PARAMS.parse().unwrap())
            .local_private_key(secret)
            .unwrap()
            .prologue(b"t")
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut resp = snow::Builder::new(peerchat_proto::peer::NOISE_PARAMS.parse().unwrap())
            .local_private_key(&[9; 32])
            .unwrap()
            .prologue(b"t")
            .unwrap()
            .build_responder()
            .unwrap();
        let mut buf = [0u8; 256];
        let mut out = [0u8; 256];
        let n = hs.write_message(&[], &mut buf).unwrap();
        resp.read_message(&buf[..n], &mut out).unwrap();
        let n = resp.write_message(&[], &mut buf).unwrap();
        hs.read_message(&buf[..n], &mut out).unwrap();
        let n = hs.write_message(&[], &mut buf).unwrap();
        resp.read_message(&buf[..n], &mut out).unwrap();
        resp.get_remote_static().unwrap().try_into().unwrap()
    }

    #[test]
    fn rotation_is_signed_by_the_old_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        let id = Identity::load_or_create(&path).unwrap();
        let name = Name::new("pa").unwrap();
        let (old, new) = id.rotate(&name, 9).unwrap();
        assert_ne!(old, new);
        assert_eq!(id.public(), new);
        let r = id.rotation().unwrap();
        assert!(r.verify(&name));
        // Survives a restart.
        let again = Identity::load_or_create(&path).unwrap();
        assert_eq!(again.public(), new);
        assert_eq!(again.rotation(), Some(r));
    }
}

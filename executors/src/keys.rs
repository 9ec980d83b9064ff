//! The deployment's master key: 32 random bytes from a file or the environment, never stored
//! beside the data. Each use gets its own key derived from it (HMAC-SHA256 of the master key
//! over the use's name), so signing tokens and encrypting globals never share a key.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0} is not a key: it must hold 32 bytes in base64 (44 characters), as `walkoff` writes one")]
    Malformed(String),
    #[error("cannot read the key file {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("cannot create the key file {path}: {error}")]
    Create { path: String, error: std::io::Error },
    #[error("the key file {0} can be read by other users; run `chmod 600 {0}`")]
    Exposed(String),
}

/// What the master key is for; each purpose gets its own derived key.
#[derive(Debug, Clone, Copy)]
pub enum Purpose {
    /// Signing access tokens (HS256).
    Tokens,
    /// Encrypting globals (an AEAD).
    Globals,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Tokens => b"walkoff access tokens v1",
            Purpose::Globals => b"walkoff globals v1",
        }
    }
}

impl MasterKey {
    /// A new random key (the tests' and a first start's).
    pub fn random() -> MasterKey {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        MasterKey(bytes)
    }

    /// A key written as base64 (`where` names its source in the error).
    pub fn from_base64(text: &str, source: &str) -> Result<MasterKey, KeyError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| KeyError::Malformed(source.to_string()))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::Malformed(source.to_string()))?;
        Ok(MasterKey(bytes))
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// The key in `path`, created (readable by its owner only) when the file does not exist;
    /// true when this call created it.
    pub fn load_or_create(path: &Path) -> Result<(MasterKey, bool), KeyError> {
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                refuse_exposed(path)?;
                Ok((MasterKey::from_base64(&text, &shown)?, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = MasterKey::random();
                match create_private(path, &key.to_base64()) {
                    Ok(true) => Ok((key, true)),
                    // Another process created it first: theirs is the key.
                    Ok(false) => Ok((MasterKey::load_or_create(path)?.0, false)),
                    Err(error) => Err(KeyError::Create { path: shown, error }),
                }
            }
            Err(error) => Err(KeyError::Read { path: shown, error }),
        }
    }

    /// The key for one purpose.
    pub fn derive(&self, purpose: Purpose) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(purpose.label());
        mac.finalize().into_bytes().into()
    }
}

fn refuse_exposed(path: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|error| KeyError::Read {
            path: path.display().to_string(),
            error,
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(KeyError::Exposed(path.display().to_string()));
    }
    Ok(())
}

/// Create `path` holding `text`, readable by its owner only, all at once: written to a file
/// beside it, then linked into place, so a reader never sees it half written. False when
/// `path` exists already.
fn create_private(path: &Path, text: &str) -> std::io::Result<bool> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut temporary = tempfile::Builder::new()
        .prefix(".key-")
        .permissions(private())
        .tempfile_in(dir)?;
    temporary.write_all(text.as_bytes())?;
    temporary.write_all(b"\n")?;
    temporary.as_file().sync_all()?;
    match std::fs::hard_link(temporary.path(), path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

fn private() -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    std::fs::Permissions::from_mode(0o600)
}

/// Where the key lives when nothing says: `$XDG_CONFIG_HOME/walkoff/key`, else
/// `$HOME/.config/walkoff/key` — outside the data directory, so a copy of the data is not a
/// copy of the key.
pub fn default_key_path() -> Option<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(".config"))
        })?;
    Some(config.join("walkoff").join("key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("key");
        let (created, fresh) = MasterKey::load_or_create(&path).unwrap();
        assert!(fresh);
        let (read, fresh) = MasterKey::load_or_create(&path).unwrap();
        assert!(!fresh);
        assert_eq!(created.0, read.0);
        assert_ne!(read.derive(Purpose::Tokens), read.derive(Purpose::Globals));
        std::fs::write(&path, "not base64 at all").unwrap();
        assert!(matches!(
            MasterKey::load_or_create(&path),
            Err(KeyError::Malformed(_))
        ));
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&path, created.to_base64()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            MasterKey::load_or_create(&path),
            Err(KeyError::Exposed(_))
        ));
    }
}

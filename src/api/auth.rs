//! Callers and their credentials. A caller is an organization with a role; it authenticates with
//! a bearer token. The callers file stores only SHA-256 hashes of tokens, so reading it does not
//! reveal them; it is re-read when it changes, without a restart.
//!
//! ```toml
//! [[caller]]
//! name = "RIZIV-INAMI"
//! cbe = "0206.653.946"
//! role = "writer"
//! token_sha256 = "5e88…"
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::{Caller, Organization, Role};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("reading callers file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("callers file {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("no usable random source: {0}")]
    Random(String),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    cbe: String,
    role: String,
    token_sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallersFile {
    #[serde(default)]
    caller: Vec<Entry>,
}

/// Token hash → caller.
#[derive(Debug, Default, Clone)]
pub struct Callers {
    by_hash: HashMap<[u8; 32], Caller>,
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Callers {
    pub fn from_tokens(entries: &[(&str, Caller)]) -> Callers {
        Callers {
            by_hash: entries
                .iter()
                .map(|(token, caller)| (hash(token), caller.clone()))
                .collect(),
        }
    }

    pub fn load(path: &Path) -> Result<Callers, AuthError> {
        let invalid = |reason: String| AuthError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file: CallersFile = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let mut by_hash = HashMap::new();
        for (i, entry) in file.caller.iter().enumerate() {
            let at = |what: String| invalid(format!("caller {} ({}): {what}", i + 1, entry.name));
            let organization =
                Organization::new(&entry.name, &entry.cbe).map_err(|e| at(e.to_string()))?;
            let role = Role::parse(&entry.role).ok_or_else(|| {
                at(format!(
                    "role {:?} is none of reader, writer, keeper",
                    entry.role
                ))
            })?;
            let digest: [u8; 32] = hex::decode(entry.token_sha256.trim())
                .ok()
                .and_then(|d| d.try_into().ok())
                .ok_or_else(|| at("token_sha256 is not 64 hex digits".into()))?;
            if by_hash
                .insert(digest, Caller { organization, role })
                .is_some()
            {
                return Err(at("the same token is listed twice".into()));
            }
        }
        Ok(Callers { by_hash })
    }

    pub fn find(&self, token: &str) -> Option<&Caller> {
        self.by_hash.get(&hash(token))
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

/// A fresh token: 32 random bytes, hex.
pub fn new_token() -> Result<String, AuthError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(hex::encode(bytes))
}

/// Appends a caller with a new token to the callers file (created if missing) and returns the
/// token, which is stored nowhere else.
pub fn add_caller(path: &Path, name: &str, cbe: &str, role: Role) -> Result<String, AuthError> {
    let invalid = |reason: String| AuthError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let organization = Organization::new(name, cbe).map_err(|e| invalid(e.to_string()))?;
    if path.exists() {
        // Refuse to append to a file we could not load afterwards.
        Callers::load(path)?;
    }
    let token = new_token()?;
    let entry = CallersFile {
        caller: vec![Entry {
            name: organization.name,
            cbe: organization.cbe.as_str().to_string(),
            role: role.as_str().to_string(),
            token_sha256: hex::encode(hash(&token)),
        }],
    };
    let text = toml::to_string(&entry).map_err(|e| invalid(e.to_string()))?;
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    file.write_all(format!("\n{text}").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(token)
}

/// The callers in force, shared by the front ends, reloaded when the file changes.
#[derive(Clone)]
pub struct Authenticator {
    callers: Arc<RwLock<Callers>>,
}

impl Authenticator {
    pub fn fixed(callers: Callers) -> Authenticator {
        Authenticator {
            callers: Arc::new(RwLock::new(callers)),
        }
    }

    /// Loads `path` now and re-reads it whenever its modification time changes. A file that
    /// fails to load keeps the previous callers in force (and says so in the log).
    pub fn watching(path: PathBuf) -> Result<Authenticator, AuthError> {
        let auth = Authenticator::fixed(Callers::load(&path)?);
        let shared = auth.callers.clone();
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let mut seen: Option<SystemTime> = modified(&path);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let now = modified(&path);
                if now == seen {
                    continue;
                }
                seen = now;
                match Callers::load(&path) {
                    Ok(callers) => {
                        tracing::info!(callers = callers.len(), "reloaded {}", path.display());
                        *shared.write().unwrap_or_else(|p| p.into_inner()) = callers;
                    }
                    Err(e) => tracing::error!("keeping the previous callers: {e}"),
                }
            }
        });
        Ok(auth)
    }

    /// The caller of a request, from its `authorization: Bearer <token>` metadata.
    pub fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Caller, &'static str> {
        let header = metadata
            .get("authorization")
            .ok_or("missing authorization: Bearer <token>")?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or("authorization must be \"Bearer <token>\"")?;
        self.caller(token).ok_or("unknown token")
    }

    /// The caller a bearer token belongs to.
    pub fn caller(&self, token: &str) -> Option<Caller> {
        self.callers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .find(token)
            .cloned()
    }
}

/// The well-known tokens of `serve --dev`. Never for production: anyone can read them here.
pub fn dev_callers() -> Callers {
    let organization = Organization {
        name: "Development".into(),
        cbe: crate::domain::CbeNumber::parse("0123456749").unwrap_or_else(|_| unreachable!()),
    };
    Callers::from_tokens(&[
        (
            "dev-keeper",
            Caller {
                organization: organization.clone(),
                role: Role::Keeper,
            },
        ),
        (
            "dev-writer",
            Caller {
                organization,
                role: Role::Writer,
            },
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_callers_authenticate_and_only_hashes_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("callers.toml");
        let writer = add_caller(&path, "RIZIV", "0123456749", Role::Writer).unwrap();
        let keeper = add_caller(&path, "KSZ-BCSS", "0123456749", Role::Keeper).unwrap();
        assert_ne!(writer, keeper);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&writer) && !text.contains(&keeper),
            "a token was stored"
        );
        let callers = Callers::load(&path).unwrap();
        assert_eq!(callers.len(), 2);
        assert_eq!(callers.find(&writer).unwrap().role, Role::Writer);
        assert_eq!(callers.find(&keeper).unwrap().organization.name, "KSZ-BCSS");
        assert!(callers.find("guess").is_none());
    }

    #[tokio::test]
    async fn the_callers_file_is_reloaded_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("callers.toml");
        let first = add_caller(&path, "RIZIV", "0123456749", Role::Reader).unwrap();
        let auth = Authenticator::watching(path.clone()).unwrap();
        assert!(auth.caller(&first).is_some());
        // Some filesystems keep whole-second modification times.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let second = add_caller(&path, "KSZ-BCSS", "0123456749", Role::Keeper).unwrap();
        assert!(auth.caller(&second).is_none(), "loaded before the poll");
        let mut found = None;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            found = auth.caller(&second);
            if found.is_some() {
                break;
            }
        }
        assert_eq!(found.map(|c| c.role), Some(Role::Keeper));
        // A broken edit keeps the callers in force.
        std::fs::write(&path, "not toml [").unwrap();
        tokio::time::sleep(Duration::from_millis(3000)).await;
        assert!(auth.caller(&first).is_some() && auth.caller(&second).is_some());
    }

    #[test]
    fn a_bad_callers_file_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("callers.toml");
        let bad = |body: &str| {
            std::fs::write(&path, body).unwrap();
            Callers::load(&path).unwrap_err().to_string()
        };
        let entry = |role: &str, hash: &str| {
            format!(
                "[[caller]]\nname = \"X\"\ncbe = \"0123456749\"\nrole = \"{role}\"\ntoken_sha256 = \"{hash}\"\n"
            )
        };
        let h = "a".repeat(64);
        assert!(bad(&entry("admin", &h)).contains("role"));
        assert!(bad(&entry("reader", "abc")).contains("token_sha256"));
        assert!(bad(&format!("{}{}", entry("reader", &h), entry("writer", &h))).contains("twice"));
        assert!(bad(&entry("reader", &h).replace("0123456749", "0123456748")).contains("CBE"));
        assert!(bad("[[caller]]\nname = 1").contains("callers file"));
        // Appending to a broken file is refused rather than making it worse.
        assert!(add_caller(&path, "Y", "0123456749", Role::Reader).is_err());
    }
}

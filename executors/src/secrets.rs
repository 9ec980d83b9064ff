//! Globals' values, sealed with ChaCha20-Poly1305 under a key derived from the master key, and
//! opened only where an action uses them: by the executor, just before the call. What the
//! action returns (and any error) has every opened value masked before it leaves the executor,
//! so even an action that echoes a secret does not put it into an event.
//!
//! A sealed value is `{"$walkoff_sealed": "v1:<global id>:<base64(nonce ‖ ciphertext)>"}`; the
//! global's id is the associated data, so a ciphertext moved to another global does not open.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use serde_json::{Map, Value};
use walkoff_schema::sealed::{sealed_text, REDACTED, SEALED_FIELD};

use crate::keys::{MasterKey, Purpose};

const VERSION: &str = "v1";
const NONCE: usize = 12;

/// Shorter opened values are not masked in results: masking `"a"` everywhere would garble
/// every result without protecting anything.
const SHORTEST_MASKED: usize = 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the sealed value is malformed")]
    Malformed,
    #[error("the global '{0}' was sealed with another key (was the master key changed without `walkoff rotate-key`?)")]
    WrongKey(String),
}

pub struct Secrets {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(***)")
    }
}

impl Secrets {
    pub fn new(key: &MasterKey) -> Secrets {
        let key = key.derive(Purpose::Globals);
        Secrets {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        }
    }

    /// `value` sealed for the global `global_id`.
    pub fn seal(&self, global_id: &str, value: &Value) -> Value {
        let plaintext = serde_json::to_vec(value).unwrap_or_default();
        let mut nonce = [0u8; NONCE];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plaintext,
                    aad: global_id.as_bytes(),
                },
            )
            .expect("ChaCha20-Poly1305 encrypts any message under 256 GiB");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        let text = format!(
            "{VERSION}:{global_id}:{}",
            base64::engine::general_purpose::STANDARD.encode(sealed)
        );
        let mut map = Map::new();
        map.insert(SEALED_FIELD.into(), Value::String(text));
        Value::Object(map)
    }

    /// The global id a sealed value belongs to, without opening it.
    pub fn global_of(sealed: &Value) -> Option<&str> {
        let text = sealed_text(sealed)?;
        let mut parts = text.splitn(3, ':');
        (parts.next()? == VERSION).then_some(())?;
        parts.next()
    }

    /// The value inside a sealed value (`Ok(None)` when `value` is not sealed).
    pub fn open(&self, value: &Value) -> Result<Option<Value>, SealError> {
        let Some(text) = sealed_text(value) else {
            return Ok(None);
        };
        let mut parts = text.splitn(3, ':');
        let (Some(VERSION), Some(global), Some(encoded)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(SealError::Malformed);
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| SealError::Malformed)?;
        if bytes.len() < NONCE {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE);
        let plaintext = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: global.as_bytes(),
                },
            )
            .map_err(|_| SealError::WrongKey(global.to_string()))?;
        serde_json::from_slice(&plaintext)
            .map(Some)
            .map_err(|_| SealError::Malformed)
    }

    /// Open every sealed value among `parameters` (at the top level, where a parameter refers
    /// to a global); returns what must be masked in what the action answers.
    pub fn open_parameters(&self, parameters: &mut Map<String, Value>) -> Result<Mask, String> {
        let mut mask = Mask::default();
        for (name, value) in parameters.iter_mut() {
            match self.open(value) {
                Ok(None) => {}
                Ok(Some(opened)) => {
                    mask.add(&opened);
                    *value = opened;
                }
                Err(e) => return Err(format!("parameter '{name}': {e}")),
            }
        }
        Ok(mask)
    }
}

/// The texts of opened values, masked in an action's result and error.
#[derive(Debug, Default)]
pub struct Mask {
    needles: Vec<String>,
}

impl Mask {
    fn add(&mut self, value: &Value) {
        match value {
            Value::String(s) => self.push(s.clone()),
            Value::Number(n) => self.push(n.to_string()),
            Value::Array(items) => items.iter().for_each(|v| self.add(v)),
            Value::Object(map) => {
                self.push(serde_json::to_string(value).unwrap_or_default());
                map.values().for_each(|v| self.add(v));
            }
            Value::Bool(_) | Value::Null => {}
        }
    }

    fn push(&mut self, needle: String) {
        if needle.chars().count() >= SHORTEST_MASKED && !self.needles.contains(&needle) {
            self.needles.push(needle);
            // Longest first, so a value containing another is masked whole.
            self.needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// `text` with every opened value replaced by `***`.
    pub fn text(&self, text: &str) -> String {
        let mut masked = text.to_string();
        for needle in &self.needles {
            if masked.contains(needle.as_str()) {
                masked = masked.replace(needle.as_str(), REDACTED);
            }
        }
        masked
    }

    /// `value` with every opened value masked in its strings (and keys).
    pub fn value(&self, value: Value) -> Value {
        match value {
            Value::String(s) => Value::String(self.text(&s)),
            Value::Number(n) if self.needles.contains(&n.to_string()) => {
                Value::String(REDACTED.into())
            }
            Value::Array(items) => Value::Array(items.into_iter().map(|v| self.value(v)).collect()),
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (self.text(&k), self.value(v)))
                    .collect(),
            ),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_sealed_value_opens_with_its_key_and_its_global_only() {
        let key = MasterKey::random();
        let secrets = Secrets::new(&key);
        let value = json!({"user": "svc", "password": "hunter2-long"});
        let sealed = secrets.seal("g1", &value);
        assert!(!sealed.to_string().contains("hunter2"));
        assert_eq!(Secrets::global_of(&sealed), Some("g1"));
        assert_eq!(secrets.open(&sealed).unwrap(), Some(value.clone()));
        assert_eq!(secrets.open(&json!("plain")).unwrap(), None);
        // Another key, or the ciphertext moved to another global, does not open.
        let other = Secrets::new(&MasterKey::random());
        assert_eq!(
            other.open(&sealed).unwrap_err(),
            SealError::WrongKey("g1".into())
        );
        let text = sealed[SEALED_FIELD]
            .as_str()
            .unwrap()
            .replacen("g1", "g2", 1);
        let moved = json!({ SEALED_FIELD: text });
        assert_eq!(
            secrets.open(&moved).unwrap_err(),
            SealError::WrongKey("g2".into())
        );
        let garbage = json!({ SEALED_FIELD: "v1:g1:%%%" });
        assert_eq!(secrets.open(&garbage).unwrap_err(), SealError::Malformed);
    }

    #[test]
    fn opened_values_are_masked_in_what_an_action_answers() {
        let secrets = Secrets::new(&MasterKey::random());
        let mut parameters = json!({
            "call": secrets.seal("g1", &json!("s3cr3t-token")),
            "pin": secrets.seal("g2", &json!(123456)),
            "plain": "s3cr3t-token is not sealed here",
        })
        .as_object()
        .unwrap()
        .clone();
        let mask = secrets.open_parameters(&mut parameters).unwrap();
        assert_eq!(parameters["call"], "s3cr3t-token");
        assert_eq!(parameters["pin"], 123456);
        let result = json!({"echo": "ECHOING: s3cr3t-token", "n": 123456, "s3cr3t-token": [1]});
        assert_eq!(
            mask.value(result),
            json!({"echo": "ECHOING: ***", "n": "***", "***": [1]})
        );
        assert_eq!(mask.text("failed with s3cr3t-token"), "failed with ***");
    }
}

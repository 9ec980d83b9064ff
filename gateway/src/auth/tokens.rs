//! Access tokens: JWTs signed with HS256 by a key derived from the master key. Only HS256 is
//! accepted (`alg: none`, other algorithms and other keys are refused), the expiry is checked
//! without leeway, and the claims name the login (token family) the token belongs to, which the
//! server can revoke at any time.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::keys::{MasterKey, Purpose};

/// What an access token says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The user's id.
    pub sub: String,
    /// The login (token family).
    pub fam: String,
    /// This token's id.
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    /// Always `access`; refresh tokens are not JWTs.
    pub typ: String,
}

const ACCESS: &str = "access";

pub struct Signer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Signer {
    pub fn new(key: &MasterKey) -> Signer {
        let secret = key.derive(Purpose::Tokens);
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp", "sub", "jti"]);
        Signer {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            validation,
        }
    }

    /// A signed access token for `user_id` in the login `family`, living `ttl_seconds`.
    pub fn issue(&self, user_id: &str, family: &str, ttl_seconds: i64) -> Result<String, String> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id.to_string(),
            fam: family.to_string(),
            jti: uuid::Uuid::new_v4().to_string(),
            iat: now,
            exp: now + ttl_seconds,
            typ: ACCESS.into(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| e.to_string())
    }

    /// The claims of a token this server signed and that has not expired.
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    "the access token has expired; refresh it or sign in again".to_string()
                }
                _ => "the access token is not valid; sign in again".to_string(),
            })?;
        if data.claims.typ != ACCESS {
            return Err("this is not an access token".into());
        }
        Ok(data.claims)
    }
}

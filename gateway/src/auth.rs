//! Who is calling: passwords (argon2id), access and refresh tokens, and the identity every
//! request carries. Tokens are random and opaque; the store keeps only their SHA-256, and checks
//! go through a moka cache that logout invalidates, so a revoked token stops working at once.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use chrono::Utc;
use moka::future::Cache;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};
use crate::rbac::{
    is_unrestricted_role, AccessLevel, Grants, ObjectAccess, Operation, Resource, ADMIN_ROLE,
    ADMIN_USER, SUPER_ADMIN_ROLE, SUPER_ADMIN_USER,
};
use crate::store::{framed, RoleRow, Store, TokenRow, UserRow, Viewer};

/// The authenticated user behind a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub user_id: String,
    pub username: String,
    /// Role ids.
    pub roles: Vec<String>,
    /// The login (token family) this request belongs to; logout ends it.
    pub family: String,
    /// What their roles grant together.
    pub grants: Arc<Grants>,
    /// Holds super_admin (or the internal role): every right on every object.
    pub unrestricted: bool,
}

impl Caller {
    /// Whether their roles grant `operation` on `resource`.
    pub fn may(&self, resource: Resource, operation: Operation) -> bool {
        self.grants.allows(resource, operation)
    }

    /// Whether they may do `operation` on one object of `resource` with permissions `access`:
    /// its creator and super_admin always may; otherwise an object open to everyone asks their
    /// roles' grants, and a role-based one the roles it lists.
    pub fn may_on(&self, resource: Resource, access: &ObjectAccess, operation: Operation) -> bool {
        if self.unrestricted || access.creator_id.as_deref() == Some(self.user_id.as_str()) {
            return true;
        }
        match access.level {
            AccessLevel::OnlyMe => false,
            AccessLevel::Everyone => self.may(resource, operation),
            AccessLevel::RoleBased => self.roles.iter().any(|role| {
                access
                    .roles
                    .get(role)
                    .is_some_and(|ops| ops.allows(operation))
            }),
        }
    }

    /// What listing `resource` filters by.
    pub fn viewer(&self, resource: Resource) -> Viewer {
        Viewer {
            user_id: self.user_id.clone(),
            roles: framed(&self.roles),
            everyone: self.may(resource, Operation::Read),
            unrestricted: self.unrestricted,
        }
    }
}

/// What a request presented, put into every request's data by the transport.
#[derive(Debug, Clone)]
pub enum Credentials {
    None,
    /// A token was presented and checked: the caller, or why it was refused.
    Checked(Result<Caller, String>),
}

impl Credentials {
    /// The caller, or UNAUTHENTICATED.
    pub fn caller(&self) -> ApiResult<&Caller> {
        match self {
            Credentials::Checked(Ok(caller)) => Ok(caller),
            Credentials::Checked(Err(reason)) => Err(ApiError::Unauthenticated(reason.clone())),
            Credentials::None => Err(ApiError::Unauthenticated(
                "sign in first: send 'Authorization: Bearer <accessToken>' (from the login mutation)"
                    .into(),
            )),
        }
    }
}

/// Whether `caller`'s roles grant `operation` on `resource`: FORBIDDEN, naming both, when not.
pub fn authorize(caller: &Caller, resource: Resource, operation: Operation) -> ApiResult<()> {
    if caller.may(resource, operation) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "'{}' may not {operation} {resource}: none of their roles grants it",
            caller.username
        )))
    }
}

#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

impl Default for TokenSettings {
    fn default() -> Self {
        TokenSettings {
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
}

pub struct Auth {
    store: Store,
    settings: TokenSettings,
    /// Checked access tokens by hash; entries live no longer than a minute, and logout,
    /// user and role changes remove theirs at once.
    checked: Cache<String, Caller>,
    /// Every role by id, read once and again after each change of a role.
    roles: RwLock<Option<Arc<BTreeMap<String, RoleRow>>>>,
}

/// Users a store's first start creates, with their passwords (given or generated).
#[derive(Debug, Clone, PartialEq)]
pub struct Bootstrapped {
    pub username: String,
    pub password: String,
    pub generated: bool,
}

const ACCESS: &str = "access";
const REFRESH: &str = "refresh";

fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

fn new_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// An argon2id hash of `password` in PHC format.
pub fn hash_password(password: &str) -> ApiResult<String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| ApiError::Internal(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::Internal(e.to_string()))
}

fn password_matches(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A password fit to print once: 24 characters from a 32-byte random value.
pub fn generate_password() -> String {
    let mut bytes = [0u8; 18];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Auth {
    pub fn new(store: Store, settings: TokenSettings) -> Arc<Auth> {
        Arc::new(Auth {
            store,
            settings,
            checked: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .support_invalidation_closures()
                .build(),
            roles: RwLock::new(None),
        })
    }

    /// On a store with no user at all, create WALKOFF's two accounts with its fixed ids:
    /// `super_admin` (the role of the same name: every right, immutable) and `admin` (the
    /// admin role). Each gets the password given or a generated one; returns whom this call
    /// created.
    pub async fn bootstrap(
        &self,
        admin_password: Option<String>,
        super_admin_password: Option<String>,
    ) -> ApiResult<Vec<Bootstrapped>> {
        if self.store.user_count().await? > 0 {
            return Ok(Vec::new());
        }
        let mut created = Vec::new();
        for (id, username, role, given) in [
            (
                SUPER_ADMIN_USER,
                "super_admin",
                SUPER_ADMIN_ROLE,
                super_admin_password,
            ),
            (ADMIN_USER, "admin", ADMIN_ROLE, admin_password),
        ] {
            let given = given.filter(|p| !p.is_empty());
            let generated = given.is_none();
            let password = given.unwrap_or_else(generate_password);
            let hash = hash_blocking(password.clone()).await?;
            let inserted = self
                .store
                .insert_user(&UserRow {
                    id: id.into(),
                    username: username.into(),
                    password_hash: hash,
                    roles: vec![role.into()],
                    active: true,
                    created_at: Utc::now(),
                })
                .await;
            match inserted {
                Ok(()) => created.push(Bootstrapped {
                    username: username.into(),
                    password,
                    generated,
                }),
                // Another gateway replica starting at the same time created it first.
                Err(_) if self.store.user_by_id(id).await?.is_some() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(created)
    }

    /// Whether `password` is the one `hash` was made from (checked off the async threads).
    pub async fn password_matches(&self, password: &str, hash: &str) -> bool {
        let (given, hash) = (password.to_string(), hash.to_string());
        tokio::task::spawn_blocking(move || password_matches(&given, &hash))
            .await
            .unwrap_or(false)
    }

    /// Every role by id (read from the store the first time).
    pub async fn roles(&self) -> ApiResult<Arc<BTreeMap<String, RoleRow>>> {
        if let Some(roles) = self.roles.read().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(roles);
        }
        self.reload_roles().await
    }

    /// Read the roles again, after a change; every cached caller is checked again, since
    /// what their roles grant may have changed.
    pub async fn reload_roles(&self) -> ApiResult<Arc<BTreeMap<String, RoleRow>>> {
        let roles: BTreeMap<String, RoleRow> = self
            .store
            .roles()
            .await?
            .into_iter()
            .map(|role| (role.id.clone(), role))
            .collect();
        let roles = Arc::new(roles);
        *self.roles.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&roles));
        self.checked.invalidate_all();
        Ok(roles)
    }

    /// Forget the cached checks of one user's tokens (after their tokens were revoked, their
    /// roles changed or they were deleted).
    pub fn forget_user(&self, user_id: &str) {
        let user_id = user_id.to_string();
        // Only fails when closures are not supported, which the builder turns on.
        let _ = self
            .checked
            .invalidate_entries_if(move |_, caller| caller.user_id == user_id);
    }

    /// What `roles` (ids) grant together, and whether one of them is unrestricted.
    pub async fn grants_of(&self, roles: &[String]) -> ApiResult<(Arc<Grants>, bool)> {
        let known = self.roles().await?;
        let mut grants = Grants::default();
        for role in roles {
            if let Some(row) = known.get(role) {
                grants.union(&row.grants);
            }
        }
        Ok((
            Arc::new(grants),
            roles.iter().any(|r| is_unrestricted_role(r)),
        ))
    }

    pub async fn login(&self, username: &str, password: &str) -> ApiResult<Tokens> {
        const REFUSED: &str = "invalid username or password";
        let user = self.store.user_by_name(username).await?;
        let Some(user) = user else {
            // Spend the time a check would, so a response's timing does not tell which
            // usernames exist.
            let _ = hash_blocking(password.to_string()).await;
            return Err(ApiError::Unauthenticated(REFUSED.into()));
        };
        let (given, hash) = (password.to_string(), user.password_hash.clone());
        let matches = tokio::task::spawn_blocking(move || password_matches(&given, &hash))
            .await
            .unwrap_or(false);
        if !matches {
            tracing::info!(username, "failed login");
            return Err(ApiError::Unauthenticated(REFUSED.into()));
        }
        if !user.active {
            return Err(ApiError::Unauthenticated("this user is deactivated".into()));
        }
        self.issue(&user.id, &uuid::Uuid::new_v4().to_string())
            .await
    }

    async fn issue(&self, user_id: &str, family: &str) -> ApiResult<Tokens> {
        let now = Utc::now();
        let access = new_token("wa_");
        let refresh = new_token("wr_");
        let ttl = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        self.store
            .insert_tokens(&[
                (
                    hash_token(&access),
                    TokenRow {
                        user_id: user_id.into(),
                        family: family.into(),
                        kind: ACCESS.into(),
                        expires_at: now + ttl(self.settings.access_ttl),
                        revoked: false,
                    },
                ),
                (
                    hash_token(&refresh),
                    TokenRow {
                        user_id: user_id.into(),
                        family: family.into(),
                        kind: REFRESH.into(),
                        expires_at: now + ttl(self.settings.refresh_ttl),
                        revoked: false,
                    },
                ),
            ])
            .await?;
        Ok(Tokens {
            access_token: access,
            refresh_token: refresh,
        })
    }

    /// A new pair for a refresh token, which can be used once: presenting a used one again
    /// revokes its whole login, since someone else has it.
    pub async fn refresh(&self, refresh_token: &str) -> ApiResult<Tokens> {
        const REFUSED: &str = "the refresh token is not valid";
        let hash = hash_token(refresh_token);
        let Some(token) = self.store.token(&hash).await? else {
            return Err(ApiError::Unauthenticated(REFUSED.into()));
        };
        if token.kind != REFRESH || token.expires_at < Utc::now() {
            return Err(ApiError::Unauthenticated(REFUSED.into()));
        }
        if token.revoked || !self.store.use_refresh_token(&hash).await? {
            self.revoke_family(&token.family).await?;
            return Err(ApiError::Unauthenticated(
                "this refresh token was used before; its login is revoked".into(),
            ));
        }
        match self.store.user_by_id(&token.user_id).await? {
            Some(user) if user.active => self.issue(&user.id, &token.family).await,
            _ => Err(ApiError::Unauthenticated(REFUSED.into())),
        }
    }

    /// End the caller's login: its access and refresh tokens stop working now.
    pub async fn logout(&self, caller: &Caller) -> ApiResult<()> {
        self.revoke_family(&caller.family).await
    }

    async fn revoke_family(&self, family: &str) -> ApiResult<()> {
        for hash in self.store.revoke_family(family).await? {
            self.checked.invalidate(&hash).await;
        }
        Ok(())
    }

    /// The caller an access token stands for, or why it is refused.
    pub async fn check(&self, access_token: &str) -> Result<Caller, String> {
        let hash = hash_token(access_token);
        if let Some(caller) = self.checked.get(&hash).await {
            return Ok(caller);
        }
        const REFUSED: &str =
            "the access token is not valid (expired, revoked or unknown); sign in again or refresh";
        let token = match self.store.token(&hash).await {
            Ok(Some(token)) => token,
            Ok(None) => return Err(REFUSED.into()),
            Err(e) => {
                tracing::error!(error = %e, "token check failed");
                return Err("the token could not be checked; try again".into());
            }
        };
        if token.kind != ACCESS || token.revoked || token.expires_at < Utc::now() {
            return Err(REFUSED.into());
        }
        let user = match self.store.user_by_id(&token.user_id).await {
            Ok(Some(user)) if user.active => user,
            Ok(_) => return Err(REFUSED.into()),
            Err(e) => {
                tracing::error!(error = %e, "token check failed");
                return Err("the token could not be checked; try again".into());
            }
        };
        let (grants, unrestricted) = match self.grants_of(&user.roles).await {
            Ok(granted) => granted,
            Err(_) => return Err("the token could not be checked; try again".into()),
        };
        let caller = Caller {
            user_id: user.id,
            username: user.username,
            roles: user.roles,
            family: token.family,
            grants,
            unrestricted,
        };
        // Cached no longer than the token lives.
        if token.expires_at > Utc::now() + chrono::Duration::seconds(60) {
            self.checked.insert(hash, caller.clone()).await;
        }
        Ok(caller)
    }

    /// Credentials from an `Authorization` header value (or a `connection_init` payload's).
    pub async fn credentials(&self, authorization: Option<&str>) -> Credentials {
        match authorization {
            None => Credentials::None,
            Some(value) => match value.strip_prefix("Bearer ") {
                Some(token) => Credentials::Checked(self.check(token.trim()).await),
                None => Credentials::Checked(Err(
                    "the Authorization header must read 'Bearer <accessToken>'".into(),
                )),
            },
        }
    }
}

async fn hash_blocking(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
}

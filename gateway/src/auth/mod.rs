//! Who is calling: passwords (argon2id), access tokens (JWTs, `tokens`), refresh tokens
//! (random, stored as their SHA-256), login throttling (`throttle`), and the identity every
//! request carries. Checks go through a moka cache that every revocation invalidates, so a
//! revoked token stops working at once; `AuthChange`s carry revocations to other replicas.

mod throttle;
mod tokens;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use chrono::Utc;
use moka::future::Cache;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};
use crate::keys::MasterKey;
use crate::rbac::{
    is_unrestricted_role, AccessLevel, Grants, ObjectAccess, Operation, Resource, ADMIN_ROLE,
    ADMIN_USER, SUPER_ADMIN_ROLE, SUPER_ADMIN_USER,
};
use crate::store::{framed, RoleRow, Settings, Store, TokenRow, UserRow, Viewer};

pub use tokens::Claims;

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

/// The token of an `Authorization` value that reads `Bearer <token>`.
pub fn bearer(authorization: &str) -> Option<&str> {
    authorization.strip_prefix("Bearer ").map(str::trim)
}

/// The address a request came from, put into its data by the transport (for throttling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

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

/// A change another gateway replica must know of at once: whose cached checks to drop, or
/// what to read again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthChange {
    /// A user's logins were revoked, or their roles changed.
    User(String),
    /// One login was revoked.
    Family(String),
    /// A role changed: read them again.
    Roles,
    /// The settings changed: read them again.
    Settings,
}

impl AuthChange {
    pub fn encode(&self) -> String {
        match self {
            AuthChange::User(id) => format!("user:{id}"),
            AuthChange::Family(id) => format!("family:{id}"),
            AuthChange::Roles => "roles".into(),
            AuthChange::Settings => "settings".into(),
        }
    }

    pub fn decode(text: &str) -> Option<AuthChange> {
        match text.split_once(':') {
            Some(("user", id)) => Some(AuthChange::User(id.into())),
            Some(("family", id)) => Some(AuthChange::Family(id.into())),
            None if text == "roles" => Some(AuthChange::Roles),
            None if text == "settings" => Some(AuthChange::Settings),
            _ => None,
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
    signer: tokens::Signer,
    /// Checked access tokens by id; entries live no longer than a minute, and logout,
    /// user and role changes remove theirs at once.
    checked: Cache<String, Caller>,
    /// Every role by id, read once and again after each change of a role.
    roles: RwLock<Option<Arc<BTreeMap<String, RoleRow>>>>,
    /// The settings, read again every few seconds (another replica may change them).
    settings: Cache<(), Arc<Settings>>,
    throttle: throttle::Throttle,
    /// Where changes go to reach the other replicas (set in a distributed deployment).
    changes: OnceLock<tokio::sync::mpsc::UnboundedSender<AuthChange>>,
    /// Raised by every revocation: a check that read the store before one does not cache
    /// what it read after it.
    revocations: AtomicU64,
}

/// Users a store's first start creates, with their passwords (given or generated).
#[derive(Debug, Clone, PartialEq)]
pub struct Bootstrapped {
    pub username: String,
    pub password: String,
    pub generated: bool,
}

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
    pub fn new(store: Store, key: &MasterKey) -> Arc<Auth> {
        Arc::new(Auth {
            store,
            signer: tokens::Signer::new(key),
            checked: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .support_invalidation_closures()
                .build(),
            roles: RwLock::new(None),
            settings: Cache::builder()
                .max_capacity(1)
                .time_to_live(Duration::from_secs(5))
                .build(),
            throttle: throttle::Throttle::new(Settings::default().login_attempts_per_minute),
            changes: OnceLock::new(),
            revocations: AtomicU64::new(0),
        })
    }

    /// Send every change from now on to `changes` too (to reach the other replicas).
    pub fn announce_to(&self, changes: tokio::sync::mpsc::UnboundedSender<AuthChange>) {
        let _ = self.changes.set(changes);
    }

    fn announce(&self, change: AuthChange) {
        if let Some(changes) = self.changes.get() {
            let _ = changes.send(change);
        }
    }

    /// Apply a change made elsewhere (another replica) here.
    pub async fn apply(&self, change: &AuthChange) {
        match change {
            AuthChange::User(id) => self.forget_user_here(id),
            AuthChange::Family(id) => self.forget_family_here(id),
            AuthChange::Roles => {
                if let Err(e) = self.read_roles().await {
                    tracing::warn!(error = %e.message(), "could not read the roles again");
                }
            }
            AuthChange::Settings => self.settings.invalidate_all(),
        }
    }

    /// The settings now in force.
    pub async fn settings(&self) -> ApiResult<Arc<Settings>> {
        if let Some(settings) = self.settings.get(&()).await {
            return Ok(settings);
        }
        let settings = Arc::new(self.store.settings().await?);
        self.settings.insert((), Arc::clone(&settings)).await;
        Ok(settings)
    }

    /// Store new settings; they apply here at once, elsewhere within seconds.
    pub async fn save_settings(&self, settings: &Settings) -> ApiResult<()> {
        self.store.save_settings(settings).await?;
        self.settings.invalidate_all();
        self.announce(AuthChange::Settings);
        Ok(())
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

    /// Read the roles again, after a change (here and on the other replicas); every cached
    /// caller is checked again, since what their roles grant may have changed.
    pub async fn reload_roles(&self) -> ApiResult<Arc<BTreeMap<String, RoleRow>>> {
        let roles = self.read_roles().await?;
        self.announce(AuthChange::Roles);
        Ok(roles)
    }

    async fn read_roles(&self) -> ApiResult<Arc<BTreeMap<String, RoleRow>>> {
        let roles: BTreeMap<String, RoleRow> = self
            .store
            .roles()
            .await?
            .into_iter()
            .map(|role| (role.id.clone(), role))
            .collect();
        let roles = Arc::new(roles);
        *self.roles.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&roles));
        self.revocations.fetch_add(1, Ordering::AcqRel);
        self.checked.invalidate_all();
        Ok(roles)
    }

    /// Forget the cached checks of one user's tokens (after their tokens were revoked, their
    /// roles changed or they were deleted), here and on the other replicas.
    pub fn forget_user(&self, user_id: &str) {
        self.forget_user_here(user_id);
        self.announce(AuthChange::User(user_id.to_string()));
    }

    fn forget_family_here(&self, family: &str) {
        self.revocations.fetch_add(1, Ordering::AcqRel);
        let family = family.to_string();
        // Only fails when closures are not supported, which the builder turns on.
        let _ = self
            .checked
            .invalidate_entries_if(move |_, caller| caller.family == family);
    }

    fn forget_user_here(&self, user_id: &str) {
        self.revocations.fetch_add(1, Ordering::AcqRel);
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

    /// Tokens for a username and password, from a client at `address` (when known). Attempts
    /// are throttled per username and per address (`RATE_LIMITED`, before the password is
    /// checked); a failure is logged with the username, never the password.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        address: Option<IpAddr>,
    ) -> ApiResult<Tokens> {
        const REFUSED: &str = "invalid username or password";
        let settings = self.settings().await?;
        if let Err(wait) =
            self.throttle
                .attempt(username, address, settings.login_attempts_per_minute)
        {
            tracing::warn!(username, ?address, "login throttled");
            return Err(ApiError::RateLimited(format!(
                "too many login attempts for this user or from this address; try again in {} s",
                wait.as_secs().max(1)
            )));
        }
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
            tracing::info!(username, ?address, "failed login");
            return Err(ApiError::Unauthenticated(REFUSED.into()));
        }
        if !user.active {
            return Err(ApiError::Unauthenticated("this user is deactivated".into()));
        }
        self.issue(&user.id, &uuid::Uuid::new_v4().to_string())
            .await
    }

    /// A new pair in the login `family`: the refresh token is stored (as its hash), the access
    /// token is a signed JWT that names the family.
    async fn issue(&self, user_id: &str, family: &str) -> ApiResult<Tokens> {
        let settings = self.settings().await?;
        let refresh = new_token("wr_");
        let refresh_ttl = chrono::Duration::days(i64::from(settings.refresh_token_lifetime_days));
        self.store
            .insert_tokens(&[(
                hash_token(&refresh),
                TokenRow {
                    user_id: user_id.into(),
                    family: family.into(),
                    kind: REFRESH.into(),
                    expires_at: Utc::now() + refresh_ttl,
                    revoked: false,
                },
            )])
            .await?;
        let access = self
            .signer
            .issue(
                user_id,
                family,
                i64::from(settings.access_token_lifetime_minutes) * 60,
            )
            .map_err(ApiError::Internal)?;
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
        self.store.revoke_family(family).await?;
        self.forget_family_here(family);
        self.announce(AuthChange::Family(family.to_string()));
        Ok(())
    }

    /// The caller an access token stands for, or why it is refused: a token this server
    /// signed, unexpired, of a login not revoked, of an active user. Checked once per token
    /// (one store read), then from the cache until a revocation drops it.
    pub async fn check(&self, access_token: &str) -> Result<Caller, String> {
        let claims = self.signer.verify(access_token)?;
        if let Some(caller) = self.checked.get(&claims.jti).await {
            return Ok(caller);
        }
        let revocations = self.revocations.load(Ordering::Acquire);
        const REFUSED: &str =
            "this login has ended (logged out, revoked or the user changed); sign in again";
        let user = match self
            .store
            .user_of_live_login(&claims.sub, &claims.fam)
            .await
        {
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
            family: claims.fam,
            grants,
            unrestricted,
        };
        // The expiry is checked on every request before the cache is asked, so an entry
        // never outlives its token's validity.
        if self.revocations.load(Ordering::Acquire) == revocations {
            self.checked.insert(claims.jti, caller.clone()).await;
        }
        Ok(caller)
    }

    /// Credentials from an `Authorization` header value (or a `connection_init` payload's).
    pub async fn credentials(&self, authorization: Option<&str>) -> Credentials {
        match authorization {
            None => Credentials::None,
            Some(value) => match bearer(value) {
                Some(token) => Credentials::Checked(self.check(token).await),
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

//! One authentication for every gRPC server and the REST gateway, and the
//! namespace permissions callers hold.
//!
//! Credentials: API keys (`GATEWAY_API_KEYS`, compared in constant time) and
//! JWT bearer tokens (HS256 with `GATEWAY_JWT_HS256_SECRET`, RS256 with
//! `GATEWAY_JWT_RS256_PUBLIC_KEY`; `exp` required, `nbf` checked,
//! `GATEWAY_JWT_ISSUER` / `GATEWAY_JWT_AUDIENCE` when set). Nothing
//! configured: every call is allowed (the embedded default).
//!
//! Permissions: `read` (gets, lists, watches, validate, hash), `write`
//! (stamps, workflow starts and cancels), `admin` (rebuilds), each for a set
//! of namespaces (`a.b` exactly, `a.*` for `a` and everything below it, `*`
//! for all). An API key entry is `KEY` (everything) or
//! `KEY;namespaces=a.*|b;permissions=read|write;name=ci`; a JWT carries
//! `namespaces` and `permissions` claims (absent: everything) and its `sub`
//! names the caller.
//!
//! [`AuthLayer`] authenticates every call to an `omninode.*` gRPC service
//! (health and reflection stay public) and puts the [`Caller`] in the
//! request's extensions; handlers authorize with the namespace they act on.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::{
    config::{ConfigError, Env},
    error::{ErrorCode, ServiceError, reason},
};

/// The shortest HS256 secret accepted (RFC 7518: at least the hash size).
pub const MIN_HS256_SECRET: usize = 32;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    Read,
    Write,
    Admin,
}

impl Permission {
    fn bit(self) -> u8 {
        match self {
            Self::Read => 1,
            Self::Write => 2,
            Self::Admin => 4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        match name.trim() {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// The namespaces and permissions a caller holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    /// Patterns: `a.b`, `a.*` (a and below), `*`.
    namespaces: Vec<String>,
    permissions: u8,
}

impl Grants {
    /// Every permission on every namespace.
    pub fn all() -> Self {
        Self { namespaces: vec!["*".into()], permissions: 7 }
    }

    fn from_lists(namespaces: Option<Vec<String>>, permissions: Option<Vec<String>>) -> Result<Self, String> {
        let namespaces = namespaces.unwrap_or_else(|| vec!["*".into()]);
        for pattern in &namespaces {
            let base = pattern.strip_suffix(".*").unwrap_or(pattern);
            if pattern != "*" && crate::auth::check_namespace_pattern(base).is_err() {
                return Err(format!("namespace pattern {pattern:?} is not a namespace, `ns.*` or `*`"));
            }
        }
        let permissions = match permissions {
            None => 7,
            Some(names) => names.iter().try_fold(0u8, |bits, name| {
                Permission::parse(name)
                    .map(|p| bits | p.bit())
                    .ok_or_else(|| format!("permission {name:?} is not read, write or admin"))
            })?,
        };
        Ok(Self { namespaces, permissions })
    }

    /// Whether these grants cover `namespace`.
    pub fn covers(&self, namespace: &str) -> bool {
        self.namespaces.iter().any(|pattern| match pattern.strip_suffix(".*") {
            _ if pattern == "*" => true,
            Some(base) => namespace == base || namespace.strip_prefix(base).is_some_and(|rest| rest.starts_with('.')),
            None => pattern == namespace,
        })
    }

    pub fn allows(&self, permission: Permission) -> bool {
        self.permissions & permission.bit() != 0
    }
}

fn check_namespace_pattern(base: &str) -> Result<(), ()> {
    let ok = !base.is_empty()
        && base.split('.').all(|segment| {
            segment.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && segment.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        });
    if ok { Ok(()) } else { Err(()) }
}

/// Who is calling, and what they may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `api-key:<name>`, `jwt:<sub>`, or `anonymous` when authentication is off.
    pub identity: String,
    pub grants: Grants,
}

impl Caller {
    /// The caller when no authentication is configured: everything allowed.
    pub fn anonymous() -> Self {
        Self { identity: "anonymous".into(), grants: Grants::all() }
    }

    /// Allows `permission` on `namespace`, or says why not (logged once per
    /// identity, counted in `auth_denied_total`).
    pub fn authorize(&self, permission: Permission, namespace: &str) -> Result<(), AuthError> {
        if self.grants.allows(permission) && self.grants.covers(namespace) {
            return Ok(());
        }
        let denied = AuthError::PermissionDenied {
            identity: self.identity.clone(),
            permission: permission.as_str(),
            namespace: namespace.to_owned(),
        };
        record_denial(&self.identity, "permission", &denied.to_string());
        Err(denied)
    }

    /// [`Self::authorize`] for a namespace as a request names it (empty: the
    /// default). A malformed one is let through: the service refuses it as
    /// INVALID_ARGUMENT, which tells the caller more.
    pub fn authorize_request(&self, permission: Permission, raw_namespace: &str) -> Result<(), AuthError> {
        match omninode_core::namespace::resolve_namespace(raw_namespace) {
            Ok(namespace) => self.authorize(permission, &namespace),
            Err(_) => Ok(()),
        }
    }

    /// Allows `permission` on a call that names no namespace (hashing, validation).
    pub fn authorize_any(&self, permission: Permission) -> Result<(), AuthError> {
        if self.grants.allows(permission) {
            return Ok(());
        }
        self.authorize(permission, "*")
    }

    /// Whether the caller may read `namespace` (for filtering list results).
    pub fn may_read(&self, namespace: &str) -> bool {
        self.grants.allows(Permission::Read) && self.grants.covers(namespace)
    }
}

/// The caller of a gRPC request (anonymous when no [`AuthLayer`] ran).
pub fn caller_of<T>(request: &tonic::Request<T>) -> Caller {
    request.extensions().get::<Caller>().cloned().unwrap_or_else(Caller::anonymous)
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{identity} may not {permission} in namespace {namespace}")]
    PermissionDenied { identity: String, permission: &'static str, namespace: String },
}

impl ServiceError for AuthError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Self::PermissionDenied { .. } => ErrorCode::PermissionDenied,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => reason::UNAUTHENTICATED,
            Self::PermissionDenied { .. } => reason::PERMISSION_DENIED,
        }
    }

    fn error_metadata(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::Unauthenticated(_) => Vec::new(),
            Self::PermissionDenied { identity, permission, namespace } => vec![
                ("identity", identity.clone()),
                ("permission", (*permission).to_owned()),
                ("namespace", namespace.clone()),
            ],
        }
    }
}

crate::grpc_status_from!(AuthError);

/// Identities already logged for a denial (bounded), so a retry loop does not flood the log.
fn record_denial(identity: &str, kind: &'static str, message: &str) {
    static LOGGED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    metrics::counter!("auth_denied_total", "kind" => kind).increment(1);
    let mut logged = LOGGED.lock().expect("denial log");
    let logged = logged.get_or_insert_with(HashSet::new);
    if logged.len() < 10_000 && logged.insert(format!("{kind}:{identity}")) {
        tracing::warn!(%identity, kind, %message, "call denied (logged once per identity)");
    }
}

/// One configured API key.
#[derive(Clone)]
struct ApiKey {
    secret: Vec<u8>,
    name: String,
    grants: Grants,
}

#[derive(Debug, serde::Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    namespaces: Option<Vec<String>>,
    #[serde(default)]
    permissions: Option<Vec<String>>,
}

/// The configured credentials.
#[derive(Clone, Default)]
pub struct Authenticator {
    keys: Vec<ApiKey>,
    jwt: Option<(DecodingKey, Validation)>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("api_keys", &self.keys.len()).field("jwt", &self.jwt.is_some()).finish()
    }
}

impl Authenticator {
    /// Reads the credentials, refusing insecure settings with an error that
    /// names the variable: empty keys, a short HS256 secret, unparsable keys.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        const KEYS: &str = "GATEWAY_API_KEYS";
        let keys = match env.credential(KEYS)? {
            None => Vec::new(),
            Some(list) => {
                let keys = list
                    .split(',')
                    .enumerate()
                    .map(|(i, entry)| parse_key(i, entry))
                    .collect::<Result<Vec<_>, String>>();
                let keys = keys.map_err(|problem| ConfigError::new(KEYS, problem))?;
                if keys.is_empty() {
                    return Err(ConfigError::new(KEYS, "lists no key; unset it to run without API keys"));
                }
                keys
            }
        };
        let hs256 = env.credential("GATEWAY_JWT_HS256_SECRET")?;
        let key = match (hs256, env.credential("GATEWAY_JWT_RS256_PUBLIC_KEY")?) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "GATEWAY_JWT_RS256_PUBLIC_KEY",
                    "set GATEWAY_JWT_HS256_SECRET or GATEWAY_JWT_RS256_PUBLIC_KEY, not both",
                ));
            }
            (Some(secret), None) => {
                if secret.len() < MIN_HS256_SECRET {
                    return Err(ConfigError::new(
                        "GATEWAY_JWT_HS256_SECRET",
                        format!("is {} bytes; an HS256 secret needs at least {MIN_HS256_SECRET}", secret.len()),
                    ));
                }
                Some((DecodingKey::from_secret(secret.as_bytes()), Algorithm::HS256))
            }
            (None, Some(pem)) => {
                let key = DecodingKey::from_rsa_pem(pem.replace("\\n", "\n").as_bytes()).map_err(|e| {
                    ConfigError::new("GATEWAY_JWT_RS256_PUBLIC_KEY", format!("not an RSA public key in PEM: {e}"))
                })?;
                Some((key, Algorithm::RS256))
            }
            (None, None) => None,
        };
        let jwt = match key {
            None => None,
            Some((key, algorithm)) => {
                let mut validation = Validation::new(algorithm);
                validation.required_spec_claims = ["exp".to_owned()].into();
                validation.validate_nbf = true;
                if let Some(issuer) = env.optional("GATEWAY_JWT_ISSUER")? {
                    validation.set_issuer(&[issuer]);
                }
                match env.optional("GATEWAY_JWT_AUDIENCE")? {
                    Some(audience) => validation.set_audience(&[audience]),
                    None => validation.validate_aud = false,
                }
                Some((key, validation))
            }
        };
        Ok(Self { keys, jwt })
    }

    /// Whether any credential is required.
    pub fn is_enabled(&self) -> bool {
        !self.keys.is_empty() || self.jwt.is_some()
    }

    /// The caller these request headers prove, or why they prove none
    /// (denials are logged once per presented identity and counted).
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        self.authenticate_peer(headers, None)
    }

    /// [`Self::authenticate`] for a connection whose client certificate
    /// (mTLS) names `peer`: with no keys or JWT configured the certificate
    /// is the credential; otherwise the credentials are still required and
    /// the certificate's name is recorded beside them.
    pub fn authenticate_peer(&self, headers: &HeaderMap, peer: Option<String>) -> Result<Caller, AuthError> {
        if !self.is_enabled() {
            return Ok(match peer {
                Some(name) => Caller { identity: format!("cert:{name}"), grants: Grants::all() },
                None => Caller::anonymous(),
            });
        }
        let result = self.identify(headers).map(|mut caller| {
            if let Some(name) = peer {
                caller.identity = format!("{} via cert:{name}", caller.identity);
            }
            caller
        });
        if let Err(err) = &result {
            record_denial("unauthenticated", "unauthenticated", &err.to_string());
        }
        result
    }

    fn identify(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        let refuse = |message: &str| Err(AuthError::Unauthenticated(message.to_owned()));
        if let Some(key) = headers.get("x-api-key") {
            return match self.known_key(key.as_bytes()) {
                Some(caller) => Ok(caller),
                None => refuse("the API key is not valid"),
            };
        }
        let bearer = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
        let Some(token) = bearer else {
            return refuse("credentials required: send X-API-Key or Authorization: Bearer <token>");
        };
        if let Some(caller) = self.known_key(token.as_bytes()) {
            return Ok(caller);
        }
        let Some((key, validation)) = &self.jwt else { return refuse("the bearer key is not valid") };
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|e| AuthError::Unauthenticated(format!("the bearer token is not valid: {e}")))?
            .claims;
        let grants = Grants::from_lists(claims.namespaces, claims.permissions)
            .map_err(|e| AuthError::Unauthenticated(format!("the bearer token's claims are not valid: {e}")))?;
        Ok(Caller { identity: format!("jwt:{}", claims.sub.unwrap_or_else(|| "unnamed".into())), grants })
    }

    /// The key's caller; every key is compared, each in constant time for its length.
    fn known_key(&self, candidate: &[u8]) -> Option<Caller> {
        self.keys.iter().fold(None, |found, key| {
            let matched = constant_time_eq(&key.secret, candidate);
            found.or(matched.then(|| Caller { identity: format!("api-key:{}", key.name), grants: key.grants.clone() }))
        })
    }
}

/// `KEY` or `KEY;namespaces=a.*|b;permissions=read|write;name=ci`.
fn parse_key(index: usize, entry: &str) -> Result<ApiKey, String> {
    let mut parts = entry.split(';');
    let secret = parts.next().unwrap_or_default().trim();
    if secret.is_empty() {
        return Err(format!("entry {} is an empty key", index + 1));
    }
    let (mut namespaces, mut permissions, mut name) = (None, None, format!("#{}", index + 1));
    for attribute in parts {
        let (field, value) = attribute.split_once('=').ok_or_else(|| format!("{attribute:?} is not field=value"))?;
        let list = || value.split('|').map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).collect::<Vec<_>>();
        match field.trim() {
            "namespaces" => namespaces = Some(list()),
            "permissions" => permissions = Some(list()),
            "name" => name = value.trim().to_owned(),
            other => return Err(format!("{other:?} is not namespaces, permissions or name")),
        }
    }
    let grants = Grants::from_lists(namespaces, permissions)?;
    Ok(ApiKey { secret: secret.as_bytes().to_vec(), name, grants })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `OMNINODE_CLIENT_TOKEN`: the credential this process's own clients send
/// (the orchestrator's calls to stamping, the command line's calls): an API
/// key or a JWT, as `authorization: Bearer …`.
pub const CLIENT_TOKEN_VARIABLE: &str = "OMNINODE_CLIENT_TOKEN";

/// The credential a client of the mesh sends, as a tonic interceptor.
#[derive(Clone, Default)]
pub struct Credential(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Credential(set)" } else { "Credential(none)" })
    }
}

impl Credential {
    /// Reads [`CLIENT_TOKEN_VARIABLE`].
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let Some(token) = env.optional(CLIENT_TOKEN_VARIABLE)? else { return Ok(Self(None)) };
        let value = format!("Bearer {}", token.trim())
            .parse()
            .map_err(|_| ConfigError::new(CLIENT_TOKEN_VARIABLE, "must be printable ASCII"))?;
        Ok(Self(Some(value)))
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// The bearer token, when set.
    pub fn token(&self) -> Option<&str> {
        self.0.as_ref().and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
    }
}

impl tonic::service::Interceptor for Credential {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        // The called service's span is a child of the caller's current one.
        if crate::trace::enabled() {
            crate::trace::inject_metadata(&tracing::Span::current(), request.metadata_mut());
        }
        Ok(request)
    }
}

/// A channel whose calls carry a [`Credential`].
pub type AuthedChannel = tonic::service::interceptor::InterceptedService<crate::server::MeshChannel, Credential>;

/// Authenticates every call to an `omninode.*` gRPC service (health and
/// reflection stay public): unauthenticated calls are answered
/// UNAUTHENTICATED without reaching the service; the others carry their
/// [`Caller`] in the request extensions.
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Authenticator>) -> Self {
        Self { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, auth: self.auth.clone() }
    }
}

/// See [`AuthLayer`].
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

/// How much of a refused request's body is read before the answer, and for
/// how long: an HTTP/1.1 client (gRPC-Web) still writing its body when the
/// answer and the connection's close arrive would see a broken pipe, not the
/// UNAUTHENTICATED it was sent.
const REFUSED_BODY_DRAIN: (usize, std::time::Duration) = (64 * 1024, std::time::Duration::from_secs(2));

impl<S, B, R> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = futures::future::Either<
        S::Future,
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<http::Response<R>, S::Error>> + Send>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let protected = request.uri().path().starts_with("/omninode.");
        let caller = if protected {
            self.auth.authenticate_peer(request.headers(), peer_name(request.extensions()))
        } else {
            Ok(Caller::anonymous())
        };
        match caller {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                futures::future::Either::Left(self.inner.call(request))
            }
            Err(err) => futures::future::Either::Right(Box::pin(async move {
                let (limit, patience) = REFUSED_BODY_DRAIN;
                let body = http_body_util::Limited::new(request.into_body(), limit);
                let _ = tokio::time::timeout(patience, http_body_util::BodyExt::collect(body)).await;
                Ok(err.into_status().into_http())
            })),
        }
    }
}

/// The name of the verified client certificate of the connection (mTLS), if any.
fn peer_name(extensions: &http::Extensions) -> Option<String> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    if let Some(info) = extensions.get::<TlsConnectInfo<TcpConnectInfo>>() {
        return info.peer_certs().and_then(|certs| certs.first().and_then(|cert| crate::tls::certificate_name(cert)));
    }
    extensions.get::<crate::server::http::PeerName>().map(|peer| peer.0.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    #[test]
    fn api_keys_by_header_or_bearer_with_their_grants() {
        let env = Env::from_pairs([("GATEWAY_API_KEYS", "k1, k2;namespaces=team.*|other;permissions=read;name=ci")]);
        let auth = Authenticator::from_env(&env).unwrap();
        let full = auth.authenticate(&headers(&[("x-api-key", "k1")])).unwrap();
        assert_eq!(full.identity, "api-key:#1");
        assert!(full.authorize(Permission::Admin, "any.thing").is_ok());
        let ci = auth.authenticate(&headers(&[("authorization", "Bearer k2")])).unwrap();
        assert_eq!(ci.identity, "api-key:ci");
        assert!(ci.authorize(Permission::Read, "team").is_ok());
        assert!(ci.authorize(Permission::Read, "team.a.b").is_ok());
        assert!(ci.authorize(Permission::Read, "other").is_ok());
        assert!(ci.authorize(Permission::Read, "teams").is_err(), "a prefix is not a parent");
        assert!(ci.authorize(Permission::Read, "other.x").is_err());
        let denied = ci.authorize(Permission::Write, "team").unwrap_err();
        assert_eq!(denied.to_string(), "api-key:ci may not write in namespace team");
        assert_eq!(denied.reason(), "PERMISSION_DENIED");
        assert!(auth.authenticate(&headers(&[("x-api-key", "k3")])).is_err());
        let missing = auth.authenticate(&headers(&[])).unwrap_err();
        assert_eq!((missing.code(), missing.reason()), (ErrorCode::Unauthenticated, "UNAUTHENTICATED"));
        assert_eq!(Authenticator::default().authenticate(&headers(&[])).unwrap(), Caller::anonymous());
    }

    #[test]
    fn insecure_settings_are_refused_naming_the_variable() {
        for (name, value) in [
            ("GATEWAY_API_KEYS", ","),
            ("GATEWAY_API_KEYS", " "),
            ("GATEWAY_API_KEYS", "k1,,k2"),
            ("GATEWAY_API_KEYS", "k1;permissions=root"),
            ("GATEWAY_API_KEYS", "k1;namespaces=Bad"),
            ("GATEWAY_JWT_HS256_SECRET", "  "),
            ("GATEWAY_JWT_HS256_SECRET", "short"),
            ("GATEWAY_JWT_RS256_PUBLIC_KEY", "not a key"),
        ] {
            let err = Authenticator::from_env(&Env::from_pairs([(name, value)])).unwrap_err();
            assert_eq!(err.variable, name, "{name}={value:?}: {err}");
        }
        let both = Env::from_pairs([
            ("GATEWAY_JWT_HS256_SECRET", "0123456789abcdef0123456789abcdef"),
            ("GATEWAY_JWT_RS256_PUBLIC_KEY", "p"),
        ]);
        assert_eq!(Authenticator::from_env(&both).unwrap_err().variable, "GATEWAY_JWT_RS256_PUBLIC_KEY");
    }

    #[test]
    fn jwt_claims_carry_identity_and_grants_and_nbf_is_checked() {
        use jsonwebtoken::{EncodingKey, Header, encode};
        let secret = "0123456789abcdef0123456789abcdef";
        let auth = Authenticator::from_env(&Env::from_pairs([("GATEWAY_JWT_HS256_SECRET", secret)])).unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let token = |claims: serde_json::Value| {
            let token = encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap();
            auth.authenticate(&headers(&[("authorization", &format!("Bearer {token}"))]))
        };
        let caller =
            token(serde_json::json!({"exp": now + 60, "sub": "ana", "namespaces": ["a.*"], "permissions": ["read"]}))
                .unwrap();
        assert_eq!(caller.identity, "jwt:ana");
        assert!(caller.may_read("a.b") && !caller.may_read("b"));
        assert!(caller.authorize(Permission::Write, "a").is_err());
        assert!(token(serde_json::json!({"exp": now + 600, "nbf": now + 300})).is_err(), "not yet valid");
        assert!(token(serde_json::json!({"exp": now - 600})).is_err(), "expired");
        assert!(token(serde_json::json!({"exp": now + 60, "permissions": ["root"]})).is_err());
        let empty_key =
            encode(&Header::default(), &serde_json::json!({"exp": now + 60}), &EncodingKey::from_secret(b""));
        assert!(auth.authenticate(&headers(&[("authorization", &format!("Bearer {}", empty_key.unwrap()))])).is_err());
    }

    #[test]
    fn constant_time_comparison_is_exact() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}

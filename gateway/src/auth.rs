//! Who may call the gateway: API keys (`GATEWAY_API_KEYS`, compared in
//! constant time) and/or JWT bearer tokens (HS256 with
//! `GATEWAY_JWT_HS256_SECRET`, RS256 with `GATEWAY_JWT_RS256_PUBLIC_KEY`).
//! Neither configured: the gateway is open (the embedded default).

use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use omninode_runtime::{ConfigError, Env};

/// The configured credentials.
#[derive(Clone, Default)]
pub struct Auth {
    api_keys: Vec<Vec<u8>>,
    jwt: Option<(DecodingKey, Validation)>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("api_keys", &self.api_keys.len()).field("jwt", &self.jwt.is_some()).finish()
    }
}

#[derive(Debug, serde::Deserialize)]
struct Claims {}

impl Auth {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let api_keys = env
            .optional("GATEWAY_API_KEYS")?
            .map(|keys| {
                keys.split(',').map(str::trim).filter(|k| !k.is_empty()).map(|k| k.as_bytes().to_vec()).collect()
            })
            .unwrap_or_default();
        let key = match (env.optional("GATEWAY_JWT_HS256_SECRET")?, env.optional("GATEWAY_JWT_RS256_PUBLIC_KEY")?) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "GATEWAY_JWT_RS256_PUBLIC_KEY",
                    "set GATEWAY_JWT_HS256_SECRET or GATEWAY_JWT_RS256_PUBLIC_KEY, not both",
                ));
            }
            (Some(secret), None) => Some((DecodingKey::from_secret(secret.as_bytes()), Algorithm::HS256)),
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
        Ok(Self { api_keys, jwt })
    }

    /// Whether any credential is required.
    pub fn is_enabled(&self) -> bool {
        !self.api_keys.is_empty() || self.jwt.is_some()
    }

    /// Accepts the request, or says why not.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), String> {
        if !self.is_enabled() {
            return Ok(());
        }
        if let Some(key) = headers.get("x-api-key") {
            return if self.known_key(key.as_bytes()) { Ok(()) } else { Err("the API key is not valid".into()) };
        }
        let bearer = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
        let Some(token) = bearer else {
            return Err("credentials required: send X-API-Key or Authorization: Bearer <token>".into());
        };
        if let Some((key, validation)) = &self.jwt {
            return jsonwebtoken::decode::<Claims>(token, key, validation)
                .map(drop)
                .map_err(|e| format!("the bearer token is not valid: {e}"));
        }
        if self.known_key(token.as_bytes()) { Ok(()) } else { Err("the bearer key is not valid".into()) }
    }

    /// Compares against every key, each in constant time for its length.
    fn known_key(&self, candidate: &[u8]) -> bool {
        self.api_keys.iter().fold(false, |found, key| found | constant_time_eq(key, candidate))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    #[test]
    fn api_keys_by_header_or_bearer() {
        let auth = Auth::from_env(&Env::from_pairs([("GATEWAY_API_KEYS", "k1, k2")])).unwrap();
        assert!(auth.check(&headers(&[("x-api-key", "k2")])).is_ok());
        assert!(auth.check(&headers(&[("authorization", "Bearer k1")])).is_ok());
        assert!(auth.check(&headers(&[("x-api-key", "k3")])).is_err());
        assert!(auth.check(&headers(&[])).unwrap_err().contains("credentials required"));
        assert!(Auth::default().check(&headers(&[])).is_ok(), "open when nothing is configured");
    }

    #[test]
    fn constant_time_comparison_is_exact() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn both_jwt_keys_is_a_configuration_error() {
        let env = Env::from_pairs([("GATEWAY_JWT_HS256_SECRET", "s"), ("GATEWAY_JWT_RS256_PUBLIC_KEY", "p")]);
        assert_eq!(Auth::from_env(&env).unwrap_err().variable, "GATEWAY_JWT_RS256_PUBLIC_KEY");
        let bad_pem = Env::from_pairs([("GATEWAY_JWT_RS256_PUBLIC_KEY", "not a key")]);
        assert_eq!(Auth::from_env(&bad_pem).unwrap_err().variable, "GATEWAY_JWT_RS256_PUBLIC_KEY");
    }
}

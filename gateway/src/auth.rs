//! Who a client is.
//!
//! Two modes. **Development** trusts the spec's `userId` handshake query: anyone can be anyone,
//! which is fine on a laptop and nowhere else. **JWT** requires a signed token (HS256 with a
//! shared secret, or RS256/ES256 with public keys from a PEM or JWKS file) and takes the user id
//! from one of its claims (`sub` by default). Expiry is required and checked, as is not-before,
//! with a small clock-skew allowance; audience and issuer when configured.

use std::path::PathBuf;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// Why credentials prove nothing; its text is what the client is told (an `error` event, or
/// a 401 body).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Development mode: the `userId` handshake query is missing or not a user id.
    #[error("userId query parameter is required and must be a positive integer")]
    MissingUserId,
    #[error("Authentication required: present a bearer token")]
    TokenRequired,
    /// The token is not valid; the reason is one of a fixed few words.
    #[error("Invalid token: {0}")]
    InvalidToken(&'static str),
    #[error("Invalid token: claim {0} is not a user id")]
    ClaimNotAUserId(String),
    #[error("userId does not match the token")]
    UserMismatch,
}

/// How the gateway authenticates clients.
#[derive(Clone, Debug, Default)]
pub enum AuthConfig {
    /// Identity is the `userId` handshake query, on trust (development only).
    #[default]
    Development,
    Jwt(JwtConfig),
}

#[derive(Clone, Debug)]
pub struct JwtConfig {
    /// HS256 shared secret.
    pub hs256_secret: Option<String>,
    /// PEM file with an RSA (RS256) or EC P-256 (ES256) public key.
    pub public_key_file: Option<PathBuf>,
    /// JWKS file (`{"keys": [...]}`): keys are chosen by the token's `kid`.
    pub jwks_file: Option<PathBuf>,
    /// The claim that holds the user id (a positive integer, or a string of one).
    pub user_claim: String,
    pub audience: Option<Vec<String>>,
    pub issuer: Option<String>,
    /// Clock-skew allowance for `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            hs256_secret: None,
            public_key_file: None,
            jwks_file: None,
            user_claim: crate::defaults::JWT_USER_CLAIM.into(),
            audience: None,
            issuer: None,
            leeway_seconds: crate::defaults::JWT_LEEWAY.as_secs(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("JWT authentication needs a key: an HS256 secret, a public key file or a JWKS file")]
    NoKey,
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} holds no usable key: {reason}")]
    BadKey { path: PathBuf, reason: String },
}

/// A key and the algorithm it verifies.
struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Checks tokens, or trusts the query in development mode.
pub struct Authenticator(Mode);

enum Mode {
    Development,
    Jwt { keys: Vec<Key>, config: JwtConfig },
}

/// Where a client presented its credentials.
#[derive(Default, Debug)]
pub struct Credentials<'a> {
    pub token: Option<&'a str>,
    /// The spec's `userId` query, when given.
    pub claimed_user: Option<&'a str>,
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Result<Self, AuthSetupError> {
        let AuthConfig::Jwt(jwt) = config else { return Ok(Self(Mode::Development)) };
        let mut keys = Vec::new();
        if let Some(secret) = &jwt.hs256_secret {
            keys.push(Key { kid: None, algorithm: Algorithm::HS256, key: DecodingKey::from_secret(secret.as_bytes()) });
        }
        if let Some(path) = &jwt.public_key_file {
            let pem = read(path)?;
            let key = match DecodingKey::from_rsa_pem(&pem) {
                Ok(key) => Key { kid: None, algorithm: Algorithm::RS256, key },
                Err(_) => DecodingKey::from_ec_pem(&pem)
                    .map(|key| Key { kid: None, algorithm: Algorithm::ES256, key })
                    .map_err(|e| AuthSetupError::BadKey { path: path.clone(), reason: e.to_string() })?,
            };
            keys.push(key);
        }
        if let Some(path) = &jwt.jwks_file {
            let bad = |reason: String| AuthSetupError::BadKey { path: path.clone(), reason };
            let set: JwkSet = serde_json::from_slice(&read(path)?).map_err(|e| bad(e.to_string()))?;
            for jwk in &set.keys {
                let algorithm = jwk
                    .common
                    .key_algorithm
                    .and_then(|a| Algorithm::try_from(a).ok())
                    .ok_or_else(|| bad("every key needs an \"alg\"".into()))?;
                let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(e.to_string()))?;
                keys.push(Key { kid: jwk.common.key_id.clone(), algorithm, key });
            }
        }
        if keys.is_empty() {
            return Err(AuthSetupError::NoKey);
        }
        Ok(Self(Mode::Jwt { keys, config: jwt.clone() }))
    }

    pub fn is_development(&self) -> bool {
        matches!(self.0, Mode::Development)
    }

    /// The user the credentials prove, or why they prove nothing.
    pub fn authenticate(&self, credentials: &Credentials<'_>) -> Result<i64, AuthError> {
        let claimed = credentials.claimed_user.map(crate::validate::user_id);
        match &self.0 {
            Mode::Development => claimed.flatten().ok_or(AuthError::MissingUserId),
            Mode::Jwt { keys, config } => {
                let token = credentials.token.ok_or(AuthError::TokenRequired)?;
                let user_id = verify(keys, config, token)?;
                match claimed {
                    Some(Some(claimed)) if claimed != user_id => Err(AuthError::UserMismatch),
                    Some(None) => Err(AuthError::UserMismatch),
                    _ => Ok(user_id),
                }
            }
        }
    }
}

/// The `Authorization: Bearer` token of a request, if any.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn read(path: &PathBuf) -> Result<Vec<u8>, AuthSetupError> {
    std::fs::read(path).map_err(|source| AuthSetupError::Read { path: path.clone(), source })
}

fn verify(keys: &[Key], config: &JwtConfig, token: &str) -> Result<i64, AuthError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::InvalidToken("malformed"))?;
    let key = keys
        .iter()
        .find(|k| k.algorithm == header.alg && (header.kid.is_none() || k.kid.is_none() || k.kid == header.kid))
        .ok_or(AuthError::InvalidToken("no key for its algorithm or key id"))?;
    let mut validation = Validation::new(key.algorithm);
    validation.leeway = config.leeway_seconds;
    validation.validate_nbf = true;
    // A configured issuer or audience must be present, not only right when present: a token
    // without the claim would otherwise pass the check meant to refuse tokens minted elsewhere.
    let mut required = vec!["exp"];
    match &config.audience {
        Some(audience) => {
            validation.set_audience(audience);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    if let Some(issuer) = &config.issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    validation.set_required_spec_claims(&required);
    let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key.key, &validation).map_err(|e| {
        let reason = match e.kind() {
            ErrorKind::ExpiredSignature => "expired",
            ErrorKind::ImmatureSignature => "not valid yet",
            ErrorKind::InvalidSignature => "bad signature",
            ErrorKind::InvalidAudience => "wrong audience",
            ErrorKind::InvalidIssuer => "wrong issuer",
            ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
                "aud" => "missing audience",
                "iss" => "missing issuer",
                _ => "missing expiry",
            },
            _ => "malformed",
        };
        AuthError::InvalidToken(reason)
    })?;
    let user_id = match data.claims.get(&config.user_claim) {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => crate::validate::user_id(s),
        _ => None,
    };
    user_id.filter(|id| *id > 0).ok_or_else(|| AuthError::ClaimNotAUserId(config.user_claim.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "test-secret-of-enough-length-for-hs256";

    fn hs256(config: JwtConfig) -> Authenticator {
        Authenticator::new(&AuthConfig::Jwt(JwtConfig { hs256_secret: Some(SECRET.into()), ..config })).unwrap()
    }

    fn token(claims: Value, secret: &str) -> String {
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    /// The user, or the text the client is told.
    fn check(auth: &Authenticator, token: &str, claimed: Option<&str>) -> Result<i64, String> {
        auth.authenticate(&Credentials { token: Some(token), claimed_user: claimed }).map_err(|e| e.to_string())
    }

    #[test]
    fn a_valid_token_names_the_user() {
        let auth = hs256(JwtConfig::default());
        assert_eq!(check(&auth, &token(json!({"sub": "42", "exp": now() + 60}), SECRET), None), Ok(42));
        assert_eq!(check(&auth, &token(json!({"sub": 42, "exp": now() + 60}), SECRET), Some("42")), Ok(42));
    }

    #[test]
    fn forged_expired_early_and_mismatched_tokens_are_refused() {
        let auth = hs256(JwtConfig { audience: Some(vec!["chat".into()]), ..JwtConfig::default() });
        let good = json!({"sub": "7", "exp": now() + 60, "aud": "chat"});
        let cases = [
            (token(good.clone(), "another-secret-another-secret-xx"), None, "Invalid token: bad signature"),
            (token(json!({"sub": "7", "exp": now() - 120, "aud": "chat"}), SECRET), None, "Invalid token: expired"),
            (
                token(json!({"sub": "7", "exp": now() + 60, "nbf": now() + 120, "aud": "chat"}), SECRET),
                None,
                "Invalid token: not valid yet",
            ),
            (
                token(json!({"sub": "7", "exp": now() + 60, "aud": "other"}), SECRET),
                None,
                "Invalid token: wrong audience",
            ),
            (token(json!({"sub": "7", "aud": "chat"}), SECRET), None, "Invalid token: missing expiry"),
            (
                token(json!({"sub": "abc", "exp": now() + 60, "aud": "chat"}), SECRET),
                None,
                "Invalid token: claim sub is not a user id",
            ),
            (token(good.clone(), SECRET), Some("8"), "userId does not match the token"),
            ("not.a.token".to_owned(), None, "Invalid token: malformed"),
        ];
        for (token, claimed, expected) in cases {
            assert_eq!(check(&auth, &token, claimed), Err(expected.to_owned()));
        }
        assert_eq!(
            auth.authenticate(&Credentials { token: None, claimed_user: Some("7") }).map_err(|e| e.to_string()),
            Err("Authentication required: present a bearer token".into())
        );
    }

    #[test]
    fn a_configured_issuer_or_audience_must_be_in_the_token() {
        let auth = hs256(JwtConfig {
            audience: Some(vec!["chat".into()]),
            issuer: Some("https://issuer.example".into()),
            ..JwtConfig::default()
        });
        let exp = now() + 60;
        let cases = [
            (json!({"sub": "7", "exp": exp, "aud": "chat"}), "Invalid token: missing issuer"),
            (json!({"sub": "7", "exp": exp, "iss": "https://issuer.example"}), "Invalid token: missing audience"),
            (
                json!({"sub": "7", "exp": exp, "aud": "chat", "iss": "https://elsewhere.example"}),
                "Invalid token: wrong issuer",
            ),
        ];
        for (claims, expected) in cases {
            assert_eq!(check(&auth, &token(claims, SECRET), None), Err(expected.to_owned()));
        }
        let complete = json!({"sub": "7", "exp": exp, "aud": "chat", "iss": "https://issuer.example"});
        assert_eq!(check(&auth, &token(complete, SECRET), None), Ok(7));
    }

    #[test]
    fn clock_skew_within_the_leeway_is_tolerated() {
        let auth = hs256(JwtConfig::default());
        assert_eq!(check(&auth, &token(json!({"sub": "5", "exp": now() - 10}), SECRET), None), Ok(5));
    }

    #[test]
    fn development_mode_trusts_the_query() {
        let auth = Authenticator::new(&AuthConfig::Development).unwrap();
        assert_eq!(auth.authenticate(&Credentials { token: None, claimed_user: Some("3") }), Ok(3));
        assert!(auth.authenticate(&Credentials { token: None, claimed_user: Some("x") }).is_err());
        assert_eq!(auth.authenticate(&Credentials::default()), Err(AuthError::MissingUserId));
        assert_eq!(
            AuthError::MissingUserId.to_string(),
            "userId query parameter is required and must be a positive integer"
        );
    }

    #[test]
    fn jwt_mode_without_a_key_does_not_start() {
        assert!(matches!(Authenticator::new(&AuthConfig::Jwt(JwtConfig::default())), Err(AuthSetupError::NoKey)));
    }
}

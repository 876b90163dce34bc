//! Service-account tokens: JWTs (ES256) signed with the cluster's service-account key, issued by
//! TokenRequest (`serviceaccounts/{name}/token`), checked by TokenReview and accepted as bearer
//! credentials. A token names its service account's uid, so it dies with the account.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use serde_json::{Value, json};

/// The issuer and default audience of skiff's tokens (upstream's default).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Creating or loading the signing key failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Reading or writing the key file failed.
    #[error("service-account key {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The key could not be generated or parsed.
    #[error("service-account key: {0}")]
    Key(String),
}

/// Who a valid token names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSubject {
    /// The namespace of the service account.
    pub namespace: String,
    /// The service account's name.
    pub name: String,
    /// The service account's uid.
    pub uid: String,
    /// The token's audiences.
    pub audiences: Vec<String>,
    /// The pod the token is bound to (name, uid): it is valid only while that pod exists.
    pub pod: Option<(String, String)>,
}

impl TokenSubject {
    /// `system:serviceaccount:{namespace}:{name}`.
    pub fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }

    /// The groups of a service account.
    pub fn groups(&self) -> Vec<String> {
        vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{}", self.namespace),
            "system:authenticated".into(),
        ]
    }
}

/// The cluster's token signer.
pub struct Tokens {
    key: EcdsaKeyPair,
    key_id: String,
    rng: SystemRandom,
}

fn pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

fn unpem(text: &str) -> Result<Vec<u8>, TokenError> {
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD
        .decode(body.trim())
        .map_err(|e| TokenError::Key(format!("not PEM: {e}")))
}

impl Tokens {
    /// A signer with a fresh key that is not saved (tests, in-process use).
    pub fn ephemeral() -> Result<Self, TokenError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|e| TokenError::Key(e.to_string()))?;
        Self::from_pkcs8(pkcs8.as_ref(), rng)
    }

    /// Loads the key from `path`, creating it on first start.
    pub fn load_or_create(path: &Path) -> Result<Self, TokenError> {
        let io = |source| TokenError::Io {
            path: path.display().to_string(),
            source,
        };
        let rng = SystemRandom::new();
        if path.exists() {
            let der = unpem(&std::fs::read_to_string(path).map_err(io)?)?;
            return Self::from_pkcs8(&der, rng);
        }
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|e| TokenError::Key(e.to_string()))?;
        let partial = path.with_extension("partial");
        std::fs::write(&partial, pem(pkcs8.as_ref())).map_err(io)?;
        std::fs::rename(&partial, path).map_err(io)?;
        Self::from_pkcs8(pkcs8.as_ref(), rng)
    }

    fn from_pkcs8(der: &[u8], rng: SystemRandom) -> Result<Self, TokenError> {
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|e| TokenError::Key(e.to_string()))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key().as_ref());
        let key_id = URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16]);
        Ok(Self { key, key_id, rng })
    }

    /// Signs a token for a service account, valid from `now` for `seconds`.
    pub fn issue(
        &self,
        subject: &TokenSubject,
        now: i64,
        seconds: i64,
    ) -> Result<String, TokenError> {
        let header = json!({"alg": "ES256", "kid": self.key_id, "typ": "JWT"});
        let mut claims = json!({
            "aud": subject.audiences,
            "exp": now + seconds,
            "iat": now,
            "nbf": now,
            "iss": ISSUER,
            "sub": subject.username(),
            "kubernetes.io": {
                "namespace": subject.namespace,
                "serviceaccount": {"name": subject.name, "uid": subject.uid},
            },
        });
        if let (Some((name, uid)), Some(ours)) = (&subject.pod, claims.get_mut("kubernetes.io"))
            && let Some(ours) = ours.as_object_mut()
        {
            ours.insert("pod".into(), json!({"name": name, "uid": uid}));
        }
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|e| TokenError::Key(e.to_string()))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }

    /// Checks a token's signature, issuer and lifetime at `now`; returns whom it names.
    pub fn verify(&self, token: &str, now: i64) -> Result<TokenSubject, String> {
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a JWT".into());
        };
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| "malformed signature")?;
        let public =
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref());
        public
            .verify(format!("{header}.{claims}").as_bytes(), &signature)
            .map_err(|_| "invalid signature")?;
        let claims: Value = URL_SAFE_NO_PAD
            .decode(claims)
            .ok()
            .and_then(|c| serde_json::from_slice(&c).ok())
            .ok_or("malformed claims")?;
        if claims["iss"] != ISSUER {
            return Err("unknown issuer".into());
        }
        let exp = claims["exp"].as_i64().ok_or("no expiry")?;
        let nbf = claims["nbf"].as_i64().unwrap_or(0);
        if now >= exp || now < nbf {
            return Err("token has expired".into());
        }
        let text = |pointer: &str| {
            claims
                .pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        Ok(TokenSubject {
            namespace: text("/kubernetes.io/namespace").ok_or("no namespace")?,
            name: text("/kubernetes.io/serviceaccount/name").ok_or("no service account")?,
            uid: text("/kubernetes.io/serviceaccount/uid").unwrap_or_default(),
            audiences: claims["aud"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            pod: text("/kubernetes.io/pod/name").zip(text("/kubernetes.io/pod/uid")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_should_verify_until_they_expire_and_not_when_tampered() {
        let tokens = Tokens::ephemeral().unwrap();
        let subject = TokenSubject {
            namespace: "default".into(),
            name: "sa".into(),
            uid: "u".into(),
            audiences: vec!["api".into()],
            pod: Some(("web".into(), "pod-uid".into())),
        };
        let token = tokens.issue(&subject, 1000, 600).unwrap();
        assert_eq!(tokens.verify(&token, 1100).unwrap(), subject);
        assert!(tokens.verify(&token, 1600).is_err());
        let mut tampered = token.clone();
        tampered.insert(token.find('.').unwrap() + 3, 'x');
        assert!(tokens.verify(&tampered, 1100).is_err());
        assert!(
            Tokens::ephemeral().unwrap().verify(&token, 1100).is_err(),
            "another cluster's key"
        );
    }
}

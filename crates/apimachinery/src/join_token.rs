//! The join token a node presents to join a cluster, in k3s's shape:
//! `K10<sha256 of the cluster CA's PEM, hex>::join:<secret>`. The hash lets a joining node
//! trust the CA it fetches over an unverified connection; the secret is its bearer token until
//! it has a certificate of its own.

/// A parsed join token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinToken {
    /// The SHA-256 of the CA's PEM, lower-case hex.
    pub ca_hash: String,
    /// The secret, sent as a bearer token.
    pub secret: String,
}

impl JoinToken {
    /// The token as written and typed.
    pub fn render(&self) -> String {
        format!("K10{}::join:{}", self.ca_hash, self.secret)
    }

    /// Reads a token; `None` when it is not one.
    pub fn parse(text: &str) -> Option<JoinToken> {
        let (hash, secret) = text.trim().strip_prefix("K10")?.split_once("::join:")?;
        let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
        (hash.len() == 64 && hex(hash) && secret.len() >= 16 && hex(secret)).then(|| JoinToken {
            ca_hash: hash.to_ascii_lowercase(),
            secret: secret.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_should_parse_back_to_itself_and_refuse_anything_else() {
        let token = JoinToken {
            ca_hash: "ab".repeat(32),
            secret: "0123456789abcdef0123456789abcdef".into(),
        };
        assert_eq!(JoinToken::parse(&token.render()), Some(token.clone()));
        assert_eq!(
            JoinToken::parse(&format!("{}\n", token.render())),
            Some(token)
        );
        assert_eq!(JoinToken::parse("K10abc::join:0123456789abcdef"), None);
        assert_eq!(JoinToken::parse("hunter2"), None);
    }
}

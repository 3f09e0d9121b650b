//! `mt-stream token`: mints a connection token with the configured HMAC secret or a private key
//! file, for local development and scripts. A production web backend mints its own tokens
//! (`docs/tokens.md`); this is the same format.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::{Grant, Grants, HmacSecret, DEFAULT_AUDIENCE};

/// Flags of `mt-stream token`.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// The user or service the token speaks for (`sub`).
    #[arg(long)]
    pub sub: String,
    /// Channels granted: exact names and prefixes ending in `*`, comma-separated.
    #[arg(long, default_value = "")]
    pub channels: String,
    /// Lifetime: seconds, or a number with s, m, h or d (`90s`, `15m`, `1h`).
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    /// Audience (`aud`); must match the hub's `MT_AUTH_AUDIENCE`.
    #[arg(long, env = "MT_AUTH_AUDIENCE", default_value = DEFAULT_AUDIENCE)]
    pub audience: String,
    /// Sign with this PEM private key (RSA, EC P-256/P-384 or Ed25519) instead of the HMAC secret.
    #[arg(long, requires = "kid")]
    pub key_file: Option<PathBuf>,
    /// The `kid` of the key file's public key in the hub's JWKS file.
    #[arg(long, requires = "key_file")]
    pub kid: Option<String>,
    /// Algorithm for the key file: RS256, ES256, ES384 or EdDSA (default: from the key).
    #[arg(long)]
    pub alg: Option<String>,
    /// HMAC secret (at least 32 bytes); used when no key file is given.
    #[arg(long, env = "MT_AUTH_HMAC_SECRET", hide_env_values = true)]
    pub hmac_secret: Option<String>,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    channels: Vec<String>,
}

/// Parses a lifetime: `3600`, `90s`, `15m`, `1h`, `7d`.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, "s"),
    };
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: expected seconds or a number with s, m, h or d (1h)")),
    };
    let number: u64 = number.parse().map_err(|_| format!("{text:?}: expected a number before the unit"))?;
    match number.checked_mul(seconds_per_unit) {
        Some(seconds) if seconds > 0 => Ok(Duration::from_secs(seconds)),
        _ => Err(format!("{text:?}: the lifetime must be positive and reasonable")),
    }
}

/// The token `args` ask for, signed.
pub fn mint(args: &TokenArgs, now: SystemTime) -> anyhow::Result<String> {
    let ttl = parse_ttl(&args.ttl).map_err(anyhow::Error::msg).context("--ttl")?;
    let grants: Grants = args.channels.parse().context("--channels")?;
    let (header, key) = match &args.key_file {
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("cannot read --key-file {}", path.display()))?;
            let algorithm = match &args.alg {
                Some(name) => name
                    .parse::<Algorithm>()
                    .map_err(|_| anyhow::anyhow!("--alg {name}: expected RS256, ES256, ES384 or EdDSA"))?,
                None => algorithm_of_pem(&pem)?,
            };
            let key = match algorithm {
                Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512 => EncodingKey::from_rsa_pem(&pem),
                Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
                Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
                _ => anyhow::bail!("--alg {algorithm:?} needs an HMAC secret, not a key file"),
            }
            .with_context(|| format!("--key-file {} is not a {algorithm:?} private key", path.display()))?;
            let mut header = Header::new(algorithm);
            header.kid = args.kid.clone();
            (header, key)
        }
        None => {
            let secret = args
                .hmac_secret
                .as_deref()
                .filter(|s| !s.is_empty())
                .context("no key: set MT_AUTH_HMAC_SECRET (or --hmac-secret), or give --key-file and --kid")?;
            let secret: HmacSecret =
                secret.parse().map_err(|why: String| anyhow::anyhow!("MT_AUTH_HMAC_SECRET {why}"))?;
            (Header::new(Algorithm::HS256), EncodingKey::from_secret(&secret.0))
        }
    };
    let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let claims = Claims {
        sub: &args.sub,
        aud: args.audience.trim(),
        iat,
        exp: iat + ttl.as_secs(),
        channels: grants.iter().map(Grant::to_string).collect(),
    };
    jsonwebtoken::encode(&header, &claims, &key).context("signing the token")
}

/// The algorithm a PEM private key signs with, from its label (PKCS#8 keys are tried as EC,
/// then Ed25519, then RSA).
fn algorithm_of_pem(pem: &[u8]) -> anyhow::Result<Algorithm> {
    let text = String::from_utf8_lossy(pem);
    if text.contains("BEGIN RSA PRIVATE KEY") {
        return Ok(Algorithm::RS256);
    }
    if text.contains("BEGIN EC PRIVATE KEY") {
        anyhow::bail!(
            "--key-file holds a SEC1 EC key (BEGIN EC PRIVATE KEY); convert it to PKCS#8 with \
             `openssl pkcs8 -topk8 -nocrypt -in old.pem -out key.pem`"
        );
    }
    let probe = |algorithm: Algorithm, key: jsonwebtoken::errors::Result<EncodingKey>| {
        let key = key.ok()?;
        let claims = serde_json::json!({});
        jsonwebtoken::encode(&Header::new(algorithm), &claims, &key).ok().map(|_| algorithm)
    };
    probe(Algorithm::ES256, EncodingKey::from_ec_pem(pem))
        .or_else(|| probe(Algorithm::ES384, EncodingKey::from_ec_pem(pem)))
        .or_else(|| probe(Algorithm::EdDSA, EncodingKey::from_ed_pem(pem)))
        .or_else(|| probe(Algorithm::RS256, EncodingKey::from_rsa_pem(pem)))
        .context("--key-file: not an RSA, EC or Ed25519 private key in PEM; say which with --alg")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes() {
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_ttl("120"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_ttl("2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["", "h", "1y", "0", "-1h", "1.5h"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}

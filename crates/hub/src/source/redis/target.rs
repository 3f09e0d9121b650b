//! Where Redis is: the `REDIS_URL` scheme says how it is laid out (one server, a Sentinel-watched
//! primary, or a Cluster) and whether it speaks TLS; `REDIS_USERNAME`/`REDIS_PASSWORD` and
//! `MT_REDIS_CA_FILE` complete it. [`RedisTarget::client_config`] turns it into fred's
//! configuration. The URL may hold a password, so it is never displayed: [`RedisTarget`]'s
//! `Display` and `Debug` show the layout and the hosts only.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fred::types::config::{Config, ServerConfig, TlsConnector};

/// How the Redis behind the URL is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One server (`redis://`, `rediss://`).
    Standalone,
    /// A primary found through Sentinels (`redis-sentinel://`, `rediss-sentinel://`).
    Sentinel,
    /// A Redis Cluster (`redis-cluster://`, `rediss-cluster://`): sharded pub/sub.
    Cluster,
}

impl Layout {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standalone => "standalone",
            Self::Sentinel => "sentinel",
            Self::Cluster => "cluster",
        }
    }
}

/// The schemes `REDIS_URL` accepts, with the layout and whether they use TLS.
const SCHEMES: [(&str, Layout, bool); 6] = [
    ("redis", Layout::Standalone, false),
    ("rediss", Layout::Standalone, true),
    ("redis-sentinel", Layout::Sentinel, false),
    ("rediss-sentinel", Layout::Sentinel, true),
    ("redis-cluster", Layout::Cluster, false),
    ("rediss-cluster", Layout::Cluster, true),
];

/// A checked `REDIS_URL` and the settings that go with it.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    url: String,
    pub layout: Layout,
    pub tls: bool,
    /// The CA certificates to trust instead of the system's (`MT_REDIS_CA_FILE`).
    pub ca_file: Option<PathBuf>,
    username: Option<String>,
    password: Option<String>,
}

/// Why a Redis setting is unusable; each names the setting at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("expected one of redis://, rediss://, redis-sentinel://, rediss-sentinel://, redis-cluster://, rediss-cluster://; got scheme {0:?}")]
    Scheme(String),
    /// Not echoed: the URL may hold a password.
    #[error("not a Redis URL the client accepts ({0})")]
    Unparsable(String),
    #[error("redis-sentinel:// needs ?sentinelServiceName=<the primary's name>")]
    NoServiceName,
    #[error("set, but REDIS_URL does not use TLS (rediss://, rediss-sentinel://, rediss-cluster://)")]
    CaWithoutTls,
    #[error("cannot read {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

impl TargetError {
    /// The setting at fault.
    pub fn setting(&self) -> &'static str {
        match self {
            Self::CaWithoutTls | Self::CaFile { .. } => "MT_REDIS_CA_FILE",
            Self::Scheme(_) | Self::Unparsable(_) | Self::NoServiceName | Self::Tls(_) => "REDIS_URL",
        }
    }
}

impl RedisTarget {
    /// Checks the URL and the settings that go with it (read once, at start-up).
    pub fn new(
        url: &str,
        username: Option<String>,
        password: Option<String>,
        ca_file: Option<PathBuf>,
    ) -> Result<Self, TargetError> {
        let url = url.trim();
        let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
        let Some(&(_, layout, tls)) = SCHEMES.iter().find(|(known, _, _)| scheme.eq_ignore_ascii_case(known)) else {
            return Err(TargetError::Scheme(scheme.chars().take(32).collect()));
        };
        if layout == Layout::Sentinel && !url.contains("sentinelServiceName=") {
            return Err(TargetError::NoServiceName);
        }
        let blank = |value: Option<String>| value.filter(|v| !v.is_empty());
        let target =
            Self { url: url.to_owned(), layout, tls, ca_file, username: blank(username), password: blank(password) };
        if target.ca_file.is_some() && !tls {
            return Err(TargetError::CaWithoutTls);
        }
        target.client_config()?;
        Ok(target)
    }

    /// fred's configuration: the URL, credentials from the settings where the URL has none, and
    /// TLS trusting `MT_REDIS_CA_FILE` (else the system's roots).
    pub fn client_config(&self) -> Result<Config, TargetError> {
        let mut config = Config::from_url(&self.url).map_err(|e| TargetError::Unparsable(e.details().to_owned()))?;
        if config.username.is_none() {
            config.username.clone_from(&self.username);
        }
        if config.password.is_none() {
            config.password.clone_from(&self.password);
        }
        if let ServerConfig::Sentinel { username, password, .. } = &mut config.server {
            // Sentinels share the data nodes' credentials unless the URL gives them their own.
            if username.is_none() && password.is_none() && config.password.is_some() {
                username.clone_from(&config.username);
                password.clone_from(&config.password);
            }
        }
        if self.tls {
            config.tls = Some(tls_connector(self.ca_file.as_deref())?.into());
        }
        Ok(config)
    }

    /// Where the credentials come from, for the start-up line (never what they are).
    pub fn credentials(&self) -> &'static str {
        let rest = self.url.split_once("://").map_or("", |(_, rest)| rest);
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let password_in_url = authority
            .rsplit_once('@')
            .and_then(|(userinfo, _)| userinfo.split_once(':'))
            .is_some_and(|(_, password)| !password.is_empty());
        match (password_in_url, self.password.is_some()) {
            (true, _) => "password from REDIS_URL",
            (false, true) => "password from REDIS_PASSWORD",
            (false, false) => "no password",
        }
    }

    /// The hosts named in the URL (no credentials), for logs.
    pub fn hosts(&self) -> String {
        let rest = self.url.split_once("://").map_or("", |(_, rest)| rest);
        let rest = rest.rsplit_once('@').map_or(rest, |(_, hosts)| hosts);
        let first = rest.split(['/', '?']).next().unwrap_or_default();
        let seeds = rest
            .split_once('?')
            .map(|(_, query)| query.split('&').filter_map(|kv| kv.strip_prefix("node=")).collect::<Vec<_>>())
            .unwrap_or_default();
        std::iter::once(first).chain(seeds).collect::<Vec<_>>().join(",")
    }
}

impl fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{} {}", self.layout.as_str(), if self.tls { "+tls" } else { "" }, self.hosts())
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisTarget({self})")
    }
}

fn tls_connector(ca_file: Option<&Path>) -> Result<TlsConnector, TargetError> {
    let Some(path) = ca_file else {
        return TlsConnector::default_rustls().map_err(|e| TargetError::Tls(e.details().to_owned()));
    };
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let ca_error = |reason: String| TargetError::CaFile { path: path.display().to_string(), reason };
    let mut roots = rustls::RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(path).map_err(|e| ca_error(e.to_string()))?;
    for certificate in certificates {
        let certificate = certificate.map_err(|e| ca_error(e.to_string()))?;
        roots.add(certificate).map_err(|e| ca_error(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(ca_error("no PEM certificate in it".to_owned()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TargetError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Result<RedisTarget, TargetError> {
        RedisTarget::new(url, None, None, None)
    }

    #[test]
    fn schemes_give_the_layout() {
        assert_eq!(target("redis://127.0.0.1:6379").unwrap().layout, Layout::Standalone);
        let cluster = target("redis-cluster://10.0.0.1:7000?node=10.0.0.2:7000&node=10.0.0.3:7000").unwrap();
        assert_eq!(cluster.layout, Layout::Cluster);
        assert_eq!(cluster.to_string(), "cluster 10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000");
        let sentinel = target("redis-sentinel://s1:26379?node=s2:26379&sentinelServiceName=primary").unwrap();
        assert_eq!(sentinel.layout, Layout::Sentinel);
        assert!(target("rediss://cache.example:6380").unwrap().tls);
    }

    #[test]
    fn bad_urls_name_the_setting_and_never_echo_a_password() {
        for (url, expected) in [
            ("http://user:hunter2hunter2@x:1", "expected one of"),
            ("redis-sentinel://user:hunter2hunter2@s1:26379", "sentinelServiceName"),
            ("redis://user:hunter2hunter2@host:notaport", "not a Redis URL"),
        ] {
            let error = target(url).unwrap_err();
            assert_eq!(error.setting(), "REDIS_URL");
            let error = error.to_string();
            assert!(error.contains(expected), "{url}: {error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn credentials_come_from_the_settings_when_the_url_has_none() {
        let with_env = RedisTarget::new("redis://h:1", Some("app".into()), Some("s3cret".into()), None).unwrap();
        let config = with_env.client_config().unwrap();
        assert_eq!((config.username.as_deref(), config.password.as_deref()), (Some("app"), Some("s3cret")));
        let in_url = RedisTarget::new("redis://u:p@h:1", None, Some("other".into()), None).unwrap();
        assert_eq!(in_url.client_config().unwrap().password.as_deref(), Some("p"));
        assert!(!format!("{with_env} {with_env:?} {in_url:?}").contains("s3cret"));
        assert_eq!(
            (with_env.credentials(), in_url.credentials()),
            ("password from REDIS_PASSWORD", "password from REDIS_URL")
        );
        let user_only = RedisTarget::new("redis://app@h:1?x=a@b", None, Some("pw".into()), None).unwrap();
        assert_eq!(user_only.credentials(), "password from REDIS_PASSWORD");
        assert_eq!(target("redis://h:1").unwrap().credentials(), "no password");
        assert_eq!(target("rediss://h:1").unwrap().to_string(), "standalone+tls h:1");
        assert!(!format!("{in_url}").contains("u:p"));
    }

    #[test]
    fn a_ca_file_needs_tls_and_must_hold_a_certificate() {
        let ca = Some(PathBuf::from("/nonexistent/ca.pem"));
        assert_eq!(RedisTarget::new("redis://h:1", None, None, ca.clone()), Err(TargetError::CaWithoutTls));
        let error = RedisTarget::new("rediss://h:1", None, None, ca).unwrap_err();
        assert_eq!(error.setting(), "MT_REDIS_CA_FILE");
        assert!(error.to_string().starts_with("cannot read /nonexistent/ca.pem"), "{error}");
    }
}

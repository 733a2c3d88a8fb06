//! The local binary's configuration: one TOML file (or generated dev
//! defaults) plus env overrides, checked at start with every problem listed.

use crate::error::Error;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use hookcast_core::config::{Config, RawConfig, RawForm, RawLimits, RawPrivate, RawSource};
use hookcast_core::senders::{BodyShape, SecretForm, SPECS};
use rand::RngCore;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    bind: Option<String>,
    port: Option<u16>,
    data_dir: Option<PathBuf>,
    /// Open connections (sockets and HTTP) at most; more get a 503.
    max_connections: Option<usize>,
    /// Serve HTTPS/WSS with this PEM certificate chain and key.
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

/// The file's shape: `[server]` for this binary, the rest shared with Lambda.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    allowed_origins: Vec<String>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    sources: BTreeMap<String, RawSource>,
    #[serde(default)]
    private: Option<RawPrivate>,
    /// Channel pattern → `last`, `merge` or `list:N`.
    #[serde(default)]
    state: BTreeMap<String, String>,
}

/// Command-line values, which win over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub bind: Option<String>,
    pub port: Option<u16>,
    pub data_dir: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug)]
pub struct Settings {
    pub bind: IpAddr,
    pub port: u16,
    pub data_dir: PathBuf,
    pub core: Config,
    /// Open WebSocket/SSE clients at most (HTTP connections: `net.max_connections`).
    pub max_connections: usize,
    /// How often an idle WebSocket is pinged, and how long without hearing
    /// anything from it (a pong included) before it is taken for vanished.
    pub ping_every: std::time::Duration,
    pub idle_limit: std::time::Duration,
    /// Network deadlines (request heads, stalled writes, shutdown).
    pub net: crate::net::NetLimits,
    /// HTTPS and WSS, when a certificate is configured.
    pub tls: Option<crate::net::Tls>,
}

impl std::fmt::Debug for crate::net::Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

pub fn load_file(path: &Path, cli: &Overrides) -> Result<Settings, Error> {
    load(path, cli).map_err(Error::Config)
}

fn load(path: &Path, cli: &Overrides) -> Result<Settings, String> {
    build(read(path)?, cli)
}

/// The file's shared part (everything but `[server]`), as both hosts read
/// it: what `hookcast check --aws` and `hookcast secrets` look at.
pub fn read_shared(path: &Path) -> Result<RawConfig, Error> {
    let file = read(path).map_err(Error::Config)?;
    Ok(RawConfig {
        allowed_origins: file.allowed_origins,
        limits: file.limits,
        sources: file.sources,
        private: file.private,
        state: file.state,
    })
}

fn read(path: &Path) -> Result<File, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (write one: see docs/configuration.md; or run `hookcast dev` for the demo with generated secrets)"
        } else {
            ""
        };
        format!("cannot read {}: {e}{hint}", path.display())
    })?;
    toml::from_str(&text).map_err(|e| toml_error(path, &text, &e))
}

/// Where and what, without the offending line: it may hold a secret.
fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> String {
    let at = e.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!(" line {line}, column {column}")
    });
    // A top-level key written after a [table] lands in that table.
    let table = e.span().and_then(|span| {
        text[..span.start.min(text.len())]
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix('[').and_then(|l| l.split(']').next()).map(str::to_owned))
    });
    let hint = match table {
        Some(t) if e.message().contains("unknown field") => {
            format!(" (this key is inside [{t}]; top-level keys such as allowed_origins go above the first [table])")
        }
        _ => String::new(),
    };
    format!("{}{}: {}{hint}", path.display(), at.unwrap_or_default(), e.message().trim_end())
}

fn build(file: File, cli: &Overrides) -> Result<Settings, String> {
    let env = |k: &str| std::env::var(k).ok();
    let mut problems = Vec::new();
    let bind_text = cli.bind.clone().or(file.server.bind).unwrap_or_else(|| "127.0.0.1".into());
    let bind = bind_text.parse::<IpAddr>().map_err(|_| problems.push(format!("server.bind {bind_text:?} is not an IP address")));
    let raw = RawConfig {
        allowed_origins: file.allowed_origins,
        limits: file.limits,
        sources: file.sources,
        private: file.private,
        state: file.state,
    };
    let core = Config::build(raw, &env).map_err(|e| problems.extend(e.problems));
    let (default_sockets, http_cap) = crate::net::default_caps();
    let max_connections = file.server.max_connections.unwrap_or(default_sockets);
    let tls = match (cli.tls_cert.clone().or(file.server.tls_cert), cli.tls_key.clone().or(file.server.tls_key)) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            crate::net::Tls::from_files(&cert, &key).map_err(|e| problems.push(format!("server.{e}"))).ok()
        }
        _ => {
            problems.push("server.tls_cert and server.tls_key go together: set both, or neither".into());
            None
        }
    };
    if max_connections == 0 {
        problems.push("server.max_connections must be greater than 0".into());
    }
    if !problems.is_empty() {
        return Err(format!("invalid configuration:\n  - {}", problems.join("\n  - ")));
    }
    Ok(Settings {
        bind: bind.expect("checked above"),
        port: cli.port.or(file.server.port).unwrap_or(8787),
        data_dir: cli.data_dir.clone().or(file.server.data_dir).unwrap_or_else(|| ".hookcast".into()),
        core: core.expect("checked above"),
        max_connections,
        ping_every: std::time::Duration::from_secs(30),
        idle_limit: std::time::Duration::from_secs(75),
        net: crate::net::NetLimits { max_connections: http_cap, ..Default::default() },
        tls,
    })
}

/// Secrets `hookcast dev` generated; kept in the data dir so they survive restarts.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct DevSecrets {
    pub netlify: String,
    pub zapier: String,
    pub hmac: String,
    pub standard: String,
}

fn random_secret(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl DevSecrets {
    /// Reads the secrets kept in `data_dir`, or makes and keeps new ones.
    /// A file that exists but cannot be read is an error, never silently
    /// replaced: senders configured with the old secrets would stop working.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, Error> {
        Self::load_or_make(data_dir).map_err(Error::DataDir)
    }

    fn load_or_make(data_dir: &Path) -> Result<Self, String> {
        let path = data_dir.join("dev-secrets.json");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                return serde_json::from_str(&text)
                    .map_err(|_| format!("{} is not valid (edit it, or delete it to generate new dev secrets)", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
        use base64::Engine;
        let mut raw = [0u8; 24];
        rand::rng().fill_bytes(&mut raw);
        let s = DevSecrets {
            netlify: random_secret(16),
            zapier: random_secret(16),
            hmac: random_secret(16),
            standard: format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(raw)),
        };
        write_private(&path, serde_json::to_string_pretty(&s).expect("serialises").as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(s)
    }
}

/// Creates `path` readable by its owner only (0600), before any byte is written.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// What `hookcast dev`'s `hmac`, `zapier` and `standard` sources forward:
/// the demo site's fields (a title and link, a counter, a scoreboard). Every
/// other field is dropped, as in any configuration: no field leaves unless
/// it is named.
pub const DEV_FIELDS: &[&str] = &["title", "url", "message", "n", "home", "away", "period", "teams"];

/// `hookcast dev` without a config file: one source of each kind.
pub fn dev_settings(secrets: &DevSecrets, cli: &Overrides) -> Result<Settings, Error> {
    let src = |kind: &str, secret: &str, channels: Option<Vec<String>>| RawSource {
        kind: kind.into(),
        secret: Some(secret.into()),
        channels,
        fields: hookcast_core::config::KINDS_NEEDING_FIELDS
            .contains(&kind)
            .then(|| DEV_FIELDS.iter().map(|f| f.to_string()).collect()),
        ..Default::default()
    };
    let any = || Some(vec!["*".to_string()]);
    let mut netlify = src("netlify", &secrets.netlify, None);
    netlify.forms.insert("guestbook".into(), RawForm { fields: vec!["name".into(), "message".into()], channel: None });
    let mut sources = BTreeMap::new();
    sources.insert("netlify".into(), netlify);
    sources.insert("zapier".into(), src("token", &secrets.zapier, any()));
    sources.insert("hmac".into(), src("hmac", &secrets.hmac, any()));
    sources.insert("standard".into(), src("standard", &secrets.standard, any()));
    // Each sender's own kind, to try with `hookcast send --kind <kind>`: the
    // signing senders share the hmac secret (Stripe's with whsec_ before
    // it, as Stripe's are), Svix the standard one, Strapi
    // the Zapier token. Each publishes to the channel of its name.
    for kind in SPECS.iter().filter(|k| matches!(k.body, BodyShape::Native)) {
        let prefixed;
        let secret = match kind.secret {
            SecretForm::Key => &secrets.hmac,
            SecretForm::Prefixed(p) => {
                prefixed = format!("{p}{}", secrets.hmac);
                &prefixed
            }
            SecretForm::Whsec => &secrets.standard,
            SecretForm::Token => &secrets.zapier,
        };
        sources.insert(kind.name.into(), src(kind.name, secret, None));
    }
    // The demo's channels keep a state: a page opened (or reloaded) after
    // the events shows them.
    let state = [("deploys", "last"), ("scoreboard", "merge"), ("forms/*", "list:20")]
        .into_iter()
        .map(|(c, m)| (c.to_owned(), m.to_owned()))
        .collect();
    build(File { sources, state, ..Default::default() }, cli).map_err(Error::Config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_problems_are_listed_together() {
        let file: File = toml::from_str(
            r#"
            allowed_origins = ["example.com"]
            [server]
            bind = "localhost:80"
            [sources.netlify]
            kind = "netlify"
            [sources.zap]
            kind = "token"
            secret = "x"
            "#,
        )
        .unwrap();
        let err = build(file, &Overrides::default()).unwrap_err();
        for needle in [
            "server.bind",
            "allowed_origins",
            "sources.netlify: no secret",
            "sources.zap: set channels",
            "sources.zap.fields: a token",
        ] {
            assert!(err.contains(needle), "{needle} missing from {err}");
        }
    }

    /// A token source that names no fields does not start, and says which
    /// source and what to write; with them, it starts.
    #[test]
    fn a_token_source_without_fields_fails_to_start_naming_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookcast.toml");
        let zapier = "[sources.zapier]\nkind = \"token\"\nsecret = \"zapier-token-0123456789\"\nchannels = [\"zaps/*\"]\n";
        std::fs::write(&path, zapier).unwrap();
        let e = load_file(&path, &Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("sources.zapier.fields: a token source must name the fields"), "{e}");
        assert!(e.contains("fields = [\"title\", \"url\"]") && !e.contains("zapier-token-0123456789"), "{e}");
        std::fs::write(&path, format!("{zapier}fields = [\"title\", \"url\"]\n")).unwrap();
        load_file(&path, &Overrides::default()).unwrap();
    }

    /// `hookcast dev`'s generated sources start: the ones that must name
    /// their fields name the demo's.
    #[test]
    fn dev_settings_start_with_named_fields() {
        let dir = tempfile::tempdir().unwrap();
        let s = dev_settings(&DevSecrets::load_or_create(dir.path()).unwrap(), &Overrides::default()).unwrap();
        for name in ["zapier", "hmac", "standard"] {
            assert_eq!(s.core.sources[name].fields.as_deref().map(<[String]>::len), Some(DEV_FIELDS.len()), "{name}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let e = toml::from_str::<File>("[server]\nprot = 1\n").unwrap_err().to_string();
        assert!(e.contains("prot"), "{e}");
    }

    #[test]
    fn toml_errors_never_show_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookcast.toml");
        std::fs::write(&path, "[sources.n]\nkind = \"netlify\"\nsecret = \"hunter2-very-secret\" trailing\n").unwrap();
        let e = load_file(&path, &Overrides::default()).unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e:?}");
        let e = e.to_string();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("line 3, column"), "{e}");
    }

    #[test]
    fn a_top_level_key_after_a_table_says_where_it_landed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookcast.toml");
        std::fs::write(&path, "[server]\nport = 8787\nallowed_origins = [\"https://a.example\"]\n").unwrap();
        let e = load_file(&path, &Overrides::default()).unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("inside [server]") && e.contains("above the first [table]"), "{e}");
        let e = load_file(&dir.path().join("missing.toml"), &Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("hookcast dev"), "{e}");
    }

    #[test]
    fn dev_secrets_are_private_and_never_silently_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let first = DevSecrets::load_or_create(dir.path()).unwrap();
        let path = dir.path().join("dev-secrets.json");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(DevSecrets::load_or_create(dir.path()).unwrap().netlify, first.netlify);
        std::fs::write(&path, "{ not json").unwrap();
        let e = DevSecrets::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(e, Error::DataDir(_)), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("is not valid"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{ not json", "left as it was");
    }

    #[test]
    fn cli_overrides_file() {
        let file: File = toml::from_str("[server]\nport = 9000\nbind = \"0.0.0.0\"\n").unwrap();
        let s = build(file, &Overrides { port: Some(1234), ..Default::default() }).unwrap();
        assert_eq!((s.port, s.bind.to_string()), (1234, "0.0.0.0".to_string()));
    }
}

//! The local binary's configuration: one TOML file (or generated dev
//! defaults) plus env overrides, checked at start with every problem listed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use hookcast_core::config::{Config, RawConfig, RawForm, RawLimits, RawSource};
use rand::RngCore;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    bind: Option<String>,
    port: Option<u16>,
    data_dir: Option<PathBuf>,
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
}

/// Command-line values, which win over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub bind: Option<String>,
    pub port: Option<u16>,
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug)]
pub struct Settings {
    pub bind: IpAddr,
    pub port: u16,
    pub data_dir: PathBuf,
    pub core: Config,
}

pub fn load_file(path: &Path, cli: &Overrides) -> Result<Settings, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file: File = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    build(file, cli)
}

fn build(file: File, cli: &Overrides) -> Result<Settings, String> {
    let env = |k: &str| std::env::var(k).ok();
    let mut problems = Vec::new();
    let bind_text = cli.bind.clone().or(file.server.bind).unwrap_or_else(|| "127.0.0.1".into());
    let bind = bind_text.parse::<IpAddr>().map_err(|_| problems.push(format!("server.bind {bind_text:?} is not an IP address")));
    let raw = RawConfig { allowed_origins: file.allowed_origins, limits: file.limits, sources: file.sources };
    let core = Config::build(raw, &env).map_err(|e| problems.extend(e.problems));
    if !problems.is_empty() {
        return Err(format!("invalid configuration:\n  - {}", problems.join("\n  - ")));
    }
    Ok(Settings {
        bind: bind.expect("checked above"),
        port: cli.port.or(file.server.port).unwrap_or(8787),
        data_dir: cli.data_dir.clone().or(file.server.data_dir).unwrap_or_else(|| ".hookcast".into()),
        core: core.expect("checked above"),
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
    pub fn load_or_create(data_dir: &Path) -> Result<Self, String> {
        let path = data_dir.join("dev-secrets.json");
        if let Ok(text) = std::fs::read_to_string(&path) {
            if let Ok(s) = serde_json::from_str(&text) {
                return Ok(s);
            }
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
        std::fs::write(&path, serde_json::to_string_pretty(&s).expect("serialises"))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(s)
    }
}

/// `hookcast dev` without a config file: one source of each kind.
pub fn dev_settings(secrets: &DevSecrets, cli: &Overrides) -> Result<Settings, String> {
    let src = |kind: &str, secret: &str, channels: Option<Vec<String>>| RawSource {
        kind: kind.into(),
        secret: Some(secret.into()),
        channels,
        ..Default::default()
    };
    let any = || Some(vec!["*".to_string()]);
    let mut netlify = src("netlify", &secrets.netlify, None);
    netlify.forms.insert("guestbook".into(), RawForm { fields: vec!["name".into(), "message".into()] });
    let mut sources = BTreeMap::new();
    sources.insert("netlify".into(), netlify);
    sources.insert("zapier".into(), src("token", &secrets.zapier, any()));
    sources.insert("hmac".into(), src("hmac", &secrets.hmac, any()));
    sources.insert("standard".into(), src("standard", &secrets.standard, any()));
    build(File { sources, ..Default::default() }, cli)
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
        for needle in ["server.bind", "allowed_origins", "sources.netlify: no secret", "sources.zap: set channels"] {
            assert!(err.contains(needle), "{needle} missing from {err}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let e = toml::from_str::<File>("[server]\nprot = 1\n").unwrap_err().to_string();
        assert!(e.contains("prot"), "{e}");
    }

    #[test]
    fn cli_overrides_file() {
        let file: File = toml::from_str("[server]\nport = 9000\nbind = \"0.0.0.0\"\n").unwrap();
        let s = build(file, &Overrides { port: Some(1234), ..Default::default() }).unwrap();
        assert_eq!((s.port, s.bind.to_string()), (1234, "0.0.0.0".to_string()));
    }
}

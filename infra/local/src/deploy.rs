//! One `hookcast.toml` for both hosts: `hookcast check` reads it as `serve`
//! does, or (`--aws`) as the AWS stack's functions will once it is their
//! config layer, with the same messages; `hookcast secrets` prints the
//! secrets the local binary finds for it as the JSON the stack's
//! SenderSecrets secret holds (`hookcast secrets | aws secretsmanager
//! put-secret-value --secret-id … --secret-string file:///dev/stdin`).

use std::collections::BTreeMap;
use std::path::Path;

use hookcast_core::config::{secret_env_name, source_secret, written_secrets, Config, RawConfig};

use crate::error::Error;
use crate::settings::{self, Overrides};

/// A secret of a shape every kind takes (Standard Webhooks' `whsec_` and
/// base64): on AWS the secrets are the stack's, not the file's.
const STAND_IN: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// What `hookcast check` prints on success: the file is usable.
pub fn check(path: &Path, aws: bool) -> Result<String, Error> {
    if !aws {
        let s = settings::load_file(path, &Overrides::default())?;
        return Ok(format!("{}: ready for hookcast serve: {}", path.display(), summary(&s.core)));
    }
    let raw = settings::read_shared(path)?;
    let mut problems = written_secrets(&raw);
    if raw.allowed_origins.is_empty() {
        problems.push(
            "allowed_origins is empty: list your site's origins (allowed_origins = [\"https://example.netlify.app\"]) or \
             set the stack's AllowedOrigins parameter; [\"*\"] allows any site"
                .into(),
        );
    }
    let names: Vec<String> = raw.sources.keys().cloned().collect();
    let built = Config::build(raw, &|_: &str| Some(STAND_IN.to_owned())).map_err(|e| problems.extend(e.problems)).ok();
    match built {
        Some(core) if problems.is_empty() => Ok(format!(
            "{}: ready for the AWS stack: {}\nthe stack's SenderSecrets secret needs: {} (`hookcast secrets --config {}` prints them)",
            path.display(),
            summary(&core),
            if names.is_empty() { "nothing".to_owned() } else { names.join(", ") },
            path.display()
        )),
        _ => Err(Error::Config(format!("{}: not ready for the AWS stack:\n  - {}", path.display(), problems.join("\n  - ")))),
    }
}

/// Every source's secret as this machine has it, as the JSON object of
/// source name to secret the AWS stack reads.
pub fn secrets(path: &Path) -> Result<String, Error> {
    let raw = settings::read_shared(path)?;
    let found = secrets_of(&raw, &|k: &str| std::env::var(k).ok()).map_err(|problems| {
        Error::Config(format!("{}: a secret is missing:\n  - {}", path.display(), problems.join("\n  - ")))
    })?;
    // Each one as the stack's functions will judge it (Stripe's whsec_,
    // Standard Webhooks' form, the length): none the stack would refuse.
    let by_var: BTreeMap<String, &String> = found.iter().map(|(name, v)| (secret_env_name(name), v)).collect();
    let lookup = |k: &str| Some(by_var.get(k).map_or_else(|| STAND_IN.to_owned(), |v| v.to_string()));
    let mut judged = raw;
    for source in judged.sources.values_mut() {
        (source.secret, source.secret_env) = (None, None);
    }
    Config::build(judged, &lookup).map_err(|e| {
        Error::Config(format!("{}: the stack would refuse these secrets:\n  - {}", path.display(), e.problems.join("\n  - ")))
    })?;
    Ok(serde_json::to_string(&found).unwrap_or_default())
}

/// Source name → its secret, as this machine finds each; or every problem.
fn secrets_of(raw: &RawConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<BTreeMap<String, String>, Vec<String>> {
    let mut out = BTreeMap::new();
    let mut problems = vec![];
    for (name, source) in &raw.sources {
        match source_secret(name, source, env) {
            Ok(secret) => {
                out.insert(name.clone(), secret);
            }
            Err(p) => problems.extend(p),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn summary(core: &Config) -> String {
    let kinds: Vec<String> = core.sources.values().map(|s| format!("{} ({})", s.name, s.kind_name())).collect();
    format!(
        "{} source{} [{}], {} private channel pattern{}, {} state rule{}",
        kinds.len(),
        if kinds.len() == 1 { "" } else { "s" },
        kinds.join(", "),
        core.private.as_ref().map_or(0, |p| p.channels.len()),
        if core.private.as_ref().map_or(0, |p| p.channels.len()) == 1 { "" } else { "s" },
        core.state.len(),
        if core.state.len() == 1 { "" } else { "s" },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawConfig {
        toml::from_str(text).unwrap()
    }

    /// The secrets as the local binary finds them, precedence and all; a
    /// missing one names its variable.
    #[test]
    fn the_secrets_json_is_what_the_local_binary_verifies_with() {
        let cfg = raw(
            "[sources.gh]\nkind = \"github\"\nsecret_env = \"GH_SECRET\"\n[sources.n]\nkind = \"netlify\"\nsecret = \"inline-0123456789abc\"\n\
             [sources.z]\nkind = \"token\"\nheader = \"x-t\"\nchannels = [\"z/*\"]\nsecret_env = \"Z_TOKEN\"\n",
        );
        let env = |k: &str| match k {
            "GH_SECRET" => Some("from-gh-secret-0123456789".to_owned()),
            "HOOKCAST_SECRET_Z" => Some("override-0123456789abcdef".to_owned()),
            "Z_TOKEN" => Some("not-this-one-0123456789".to_owned()),
            _ => None,
        };
        let json = serde_json::to_value(secrets_of(&cfg, &env).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"gh": "from-gh-secret-0123456789", "n": "inline-0123456789abc", "z": "override-0123456789abcdef"})
        );
        let problems = secrets_of(&cfg, &|_| None).unwrap_err();
        assert!(problems.iter().any(|p| p.contains("GH_SECRET is not set")), "{problems:?}");
        assert_eq!(problems.len(), 2, "gh and z, not n: {problems:?}");
    }

    /// Before `sam deploy`: what the functions would refuse at their cold
    /// start is refused here, with the same words; the file the local
    /// binary runs, `[server]` and `secret_env` included, is ready as is.
    #[test]
    fn check_for_aws_gives_the_stacks_messages_before_the_deploy() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hookcast.toml");
        std::fs::write(
            &file,
            "[server]\nport = 9000\n[sources.gh]\nkind = \"github\"\nsecret = \"inline-0123456789abcdef\"\n[private]\nchannels = [\"a b\"]\n",
        )
        .unwrap();
        let e = check(&file, true).unwrap_err().to_string();
        assert!(e.contains("sources.gh.secret: a secret may not be written into the configuration on AWS"), "{e}");
        assert!(e.contains("allowed_origins is empty"), "{e}");
        assert!(e.contains("private.channels"), "the core's own checks too: {e}");
        assert!(!e.contains("inline-0123456789abcdef"), "a secret is echoed: {e}");
        std::fs::write(
            &file,
            "allowed_origins = [\"https://a.example\"]\n[server]\nport = 9000\n[sources.gh]\nkind = \"github\"\nsecret_env = \"NOT_SET_HERE\"\n",
        )
        .unwrap();
        let ok = check(&file, true).unwrap();
        assert!(
            ok.contains("ready for the AWS stack: 1 source [gh (github)]") && ok.contains("SenderSecrets secret needs: gh"),
            "{ok}"
        );
        // The same file locally needs its secret on this machine.
        assert!(check(&file, false).unwrap_err().to_string().contains("NOT_SET_HERE is not set"));
    }

    /// `hookcast secrets` prints nothing the stack would refuse: a Stripe
    /// secret without its whsec_ is named, its value not shown.
    #[test]
    fn secrets_the_stack_would_refuse_are_not_printed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hookcast.toml");
        std::fs::write(&file, "[sources.billing]\nkind = \"stripe\"\nsecret = \"not-whsec-0123456789abcdef\"\n").unwrap();
        let e = secrets(&file).unwrap_err().to_string();
        assert!(e.contains("sources.billing.secret: a Stripe endpoint's signing secret starts with whsec_"), "{e}");
        assert!(!e.contains("not-whsec-0123456789abcdef"), "{e}");
        std::fs::write(&file, "[sources.billing]\nkind = \"stripe\"\nsecret = \"whsec_0123456789abcdef\"\n").unwrap();
        assert_eq!(secrets(&file).unwrap(), r#"{"billing":"whsec_0123456789abcdef"}"#);
    }
}

//! Lambda configuration from the environment, through the same typed schema
//! the local binary reads from TOML. Every problem is listed at once.

use std::collections::BTreeMap;

use hookcast_core::config::{Config, ConfigError, RawConfig, RawPrivate, PRIVATE_SECRET_ENV};

/// Which function is starting: each reads only what it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `POST /hooks/…`, history, the snippet: the table and the sources with
    /// their secrets, and the subscribe secret (history of private channels).
    Webhook,
    /// `$connect`, `$disconnect`: the table and `@connections`; no secret.
    Connection,
    /// subscribe, unsubscribe, occupancy, `$default`: the table,
    /// `@connections` and the subscribe secret (tokens for private channels).
    Message,
    /// Stream → SQS: the queue and the shard count.
    Dispatch,
    /// SQS → `@connections`: the table, `@connections` and the queue (retries).
    Fanout,
}

#[derive(Debug)]
pub struct LambdaConfig {
    pub table: String,
    /// The Management API endpoint: `https://{api}.execute-api.{region}.amazonaws.com/{stage}`.
    pub ws_endpoint: String,
    /// The fan-out SQS FIFO queue's URL.
    pub queue_url: String,
    pub shards: u32,
    /// PostToConnection calls per second per fan-out instance (the stack caps
    /// instances, so this sets the share of the account's quota).
    pub posts_per_second: u32,
    /// Fan-out workers at most (the SQS event source's MaximumConcurrency):
    /// with `posts_per_second`, the whole share a worker posting alone may use.
    pub fanout_workers: u32,
    /// The edge option's origin secret (`HOOKCAST_EDGE_SECRET`): requests
    /// without it are refused, and with it the viewer's address counts
    /// ([`crate::edge`]).
    pub edge_secret: Option<String>,
    pub core: Config,
    /// Sources with no secret in the stack's secrets yet, each with why:
    /// the webhook function refuses their deliveries (503) saying so.
    pub unready: BTreeMap<String, String>,
}

/// A secret of a shape every kind takes (Standard Webhooks' `whsec_` and
/// base64), for a source whose real secret this function never uses.
const STAND_IN: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Where Lambda extracts the stack's config layer (template.yaml's
/// `ConfigLayer`): the site's `hookcast.toml`, the same file the local
/// binary runs.
pub const CONFIG_DIR: &str = "/opt";
/// The lookup key under which [`crate::Startup::load`] hands
/// [`LambdaConfig::from_env`] the config layer's `hookcast.toml`.
pub const CONFIG_FILE_KEY: &str = "@hookcast.toml";

/// The configuration: the config layer's `hookcast.toml` (its `[server]`
/// section is the local binary's and is not read here), or the TOML text in
/// `HOOKCAST_CONFIG` (a function deployed without the layer); never both.
fn read_config(env: &dyn Fn(&str) -> Option<String>, problems: &mut Vec<String>) -> RawConfig {
    let inline = env("HOOKCAST_CONFIG").filter(|v| !v.trim().is_empty());
    let (name, text) = match (env(CONFIG_FILE_KEY), inline) {
        (Some(_), Some(_)) => {
            problems.push(
                "HOOKCAST_CONFIG is set beside the config layer's hookcast.toml: the configuration is the file \
                 alone; remove HOOKCAST_CONFIG (the stack's SourcesConfig)"
                    .into(),
            );
            return RawConfig::default();
        }
        (Some(file), None) => ("hookcast.toml", file),
        (None, Some(inline)) => ("HOOKCAST_CONFIG", inline),
        (None, None) => return RawConfig::default(),
    };
    let parsed = toml::from_str::<toml::Table>(&text).map_err(|e| located(&text, &e)).and_then(|mut table| {
        table.remove("server");
        serde::Deserialize::deserialize(toml::Value::Table(table)).map_err(|e: toml::de::Error| located(&text, &e))
    });
    parsed.unwrap_or_else(|e| {
        problems.push(format!("{name}: {}", e.trim_end()));
        RawConfig::default()
    })
}

/// Where and what, never the offending line (toml's own rendering shows
/// it, and it may hold a secret: the function's log would keep it).
fn located(text: &str, e: &toml::de::Error) -> String {
    let at = e.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("line {}, column {column}: ", before.matches('\n').count() + 1)
    });
    format!("{}{}", at.unwrap_or_default(), e.message().trim_end())
}

/// A source with no secret where the stack keeps them (a stack just
/// deployed, before `SenderSecrets` is filled): the function still starts,
/// and that source's deliveries are refused with where its secret goes
/// ([`LambdaConfig::unready`]); the snippet, history and every other source
/// go on. Its `secret_env` names a variable of the laptop, which no function
/// has; the source stands in for itself so the build adds no message.
fn missing_secrets(raw: &mut RawConfig, env: &dyn Fn(&str) -> Option<String>) -> BTreeMap<String, (String, String)> {
    let mut missing = BTreeMap::new();
    for (name, source) in &mut raw.sources {
        let var = hookcast_core::config::secret_env_name(name);
        if source.secret.is_none() && env(&var).filter(|v| !v.is_empty()).is_none() {
            let why = format!(
                "sources.{name}: no secret in the stack's secrets; put it under \"{name}\" in the SenderSecrets secret \
                 (`hookcast secrets --config hookcast.toml` prints them all as its JSON; docs/deploy-aws.md)"
            );
            source.secret_env = None;
            missing.insert(name.clone(), (var, why));
        }
    }
    missing
}

impl LambdaConfig {
    /// `HOOKCAST_TABLE`, `HOOKCAST_WS_ENDPOINT` required (and the queue
    /// for the pipeline's functions); the configuration from the config
    /// layer's `hookcast.toml` ([`CONFIG_FILE_KEY`]) or, without the layer,
    /// the TOML in `HOOKCAST_CONFIG`; `HOOKCAST_ALLOWED_ORIGINS` (wins over
    /// the file's), `HOOKCAST_PRIVATE_CHANNELS` and `HOOKCAST_STATE` (set by
    /// no template since the layer; kept for a function deployed without it)
    /// and `HOOKCAST_SHARDS` optional. The sources' secrets from
    /// `HOOKCAST_SECRET_<SOURCE>` (the stack's secrets, by source name; a
    /// source without one is [`LambdaConfig::unready`]), the subscribe
    /// secret from `HOOKCAST_SUBSCRIBE_SECRET` alone. A secret written into
    /// the configuration itself is refused.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>, role: Role) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let mut required = |k: &str, needed: bool| {
            let v = env(k).filter(|v| !v.is_empty());
            if v.is_none() && needed {
                problems.push(format!("environment variable {k} is not set"));
            }
            v.unwrap_or_default()
        };
        let table = required("HOOKCAST_TABLE", role != Role::Dispatch);
        let ws_endpoint = required("HOOKCAST_WS_ENDPOINT", matches!(role, Role::Connection | Role::Message | Role::Fanout));
        let queue_url = required("HOOKCAST_QUEUE_URL", matches!(role, Role::Dispatch | Role::Fanout));
        if !ws_endpoint.is_empty() && !ws_endpoint.starts_with("http") {
            problems.push(format!("HOOKCAST_WS_ENDPOINT {ws_endpoint:?} must be an https:// URL"));
        }
        let shards = match env("HOOKCAST_SHARDS").map(|v| v.parse::<u32>()) {
            None => 8,
            Some(Ok(n)) if (1..=64).contains(&n) => n,
            Some(_) => {
                problems.push("HOOKCAST_SHARDS must be a whole number from 1 to 64".into());
                8
            }
        };
        let posts_per_second = match env("HOOKCAST_POSTS_PER_SECOND").map(|v| v.parse::<u32>()) {
            None => 1000,
            Some(Ok(n)) if n >= 1 => n,
            Some(_) => {
                problems.push("HOOKCAST_POSTS_PER_SECOND must be a whole number of at least 1".into());
                1000
            }
        };
        let fanout_workers = match env("HOOKCAST_FANOUT_WORKERS").map(|v| v.parse::<u32>()) {
            None => 1,
            Some(Ok(n)) if n >= 1 => n,
            Some(_) => {
                problems.push("HOOKCAST_FANOUT_WORKERS must be a whole number of at least 1".into());
                1
            }
        };
        let edge_secret = env("HOOKCAST_EDGE_SECRET").filter(|v| !v.is_empty());
        if edge_secret.as_ref().is_some_and(|s| s.len() < 32) {
            problems.push("HOOKCAST_EDGE_SECRET (EdgeOriginSecret) must be at least 32 characters".into());
        }
        let mut raw = read_config(env, &mut problems);
        problems.extend(hookcast_core::config::written_secrets(&raw));
        let missing = if role == Role::Webhook { missing_secrets(&mut raw, env) } else { BTreeMap::new() };
        for (_, why) in missing.values() {
            tracing::warn!("{why}: its deliveries are refused (503) until an instance starts with it");
        }
        // A comma-separated list from the stack's parameters wins over the TOML.
        if let Some(list) = env("HOOKCAST_ALLOWED_ORIGINS").filter(|v| !v.trim().is_empty()) {
            raw.allowed_origins = list.split(',').map(|o| o.trim().to_owned()).filter(|o| !o.is_empty()).collect();
        }
        // The stack's PrivateChannels (one line, for the guided prompt) wins
        // over [private] channels in the TOML, whose one-line form cannot hold
        // two top-level tables.
        if let Some(list) = env("HOOKCAST_PRIVATE_CHANNELS").filter(|v| !v.trim().is_empty()) {
            let channels = list.split(',').map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()).collect();
            raw.private = Some(RawPrivate { channels, ..raw.private.take().unwrap_or_default() });
        }
        // The stack's StateConfig (one line) wins over [state] in the TOML.
        if let Some(line) = env("HOOKCAST_STATE").filter(|v| !v.trim().is_empty()) {
            match hookcast_core::config::parse_state_line(&line) {
                Ok(state) => raw.state = state,
                Err(e) => problems.push(format!("HOOKCAST_STATE (StateConfig): {e}")),
            }
        }
        // The template asked for origins as a required parameter; now either
        // place may hold them, but a function that checks them needs some.
        if raw.allowed_origins.is_empty() && matches!(role, Role::Webhook | Role::Connection | Role::Message) {
            problems.push(
                "allowed_origins is empty: list your site's origins in hookcast.toml (allowed_origins = \
                 [\"https://example.netlify.app\"]) or the stack's AllowedOrigins parameter; [\"*\"] allows any site"
                    .into(),
            );
        }
        // Only the webhook function verifies signatures; the others never see
        // the sources' secrets. The message function keeps the sources for
        // where they publish (a subscribe to a channel none reaches is
        // refused before it costs a write), each under a stand-in secret it
        // never uses; the rest need none of it.
        if !matches!(role, Role::Webhook | Role::Message) {
            raw.sources.clear();
        }
        // Only the webhook (history) and message (subscribe) functions check
        // subscribe tokens, and only they are given the secret.
        if !matches!(role, Role::Webhook | Role::Message) {
            raw.private = None;
        }
        // On AWS the subscribe secret is the stack's SubscribeSecret and
        // nothing else: a [private] secret_env names a variable of the laptop,
        // which no function has (and which the stand-ins below must never
        // answer, or tokens signed with a public key would open private
        // channels).
        if let Some(p) = raw.private.as_mut() {
            p.secret_env = None;
            let subscribe = env(PRIVATE_SECRET_ENV).filter(|v| !v.is_empty());
            if p.secret.is_none() && subscribe.is_none() && !p.channels.is_empty() {
                problems.push(
                    "private: the stack's SubscribeSecret parameter (HOOKCAST_SUBSCRIBE_SECRET) is empty; [private] \
                     channels need it (16+ characters) to sign and check subscribe tokens"
                        .into(),
                );
                p.secret = Some(STAND_IN.into());
            }
        }
        // The build looks up only secrets: the sources' (stood in for, by
        // their names alone) and the subscribe secret (real).
        let source_vars: Vec<String> = raw.sources.keys().map(|n| hookcast_core::config::secret_env_name(n)).collect();
        if role == Role::Message {
            for source in raw.sources.values_mut() {
                source.secret_env = None;
            }
        }
        let stand_in = |k: &str| match role {
            // A shape every kind takes (Standard Webhooks' whsec_ and base64).
            Role::Message if source_vars.iter().any(|v| v == k) => Some(STAND_IN.to_owned()),
            _ => env(k),
        };
        let core = Config::build(raw, &|k: &str| {
            if missing.values().any(|(v, _)| v == k) {
                Some(STAND_IN.into())
            } else {
                stand_in(k)
            }
        })
        .map_err(|e| problems.extend(e.problems))
        .ok();
        for warning in core.iter().flat_map(Config::warnings) {
            tracing::warn!("{warning}");
        }
        match core {
            Some(core) if problems.is_empty() => {
                let unready = missing.into_iter().map(|(name, (_, why))| (name, why)).collect();
                Ok(Self { table, ws_endpoint, queue_url, shards, posts_per_second, fanout_workers, edge_secret, core, unready })
            }
            _ => Err(ConfigError { problems }),
        }
    }

    /// The WebSocket stage's path (`/live`): where a CDN in front routes it.
    pub fn ws_path(&self) -> String {
        let rest = self.ws_endpoint.split_once("://").map_or(self.ws_endpoint.as_str(), |(_, r)| r);
        rest.find('/').map_or("/".to_owned(), |i| rest[i..].to_owned())
    }

    /// The wss:// URL pages connect to.
    pub fn ws_url(&self) -> String {
        self.ws_endpoint.replacen("https://", "wss://", 1).replacen("http://", "ws://", 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A function's environment: the table, the WebSocket endpoint and the
    /// queue every function may read, and `more`.
    fn env_with(more: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let mut vars: std::collections::HashMap<String, String> = [
            ("HOOKCAST_TABLE", "t"),
            ("HOOKCAST_WS_ENDPOINT", "https://abc.execute-api.eu-west-1.amazonaws.com/live"),
            ("HOOKCAST_QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/1/q.fifo"),
            ("HOOKCAST_ALLOWED_ORIGINS", "https://site.example"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        vars.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        move |k| vars.get(k).cloned()
    }

    /// A `[private] secret_env` names a laptop's variable: on AWS the
    /// subscribe secret is the stack's SubscribeSecret alone, and without it
    /// the cold start stops saying so; never a stand-in key, whose tokens
    /// anyone could sign.
    #[test]
    fn private_channels_on_aws_need_the_stacks_subscribe_secret() {
        let file = "allowed_origins = [\"https://a.example\"]\n[sources.gh]\nkind = \"github\"\n\
                    [private]\nchannels = [\"orders/*\"]\nsecret_env = \"MY_SUBSCRIBE_SECRET\"\n";
        for role in [Role::Message, Role::Webhook] {
            let env = env_with(&[
                (CONFIG_FILE_KEY, file),
                ("HOOKCAST_SECRET_GH", "gh-secret-from-the-stack-0123"),
                ("MY_SUBSCRIBE_SECRET", "a-laptop-variable-no-function-has"),
            ]);
            let err = LambdaConfig::from_env(&env, role).unwrap_err().to_string();
            assert!(
                err.contains("private: the stack's SubscribeSecret parameter (HOOKCAST_SUBSCRIBE_SECRET) is empty"),
                "{role:?}: {err}"
            );
            let env = env_with(&[
                (CONFIG_FILE_KEY, file),
                ("HOOKCAST_SECRET_GH", "gh-secret-from-the-stack-0123"),
                (PRIVATE_SECRET_ENV, "the-stacks-subscribe-secret-0123"),
            ]);
            let cfg = LambdaConfig::from_env(&env, role).unwrap_or_else(|e| panic!("{role:?}: {e}"));
            assert_eq!(cfg.core.private.unwrap().secret.expose(), b"the-stacks-subscribe-secret-0123", "{role:?}");
        }
    }

    /// The config layer's file is the local binary's, `[server]` and all;
    /// its sources' secrets come from the stack's secrets by source name,
    /// whatever `secret_env` names on the laptop.
    #[test]
    fn the_config_layer_is_the_local_file() {
        let file = "allowed_origins = [\"https://x.netlify.app\"]\n[server]\nport = 8787\ndata_dir = \".hookcast\"\n\
                    [sources.gh]\nkind = \"github\"\nsecret_env = \"GITHUB_WEBHOOK_SECRET\"\n[state]\n\"deploys\" = \"last\"\n";
        // The stack's AllowedOrigins left empty: the file's origins hold.
        let env = env_with(&[
            (CONFIG_FILE_KEY, file),
            ("HOOKCAST_SECRET_GH", "gh-secret-from-the-stack-0123"),
            ("HOOKCAST_ALLOWED_ORIGINS", ""),
        ]);
        let cfg = LambdaConfig::from_env(&env, Role::Webhook).unwrap();
        assert_eq!(cfg.core.allowed_origins, vec!["https://x.netlify.app"]);
        let secret = match &cfg.core.sources["gh"].kind {
            hookcast_core::SourceKind::Github { secret, .. } => secret.expose().to_vec(),
            _ => panic!("a github source"),
        };
        assert_eq!(secret, b"gh-secret-from-the-stack-0123");
        assert!(cfg.core.state_spec(&hookcast_core::Channel::parse("deploys").unwrap()).is_some());

        // Not in the stack's secrets (a stack just deployed): the function
        // starts, and that source is refused with where its secret goes,
        // not the laptop's variable.
        let cfg = LambdaConfig::from_env(&env_with(&[(CONFIG_FILE_KEY, file), ("HOOKCAST_ALLOWED_ORIGINS", "")]), Role::Webhook)
            .unwrap();
        let why = &cfg.unready["gh"];
        assert!(
            why.contains("sources.gh: no secret in the stack's secrets; put it under \"gh\" in the SenderSecrets secret"),
            "{why}"
        );
        assert!(!why.contains("GITHUB_WEBHOOK_SECRET"), "{why}");
        let (status, body) = crate::unready_refusal(&cfg.unready, "/hooks/gh").unwrap();
        assert_eq!(status, 503);
        assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"], "source_not_ready");
        assert!(crate::unready_refusal(&cfg.unready, "/hookcast.js").is_none());
        assert!(crate::unready_refusal(&cfg.unready, "/hooks/other").is_none());
        // The other functions never need it.
        assert!(LambdaConfig::from_env(&env_with(&[(CONFIG_FILE_KEY, file)]), Role::Fanout).is_ok());

        // The file and HOOKCAST_CONFIG are never merged.
        let both = env_with(&[(CONFIG_FILE_KEY, file), ("HOOKCAST_CONFIG", "[sources.n]\nkind = \"netlify\"\n")]);
        let err = LambdaConfig::from_env(&both, Role::Fanout).unwrap_err().to_string();
        assert!(err.contains("HOOKCAST_CONFIG is set beside the config layer's hookcast.toml"), "{err}");
        // A mistake in the file names the file, and where, never the line (it may hold a secret).
        let err = LambdaConfig::from_env(&env_with(&[(CONFIG_FILE_KEY, "[sourcez.a]\n")]), Role::Fanout).unwrap_err().to_string();
        assert!(err.contains("hookcast.toml: unknown field `sourcez`"), "{err}");
        let broken = "[sources.gh]\nkind = \"github\"\nsecret = \"hunter2-very-secret\" trailing\n";
        let err = LambdaConfig::from_env(&env_with(&[(CONFIG_FILE_KEY, broken)]), Role::Fanout).unwrap_err().to_string();
        assert!(err.contains("hookcast.toml: line 3, column"), "{err}");
        assert!(!err.contains("hunter2"), "the line is shown: {err}");
    }

    #[test]
    fn lists_every_missing_variable() {
        let env = |k: &str| (k == "HOOKCAST_CONFIG").then(|| "[sources.n]\nkind = \"netlify\"\n".to_string());
        let e = LambdaConfig::from_env(&env, Role::Webhook).unwrap_err();
        assert_eq!(
            e.problems,
            vec![
                "environment variable HOOKCAST_TABLE is not set",
                // (sources.n's missing secret is no problem of the start: its deliveries are refused)
                "allowed_origins is empty: list your site's origins in hookcast.toml (allowed_origins = [\"https://example.netlify.app\"]) \
             or the stack's AllowedOrigins parameter; [\"*\"] allows any site"
            ]
        );
        let e = LambdaConfig::from_env(&env, Role::Fanout).unwrap_err();
        assert_eq!(
            e.problems,
            vec![
                "environment variable HOOKCAST_TABLE is not set",
                "environment variable HOOKCAST_WS_ENDPOINT is not set",
                "environment variable HOOKCAST_QUEUE_URL is not set",
            ]
        );
    }

    #[test]
    fn reads_the_shared_schema() {
        let env = env_with(&[
            ("HOOKCAST_CONFIG", "allowed_origins = [\"https://x.netlify.app\"]\n[sources.netlify]\nkind = \"netlify\"\n"),
            ("HOOKCAST_SECRET_NETLIFY", "jws-secret-0123456789"),
            ("HOOKCAST_ALLOWED_ORIGINS", "https://a.example, https://b.example"),
        ]);
        let c = LambdaConfig::from_env(&env, Role::Webhook).unwrap();
        assert_eq!(c.ws_url(), "wss://abc.execute-api.eu-west-1.amazonaws.com/live");
        assert_eq!(c.ws_path(), "/live");
        assert_eq!(c.core.allowed_origins, vec!["https://a.example", "https://b.example"]);
        assert!(c.core.sources.contains_key("netlify"));
        assert!(!format!("{c:?}").contains("jws-secret"), "no secret in Debug");
    }

    /// The message function refuses a subscribe to a channel no source
    /// reaches, so it must know where the sources publish; it is never
    /// given their secrets (only the webhook function verifies), so it
    /// builds them under a stand-in. The fan-out function keeps none.
    #[test]
    fn the_message_function_knows_where_sources_publish_without_their_secrets() {
        let config = "[sources.netlify]\nkind = \"netlify\"\n\
                      [sources.zapier]\nkind = \"token\"\nchannels = [\"zaps/*\"]\nfields = [\"title\"]\n\
                      [sources.github]\nkind = \"github\"\nchannel = \"github/{repository.name}\"\n\
                      [sources.svix]\nkind = \"standard\"\nchannels = [\"orders\"]\nfields = [\"id\"]\n";
        let env = env_with(&[("HOOKCAST_CONFIG", config)]);
        let ch = |c: &str| hookcast_core::Channel::parse(c).unwrap();
        let c = LambdaConfig::from_env(&env, Role::Message).unwrap();
        assert_eq!(c.core.sources.len(), 4);
        for (yes, channel) in [(true, "zaps/x"), (true, "deploys"), (true, "github/site"), (true, "orders"), (false, "nowhere")] {
            assert_eq!(hookcast_core::policy::reachable(&c.core, &ch(channel)), yes, "{channel}");
        }
        let c = LambdaConfig::from_env(&env, Role::Webhook).unwrap();
        assert_eq!(c.unready.len(), 4, "the webhook function refuses each source without its real secret: {:?}", c.unready);
        let c = LambdaConfig::from_env(&env, Role::Fanout).unwrap();
        assert!(c.core.sources.is_empty());
    }

    /// The stack's StateConfig line wins over `[state]` in the TOML; a bad
    /// one is a start-up problem that names the parameter.
    #[test]
    fn state_from_the_stack_parameter_or_the_toml() {
        let env = |state: &'static str| {
            env_with(&[("HOOKCAST_CONFIG", "[state]\n\"deploys\" = \"merge\"\n\"news\" = \"last\"\n"), ("HOOKCAST_STATE", state)])
        };
        let ch = |c: &str| hookcast_core::Channel::parse(c).unwrap();
        let c = LambdaConfig::from_env(&env(""), Role::Message).unwrap();
        assert_eq!(c.core.state.mode(&ch("deploys")), Some(hookcast_core::state::StateMode::Merge));
        let c = LambdaConfig::from_env(&env("deploys=last, forms/*=list:20"), Role::Webhook).unwrap();
        assert_eq!(c.core.state.mode(&ch("deploys")), Some(hookcast_core::state::StateMode::Last));
        assert_eq!(c.core.state.mode(&ch("forms/x")), Some(hookcast_core::state::StateMode::List(20)));
        assert_eq!(c.core.state.mode(&ch("news")), None, "the parameter replaces the TOML's table");
        let e = LambdaConfig::from_env(&env("deploys=forever"), Role::Webhook).unwrap_err();
        assert!(e.problems.iter().any(|p| p.contains("\"forever\" is not a state mode")), "{e:?}");
        let e = LambdaConfig::from_env(&env("deploys"), Role::Webhook).unwrap_err();
        assert!(e.problems.iter().any(|p| p.starts_with("HOOKCAST_STATE (StateConfig)")), "{e:?}");
    }

    /// `[private]` is set stack-wide (HOOKCAST_CONFIG, or the stack's
    /// PrivateChannels), but only the webhook and message functions check
    /// tokens and are given the subscribe secret: every other function starts
    /// without it. The two that check tokens refuse to start without it.
    #[test]
    fn private_channels_need_the_secret_only_where_tokens_are_checked() {
        let env = |config: &'static str, private: &'static str| {
            env_with(&[("HOOKCAST_CONFIG", config), ("HOOKCAST_PRIVATE_CHANNELS", private)])
        };
        for (config, private) in [("[private]\nchannels = [\"orders/*\"]\n", ""), ("", "orders/*, team")] {
            for role in [Role::Connection, Role::Dispatch, Role::Fanout] {
                let c = LambdaConfig::from_env(&env(config, private), role)
                    .unwrap_or_else(|e| panic!("{role:?} with {config:?} / {private:?}: {e}"));
                assert!(c.core.private.is_none(), "{role:?} holds no private config");
            }
            for role in [Role::Message, Role::Webhook] {
                let e = LambdaConfig::from_env(&env(config, private), role).unwrap_err();
                assert!(e.to_string().contains("HOOKCAST_SUBSCRIBE_SECRET"), "{role:?}: {e}");
            }
        }
        // With the secret, the list from PrivateChannels is the one in force.
        let with_secret = |k: &str| match k {
            "HOOKCAST_SUBSCRIBE_SECRET" => Some("subscribe-secret-0123456789".to_string()),
            k => env("", "orders/*, team")(k),
        };
        let c = LambdaConfig::from_env(&with_secret, Role::Message).unwrap();
        assert_eq!(c.core.private.unwrap().channels, vec!["orders/*", "team"]);
        // A pattern that is not one is named, as in hookcast.toml.
        let bad = |k: &str| match k {
            "HOOKCAST_SUBSCRIBE_SECRET" => Some("subscribe-secret-0123456789".to_string()),
            k => env("", "orders/**")(k),
        };
        let e = LambdaConfig::from_env(&bad, Role::Webhook).unwrap_err();
        assert!(e.to_string().contains("\"orders/**\""), "{e}");
    }

    /// A secret written into SourcesConfig stops every function's cold start
    /// (it is in all their environments), saying where it goes, and is
    /// never echoed; the same configuration with its secrets in Secrets
    /// Manager starts.
    #[test]
    fn an_inline_secret_is_refused_saying_where_secrets_go() {
        let config = r#"
[sources.netlify]
kind = "netlify"
secret = "netlify-inline-0123456789"
[sources.github]
kind = "github"
secret = "github-inline-0123456789"
[private]
secret = "private-inline-0123456789"
channels = ["orders/*"]
"#;
        let env = |config: &'static str| {
            env_with(&[
                ("HOOKCAST_CONFIG", config),
                ("HOOKCAST_SECRET_NETLIFY", "netlify-secret-0123456789"),
                ("HOOKCAST_SECRET_GITHUB", "github-secret-0123456789"),
                ("HOOKCAST_SUBSCRIBE_SECRET", "subscribe-secret-0123456789"),
            ])
        };
        for role in [Role::Webhook, Role::Message, Role::Connection, Role::Dispatch, Role::Fanout] {
            let e = LambdaConfig::from_env(&env(config), role).unwrap_err().to_string();
            assert!(
                e.contains("sources.netlify.secret: a secret may not be written into the configuration on AWS"),
                "{role:?}: {e}"
            );
            assert!(e.contains("SenderSecrets secret as {\"netlify\": \"…\"}"), "{e}");
            assert!(e.contains("sources.github.secret") && e.contains("SenderSecrets secret as {\"github\": \"…\"}"), "{e}");
            assert!(e.contains("private.secret") && e.contains("SubscribeSecret parameter"), "{e}");
            assert!(!e.contains("inline-0123456789"), "a secret is echoed: {e}");
        }
        let without =
            "[sources.netlify]\nkind = \"netlify\"\n[sources.github]\nkind = \"github\"\n[private]\nchannels = [\"orders/*\"]\n";
        LambdaConfig::from_env(&env(without), Role::Webhook).unwrap();
    }

    /// `sam deploy --guided` prompts on one line: the same configuration in
    /// TOML's one-line form (inline tables) must read the same.
    #[test]
    fn one_line_toml_for_the_guided_prompt() {
        let one_line = r#"sources = { netlify = { kind = "netlify", forms = { guestbook = { fields = ["name", "message"] } } }, zapier = { kind = "token", channels = ["zaps/*"], fields = ["title", "url"] } }"#;
        let env = env_with(&[
            ("HOOKCAST_CONFIG", one_line),
            ("HOOKCAST_SECRET_NETLIFY", "netlify-secret-0123456789"),
            ("HOOKCAST_SECRET_ZAPIER", "zapier-token-0123456789"),
            ("HOOKCAST_ALLOWED_ORIGINS", "https://a.example, https://*--a.netlify.app"),
        ]);
        let c = LambdaConfig::from_env(&env, Role::Webhook).unwrap();
        assert_eq!(c.core.sources["zapier"].channels, vec!["zaps/*"]);
        match &c.core.sources["netlify"].kind {
            hookcast_core::SourceKind::Netlify { forms, .. } => assert_eq!(forms["guestbook"], vec!["name", "message"]),
            k => panic!("{k:?}"),
        }
        assert_eq!(c.core.allowed_origins, vec!["https://a.example", "https://*--a.netlify.app"]);
    }

    /// The sender kinds from SourcesConfig, their secrets under each
    /// source's name (as `Startup` maps the Secrets Manager JSON keys).
    #[test]
    fn sender_kinds_from_sources_config() {
        let config = r#"
[sources.github]
kind = "github"
channel = "releases"
fields = ["release.tag_name", "repository.full_name"]
[sources.stripe]
kind = "stripe"
channel = "billing/{data.object.object}"
[sources.clerk]
kind = "svix"
[sources.cms]
kind = "contentful"
channel = "cms/{sys.contentType.sys.id}"
"#;
        let env = env_with(&[
            ("HOOKCAST_CONFIG", config),
            ("HOOKCAST_SECRET_GITHUB", "github-secret-0123456789"),
            ("HOOKCAST_SECRET_STRIPE", "whsec_stripe-secret-0123456789"),
            ("HOOKCAST_SECRET_CLERK", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            ("HOOKCAST_SECRET_CMS", "contentful-secret-0123456789"),
        ]);
        let c = LambdaConfig::from_env(&env, Role::Webhook).unwrap();
        let kinds: Vec<&str> = c.core.sources.values().map(|s| s.kind_name()).collect();
        assert_eq!(kinds, vec!["svix", "contentful", "github", "stripe"]);
        match &c.core.sources["stripe"].kind {
            hookcast_core::SourceKind::Stripe { secret, .. } => assert_eq!(secret.expose(), b"whsec_stripe-secret-0123456789"),
            k => panic!("{k:?}"),
        }
        // A sender source without its secret stops the cold start, naming where it goes.
        let missing = |k: &str| if k == "HOOKCAST_SECRET_CMS" { None } else { env(k) };
        let c = LambdaConfig::from_env(&missing, Role::Webhook).unwrap();
        let why = &c.unready["cms"];
        assert!(
            why.contains("sources.cms: no secret in the stack's secrets; put it under \"cms\" in the SenderSecrets secret"),
            "{why}"
        );
        assert_eq!(c.unready.len(), 1, "{:?}", c.unready);
    }
}

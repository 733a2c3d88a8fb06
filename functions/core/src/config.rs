//! The typed configuration both hosts share. Hosts deserialise a
//! [`RawConfig`] (TOML locally, env on Lambda) and call [`Config::build`],
//! which reports every problem at once.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::channel::{Channel, ChannelPattern, EventName, EventPattern};
use crate::mapping::{check_field, Template};
use crate::secret::Secret;
use crate::senders::{self, header_name, misplaced, BodyShape, Build, SecretForm, Spec};
use crate::state::{StateMode, StateRules, StateSpec};

pub use crate::raw::{RawForm, RawSource};
pub use crate::secret::MIN_SECRET_BYTES;
pub use crate::senders::netlify::form_slug;
pub use crate::senders::standard::decode_standard_secret;
pub use crate::senders::{Algorithm, Encoding, HmacScheme, SourceKind, KINDS, KINDS_NEEDING_FIELDS};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_body_bytes: Option<usize>,
    pub max_event_bytes: Option<usize>,
    pub history_max_events: Option<u32>,
    pub history_max_age_secs: Option<u64>,
    pub dedupe_ttl_secs: Option<u64>,
    /// How long a channel's state outlives its last event (default 30 days).
    pub state_ttl_secs: Option<u64>,
    pub fanout_concurrency: Option<usize>,
    pub max_subscriptions: Option<usize>,
    pub occupancy_interval_secs: Option<u64>,
    pub body_timeout_secs: Option<u64>,
    pub fanout_retry_base_secs: Option<u64>,
    pub fanout_retry_max_secs: Option<u64>,
}

/// `[private]`: channels a page may read only with a subscribe token signed
/// with this secret (see [`crate::token`]).
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrivate {
    pub secret: Option<String>,
    /// Name of an environment variable holding the secret.
    pub secret_env: Option<String>,
    /// Exact names or `prefix*`.
    #[serde(default)]
    pub channels: Vec<String>,
}

impl std::fmt::Debug for RawPrivate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawPrivate").field("channels", &self.channels).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Origins allowed to open a socket; empty means any.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub sources: BTreeMap<String, RawSource>,
    #[serde(default)]
    pub private: Option<RawPrivate>,
    /// `[state]`: channel pattern → `last`, `merge` or `list:N`.
    #[serde(default)]
    pub state: BTreeMap<String, String>,
}

/// The env var that overrides `[private].secret`.
pub const PRIVATE_SECRET_ENV: &str = "HOOKCAST_SUBSCRIBE_SECRET";

/// The least a delivery's dedupe keys are kept when its sender signs no
/// timestamp: such a request, once captured, verifies for ever, so only
/// its remembered identity refuses a replay.
pub const UNTIMED_DEDUPE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Private channels and the key their subscribe tokens are signed with.
#[derive(Debug, Clone)]
pub struct Private {
    pub secret: Secret,
    pub channels: Vec<ChannelPattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_event_bytes: usize,
    pub history_max_events: u32,
    pub history_max_age: Duration,
    pub dedupe_ttl: Duration,
    /// A channel's state is dropped this long after the channel's last
    /// event: personal data in a state does not stay for ever.
    pub state_ttl: Duration,
    pub fanout_concurrency: usize,
    pub max_subscriptions: usize,
    /// How often one connection may ask for one channel's occupancy.
    pub occupancy_interval: Duration,
    /// How long a webhook's body may take to arrive in full (answered 408 after).
    pub body_timeout: Duration,
    /// A fan-out job whose subscribers could not be read is tried again
    /// after this, doubling with each of its failures, up to `fanout_retry_max`.
    pub fanout_retry_base: Duration,
    pub fanout_retry_max: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            // Leaves room for the envelope inside API Gateway's 128 KB message.
            max_event_bytes: 100 * 1024,
            history_max_events: 100,
            history_max_age: Duration::from_secs(24 * 3600),
            dedupe_ttl: Duration::from_secs(24 * 3600),
            state_ttl: Duration::from_secs(30 * 24 * 3600),
            fanout_concurrency: 64,
            max_subscriptions: 32,
            occupancy_interval: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            fanout_retry_base: Duration::from_secs(5),
            fanout_retry_max: Duration::from_secs(120),
        }
    }
}

/// Where a native body's event goes and what it is called.
#[derive(Debug, Clone)]
pub struct Route {
    pub channel: Template,
    /// `None`: the sender's own type (sender kinds only).
    pub event: Option<Template>,
    /// [`RawSource::channel_by_event`], the most specific pattern first.
    pub by_event: Vec<(EventPattern, Template)>,
}

impl Route {
    /// The channel `event` goes to: the first pattern it matches, else `channel`.
    pub fn channel_for(&self, event: &EventName) -> &Template {
        self.by_event.iter().find(|(p, _)| p.matches(event)).map_or(&self.channel, |(_, t)| t)
    }
}

#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub kind: SourceKind,
    /// Allow-list for `{"channel","event","data"}` bodies; other sources'
    /// channels are fixed by their configuration.
    pub channels: Vec<ChannelPattern>,
    /// The header carrying the sender's delivery id, where it is a header.
    pub delivery_header: Option<String>,
    /// The fields forwarded (see [`RawSource::fields`]); `None`: the default.
    pub fields: Option<Vec<String>>,
    /// Set: the body is the sender's own JSON, mapped by this route.
    pub route: Option<Route>,
    /// Set: only events these match are published ([`RawSource::events`]).
    pub events: Option<Vec<EventPattern>>,
}

impl Source {
    /// Whether this source publishes `event` (its `events`, if it lists any).
    pub fn takes(&self, event: &EventName) -> bool {
        self.events.as_ref().is_none_or(|list| list.iter().any(|p| p.matches(event)))
    }
}

impl Source {
    /// The clock skew allowed to the timestamp this source's sender signs;
    /// `None` when it signs none (then a captured request verifies for ever).
    pub fn signed_tolerance(&self) -> Option<Duration> {
        self.kind.signed_tolerance()
    }

    pub fn kind_name(&self) -> &'static str {
        self.kind.name()
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub allowed_origins: Vec<String>,
    pub limits: Limits,
    pub sources: BTreeMap<String, Source>,
    /// Channels that need a subscribe token; `None`: every channel is public.
    pub private: Option<Private>,
    /// Channels whose log keeps a state for late visitors.
    pub state: StateRules,
}

impl Config {
    /// Whether reading `channel` needs a subscribe token.
    pub fn is_private(&self, channel: &Channel) -> bool {
        self.private.as_ref().is_some_and(|p| p.channels.iter().any(|pat| pat.matches(channel)))
    }
    /// What an append to `channel` carries on, if it keeps a state: merge
    /// states are bounded like event data.
    pub fn state_spec(&self, channel: &Channel) -> Option<StateSpec> {
        self.state.mode(channel).map(|mode| StateSpec { mode, max_bytes: self.limits.max_event_bytes })
    }

    /// What start-up warns about (both hosts log it; `hookcast` prints it):
    /// a private exact name leaves its sub-channels public (private
    /// `orders` does not cover `orders/1`).
    pub fn warnings(&self) -> Vec<String> {
        let Some(p) = &self.private else { return vec![] };
        p.channels
            .iter()
            .map(ChannelPattern::as_str)
            .filter(|name| !name.ends_with('*'))
            .filter(|name| Channel::parse(&format!("{name}/1")).is_ok_and(|sub| !self.is_private(&sub)))
            .map(|name| {
                format!(
                    "private channel {name:?} is an exact name: its sub-channels ({name}/1, {name}/…) stay public; \
                     list \"{name}/*\" in the private channels too if they should need a token"
                )
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .problems.join("\n  - "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// The env var that overrides source `name`'s secret: `HOOKCAST_SECRET_<NAME>`.
pub fn secret_env_name(source: &str) -> String {
    let upper: String = source.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    format!("HOOKCAST_SECRET_{upper}")
}

/// Secrets written into a configuration that goes to AWS, each refused with
/// where it goes instead. Locally the file may hold them; on AWS the file is
/// published as the stack's config layer, which anyone who can read the
/// functions can download.
pub fn written_secrets(raw: &RawConfig) -> Vec<String> {
    let mut problems: Vec<String> = raw
        .sources
        .iter()
        .filter(|(_, s)| s.secret.is_some())
        .map(|(name, _)| {
            format!(
                "sources.{name}.secret: a secret may not be written into the configuration on AWS (hookcast.toml is \
                 published as a layer, readable by whoever can read the functions); remove it and put it in the \
                 stack's SenderSecrets secret as {{\"{name}\": \"…\"}} (`hookcast secrets` prints that JSON)"
            )
        })
        .collect();
    if raw.private.as_ref().is_some_and(|p| p.secret.is_some()) {
        problems.push(
            "private.secret: a secret may not be written into the configuration on AWS; remove it and set the stack's \
             SubscribeSecret parameter (kept in its Secrets Manager secret)"
                .into(),
        );
    }
    problems
}

/// The secret source `name` verifies with on this machine:
/// `HOOKCAST_SECRET_<NAME>`, else its `secret_env`, else its `secret`, as
/// the local binary finds it; or why there is none. What `hookcast secrets`
/// hands the AWS stack.
pub fn source_secret(name: &str, raw: &RawSource, env: &dyn Fn(&str) -> Option<String>) -> Result<String, Vec<String>> {
    let mut problems = vec![];
    let at = format!("sources.{name}");
    find_secret(&at, &secret_env_name(name), raw.secret.as_deref(), raw.secret_env.as_deref(), env, &mut problems).ok_or(problems)
}

/// Each pattern parsed; each one that is not a pattern is a problem `at`.
fn patterns(raw: &[String], at: &str, problems: &mut Vec<String>) -> Vec<ChannelPattern> {
    raw.iter().filter_map(|p| ChannelPattern::parse(p).map_err(|e| problems.push(format!("{at}: {e}"))).ok()).collect()
}

impl Config {
    /// `env` looks up environment variables; injected so tests need not touch
    /// the process environment.
    pub fn build(raw: RawConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let limits = build_limits(&raw.limits, &mut problems);
        check_origins(&raw.allowed_origins, &mut problems);
        let mut sources = BTreeMap::new();
        for (name, rs) in raw.sources {
            if let Some(source) = build_source(name, rs, env, &mut problems) {
                sources.insert(source.name.clone(), source);
            }
        }
        let private = raw.private.as_ref().and_then(|rp| build_private(rp, env, &mut problems));
        let state = build_state(&raw.state, &mut problems);
        if problems.is_empty() {
            Ok(Config { allowed_origins: raw.allowed_origins, limits, sources, private, state })
        } else {
            Err(ConfigError { problems })
        }
    }
}

fn build_limits(l: &RawLimits, problems: &mut Vec<String>) -> Limits {
    let d = Limits::default();
    let mut positive = |name: &str, v: Option<usize>, default: usize| -> usize {
        match v {
            Some(0) => {
                problems.push(format!("limits.{name} must be greater than 0"));
                default
            }
            Some(n) => n,
            None => default,
        }
    };
    let limits = Limits {
        max_body_bytes: positive("max_body_bytes", l.max_body_bytes, d.max_body_bytes),
        max_event_bytes: positive("max_event_bytes", l.max_event_bytes, d.max_event_bytes),
        history_max_events: positive(
            "history_max_events",
            l.history_max_events.map(|v| v as usize),
            d.history_max_events as usize,
        ) as u32,
        history_max_age: l.history_max_age_secs.map_or(d.history_max_age, Duration::from_secs),
        dedupe_ttl: l.dedupe_ttl_secs.map_or(d.dedupe_ttl, Duration::from_secs),
        state_ttl: Duration::from_secs(positive(
            "state_ttl_secs",
            l.state_ttl_secs.map(|v| v as usize),
            d.state_ttl.as_secs() as usize,
        ) as u64),
        fanout_concurrency: positive("fanout_concurrency", l.fanout_concurrency, d.fanout_concurrency),
        max_subscriptions: positive("max_subscriptions", l.max_subscriptions, d.max_subscriptions),
        occupancy_interval: Duration::from_secs(positive(
            "occupancy_interval_secs",
            l.occupancy_interval_secs.map(|v| v as usize),
            d.occupancy_interval.as_secs() as usize,
        ) as u64),
        body_timeout: Duration::from_secs(positive(
            "body_timeout_secs",
            l.body_timeout_secs.map(|v| v as usize),
            d.body_timeout.as_secs() as usize,
        ) as u64),
        fanout_retry_base: Duration::from_secs(positive(
            "fanout_retry_base_secs",
            l.fanout_retry_base_secs.map(|v| v as usize),
            d.fanout_retry_base.as_secs() as usize,
        ) as u64),
        fanout_retry_max: Duration::from_secs(positive(
            "fanout_retry_max_secs",
            l.fanout_retry_max_secs.map(|v| v as usize),
            d.fanout_retry_max.as_secs() as usize,
        ) as u64),
    };
    if limits.state_ttl < limits.history_max_age {
        // On DynamoDB the channel's head, seq and all, expires with its
        // state: no event may outlive it.
        problems.push("limits.state_ttl_secs must be at least history_max_age_secs".into());
    }
    if limits.fanout_retry_max < limits.fanout_retry_base {
        problems.push("limits.fanout_retry_max_secs must be at least fanout_retry_base_secs".into());
    }
    if limits.max_event_bytes > 120 * 1024 {
        problems
            .push("limits.max_event_bytes must be at most 122880 (API Gateway's 128 KB message limit, less the envelope)".into());
    }
    limits
}

fn check_origins(origins: &[String], problems: &mut Vec<String>) {
    for o in origins {
        let stars = o.matches('*').count();
        if o != "*" && (!(o.starts_with("http://") || o.starts_with("https://")) || stars > 1) {
            problems.push(format!(
                "allowed_origins: {o:?} must look like https://example.com (one '*' allowed: https://*--site.netlify.app)"
            ));
        }
    }
}

/// One `[sources.<name>]`: the settings every kind shares here, the kind's
/// own through its [`Spec`]. `None` when anything about it is wrong.
fn build_source(name: String, rs: RawSource, env: &dyn Fn(&str) -> Option<String>, problems: &mut Vec<String>) -> Option<Source> {
    let at = format!("sources.{name}");
    let before = problems.len();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        problems.push(format!("{at}: source names may use only letters, digits, '-' and '_' (they appear in /hooks/{{source}})"));
    }
    let spec = senders::spec(&rs.kind);
    let secret = resolve_secret(&name, &rs, spec, env, problems);
    let Some(spec) = spec else {
        // Nothing else about it can be judged.
        problems.push(format!("{at}.kind {:?} is not one of {}", rs.kind, KINDS.join(", ")));
        return None;
    };
    // Envelope kinds read {"channel","event","data"} unless a channel is configured.
    let native = match spec.body {
        BodyShape::Native => true,
        BodyShape::Envelope => rs.channel.is_some(),
        BodyShape::Own { .. } => false,
    };
    let channels = patterns(rs.channels.as_deref().unwrap_or_default(), &format!("{at}.channels"), problems);
    let events = build_events(&at, rs.events.as_deref(), problems);
    check_routing(&at, spec, &rs, native, problems);
    let route = if native { build_route(&at, &name, &rs, problems) } else { None };
    if !native && !rs.channel_by_event.is_empty() {
        problems.push(format!(
            "{at}.channel_by_event: this source's channel comes from {}; channel_by_event applies to a sender's own body",
            if matches!(spec.body, BodyShape::Own { .. }) { "its kind" } else { "each delivery's \"channel\"" }
        ));
    }
    check_options(&at, spec, &rs, problems);
    let kind = (spec.build)(&mut Build { at: &at, name: &name, raw: &rs, secret, problems });
    let delivery_header = match rs.delivery_header.as_deref() {
        Some(h) => Some(header_name(&at, "delivery_header", h, problems)),
        None => (spec.delivery_header)(&rs).map(str::to_owned),
    };
    let kind = kind.filter(|_| problems.len() == before)?;
    Some(Source { name, kind, channels, delivery_header, fields: rs.fields, route, events })
}

fn build_events(at: &str, list: Option<&[String]>, problems: &mut Vec<String>) -> Option<Vec<EventPattern>> {
    let list = list?;
    if list.is_empty() {
        problems.push(format!("{at}.events = [] would publish nothing; list event names or \"prefix*\", or remove it"));
    }
    let parsed = list
        .iter()
        .filter_map(|p| {
            EventPattern::parse(p)
                .map_err(|_| {
                    problems.push(format!(
                        "{at}.events: {p:?} is neither an event name nor a prefix ending in '*' (as \"release.*\")"
                    ))
                })
                .ok()
        })
        .collect();
    Some(parsed)
}

/// Where the source may publish and what reaches pages: `channels` for an
/// envelope, `channel` and `event` for a native body, the kind's own rules
/// for a kind that publishes to channels of its own; `fields` where the body is anyone's.
fn check_routing(at: &str, spec: &Spec, rs: &RawSource, native: bool, problems: &mut Vec<String>) {
    let kind_name = spec.name;
    match spec.body {
        BodyShape::Own { check } => check(at, rs, problems),
        _ if native => {
            if rs.channels.is_some() {
                problems.push(format!(
                    "{at}.channels: this source's body is the sender's own, so it publishes where channel = \"…\" says \
                     (default: the source's name); remove channels"
                ));
            }
            if matches!(spec.body, BodyShape::Envelope) && rs.event.is_none() {
                problems.push(format!(
                    "{at}.event: a {kind_name} source with a channel reads the sender's own body; name its events \
                     (event = \"published\" or a template such as \"{{type}}\")"
                ));
            }
        }
        _ => {
            if rs.channels.as_ref().is_none_or(|c| c.is_empty()) {
                problems.push(format!("{at}: set channels = [\"name\", \"prefix/*\"] to say where this source may publish"));
            }
            misplaced(at, &rs.kind, "event", rs.event.is_some(), problems);
        }
    }
    if rs.fields.is_none() && matches!(spec.body, BodyShape::Envelope) {
        problems.push(format!(
            "{at}.fields: a {kind_name} source must name the fields pages may receive, as in fields = [\"title\", \"url\"] \
             (no field leaves unless it is named)"
        ));
    }
    for f in rs.fields.iter().flatten() {
        if let Err(e) = check_field(f) {
            problems.push(format!("{at}.fields: {e}"));
        }
    }
}

/// A native body's channel (default: the source's name) and event templates.
fn build_route(at: &str, name: &str, rs: &RawSource, problems: &mut Vec<String>) -> Option<Route> {
    let mut template = |field: &str, t: &Option<String>| {
        t.as_deref().and_then(|t| Template::parse(t).map_err(|e| problems.push(format!("{at}.{field}: {e}"))).ok())
    };
    let channel = template("channel", &rs.channel).or_else(|| rs.channel.is_none().then(|| Template::literal(name)));
    let event = template("event", &rs.event);
    let fixed_problem = |field: &str, t: &Template| match t.fixed().map(Channel::parse) {
        Some(Err(e)) => Some(format!("{at}.{field}: {e}")),
        _ => None,
    };
    problems.extend(channel.as_ref().and_then(|c| fixed_problem("channel", c)));
    let mut by_event = vec![];
    for (pattern, target) in &rs.channel_by_event {
        let field = format!("channel_by_event.{pattern:?}");
        let p = EventPattern::parse(pattern).map_err(|_| {
            format!("{at}.channel_by_event: {pattern:?} is neither an event name nor a prefix ending in '*' (as \"release.*\")")
        });
        let t = Template::parse(target).map_err(|e| format!("{at}.{field}: {e}"));
        match (p, t) {
            (Ok(p), Ok(t)) => {
                problems.extend(fixed_problem(&field, &t));
                by_event.push((p, t));
            }
            (p, t) => problems.extend(p.err().into_iter().chain(t.err())),
        }
    }
    // Most specific first: exact names, then longer prefixes.
    by_event.sort_by_key(|(p, _)| (p.as_str().ends_with('*'), std::cmp::Reverse(p.as_str().len())));
    channel.map(|channel| Route { channel, event, by_event })
}

/// Settings set on a kind that does not read them.
fn check_options(at: &str, spec: &Spec, rs: &RawSource, problems: &mut Vec<String>) {
    let reads = |option: &str| spec.options.contains(&option);
    let kind = rs.kind.as_str();
    misplaced(at, kind, "tolerance_secs", rs.tolerance_secs.is_some() && !(spec.tolerance)(rs), problems);
    misplaced(at, kind, "header", rs.header.is_some() && !reads("header"), problems);
    misplaced(at, kind, "forms", !rs.forms.is_empty() && !reads("forms"), problems);
    misplaced(at, kind, "path", rs.path.is_some() && !reads("path"), problems);
    for (field, set) in [
        ("prefix", rs.prefix.is_some()),
        ("encoding", rs.encoding.is_some()),
        ("algorithm", rs.algorithm.is_some()),
        ("timestamp_header", rs.timestamp_header.is_some()),
    ] {
        misplaced(at, kind, field, set && !reads(field), problems);
    }
    // The delivery identity is signed for these, in a header or the body.
    misplaced(at, kind, "delivery_header", rs.delivery_header.is_some() && spec.signs_delivery, problems);
}

fn build_state(raw: &BTreeMap<String, String>, problems: &mut Vec<String>) -> StateRules {
    let mut rules = Vec::new();
    for (pattern, mode) in raw {
        let p = ChannelPattern::parse(pattern).map_err(|e| problems.push(format!("state: {e}")));
        let m = StateMode::parse(mode).map_err(|e| problems.push(format!("state.{pattern:?}: {e}")));
        if let (Ok(p), Ok(m)) = (p, m) {
            rules.push((p, m));
        }
    }
    StateRules::new(rules)
}

/// `StateConfig` on AWS: `deploys=last, scoreboard=merge, forms/*=list:20`
/// (one line, for the guided prompt), read into `[state]`.
pub fn parse_state_line(line: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for part in line.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((pattern, mode)) = part.split_once('=') else {
            return Err(format!("{part:?} must be channel=mode, as in deploys=last, forms/*=list:20"));
        };
        out.insert(pattern.trim().to_owned(), mode.trim().to_owned());
    }
    Ok(out)
}

fn build_private(rp: &RawPrivate, env: &dyn Fn(&str) -> Option<String>, problems: &mut Vec<String>) -> Option<Private> {
    let before = problems.len();
    if rp.channels.is_empty() {
        problems.push("private.channels: list the channels that need a subscribe token (names or \"prefix/*\")".into());
    }
    let channels = patterns(&rp.channels, "private.channels", problems);
    let secret = find_secret("private", PRIVATE_SECRET_ENV, rp.secret.as_deref(), rp.secret_env.as_deref(), env, problems);
    if let Some(s) = &secret {
        check_length("private", s.len(), problems);
    }
    let secret = secret.filter(|_| problems.len() == before)?;
    Some(Private { secret: Secret::new(secret), channels })
}

/// An environment variable's name, as opposed to a value pasted where a name belongs.
fn looks_like_env_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

fn check_length(at: &str, len: usize, problems: &mut Vec<String>) {
    if len < MIN_SECRET_BYTES {
        problems.push(format!(
            "{at}: the secret is {len} bytes; use at least {MIN_SECRET_BYTES} (for example `openssl rand -hex 32`)"
        ));
    }
}

/// The secret from `override_var`, else `secret_env`, else `secret`. Values are
/// never echoed: a `secret_env` that is not a variable name is reported as such.
fn find_secret(
    at: &str,
    override_var: &str,
    secret: Option<&str>,
    secret_env: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Option<String> {
    let found = if let Some(v) = env(override_var).filter(|v| !v.is_empty()) {
        Some(v)
    } else if let Some(var) = secret_env {
        if !looks_like_env_name(var) {
            problems.push(format!(
                "{at}.secret_env must name an environment variable (letters, digits, '_'); it holds something else \
                 (a secret pasted there? its value is not shown)"
            ));
            return None;
        }
        match env(var).filter(|v| !v.is_empty()) {
            Some(v) => Some(v),
            // Named as variables are (ZAPIER_TOKEN): shown, as the user needs it.
            None if looks_like_a_variable_s_name(var) => {
                problems.push(format!("{at}.secret_env: the environment variable {var} is not set (export {var}=…)"));
                return None;
            }
            None => {
                // Not shaped as a name: it may be a secret pasted here.
                problems.push(format!(
                    "{at}.secret_env: the environment variable it names is not set (the name is not shown: it may be a \
                     secret pasted into the wrong field)"
                ));
                return None;
            }
        }
    } else {
        secret.map(str::to_owned).filter(|s| !s.is_empty())
    };
    if found.is_none() {
        problems.push(format!("{at}: no secret; set secret, secret_env, or {override_var}"));
    }
    found
}

/// Whether `var` is shaped as people name variables (`ZAPIER_TOKEN`,
/// `GH_WEBHOOK_SECRET_2`): upper-case words joined by `_`, each word of
/// letters then at most a few digits. A random secret (hex, base64,
/// base32) is not: it mixes cases or letters and digits, or has no `_`.
fn looks_like_a_variable_s_name(var: &str) -> bool {
    let words: Vec<&str> = var.split('_').collect();
    var.len() <= 64
        && words.len() >= 2
        && var.starts_with(|c: char| c.is_ascii_uppercase())
        && words.iter().all(|w| {
            let letters = w.trim_end_matches(|c: char| c.is_ascii_digit());
            letters.chars().all(|c| c.is_ascii_uppercase()) && w.len() - letters.len() <= 3
        })
        && words.iter().any(|w| w.len() >= 2 && w.chars().all(|c| c.is_ascii_uppercase()))
}

fn resolve_secret(
    name: &str,
    rs: &RawSource,
    spec: Option<&Spec>,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Option<String> {
    let at = format!("sources.{name}");
    let found = find_secret(&at, &secret_env_name(name), rs.secret.as_deref(), rs.secret_env.as_deref(), env, problems)?;
    // Standard Webhooks secrets are checked after decoding (whsec_ + base64).
    if spec.is_none_or(|s| s.secret != SecretForm::Whsec) {
        check_length(&at, found.len(), problems);
    }
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn raw(toml_like: &[(&str, RawSource)]) -> RawConfig {
        RawConfig { sources: toml_like.iter().map(|(n, s)| (n.to_string(), s.clone())).collect(), ..Default::default() }
    }
    /// A source as a user writes it; the kinds that must name their fields name one.
    fn src(kind: &str, secret: Option<&str>, channels: Option<&[&str]>) -> RawSource {
        RawSource {
            kind: kind.into(),
            secret: secret.map(Into::into),
            channels: channels.map(|c| c.iter().map(|s| s.to_string()).collect()),
            fields: KINDS_NEEDING_FIELDS.contains(&kind).then(|| vec!["title".to_string()]),
            ..Default::default()
        }
    }
    fn no_env(_: &str) -> Option<String> {
        None
    }
    const LONG: &str = "a-long-enough-secret-0123456789";
    /// A secret of the kind's shape: Stripe's start with whsec_.
    fn secret_for(kind: &str) -> &'static str {
        if kind == "stripe" {
            "whsec_a-long-enough-secret-0123456789"
        } else {
            LONG
        }
    }

    /// A channel per event pattern: the most specific pattern wins, an
    /// event none matches goes to `channel`; where the channel comes from
    /// the delivery or the kind, it is refused with why.
    #[test]
    fn a_channel_per_event_pattern() {
        let mut s = src("github", Some(LONG), None);
        s.channel = Some("github/other".into());
        s.channel_by_event =
            [("release.*", "releases/{repository.name}"), ("release.published", "published"), ("*", "everything")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        let cfg = Config::build(raw(&[("gh", s.clone())]), &no_env).unwrap();
        let route = cfg.sources["gh"].route.clone().unwrap();
        let to = |e: &str| route.channel_for(&EventName::parse(e).unwrap()).as_str().to_owned();
        assert_eq!(to("release.published"), "published", "an exact name first");
        assert_eq!(to("release.created"), "releases/{repository.name}", "then the longest prefix");
        assert_eq!(to("push"), "everything");
        s.channel_by_event.remove("*");
        let route = Config::build(raw(&[("gh", s.clone())]), &no_env).unwrap().sources["gh"].route.clone().unwrap();
        assert_eq!(route.channel_for(&EventName::parse("push").unwrap()).as_str(), "github/other", "none matches: channel");

        s.channel_by_event = [("rel ease".to_owned(), "x".to_owned()), ("push".to_owned(), "a b".to_owned())].into();
        let err = Config::build(raw(&[("gh", s)]), &no_env).unwrap_err().to_string();
        assert!(err.contains("sources.gh.channel_by_event: \"rel ease\" is neither an event name nor a prefix"), "{err}");
        assert!(err.contains("sources.gh.channel_by_event.\"push\": "), "{err}");
        let mut z = src("token", Some(LONG), Some(&["zaps/*"]));
        z.channel_by_event = [("a".to_owned(), "b".to_owned())].into();
        let err = Config::build(raw(&[("zapier", z)]), &no_env).unwrap_err().to_string();
        assert!(
            err.contains("sources.zapier.channel_by_event: this source's channel comes from each delivery's \"channel\""),
            "{err}"
        );
    }

    /// A Stripe secret without its whsec_ would make every delivery 401:
    /// refused at start-up, its value not shown.
    #[test]
    fn a_stripe_secret_without_whsec_is_refused_at_start_up() {
        let err = Config::build(raw(&[("billing", src("stripe", Some(LONG), None))]), &no_env).unwrap_err().to_string();
        assert!(err.contains("sources.billing.secret: a Stripe endpoint's signing secret starts with whsec_"), "{err}");
        assert!(!err.contains(LONG), "{err}");
    }

    #[test]
    fn an_unset_secret_env_is_named_when_it_is_shaped_as_a_name() {
        let with = |var: &str| {
            let s = RawSource { secret_env: Some(var.into()), ..src("github", None, None) };
            Config::build(raw(&[("gh", s)]), &no_env).unwrap_err().problems.join("\n")
        };
        for name in ["ZAPIER_TOKEN", "GH_WEBHOOK_SECRET_2", "NETLIFY_JWS"] {
            assert!(with(name).contains(&format!("the environment variable {name} is not set (export {name}=…)")), "{name}");
        }
        // Secrets pasted into the field are never echoed.
        for pasted in ["JBSWY3DPEHPK3PXP", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "A1B2C3D4E5F6", "X7Q_P9R2K8M4_Z3", "TOKEN"] {
            let e = with(pasted);
            assert!(!e.contains(pasted) && e.contains("the name is not shown"), "{pasted}: {e}");
        }
    }

    #[test]
    fn forms_whose_names_become_one_channel_are_refused_with_both_names() {
        let netlify = |forms: &[&str]| {
            let mut n = src("netlify", Some(LONG), None);
            for f in forms {
                n.forms.insert(f.to_string(), RawForm { fields: vec![], channel: None });
            }
            Config::build(raw(&[("n", n)]), &no_env)
        };
        let e = netlify(&["a b", "a//b", "contact"]).unwrap_err().problems.join("\n");
        assert!(e.contains("\"a b\" and \"a//b\" both become channel forms/a-b"), "{e}");
        let e = netlify(&["Café", "cafe"]).unwrap_err().problems.join("\n");
        assert!(e.contains("both become channel forms/cafe"), "{e}");
        assert!(netlify(&["Contact Form", "Café", "日本", "Заказ", "!!! ???"]).is_ok());
    }

    #[test]
    fn a_source_takes_the_events_it_lists() {
        let with = |events: &[&str]| {
            let s = RawSource { events: Some(events.iter().map(|e| e.to_string()).collect()), ..src("github", Some(LONG), None) };
            Config::build(raw(&[("gh", s)]), &no_env)
        };
        let cfg = with(&["release.*", "push"]).unwrap();
        let gh = &cfg.sources["gh"];
        let name = |n: &str| EventName::parse(n).unwrap();
        assert!(gh.takes(&name("release.published")) && gh.takes(&name("push")));
        assert!(!gh.takes(&name("push.created")) && !gh.takes(&name("issue_comment.created")) && !gh.takes(&name("releases")));
        assert!(with(&["*"]).unwrap().sources["gh"].takes(&name("star.created")));
        let unset = Config::build(raw(&[("gh", src("github", Some(LONG), None))]), &no_env).unwrap();
        assert!(unset.sources["gh"].takes(&name("anything")), "unset: every event");
        let e = with(&[]).unwrap_err().problems.join("\n");
        assert!(e.contains("sources.gh.events = [] would publish nothing"), "{e}");
        let e = with(&["release *", "*.created"]).unwrap_err().problems.join("\n");
        assert!(e.contains("\"release *\" is neither an event name") && e.contains("\"*.created\" is neither"), "{e}");
    }

    #[test]
    fn lists_every_problem_at_once() {
        let mut bad_limits = raw(&[
            ("netlify", src("netlify", None, None)),
            ("zap", src("token", Some(LONG), None)),
            ("std", src("standard", Some("whsec_***"), Some(&["x"]))),
            ("weird", RawSource { header: Some("x".into()), ..src("carrier-pigeon", Some(LONG), Some(&["a"])) }),
            ("bad name", src("hmac", Some(LONG), Some(&["a b"]))),
        ]);
        bad_limits.limits.max_body_bytes = Some(0);
        let err = Config::build(bad_limits, &no_env).unwrap_err();
        let all = err.problems.join("\n");
        for needle in [
            "limits.max_body_bytes must be greater than 0",
            "sources.netlify: no secret; set secret, secret_env, or HOOKCAST_SECRET_NETLIFY",
            "sources.zap: set channels",
            "sources.std.secret must be whsec_",
            "sources.weird.kind \"carrier-pigeon\"",
            "sources.bad name: source names may use only",
            "\"a b\" is neither a channel name",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in\n{all}");
        }
        assert_eq!(err.problems.len(), 7, "{all}");
    }

    /// Private by default: a source whose body is the sender's to shape
    /// publishes only what it names, so one that names nothing is refused
    /// at start-up, by its name. Sender kinds have their ids and names as
    /// defaults and need no list.
    #[test]
    fn token_hmac_and_standard_sources_must_name_their_fields() {
        for kind in KINDS_NEEDING_FIELDS {
            let secret = if *kind == "standard" { "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" } else { LONG };
            let mut s = src(kind, Some(secret), Some(&["zaps/*"]));
            s.fields = None;
            let err = Config::build(raw(&[("zapier", s.clone())]), &no_env).unwrap_err();
            assert_eq!(err.problems.len(), 1, "{kind}: {err}");
            let msg = &err.problems[0];
            assert!(msg.starts_with("sources.zapier.fields: a ") && msg.contains("no field leaves unless it is named"), "{msg}");
            // A native body (a channel set) is no different.
            let mut native = s.clone();
            native.channels = None;
            native.channel = Some("zaps".into());
            native.event = Some("{type}".into());
            assert!(Config::build(raw(&[("zapier", native)]), &no_env).unwrap_err().problems[0].contains(".fields: a "));
            s.fields = Some(vec![]);
            assert!(Config::build(raw(&[("zapier", s)]), &no_env).is_ok(), "{kind}: an empty list is a choice (ids only)");
        }
        for kind in ["github", "vercel", "stripe", "shopify", "sanity", "contentful", "strapi"] {
            assert!(Config::build(raw(&[("s", src(kind, Some(secret_for(kind)), None))]), &no_env).is_ok(), "{kind}");
        }
    }

    #[test]
    fn state_ttl_and_private_exact_names() {
        let cfg = Config::build(RawConfig::default(), &no_env).unwrap();
        assert_eq!(cfg.limits.state_ttl, Duration::from_secs(30 * 24 * 3600));
        let mut r = RawConfig::default();
        r.limits.state_ttl_secs = Some(3600);
        r.limits.history_max_age_secs = Some(7200);
        let all = Config::build(r, &no_env).unwrap_err().problems.join("\n");
        assert!(all.contains("limits.state_ttl_secs must be at least history_max_age_secs"), "{all}");

        let private = |channels: &[&str]| {
            let r = RawConfig {
                private: Some(RawPrivate {
                    secret: Some(LONG.into()),
                    secret_env: None,
                    channels: channels.iter().map(|c| c.to_string()).collect(),
                }),
                ..Default::default()
            };
            Config::build(r, &no_env).unwrap().warnings()
        };
        let w = private(&["orders", "team/*"]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("\"orders\" is an exact name") && w[0].contains("orders/1") && w[0].contains("\"orders/*\""));
        assert!(private(&["orders", "orders/*"]).is_empty(), "its sub-channels are private too");
        assert!(private(&["orders*"]).is_empty());
        assert!(Config::build(RawConfig::default(), &no_env).unwrap().warnings().is_empty());
    }

    #[test]
    fn env_overrides_and_secret_env() {
        let mut s = src("hmac", Some("from-file-0123456789"), Some(&["news"]));
        s.secret_env = None;
        let env = |k: &str| (k == "HOOKCAST_SECRET_GH_APP").then(|| "from-env-0123456789".to_string());
        let cfg = Config::build(raw(&[("gh-app", s)]), &env).unwrap();
        match &cfg.sources["gh-app"].kind {
            SourceKind::Hmac { secret, .. } => assert_eq!(secret.expose(), b"from-env-0123456789"),
            k => panic!("{k:?}"),
        }
        let mut s = src("netlify", None, None);
        s.secret_env = Some("MY_NETLIFY".into());
        let err = Config::build(raw(&[("n", s.clone())]), &no_env).unwrap_err();
        assert_eq!(
            err.problems,
            vec!["sources.n.secret_env: the environment variable MY_NETLIFY is not set (export MY_NETLIFY=…)"]
        );
        // A secret pasted where a variable name goes is never echoed, even when it looks like one.
        let pasted = "f3a9c1d2e4b5a6978877665544332211";
        let mut p = src("netlify", None, None);
        p.secret_env = Some(pasted.into());
        let err = Config::build(raw(&[("n", p)]), &no_env).unwrap_err();
        assert!(!err.problems.join("\n").contains(pasted), "{:?}", err.problems);
        let env = |k: &str| (k == "MY_NETLIFY").then(|| "jws-secret-0123456789".to_string());
        assert!(Config::build(raw(&[("n", s)]), &env).is_ok());
    }

    #[test]
    fn short_and_empty_secrets_are_refused_for_every_kind() {
        for (kind, secret, channels) in [
            ("netlify", "short", None),
            ("hmac", "fifteen-bytes!!", Some(&["a"][..])),
            ("token", "abc", Some(&["a"][..])),
            ("standard", "whsec_", Some(&["a"][..])),
            ("standard", "whsec_c2hvcnQ=", Some(&["a"][..])),
        ] {
            let err = Config::build(raw(&[("s", src(kind, Some(secret), channels))]), &no_env).unwrap_err();
            let all = err.problems.join("\n");
            assert!(all.contains("at least 16") || all.contains("no secret"), "{kind} {secret:?}: {all}");
            assert!(!all.contains(secret) || secret == "whsec_", "the secret is echoed: {all}");
        }
        let ok = base64::engine::general_purpose::STANDARD.encode([7u8; 24]);
        assert!(Config::build(raw(&[("s", src("standard", Some(&format!("whsec_{ok}")), Some(&["a"])))]), &no_env).is_ok());
    }

    #[test]
    fn a_secret_pasted_into_secret_env_is_not_echoed() {
        let mut s = src("netlify", None, None);
        s.secret_env = Some("s3cr3t-value with spaces".into());
        let err = Config::build(raw(&[("n", s)]), &no_env).unwrap_err();
        let all = err.problems.join("\n");
        assert!(all.contains("secret_env must name an environment variable"), "{all}");
        assert!(!all.contains("s3cr3t"), "{all}");
    }

    #[test]
    fn private_channels_and_field_allow_lists() {
        let mut r =
            raw(&[("zap", RawSource { fields: Some(vec!["title".into()]), ..src("token", Some(LONG), Some(&["news"])) })]);
        r.private =
            Some(RawPrivate { secret: Some(LONG.into()), secret_env: None, channels: vec!["orders/*".into(), "team".into()] });
        let cfg = Config::build(r, &no_env).unwrap();
        assert_eq!(cfg.sources["zap"].fields, Some(vec!["title".to_string()]));
        let ch = |s: &str| Channel::parse(s).unwrap();
        assert!(cfg.is_private(&ch("orders/1")) && cfg.is_private(&ch("team")));
        assert!(!cfg.is_private(&ch("teams")) && !cfg.is_private(&ch("deploys")));
        assert!(!format!("{cfg:?}").contains(LONG));

        let r = RawConfig {
            private: Some(RawPrivate { secret: Some("short".into()), secret_env: None, channels: vec!["a b".into()] }),
            ..Default::default()
        };
        let all = Config::build(r, &no_env).unwrap_err().problems.join("\n");
        assert!(all.contains("private: the secret is 5 bytes") && all.contains("\"a b\" is neither"), "{all}");
        let env = |k: &str| (k == PRIVATE_SECRET_ENV).then(|| LONG.to_string());
        let r = RawConfig {
            private: Some(RawPrivate { secret: None, secret_env: None, channels: vec!["team".into()] }),
            ..Default::default()
        };
        assert!(Config::build(r, &env).unwrap().private.is_some());
        let mut n = src("netlify", Some(LONG), None);
        n.fields = Some(vec![]);
        assert!(Config::build(raw(&[("n", n)]), &no_env).unwrap_err().problems[0].contains("list fields per form"));
    }

    #[test]
    fn debug_output_never_contains_secrets() {
        let cfg = Config::build(raw(&[("n", src("netlify", Some("topsecretvalue-0123"), None))]), &no_env).unwrap();
        assert!(!format!("{cfg:?}").contains("topsecretvalue"));
        let r = src("netlify", Some("topsecretvalue-0123"), None);
        assert!(!format!("{r:?}").contains("topsecretvalue"));
    }

    #[test]
    fn state_rules_from_toml_and_from_one_line() {
        let text = r#"
[state]
"deploys" = "last"
"scoreboard" = "merge"
"forms/*" = "list:20"
"#;
        let cfg = Config::build(toml::from_str(text).unwrap(), &no_env).unwrap();
        let spec = |c: &str| cfg.state_spec(&Channel::parse(c).unwrap());
        assert_eq!(spec("deploys").unwrap().mode, StateMode::Last);
        assert_eq!(spec("scoreboard"), Some(StateSpec { mode: StateMode::Merge, max_bytes: 100 * 1024 }));
        assert_eq!(spec("forms/contact").unwrap().mode, StateMode::List(20));
        assert_eq!(spec("other"), None);

        let bad = r#"
[state]
"a b" = "last"
"x" = "list:0"
"#;
        let all = Config::build(toml::from_str(bad).unwrap(), &no_env).unwrap_err().problems.join("\n");
        assert!(all.contains("state: \"a b\" is neither") && all.contains("state.\"x\": \"list:0\""), "{all}");

        let line = parse_state_line("deploys=last, forms/*=list:20,,").unwrap();
        assert_eq!(line.get("forms/*").map(String::as_str), Some("list:20"));
        assert_eq!(line.len(), 2);
        assert!(parse_state_line("deploys:last").unwrap_err().contains("channel=mode"));
    }

    #[test]
    fn defaults() {
        let cfg = Config::build(RawConfig::default(), &no_env).unwrap();
        assert_eq!(cfg.limits, Limits::default());
        assert_eq!(cfg.limits.max_body_bytes, 1_048_576);
    }

    #[test]
    fn sender_kinds_and_their_options() {
        let with = |kind: &str, edit: &dyn Fn(&mut RawSource)| {
            let mut s = src(kind, Some(secret_for(kind)), None);
            edit(&mut s);
            Config::build(raw(&[("s", s)]), &no_env)
        };
        for kind in ["github", "vercel", "stripe", "shopify", "sanity", "contentful", "strapi"] {
            let cfg = with(kind, &|_| {}).unwrap_or_else(|e| panic!("{kind}: {e}"));
            let s = &cfg.sources["s"];
            assert_eq!(s.kind_name(), kind);
            // Default channel: the source's name.
            assert_eq!(s.route.as_ref().unwrap().channel.fixed(), Some("s"), "{kind}");
        }
        let cfg = with("github", &|_| {}).unwrap();
        assert_eq!(cfg.sources["s"].delivery_header.as_deref(), Some("x-github-delivery"));
        let cfg = with("shopify", &|_| {}).unwrap();
        assert_eq!(cfg.sources["s"].delivery_header.as_deref(), Some("x-shopify-webhook-id"));
        match &with("contentful", &|_| {}).unwrap().sources["s"].kind {
            SourceKind::Contentful { path, tolerance, .. } => assert_eq!((path.as_str(), tolerance.as_secs()), ("/hooks/s", 30)),
            k => panic!("{k:?}"),
        }
        // svix secrets are whsec_ + base64, as standard's.
        let svix = |secret: &str| {
            let s = RawSource { kind: "svix".into(), secret: Some(secret.into()), ..Default::default() };
            Config::build(raw(&[("clerk", s)]), &no_env)
        };
        assert!(svix("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
        assert!(svix("not base64 at all!").unwrap_err().problems[0].contains("whsec_"));

        let all = |kind: &str, edit: &dyn Fn(&mut RawSource)| with(kind, edit).unwrap_err().problems.join("\n");
        assert!(all("github", &|s| s.channels = Some(vec!["x".into()])).contains("sources.s.channels: this source's body"));
        assert!(all("stripe", &|s| s.channel = Some("a b".into())).contains("sources.s.channel: channel name"));
        assert!(all("stripe", &|s| s.channel = Some("cms/{sys..id}".into())).contains("sources.s.channel: in"));
        assert!(all("stripe", &|s| s.fields = Some(vec!["a..b".into()])).contains("sources.s.fields: \"a..b\""));
        assert!(all("vercel", &|s| s.delivery_header = Some("x-id".into())).contains("delivery_header does not apply"));
        assert!(all("github", &|s| s.prefix = Some("sha1=".into())).contains("sources.s.prefix does not apply"));
        assert!(all("github", &|s| s.tolerance_secs = Some(5)).contains("tolerance_secs does not apply"));
        assert!(all("sanity", &|s| s.path = Some("/x".into())).contains("sources.s.path does not apply"));
        assert!(all("contentful", &|s| s.path = Some("hooks/x".into())).contains("must start with '/'"));
        let mut n = src("netlify", Some(LONG), None);
        n.channel = Some("x".into());
        n.forms.insert("Contact Form".into(), RawForm { fields: vec![], channel: Some("a b".into()) });
        let err = Config::build(raw(&[("n", n)]), &no_env).unwrap_err().problems.join("\n");
        assert!(
            err.contains("sources.n.channel does not apply") && err.contains("sources.n.forms.Contact Form.channel"),
            "{err}"
        );
        let mut n = src("netlify", Some(LONG), None);
        n.forms.insert("Contact Form".into(), RawForm { fields: vec![], channel: Some("contact".into()) });
        match &Config::build(raw(&[("n", n)]), &no_env).unwrap().sources["n"].kind {
            SourceKind::Netlify { form_channels, .. } => assert_eq!(form_channels["Contact Form"].as_str(), "contact"),
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn generic_hmac_options() {
        let hmac = |edit: &dyn Fn(&mut RawSource)| {
            let mut s = src("hmac", Some(LONG), Some(&["news"]));
            edit(&mut s);
            Config::build(raw(&[("h", s)]), &no_env)
        };
        // Unchanged: GitHub's header, prefix, hex SHA-256, X-GitHub-Delivery.
        let cfg = hmac(&|_| {}).unwrap();
        match &cfg.sources["h"].kind {
            SourceKind::Hmac { scheme, .. } => assert_eq!(scheme, &HmacScheme::github()),
            k => panic!("{k:?}"),
        }
        assert_eq!(cfg.sources["h"].delivery_header.as_deref(), Some("x-github-delivery"));
        assert!(cfg.sources["h"].route.is_none(), "the {{channel, event, data}} body, as before");
        let cfg = hmac(&|s| {
            s.header = Some("X-Signature".into());
            s.encoding = Some("base64".into());
            s.algorithm = Some("sha1".into());
            s.timestamp_header = Some("X-Timestamp".into());
            s.tolerance_secs = Some(60);
        })
        .unwrap();
        match &cfg.sources["h"].kind {
            SourceKind::Hmac { scheme, .. } => assert_eq!(
                scheme,
                &HmacScheme {
                    header: "x-signature".into(),
                    prefix: String::new(),
                    encoding: Encoding::Base64,
                    algorithm: Algorithm::Sha1,
                    timestamp: Some(("x-timestamp".into(), Duration::from_secs(60))),
                }
            ),
            k => panic!("{k:?}"),
        }
        assert_eq!(cfg.sources["h"].delivery_header, None, "another sender: no GitHub delivery header");
        let all = |edit: &dyn Fn(&mut RawSource)| hmac(edit).unwrap_err().problems.join("\n");
        assert!(all(&|s| s.encoding = Some("base32".into())).contains("encoding \"base32\" is not hex or base64"));
        assert!(all(&|s| s.algorithm = Some("md5".into())).contains("algorithm \"md5\" is not sha256 or sha1"));
        assert!(all(&|s| s.tolerance_secs = Some(60)).contains("tolerance_secs does not apply"));
        assert!(all(&|s| s.header = Some("x sig".into())).contains("header \"x sig\" is not a valid header name"));
        // A native body: channel and event instead of channels.
        let cfg = hmac(&|s| {
            s.channels = None;
            s.channel = Some("releases".into());
            s.event = Some("{type}".into());
        })
        .unwrap();
        assert!(cfg.sources["h"].route.is_some());
        let no_event = all(&|s| {
            s.channels = None;
            s.channel = Some("releases".into());
        });
        assert!(no_event.contains("sources.h.event: a hmac source with a channel"), "{no_event}");
        assert!(all(&|s| s.event = Some("x".into())).contains("sources.h.event does not apply"));
    }
}

//! Turning a verified webhook body into one event on one channel.

use serde_json::{Map, Value};

use crate::channel::{Channel, EventName};
use crate::config::{Source, SourceKind};
use crate::error::HookError;

/// A validated event, not yet in a channel log.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub channel: Channel,
    pub event: EventName,
    pub data: Value,
    /// Identifies this delivery for dedupe, scoped to its source.
    /// The sender's identity for this delivery; `None`: no identity, so
    /// every delivery is a distinct event (bodies are never compared).
    pub dedupe_key: Option<String>,
}

/// The fields of a Netlify deploy that reach pages; the rest (admin URLs,
/// committer details, build logs, …) never leaves the server.
const DEPLOY_FIELDS: &[&str] =
    &["id", "state", "branch", "context", "commit_ref", "deploy_ssl_url", "deploy_url", "published_at", "title"];

enum Body {
    Json(Value),
    Form(Vec<(String, String)>),
}

fn parse_body(content_type: Option<&str>, body: &[u8]) -> Result<Body, HookError> {
    let media = content_type.map(|ct| ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase()).filter(|m| !m.is_empty());
    match media.as_deref() {
        None | Some("application/json") => json(body),
        Some(m) if m.ends_with("+json") => json(body),
        Some("application/x-www-form-urlencoded") => parse_form(body).map(Body::Form),
        Some(other) => Err(HookError::UnsupportedMediaType(other.to_owned())),
    }
}

fn json(body: &[u8]) -> Result<Body, HookError> {
    let v = serde_json::from_slice(body).map_err(|e| HookError::BadPayload(format!("body is not valid JSON: {e}")))?;
    check_numbers(body)?;
    Ok(Body::Json(v))
}

/// Refuses numbers that would reach pages changed: integers beyond 64 bits
/// (they would become floats) and decimals finer than a double keeps.
/// `body` is already known to be valid JSON.
pub fn check_numbers(body: &[u8]) -> Result<(), HookError> {
    let mut i = 0;
    let mut in_string = false;
    while i < body.len() {
        let b = body[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        if b == b'-' || b.is_ascii_digit() {
            let start = i;
            while i < body.len() && matches!(body[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                i += 1;
            }
            let text = std::str::from_utf8(&body[start..i]).unwrap_or("");
            number_is_exact(text).map_err(HookError::BadPayload)?;
            continue;
        }
        i += 1;
    }
    Ok(())
}

fn number_is_exact(text: &str) -> Result<(), String> {
    let shown: String = text.chars().take(40).collect();
    if !text.contains(['.', 'e', 'E']) {
        if text.parse::<i64>().is_ok() || text.parse::<u64>().is_ok() {
            return Ok(());
        }
        return Err(format!("the integer {shown} does not fit in 64 bits; send it as a string"));
    }
    let mantissa = text.split(['e', 'E']).next().unwrap_or("");
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0');
    let value: f64 = text.parse().unwrap_or(f64::NAN);
    if significant.len() > 17 || !value.is_finite() || (value == 0.0 && !significant.is_empty()) {
        return Err(format!("the number {shown} cannot be kept exactly; send it as a string"));
    }
    Ok(())
}

/// `application/x-www-form-urlencoded`, strictly: every name and value must
/// decode to UTF-8 (nothing is replaced with U+FFFD), and repeated names are kept.
fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, HookError> {
    fn decode(part: &[u8]) -> Result<String, HookError> {
        let mut out = Vec::with_capacity(part.len());
        let mut i = 0;
        while i < part.len() {
            match part[i] {
                b'+' => out.push(b' '),
                b'%' => match hex_pair(part.get(i + 1).copied(), part.get(i + 2).copied()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                },
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8(out)
            .map_err(|_| HookError::BadPayload("a form field is not valid UTF-8 (percent-encode UTF-8 bytes)".into()))
    }
    body.split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = match pair.iter().position(|b| *b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &b""[..]),
            };
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

fn hex_pair(a: Option<u8>, b: Option<u8>) -> Option<u8> {
    let h = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    Some(h(a?)? * 16 + h(b?)?)
}

/// `delivery_id` is the sender's id for this delivery, when it sends one.
pub fn normalise(
    source: &Source,
    content_type: Option<&str>,
    body: &[u8],
    delivery_id: Option<&str>,
) -> Result<NewEvent, HookError> {
    let parsed = parse_body(content_type, body)?;
    let mut ev = match &source.kind {
        SourceKind::Netlify { forms, .. } => {
            let Body::Json(Value::Object(obj)) = parsed else {
                return Err(HookError::BadPayload("Netlify payloads are JSON objects".into()));
            };
            netlify(&obj, forms)?
        }
        _ => generic(source, parsed)?,
    };
    if let Some(id) = delivery_id {
        ev.dedupe_key = Some(format!("id:{id}"));
    }
    ev.dedupe_key = ev.dedupe_key.map(|k| format!("{}:{k}", source.name));
    Ok(ev)
}

fn str_field<'a>(obj: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    obj.get(k).and_then(Value::as_str)
}

fn netlify(obj: &Map<String, Value>, forms: &std::collections::BTreeMap<String, Vec<String>>) -> Result<NewEvent, HookError> {
    if let Some(form_name) = str_field(obj, "form_name") {
        let channel = Channel::parse(&format!("forms/{form_name}"))
            .map_err(|e| HookError::BadPayload(format!("form name {form_name:?} cannot be a channel: {e}")))?;
        let mut data = Map::new();
        data.insert("form".into(), Value::from(form_name));
        if let Some(at) = obj.get("created_at") {
            data.insert("created_at".into(), at.clone());
        }
        let submitted = obj.get("data").and_then(Value::as_object);
        if !forms.contains_key(form_name) {
            tracing::warn!(
                form = form_name,
                "form not in the netlify source's forms: published with no fields; list them under [sources.<name>.forms.{form_name}] fields"
            );
        }
        let mut fields = Map::new();
        for name in forms.get(form_name).into_iter().flatten() {
            if let Some(v) = submitted.and_then(|d| d.get(name)).filter(|v| !v.is_object() && !v.is_array()) {
                fields.insert(name.clone(), v.clone());
            }
        }
        data.insert("fields".into(), Value::Object(fields));
        let key = str_field(obj, "id").map(|id| format!("form:{id}"));
        return Ok(NewEvent {
            channel,
            event: EventName::parse("form.submitted").expect("valid literal"),
            data: Value::Object(data),
            dedupe_key: key,
        });
    }
    if let Some(state) = str_field(obj, "state") {
        let name = match state {
            "building" | "enqueued" | "new" => "started".to_owned(),
            "ready" => "succeeded".to_owned(),
            "error" => "failed".to_owned(),
            other => other.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(40).collect(),
        };
        if name.is_empty() {
            return Err(HookError::BadPayload(format!(
                "deploy state {:?} is not recognised",
                state.chars().take(40).collect::<String>()
            )));
        }
        let event = EventName::parse(&format!("deploy.{name}"))
            .map_err(|_| HookError::BadPayload(format!("deploy state {state:?} is not recognised")))?;
        let data: Map<String, Value> = DEPLOY_FIELDS
            .iter()
            .filter_map(|k| obj.get(*k).filter(|v| !v.is_null()).map(|v| ((*k).to_owned(), v.clone())))
            .collect();
        let key = str_field(obj, "id").map(|id| format!("deploy:{id}:{state}"));
        // Production deploys go to `deploys`; previews and branch deploys to
        // `deploys/<context>`, so they never refresh production pages.
        let channel = match str_field(obj, "context") {
            None | Some("production") => Channel::parse("deploys").expect("valid literal"),
            Some(context) => {
                let name: String = context
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
                    .take(64)
                    .collect();
                Channel::parse(&format!("deploys/{name}"))
                    .map_err(|e| HookError::BadPayload(format!("deploy context {context:?} cannot be a channel: {e}")))?
            }
        };
        return Ok(NewEvent { channel, event, data: Value::Object(data), dedupe_key: key });
    }
    Err(HookError::BadPayload("not a Netlify deploy or form notification (no \"state\" or \"form_name\")".into()))
}

fn generic(source: &Source, parsed: Body) -> Result<NewEvent, HookError> {
    let (channel, event, data) = match parsed {
        Body::Json(Value::Object(mut obj)) => {
            let take = |obj: &mut Map<String, Value>, k: &str| match obj.remove(k) {
                Some(Value::String(s)) => Ok(s),
                Some(_) => Err(HookError::BadPayload(format!("\"{k}\" must be a string"))),
                None => Err(HookError::BadPayload(format!("body needs \"{k}\": {{\"channel\", \"event\", \"data\"}}"))),
            };
            let channel = take(&mut obj, "channel")?;
            let event = take(&mut obj, "event")?;
            // Either {"channel","event","data"}, or flat as Zapier's `json`
            // payload type sends it: every other field is data. Never both,
            // so no field is dropped without a word.
            let data = match obj.remove("data") {
                None => Value::Object(obj),
                Some(data) if obj.is_empty() => data,
                Some(_) => {
                    let extra: Vec<&str> = obj.keys().map(String::as_str).take(5).collect();
                    return Err(HookError::BadPayload(format!(
                        "fields beside \"data\" would be lost ({}); put them inside data, or send no data and every other field becomes data",
                        extra.join(", ")
                    )));
                }
            };
            (channel, event, data)
        }
        Body::Json(_) => {
            return Err(HookError::BadPayload("body must be a JSON object {\"channel\", \"event\", \"data\"}".into()))
        }
        Body::Form(pairs) => {
            // Zapier's default: `channel`, `event`, and every other field becomes data.
            // A name sent more than once (a multi-select) becomes a list, in order.
            let (mut channel, mut event, mut data) = (None, None, Map::new());
            for (k, v) in pairs {
                match k.as_str() {
                    "channel" | "event" => {
                        let slot = if k == "channel" { &mut channel } else { &mut event };
                        if slot.replace(v).is_some() {
                            return Err(HookError::BadPayload(format!("form body has more than one \"{k}\" field")));
                        }
                    }
                    _ => match data.get_mut(&k) {
                        Some(Value::Array(list)) => list.push(Value::String(v)),
                        Some(first) => *first = Value::Array(vec![first.take(), Value::String(v)]),
                        None => {
                            data.insert(k, Value::String(v));
                        }
                    },
                }
            }
            let need =
                |v: Option<String>, k: &str| v.ok_or_else(|| HookError::BadPayload(format!("form body needs a \"{k}\" field")));
            (need(channel, "channel")?, need(event, "event")?, Value::Object(data))
        }
    };
    let channel = Channel::parse(&channel).map_err(|e| HookError::BadPayload(e.to_string()))?;
    let event = EventName::parse(&event).map_err(|e| HookError::BadPayload(e.to_string()))?;
    if !source.channels.iter().any(|p| p.matches(&channel)) {
        return Err(HookError::ChannelNotAllowed(channel.to_string()));
    }
    let data = match (&source.fields, data) {
        (None, data) => data,
        (Some(allowed), Value::Object(mut obj)) => {
            let dropped: Vec<String> = obj.keys().filter(|k| !allowed.contains(k)).cloned().collect();
            if !dropped.is_empty() {
                tracing::info!(source = %source.name, ?dropped, "fields not in the source's allow-list were not published");
            }
            obj.retain(|k, _| allowed.contains(k));
            Value::Object(obj)
        }
        (Some(_), _) => {
            return Err(HookError::BadPayload(
                "this source forwards listed fields only, so \"data\" must be an object of fields".into(),
            ))
        }
    };
    Ok(NewEvent { channel, event, data, dedupe_key: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn netlify_src(forms: &[(&str, &[&str])]) -> Source {
        let forms: BTreeMap<_, _> =
            forms.iter().map(|(f, fs)| (f.to_string(), fs.iter().map(|s| s.to_string()).collect())).collect();
        Source {
            name: "netlify".into(),
            kind: SourceKind::Netlify { secret: Secret::new("s"), forms },
            channels: vec![],
            delivery_header: None,
            fields: None,
        }
    }
    fn zap() -> Source {
        Source {
            name: "zap".into(),
            kind: SourceKind::Token { header: "x-hookcast-token".into(), secret: Secret::new("s") },
            channels: vec!["news/*".parse().unwrap(), "alerts".parse().unwrap()],
            delivery_header: None,
            fields: None,
        }
    }

    /// A Netlify deploy notification with every field Netlify sends (shared fixture).
    pub(crate) fn deploy_payload(state: &str) -> Value {
        let mut v: Value = serde_json::from_str(include_str!("../../../tests/fixtures/netlify/deploy.json")).unwrap();
        v["state"] = Value::from(state);
        v
    }

    #[test]
    fn netlify_deploy_carries_only_the_safe_subset() {
        let body = deploy_payload("ready").to_string();
        let ev = normalise(&netlify_src(&[]), Some("application/json"), body.as_bytes(), None).unwrap();
        assert_eq!(ev.channel.as_str(), "deploys");
        assert_eq!(ev.event.as_str(), "deploy.succeeded");
        let keys: Vec<_> = ev.data.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), DEPLOY_FIELDS.len(), "{keys:?}");
        assert_eq!(ev.data["title"], "Update pricing page");
        assert!(!ev.data.to_string().contains("LOGTOKEN"));
        assert!(ev.data.get("admin_url").is_none());
        assert_eq!(ev.dedupe_key.as_deref(), Some("netlify:deploy:6571ba2f1c3d8a0008f9b2c1:ready"));

        for (state, name) in [("building", "deploy.started"), ("error", "deploy.failed"), ("processing", "deploy.processing")] {
            let body = deploy_payload(state).to_string();
            assert_eq!(normalise(&netlify_src(&[]), None, body.as_bytes(), None).unwrap().event.as_str(), name);
        }
    }

    #[test]
    fn netlify_form_carries_only_allow_listed_fields() {
        let body = include_str!("../../../tests/fixtures/netlify/form.json");
        let ev = normalise(&netlify_src(&[("guestbook", &["name", "message"])]), None, body.as_bytes(), None).unwrap();
        assert_eq!(ev.channel.as_str(), "forms/guestbook");
        assert_eq!(ev.event.as_str(), "form.submitted");
        assert_eq!(
            ev.data,
            json!({"form":"guestbook","created_at":"2026-11-23T07:00:00.000Z","fields":{"name":"Ada","message":"Hello!"}})
        );
        // Default: nothing beyond the form name and time.
        let ev = normalise(&netlify_src(&[]), None, body.as_bytes(), None).unwrap();
        assert_eq!(ev.data["fields"], json!({}));
        assert!(!ev.data.to_string().contains("203.0.113.9"));
        assert_eq!(ev.dedupe_key.as_deref(), Some("netlify:form:6571c0de"));

        let bad = json!({"form_name": "my form!", "data": {}}).to_string();
        let err = normalise(&netlify_src(&[]), None, bad.as_bytes(), None).unwrap_err();
        assert!(matches!(&err, HookError::BadPayload(m) if m.contains("cannot be a channel")), "{err:?}");
        let neither = normalise(&netlify_src(&[]), None, br#"{"hello":1}"#, None).unwrap_err();
        assert!(matches!(neither, HookError::BadPayload(m) if m.contains("not a Netlify")));
    }

    #[test]
    fn generic_json_and_form_bodies() {
        let body = br#"{"channel":"news/today","event":"post.published","data":{"title":"Hi"}}"#;
        let ev = normalise(&zap(), Some("application/json; charset=utf-8"), body, None).unwrap();
        assert_eq!((ev.channel.as_str(), ev.event.as_str()), ("news/today", "post.published"));
        assert_eq!(ev.data, json!({"title":"Hi"}));
        assert_eq!(ev.dedupe_key, None, "no delivery id: never deduped by body");

        let form = b"channel=alerts&event=zap.fired&title=Hello+world&url=https%3A%2F%2Fx.test";
        let ev = normalise(&zap(), Some("application/x-www-form-urlencoded"), form, Some("msg_1")).unwrap();
        assert_eq!(ev.channel.as_str(), "alerts");
        assert_eq!(ev.data, json!({"title":"Hello world","url":"https://x.test"}));
        assert_eq!(ev.dedupe_key.as_deref(), Some("zap:id:msg_1"));
    }

    #[test]
    fn generic_refusals() {
        let n = |ct: Option<&str>, b: &[u8]| normalise(&zap(), ct, b, None).unwrap_err();
        assert!(matches!(n(Some("text/plain"), b"{}"), HookError::UnsupportedMediaType(m) if m == "text/plain"));
        assert!(matches!(n(None, b"{nope"), HookError::BadPayload(m) if m.contains("not valid JSON")));
        assert!(matches!(n(None, b"[1]"), HookError::BadPayload(m) if m.contains("JSON object")));
        assert!(matches!(n(None, br#"{"event":"x"}"#), HookError::BadPayload(m) if m.contains("\"channel\"")));
        assert!(
            matches!(n(None, br#"{"channel":"news/a","event":7}"#), HookError::BadPayload(m) if m.contains("must be a string"))
        );
        assert!(
            matches!(n(None, br#"{"channel":"bad name","event":"e"}"#), HookError::BadPayload(m) if m.contains("channel name"))
        );
        assert!(matches!(n(None, br#"{"channel":"secret","event":"e"}"#), HookError::ChannelNotAllowed(c) if c == "secret"));
        assert!(
            matches!(n(Some("application/x-www-form-urlencoded"), b"event=x"), HookError::BadPayload(m) if m.contains("\"channel\""))
        );
    }

    #[test]
    fn numbers_are_kept_exactly_or_refused() {
        let ok = |b: &str| normalise(&zap(), None, b.as_bytes(), None).map(|e| e.data);
        let body = |n: &str| format!(r#"{{"channel":"alerts","event":"e","data":{{"n":{n},"s":"12345678901234567890123"}}}}"#);
        for n in ["0", "-1", "18446744073709551615", "-9223372036854775808", "1.5", "0.1", "1e300", "-2.5E-3", "0.0"] {
            let data = ok(&body(n)).unwrap_or_else(|e| panic!("{n}: {e:?}"));
            assert_eq!(data["n"].to_string().parse::<f64>().unwrap(), n.parse::<f64>().unwrap(), "{n}");
        }
        assert_eq!(ok(&body("18446744073709551615")).unwrap()["n"].as_u64(), Some(u64::MAX));
        for n in [
            "18446744073709551616",
            "-9223372036854775809",
            "123456789012345678901234567890",
            "1e-400",
            "0.123456789012345678901",
        ] {
            let err = ok(&body(n)).unwrap_err();
            assert!(matches!(&err, HookError::BadPayload(m) if m.contains("send it as a string")), "{n}: {err:?}");
        }
    }

    #[test]
    fn form_bodies_keep_repeats_and_refuse_bad_utf8() {
        let form = |b: &[u8]| normalise(&zap(), Some("application/x-www-form-urlencoded"), b, None);
        let ev = form(b"channel=alerts&event=e&tag=a&tag=b&tag=c&x=%E2%9C%93&y=100%25&z=%zz").unwrap();
        assert_eq!(ev.data, json!({"tag": ["a", "b", "c"], "x": "\u{2713}", "y": "100%", "z": "%zz"}));
        for bad in [&b"channel=alerts&event=e&x=%FF"[..], b"channel=alerts&event=e&x=\xff", b"channel=alerts&event=e&%C3=1"] {
            assert!(matches!(form(bad), Err(HookError::BadPayload(m)) if m.contains("UTF-8")), "{bad:?}");
        }
        assert!(
            matches!(form(b"channel=alerts&channel=news/a&event=e"), Err(HookError::BadPayload(m)) if m.contains("more than one"))
        );
    }

    #[test]
    fn field_allow_lists_for_generic_sources() {
        let mut src = zap();
        src.fields = Some(vec!["title".into()]);
        let body = br#"{"channel":"alerts","event":"e","data":{"title":"Hi","email":"a@b.example"}}"#;
        assert_eq!(normalise(&src, None, body, None).unwrap().data, json!({"title": "Hi"}));
        let scalar = br#"{"channel":"alerts","event":"e","data":"a@b.example"}"#;
        assert!(matches!(normalise(&src, None, scalar, None), Err(HookError::BadPayload(m)) if m.contains("object of fields")));
        let form = b"channel=alerts&event=e&title=Hi&email=a%40b.example";
        let ev = normalise(&src, Some("application/x-www-form-urlencoded"), form, None).unwrap();
        assert_eq!(ev.data, json!({"title": "Hi"}));
    }

    #[test]
    fn flat_json_is_data_and_nothing_is_dropped_silently() {
        let flat = br#"{"channel":"alerts","event":"zap.fired","title":"Hi","count":3}"#;
        assert_eq!(normalise(&zap(), None, flat, None).unwrap().data, json!({"title": "Hi", "count": 3}));
        let both = br#"{"channel":"alerts","event":"e","data":{"a":1},"title":"lost?"}"#;
        assert!(matches!(normalise(&zap(), None, both, None), Err(HookError::BadPayload(m)) if m.contains("title")));
        let bare = br#"{"channel":"alerts","event":"e"}"#;
        assert_eq!(normalise(&zap(), None, bare, None).unwrap().data, json!({}));
    }

    #[test]
    fn deploy_previews_and_branch_deploys_stay_off_production_pages() {
        let mut p = deploy_payload("ready");
        for (context, channel) in
            [("production", "deploys"), ("deploy-preview", "deploys/deploy-preview"), ("branch-deploy", "deploys/branch-deploy")]
        {
            p["context"] = json!(context);
            let ev = normalise(&netlify_src(&[]), None, p.to_string().as_bytes(), None).unwrap();
            assert_eq!(ev.channel.as_str(), channel);
        }
        p.as_object_mut().unwrap().remove("context");
        assert_eq!(normalise(&netlify_src(&[]), None, p.to_string().as_bytes(), None).unwrap().channel.as_str(), "deploys");
    }
}

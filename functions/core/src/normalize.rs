//! Turning a verified webhook body into one event on one channel.

use serde_json::{Map, Value};

use crate::channel::{Channel, EventName};
use crate::config::{Route, Source, SourceKind};
use crate::error::HookError;
use crate::mapping::{project, project_patch};
use crate::webhook::Verified;

pub use crate::webhook::{Body, NewEvent, Normalised};

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

/// `verified` carries what the signature check read from headers: the
/// sender's delivery id and event type, where it sends them there.
///
/// The delivery's identities: ids in the body (Netlify's, Stripe's and
/// Vercel's, all signed with the body), the delivery id from a header, and,
/// when none of them is signed (GitHub's `X-GitHub-Delivery`, Shopify's
/// `X-Shopify-Webhook-Id`, Sanity's idempotency key, the `hmac` kind's
/// delivery header: a replayer writes what it likes there), the hash of
/// what the signature covers.
pub fn normalise(source: &Source, content_type: Option<&str>, body: &[u8], verified: &Verified) -> Result<Normalised, HookError> {
    // A verified delivery that is no event (GitHub's ping) publishes nothing.
    if let Some(reason) = source.kind.ignores(verified) {
        let channel = source.route.as_ref().and_then(|r| r.channel.fixed()).unwrap_or(&source.name);
        if let Ok(channel) = Channel::parse(channel) {
            return Ok(Normalised::Ignored { channel, reason: reason.into() });
        }
    }
    let parsed = parse_body(content_type, body)?;
    // A kind publishing its own body (Netlify's) first, whatever the route.
    let mut ev = match (source.kind.own(&parsed), &source.route) {
        (Some(own), _) => match own? {
            Normalised::Event(ev) => ev,
            ignored => return Ok(ignored),
        },
        (None, Some(route)) => native(source, route, parsed, verified.topic.as_deref())?,
        (None, None) => generic(source, parsed)?,
    };
    // Ids read from the body are signed with it.
    let mut signed_identity = !ev.delivery_keys.is_empty();
    if let Some(id) = &verified.delivery_id {
        ev.delivery_keys.push(format!("id:{id}"));
        signed_identity |= verified.id_signed;
    }
    if !signed_identity {
        ev.content_key = verified.signed_sha256.as_ref().map(|h| format!("{}:sha256:{h}", source.name));
    }
    for k in &mut ev.delivery_keys {
        *k = format!("{}:{k}", source.name);
    }
    Ok(Normalised::Event(ev))
}

/// The sender's own time for the event, in the field its kind keeps it
/// (each kind's [`crate::senders::Sender::time`]: Stripe's `created`, a
/// GitHub release's `published_at`, …). `None` where the kind or event says
/// no time of its own (the `hmac` and `token` kinds, a GitHub issue comment,
/// …): a `last` state then takes whatever comes last.
pub fn sender_time(kind: &SourceKind, body: &Value, topic: Option<&str>) -> Option<u64> {
    kind.time(body, topic)
}

/// What each sender kind publishes when the source lists no `fields` (its
/// [`crate::senders::Sender::default_fields`]): the sender's ids, names and
/// states, never an e-mail, address, IP or token. Deploys keep the deploy's
/// id at `data.id` (a page knows its own deploy by it).
pub fn default_fields(kind: &SourceKind) -> &'static [&'static str] {
    kind.default_fields()
}

/// A sender's own JSON body, mapped by the source's route and fields.
fn native(source: &Source, route: &Route, parsed: Body, topic: Option<&str>) -> Result<NewEvent, HookError> {
    let kind = source.kind_name();
    let body = match parsed {
        Body::Json(v @ Value::Object(_)) => v,
        Body::Json(_) => return Err(HookError::BadPayload(format!("a {kind} body must be a JSON object"))),
        Body::Form(_) => {
            return Err(HookError::BadPayload(format!(
                "a {kind} source reads a JSON body; set the sender's content type to application/json"
            )))
        }
    };
    let (sender_event, id) = source.kind.event(&body, topic, source.fields.as_ref())?;
    let event = match (&route.event, sender_event) {
        (Some(t), _) => t.event(&body)?,
        (None, Some(name)) => EventName::parse(&name)
            .map_err(|e| HookError::BadPayload(format!("the {kind} event type cannot be an event name: {e}")))?,
        (None, None) => return Err(HookError::BadPayload(format!("a {kind} body names no event; set event = \"…\""))),
    };
    let channel = route.channel_for(&event).channel(&body)?;
    let data = match &source.fields {
        Some(fields) => project(&body, fields),
        None => project(&body, default_fields(&source.kind)),
    };
    let event_ms = sender_time(&source.kind, &body, topic);
    Ok(NewEvent {
        channel,
        event,
        data,
        delivery_keys: id.map(|id| format!("id:{id}")).into_iter().collect(),
        content_key: None,
        event_ms,
    })
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
        (Some(allowed), data @ Value::Object(_)) => {
            let kept = project_patch(&data, allowed);
            if kept != data {
                tracing::info!(source = %source.name, "fields not in the source's allow-list were not published");
            }
            kept
        }
        (Some(_), _) => {
            return Err(HookError::BadPayload(
                "this source forwards listed fields only, so \"data\" must be an object of fields".into(),
            ))
        }
    };
    Ok(NewEvent { channel, event, data, delivery_keys: vec![], content_key: None, event_ms: None })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::senders::netlify::form_slug;
    use serde_json::json;
    use std::collections::BTreeMap;

    pub(crate) fn netlify_src(forms: &[(&str, &[&str])]) -> Source {
        let forms: BTreeMap<_, _> =
            forms.iter().map(|(f, fs)| (f.to_string(), fs.iter().map(|s| s.to_string()).collect())).collect();
        Source {
            name: "netlify".into(),
            kind: SourceKind::Netlify { secret: Secret::new("s"), forms, form_channels: BTreeMap::new() },
            channels: vec![],
            delivery_header: None,
            fields: None,
            route: None,
            events: None,
        }
    }
    pub(crate) fn zap() -> Source {
        Source {
            name: "zap".into(),
            kind: SourceKind::Token { header: "x-hookcast-token".into(), secret: Secret::new("s") },
            channels: vec!["news/*".parse().unwrap(), "alerts".parse().unwrap()],
            delivery_header: None,
            fields: None,
            route: None,
            events: None,
        }
    }

    /// The event a webhook comes to (these tests expect one, not an ignored delivery).
    pub(crate) fn normalise(
        source: &Source,
        content_type: Option<&str>,
        body: &[u8],
        v: &Verified,
    ) -> Result<NewEvent, HookError> {
        super::normalise(source, content_type, body, v).map(|n| n.event().expect("an event, not an ignored delivery"))
    }

    /// A Netlify deploy notification with every field Netlify sends (shared fixture).
    pub(crate) fn deploy_payload(state: &str) -> Value {
        let mut v: Value = serde_json::from_str(include_str!("../../../tests/fixtures/netlify/deploy.json")).unwrap();
        v["state"] = Value::from(state);
        v
    }

    #[test]
    fn netlify_form_carries_only_allow_listed_fields() {
        let body = include_str!("../../../tests/fixtures/netlify/form.json");
        let ev =
            normalise(&netlify_src(&[("guestbook", &["name", "message"])]), None, body.as_bytes(), &Verified::default()).unwrap();
        assert_eq!(ev.channel.as_str(), "forms/guestbook");
        assert_eq!(ev.event.as_str(), "form.submitted");
        assert_eq!(
            ev.data,
            json!({"form":"guestbook","created_at":"2026-11-23T07:00:00.000Z","fields":{"name":"Ada","message":"Hello!"}})
        );
        // Listed with no fields: nothing beyond the form name and time.
        let ev = normalise(&netlify_src(&[("guestbook", &[])]), None, body.as_bytes(), &Verified::default()).unwrap();
        assert_eq!(ev.data["fields"], json!({}));
        assert!(!ev.data.to_string().contains("203.0.113.9"));
        assert_eq!(ev.delivery_keys, vec!["netlify:form:6571c0de"]);

        let bad = json!({"form_name": "!!! ???", "data": {}}).to_string();
        let err = normalise(&netlify_src(&[("!!! ???", &[])]), None, bad.as_bytes(), &Verified::default()).unwrap_err();
        assert!(matches!(&err, HookError::BadPayload(m) if m.contains("no letter or digit")), "{err:?}");
        let neither = normalise(&netlify_src(&[]), None, br#"{"hello":1}"#, &Verified::default()).unwrap_err();
        assert!(matches!(neither, HookError::BadPayload(m) if m.contains("not a Netlify")));
    }

    /// A form the source does not list publishes nothing: not its name, not
    /// its time (it was once published with no fields).
    #[test]
    fn an_unconfigured_netlify_form_is_ignored() {
        let body = include_str!("../../../tests/fixtures/senders/netlify/form-contact.json");
        for src in [netlify_src(&[]), netlify_src(&[("guestbook", &["name"])])] {
            match super::normalise(&src, None, body.as_bytes(), &Verified::default()).unwrap() {
                Normalised::Ignored { channel, reason } => {
                    assert_eq!(channel.as_str(), "forms/contact");
                    assert!(reason.contains("\"contact\" is not configured"), "{reason}");
                }
                other => panic!("published: {other:?}"),
            }
        }
        // Listed under its own name or its slug, it publishes.
        for listed in ["contact", "Contact"] {
            let body = body.replace("\"contact\"", &format!("{listed:?}"));
            let ev = normalise(&netlify_src(&[("contact", &["name"])]), None, body.as_bytes(), &Verified::default()).unwrap();
            assert_eq!((ev.channel.as_str(), ev.data["fields"].clone()), ("forms/contact", json!({"name": "Ursula K. Le Guin"})));
        }
        // No name to make a channel of, and not listed: ignored too, not refused.
        let nameless = json!({"form_name": "!!!", "data": {}}).to_string();
        let got = super::normalise(&netlify_src(&[]), None, nameless.as_bytes(), &Verified::default()).unwrap();
        assert!(matches!(got, Normalised::Ignored { ref channel, .. } if channel.as_str() == "forms"), "{got:?}");
    }

    #[test]
    fn netlify_form_names_become_channels_by_one_rule() {
        for (name, channel) in [
            ("Contact Form", "forms/contact-form"),
            ("contact", "forms/contact"),
            ("  Sign-up: 2026 (beta)! ", "forms/sign-up-2026-beta"),
            ("news_letter", "forms/news_letter"),
            ("Café au lait", "forms/cafe-au-lait"),
            ("Straße 5", "forms/strasse-5"),
            ("Anmeldung für Kurse", "forms/anmeldung-fur-kurse"),
            ("日本", "forms/u65e5-u672c"),
            ("Заказ", "forms/u437-u430-u43a-u430-u437"),
            ("my form!", "forms/my-form"),
        ] {
            let body = json!({"form_name": name, "id": "f1", "data": {"name": "Ada"}}).to_string();
            let ev = normalise(&netlify_src(&[(name, &[])]), None, body.as_bytes(), &Verified::default()).unwrap();
            assert_eq!(ev.channel.as_str(), channel, "{name:?}");
            assert_eq!(ev.data["form"], name);
        }
        assert_eq!(form_slug(&"a".repeat(100)).unwrap().len(), 64);
        assert_eq!(form_slug(&format!("{} b", "a".repeat(63))).unwrap(), "a".repeat(63), "no '-' left at the cut");
        // An explicit channel per form wins, and fields are listed under the form's own name.
        let mut src = netlify_src(&[("Contact Form", &["name"])]);
        if let SourceKind::Netlify { form_channels, .. } = &mut src.kind {
            form_channels.insert("Contact Form".into(), Channel::parse("contact").unwrap());
        }
        let body =
            include_str!("../../../tests/fixtures/senders/netlify/form-contact.json").replace("\"contact\"", "\"Contact Form\"");
        let ev = normalise(&src, None, body.as_bytes(), &Verified::default()).unwrap();
        assert_eq!(ev.channel.as_str(), "contact");
        assert_eq!(ev.data["fields"], json!({"name": "Ursula K. Le Guin"}));
        assert!(!ev.data.to_string().contains("user-email@example.org"));
        // Or under its slug, as it appears in the channel.
        let ev = normalise(&netlify_src(&[("contact-form", &["message"])]), None, body.as_bytes(), &Verified::default()).unwrap();
        assert_eq!(ev.channel.as_str(), "forms/contact-form");
        assert_eq!(ev.data["fields"], json!({"message": "El nombre del mundo es Bosque"}));
    }

    #[test]
    fn generic_json_and_form_bodies() {
        let body = br#"{"channel":"news/today","event":"post.published","data":{"title":"Hi"}}"#;
        let ev = normalise(&zap(), Some("application/json; charset=utf-8"), body, &Verified::default()).unwrap();
        assert_eq!((ev.channel.as_str(), ev.event.as_str()), ("news/today", "post.published"));
        assert_eq!(ev.data, json!({"title":"Hi"}));
        assert_eq!((ev.delivery_keys.len(), ev.content_key.clone()), (0, None), "no delivery id, nothing signed: never deduped");

        let form = b"channel=alerts&event=zap.fired&title=Hello+world&url=https%3A%2F%2Fx.test";
        let ev = normalise(
            &zap(),
            Some("application/x-www-form-urlencoded"),
            form,
            &Verified { delivery_id: Some("msg_1".into()), ..Verified::default() },
        )
        .unwrap();
        assert_eq!(ev.channel.as_str(), "alerts");
        assert_eq!(ev.data, json!({"title":"Hello world","url":"https://x.test"}));
        assert_eq!(ev.delivery_keys, vec!["zap:id:msg_1"]);
    }

    #[test]
    fn generic_refusals() {
        let n = |ct: Option<&str>, b: &[u8]| normalise(&zap(), ct, b, &Verified::default()).unwrap_err();
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
        let ok = |b: &str| normalise(&zap(), None, b.as_bytes(), &Verified::default()).map(|e| e.data);
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
        let form = |b: &[u8]| normalise(&zap(), Some("application/x-www-form-urlencoded"), b, &Verified::default());
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
        assert_eq!(normalise(&src, None, body, &Verified::default()).unwrap().data, json!({"title": "Hi"}));
        let scalar = br#"{"channel":"alerts","event":"e","data":"a@b.example"}"#;
        assert!(
            matches!(normalise(&src, None, scalar, &Verified::default()), Err(HookError::BadPayload(m)) if m.contains("object of fields"))
        );
        let form = b"channel=alerts&event=e&title=Hi&email=a%40b.example";
        let ev = normalise(&src, Some("application/x-www-form-urlencoded"), form, &Verified::default()).unwrap();
        assert_eq!(ev.data, json!({"title": "Hi"}));
    }

    /// A listed field sent as `null` passes: in a merge patch it deletes
    /// the key, and a source must list its fields.
    #[test]
    fn listed_nulls_pass_as_patches() {
        let mut src = zap();
        src.fields = Some(vec!["period".into(), "away".into()]);
        let body = br#"{"channel":"alerts","event":"score","data":{"period":null,"away":2,"email":null}}"#;
        assert_eq!(normalise(&src, None, body, &Verified::default()).unwrap().data, json!({"period": null, "away": 2}));
    }

    #[test]
    fn flat_json_is_data_and_nothing_is_dropped_silently() {
        let flat = br#"{"channel":"alerts","event":"zap.fired","title":"Hi","count":3}"#;
        assert_eq!(normalise(&zap(), None, flat, &Verified::default()).unwrap().data, json!({"title": "Hi", "count": 3}));
        let both = br#"{"channel":"alerts","event":"e","data":{"a":1},"title":"lost?"}"#;
        assert!(
            matches!(normalise(&zap(), None, both, &Verified::default()), Err(HookError::BadPayload(m)) if m.contains("title"))
        );
        let bare = br#"{"channel":"alerts","event":"e"}"#;
        assert_eq!(normalise(&zap(), None, bare, &Verified::default()).unwrap().data, json!({}));
    }

    // ---- Sender kinds on their real bodies (tests/fixtures/senders). ----

    pub(crate) fn sender_fixture(path: &str) -> Vec<u8> {
        std::fs::read(format!("{}/../../tests/fixtures/senders/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }
    /// A source built from configuration, as a user writes it.
    pub(crate) fn configured(kind: &str, edit: impl FnOnce(&mut crate::config::RawSource)) -> Source {
        let secret = match kind {
            "svix" | "standard" => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            // Stripe's signing secrets start with whsec_ (refused otherwise).
            "stripe" => "whsec_a-long-enough-secret-0123",
            _ => "a-long-enough-secret-0123",
        };
        let mut raw = crate::config::RawSource { kind: kind.into(), secret: Some(secret.into()), ..Default::default() };
        edit(&mut raw);
        let cfg = crate::config::RawConfig { sources: [("src".to_string(), raw)].into(), ..Default::default() };
        let mut cfg = crate::config::Config::build(cfg, &|_| None).unwrap_or_else(|e| panic!("{e}"));
        cfg.sources.remove("src").unwrap()
    }
    pub(crate) fn topic(t: &str) -> Verified {
        Verified { topic: Some(t.into()), ..Verified::default() }
    }
    pub(crate) fn json_of(ev: &NewEvent) -> String {
        ev.data.to_string()
    }

    #[test]
    fn a_github_ping_is_no_event() {
        let src = configured("github", |_| {});
        let got = super::normalise(&src, Some("application/json"), &sender_fixture("github/ping.json"), &topic("ping")).unwrap();
        assert!(matches!(got, Normalised::Ignored { ref channel, .. } if channel.as_str() == "src"), "{got:?}");
        // Another sender's "ping" is its own business.
        let hmac = configured("hmac", |r| {
            r.channel = Some("c".into());
            r.event = Some("{hook.type}".into());
            r.fields = Some(vec![]);
        });
        let ev = normalise(&hmac, None, &sender_fixture("github/ping.json"), &topic("ping")).unwrap();
        assert_eq!(ev.event.as_str(), "Repository");
    }

    /// A delivery id the signature does not cover is not the delivery's only
    /// identity: the hash of the signed content comes with it, the same
    /// whatever delivery id or event type a replayer writes in the headers.
    /// Where the identity is signed (Standard Webhooks' id, ids in the
    /// body), no hash: equal bodies can be two events.
    #[test]
    fn unsigned_delivery_ids_come_with_the_signed_content_s_hash() {
        let src = configured("github", |_| {});
        let body = sender_fixture("github/release-published.json");
        let sha = |b: &[u8]| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b));
        let v = |id: &str, topic: &str| Verified {
            delivery_id: Some(id.into()),
            id_signed: false,
            signed_sha256: Some(sha(&body)),
            topic: Some(topic.into()),
        };
        let first = normalise(&src, None, &body, &v("72d3162e", "release")).unwrap();
        let replay = normalise(&src, None, &body, &v("00000000", "push")).unwrap();
        assert_eq!(first.content_key, Some(format!("src:sha256:{}", sha(&body))));
        assert_eq!(replay.content_key, first.content_key);
        assert_ne!(replay.delivery_keys, first.delivery_keys);
        // A signed id stands alone.
        let std = configured("standard", |r| {
            r.channel = Some("billing".into());
            r.event = Some("{type}".into());
            r.fields = Some(vec!["id".into()]);
        });
        let signed = Verified { delivery_id: Some("msg_1".into()), id_signed: true, signed_sha256: None, topic: None };
        let ev = normalise(&std, None, br#"{"id":"in_1","type":"invoice.paid"}"#, &signed).unwrap();
        assert_eq!((ev.delivery_keys, ev.content_key), (vec!["src:id:msg_1".to_string()], None));
        // So does an id in the signed body (Netlify's deploy id), whatever the header.
        let deploy = deploy_payload("ready").to_string();
        let v = Verified { signed_sha256: Some(sha(deploy.as_bytes())), ..Verified::default() };
        assert_eq!(normalise(&netlify_src(&[]), None, deploy.as_bytes(), &v).unwrap().content_key, None);
        // A Netlify body with no id: its hash is its identity.
        let bare = br#"{"state":"ready"}"#;
        let v = Verified { signed_sha256: Some(sha(bare)), ..Verified::default() };
        let ev = normalise(&netlify_src(&[]), None, bare, &v).unwrap();
        assert_eq!((ev.delivery_keys.len(), ev.content_key), (0, Some(format!("netlify:sha256:{}", sha(bare)))));
    }

    #[test]
    fn generic_kinds_read_a_native_body_when_given_a_channel() {
        // A sender hookcast does not know, through the general hmac kind.
        let src = configured("hmac", |r| {
            r.header = Some("x-signature".into());
            r.channel = Some("shop/{model}".into());
            r.event = Some("strapi.{event}".into());
            r.fields = Some(vec!["entry.city".into(), "at=createdAt".into()]);
        });
        let ev = normalise(&src, None, &sender_fixture("strapi/entry-publish.json"), &Verified::default()).unwrap();
        assert_eq!((ev.channel.as_str(), ev.event.as_str()), ("shop/address", "strapi.entry.publish"));
        assert_eq!(ev.data, json!({"entry": {"city": "Paris"}, "at": "2020-01-10T08:59:35.796Z"}));
        // Only the fields named (a standard source must name them).
        let src = configured("standard", |r| {
            r.channel = Some("billing".into());
            r.event = Some("{type}".into());
            r.fields = Some(vec!["id".into(), "type".into()]);
        });
        let ev =
            normalise(&src, None, br#"{"id":"in_1","type":"invoice.paid","email":"a@b.example"}"#, &Verified::default()).unwrap();
        assert_eq!(ev.data, json!({"id": "in_1", "type": "invoice.paid"}));
        let bad = normalise(&src, None, br#"{"id":"in_1","type":"a b"}"#, &Verified::default());
        assert!(matches!(bad, Err(HookError::BadPayload(m)) if m.contains("event template")));
    }
}

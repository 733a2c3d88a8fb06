//! Netlify: `X-Webhook-Signature`, an HS256 JWS whose `sha256` claim is
//! the body's hash; deploy notifications go to `deploys` (or
//! `deploys/<context>`), form submissions to `forms/<form slug>` with only
//! the fields the source lists per form.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::Mac;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::shared::{mac, unauthorized};
use super::{misplaced, Build, BodyShape, Headers, Outgoing, SecretForm, Sender, SignError, SourceKind, Spec};
use crate::channel::{Channel, EventName};
use crate::error::HookError;
use crate::mapping::time_ms;
use crate::webhook::{Body, NewEvent, Normalised};
use crate::raw::RawSource;
use crate::secret::Secret;
use crate::webhook::{HookRequest, Verified};

pub const SIGNATURE: &str = "x-webhook-signature";

pub const SPEC: Spec = Spec {
    name: "netlify",
    body: BodyShape::Own { check: check_routing },
    secret: SecretForm::Key,
    options: &["forms"],
    tolerance: super::never,
    // Its ids are in the (signed) body.
    signs_delivery: true,
    delivery_header: super::no_header,
    build,
    content_type: "application/json",
    sample: super::no_sample,
    sign: send_headers,
};

/// The fields of a Netlify deploy that reach pages; the rest (admin URLs,
/// committer details, build logs, …) never leaves the server.
pub(crate) const DEPLOY_FIELDS: &[&str] =
    &["id", "state", "branch", "context", "commit_ref", "deploy_ssl_url", "deploy_url", "published_at", "title"];

pub struct Options<'a> {
    pub secret: &'a Secret,
    /// Per form name, its allowed fields.
    pub forms: &'a BTreeMap<String, Vec<String>>,
    /// Per form name, a channel that replaces `forms/<slug>`.
    pub form_channels: &'a BTreeMap<String, Channel>,
}

/// Netlify publishes to channels of its own: no `channels`, `fields`, `channel` or `event`.
fn check_routing(at: &str, rs: &RawSource, problems: &mut Vec<String>) {
    if rs.channels.is_some() {
        problems.push(format!("{at}.channels: netlify sources publish to \"deploys\" and \"forms/<form name>\"; remove channels"));
    }
    if rs.fields.is_some() {
        problems.push(format!("{at}.fields: netlify sources list fields per form: [{at}.forms.<form>] fields = [...]"));
    }
    misplaced(at, &rs.kind, "channel", rs.channel.is_some(), problems);
    misplaced(at, &rs.kind, "event", rs.event.is_some(), problems);
}

fn build(b: &mut Build<'_>) -> Option<SourceKind> {
    let (at, rs) = (b.at, b.raw);
    let forms = rs.forms.iter().map(|(f, rf)| (f.clone(), rf.fields.clone())).collect();
    // Two forms configured under names that become one
    // channel would share it: refused, both named.
    let mut by_slug: BTreeMap<String, &String> = BTreeMap::new();
    for form in rs.forms.keys() {
        // (A name with no letter or digit makes no channel:
        // its submissions are refused, 400, unless it has one.)
        if let Some(slug) = form_slug(form) {
            if let Some(other) = by_slug.insert(slug.clone(), form) {
                b.problem(format!(
                    "{at}.forms: {other:?} and {form:?} both become channel forms/{slug}; rename one \
                     (or give one a channel = \"…\")"
                ));
            }
        }
    }
    let mut form_channels = BTreeMap::new();
    for (form, rf) in &rs.forms {
        if let Some(c) = &rf.channel {
            match Channel::parse(c) {
                Ok(c) => {
                    form_channels.insert(form.clone(), c);
                }
                Err(e) => b.problem(format!("{at}.forms.{form}.channel: {e}")),
            }
        }
    }
    b.secret.take().map(|s| SourceKind::Netlify { secret: Secret::new(s), forms, form_channels })
}

impl Sender for Options<'_> {
    fn verify(&self, req: &HookRequest<'_>, _delivery_header: Option<&str>, now: SystemTime) -> Result<Verified, HookError> {
        let token = req.header(SIGNATURE).ok_or_else(|| unauthorized("missing X-Webhook-Signature header"))?;
        let body_sha256 = check(self.secret.expose(), token, req.body, now)?;
        // Its ids are in the (signed) body; the hash stands in where one has none.
        Ok(Verified { signed_sha256: Some(body_sha256), ..Verified::default() })
    }

    fn own(&self, body: &Body) -> Option<Result<Normalised, HookError>> {
        Some(match body {
            Body::Json(Value::Object(obj)) => publish(obj, self.forms, self.form_channels),
            _ => Err(HookError::BadPayload("Netlify payloads are JSON objects".into())),
        })
    }

    /// Deploys `updated_at`, forms `created_at`.
    fn time(&self, body: &Value, _topic: Option<&str>) -> Option<u64> {
        body.as_object().and_then(netlify_time)
    }
}

/// Netlify's JWS: HS256 only, `iss == "netlify"`, `sha256` claim == hex
/// SHA-256 of the body, which it returns.
pub fn check(secret: &[u8], token: &str, body: &[u8], now: SystemTime) -> Result<String, HookError> {
    let mut parts = token.trim().split('.');
    let (Some(h64), Some(p64), Some(s64), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(unauthorized("X-Webhook-Signature is not a JWS (header.payload.signature)"));
    };
    let b64 = |s: &str| URL_SAFE_NO_PAD.decode(s.trim_end_matches('='));
    let header: Value = b64(h64)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| unauthorized("JWS header is not base64url JSON"))?;
    // Checked before the MAC: `alg: none` and every other algorithm are refused outright.
    match header.get("alg").and_then(Value::as_str) {
        Some("HS256") => {}
        Some(other) => return Err(unauthorized(format!("JWS alg {other:?} is not accepted; only HS256"))),
        None => return Err(unauthorized("JWS header has no alg")),
    }
    let sig = b64(s64).map_err(|_| unauthorized("JWS signature is not base64url"))?;
    let mut m = mac(secret);
    m.update(h64.as_bytes());
    m.update(b".");
    m.update(p64.as_bytes());
    m.verify_slice(&sig).map_err(|_| unauthorized("JWS signature does not match the secret"))?;

    let claims: Value = b64(p64)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| unauthorized("JWS payload is not base64url JSON"))?;
    if claims.get("iss").and_then(Value::as_str) != Some("netlify") {
        return Err(unauthorized("JWS issuer is not netlify"));
    }
    // RFC 7519 NumericDate: any JSON number, fractions included; 60 s leeway.
    match claims.get("exp") {
        None => {}
        Some(exp) => {
            let exp = exp.as_f64().filter(|e| e.is_finite()).ok_or_else(|| unauthorized("JWS exp is not a NumericDate"))?;
            let now_s = now.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
            if now_s > exp + 60.0 {
                return Err(unauthorized("JWS has expired"));
            }
        }
    }
    let claimed = claims.get("sha256").and_then(Value::as_str).ok_or_else(|| unauthorized("JWS has no sha256 claim"))?;
    let actual = hex::encode(Sha256::digest(body));
    if bool::from(claimed.to_ascii_lowercase().as_bytes().ct_eq(actual.as_bytes())) {
        Ok(actual)
    } else {
        Err(unauthorized("JWS sha256 claim does not match the body"))
    }
}

fn str_field<'a>(obj: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    obj.get(k).and_then(Value::as_str)
}

/// A Netlify form submission's `created_at`, a deploy's `updated_at`.
fn netlify_time(obj: &Map<String, Value>) -> Option<u64> {
    obj.get(if obj.contains_key("form_name") { "created_at" } else { "updated_at" }).and_then(time_ms)
}

/// A deploy notification (it has a `state`) or a form submission (a `form_name`).
fn publish(
    obj: &Map<String, Value>,
    forms: &BTreeMap<String, Vec<String>>,
    form_channels: &BTreeMap<String, Channel>,
) -> Result<Normalised, HookError> {
    if let Some(form_name) = str_field(obj, "form_name") {
        return form(obj, form_name, forms, form_channels);
    }
    if let Some(state) = str_field(obj, "state") {
        return deploy(obj, state);
    }
    Err(HookError::BadPayload("not a Netlify deploy or form notification (no \"state\" or \"form_name\")".into()))
}

/// A form submission: to the form's channel, with only its listed fields.
fn form(
    obj: &Map<String, Value>,
    form_name: &str,
    forms: &BTreeMap<String, Vec<String>>,
    form_channels: &BTreeMap<String, Channel>,
) -> Result<Normalised, HookError> {
    // A form is configured under the name Netlify sends or under its slug.
    let slug = form_slug(form_name);
    let configured = |name: &str| Some(name) == slug.as_deref() || name == form_name;
    // A form the source does not list publishes nothing, not even that it was sent.
    let Some(allowed) = forms.iter().find(|(name, _)| configured(name)).map(|(_, fields)| fields) else {
        let shown: String = form_name.chars().take(40).collect();
        let channel = slug.and_then(|s| Channel::parse(&format!("forms/{s}")).ok());
        return Ok(Normalised::Ignored {
            channel: channel.unwrap_or_else(|| Channel::parse("forms").expect("valid literal")),
            reason: format!("form {shown:?} is not configured: list it under [sources.<name>.forms.<form>] to publish it"),
        });
    };
    // Configured channel, else forms/<slug>: `Contact Form` → forms/contact-form.
    let channel = match form_channels.iter().find(|(name, _)| configured(name)) {
        Some((_, c)) => c.clone(),
        None => {
            let slug = slug.as_deref().ok_or_else(|| {
                HookError::BadPayload(format!(
                    "form name {:?} has no letter or digit to make a channel of; set [sources.<name>.forms.<form>] channel",
                    form_name.chars().take(40).collect::<String>()
                ))
            })?;
            Channel::parse(&format!("forms/{slug}")).map_err(|e| HookError::BadPayload(e.to_string()))?
        }
    };
    let mut data = Map::new();
    data.insert("form".into(), Value::from(form_name));
    if let Some(at) = obj.get("created_at") {
        data.insert("created_at".into(), at.clone());
    }
    let submitted = obj.get("data").and_then(Value::as_object);
    let mut fields = Map::new();
    for name in allowed {
        if let Some(v) = submitted.and_then(|d| d.get(name)).filter(|v| !v.is_object() && !v.is_array()) {
            fields.insert(name.clone(), v.clone());
        }
    }
    data.insert("fields".into(), Value::Object(fields));
    let key = str_field(obj, "id").map(|id| format!("form:{id}"));
    Ok(Normalised::Event(NewEvent {
        channel,
        event: EventName::parse("form.submitted").expect("valid literal"),
        data: Value::Object(data),
        delivery_keys: key.into_iter().collect(),
        content_key: None,
        event_ms: netlify_time(obj),
    }))
}

/// A deploy notification: `deploy.<state>` to `deploys` (or `deploys/<context>`).
fn deploy(obj: &Map<String, Value>, state: &str) -> Result<Normalised, HookError> {
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
    Ok(Normalised::Event(NewEvent {
        channel,
        event,
        data: Value::Object(data),
        delivery_keys: key.into_iter().collect(),
        content_key: None,
        event_ms: netlify_time(obj),
    }))
}

/// A Netlify form name as a channel segment: letters lower-cased (a Latin
/// letter without its marks: `Café` → `cafe`, `Straße` → `strasse`; a
/// letter no ASCII letter stands for as its code point: `日本` →
/// `u65e5-u672c`), digits, `-` and `_` kept, every other run of characters
/// one `-`, no `-` at either end, at most 64 characters (`Contact Form` →
/// `contact-form`). `None` when nothing is left.
pub fn form_slug(name: &str) -> Option<String> {
    let mut out = String::new();
    let gap = |out: &mut String| {
        if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    };
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            out.push(c);
        } else if let Some(latin) = fold_latin(c) {
            out.push_str(latin);
        } else if !c.is_ascii() && c.is_alphanumeric() {
            // A letter no ASCII letters stand for (日, ж): its code point,
            // one to one, in a word of its own.
            gap(&mut out);
            out.push_str(&format!("u{:x}", c as u32));
            out.push('-');
        } else {
            gap(&mut out);
        }
    }
    let slug: String = out.trim_matches('-').chars().take(64).collect();
    let slug = slug.trim_end_matches('-').to_owned();
    (!slug.is_empty()).then_some(slug)
}

/// A Latin letter with its marks taken off (`é` → `e`), or written as its
/// language writes it without them (`ß` → `ss`, `æ` → `ae`).
fn fold_latin(c: char) -> Option<&'static str> {
    Some(match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
        'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => "c",
        'ď' | 'đ' | 'ð' => "d",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => "e",
        'ĝ' | 'ğ' | 'ġ' | 'ģ' => "g",
        'ĥ' | 'ħ' => "h",
        'ì' | 'í' | 'î' | 'ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' | 'ı' => "i",
        'ĵ' => "j",
        'ķ' => "k",
        'ĺ' | 'ļ' | 'ľ' | 'ŀ' | 'ł' => "l",
        'ñ' | 'ń' | 'ņ' | 'ň' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ŏ' | 'ő' => "o",
        'ŕ' | 'ŗ' | 'ř' => "r",
        'ś' | 'ŝ' | 'ş' | 'š' | 'ș' => "s",
        'ţ' | 'ť' | 'ŧ' | 'ț' => "t",
        'ù' | 'ú' | 'û' | 'ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => "u",
        'ŵ' => "w",
        'ý' | 'ÿ' | 'ŷ' => "y",
        'ź' | 'ż' | 'ž' => "z",
        'ß' => "ss",
        'æ' => "ae",
        'œ' => "oe",
        'þ' => "th",
        _ => return None,
    })
}


/// Netlify's `X-Webhook-Signature`: an HS256 JWS with `iss: "netlify"` and
/// `sha256`: hex SHA-256 of the body.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::json!({"iss": "netlify", "sha256": hex::encode(Sha256::digest(body))});
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let mut m = mac(secret);
    m.update(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()))
}

fn send_headers(out: &Outgoing<'_>, body: &[u8]) -> Result<Headers, SignError> {
    Ok(vec![("X-Webhook-Signature".into(), sign(out.secret.as_bytes(), body))])
}

#[cfg(test)]
mod tests {
    use crate::sign;
    use crate::verify::tests::*;
    use crate::verify::Verified;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    use sha2::{Digest, Sha256};
    use crate::normalize::tests::*;
    use crate::senders::netlify::DEPLOY_FIELDS;
    use serde_json::json;
    use super::check as netlify;

    /// Netlify tokens made by an independent JWT implementation.
    fn jwt(alg: Algorithm, secret: &[u8], claims: serde_json::Value) -> String {
        encode(&Header::new(alg), &claims, &EncodingKey::from_secret(secret)).unwrap()
    }
    fn body_sha(body: &[u8]) -> String {
        hex::encode(Sha256::digest(body))
    }

    #[test]
    fn netlify_accepts_independently_signed_tokens() {
        let body = br#"{"id":"abc","state":"ready"}"#;
        let token = jwt(Algorithm::HS256, b"jws-secret", serde_json::json!({"iss":"netlify","sha256":body_sha(body)}));
        netlify(b"jws-secret", &token, body, now()).unwrap();
        // And our own signer produces tokens the independent one accepts.
        let ours = sign::netlify(b"jws-secret", body);
        let mut v = jsonwebtoken::Validation::new(Algorithm::HS256);
        v.required_spec_claims.clear();
        v.set_issuer(&["netlify"]);
        let decoded =
            jsonwebtoken::decode::<serde_json::Value>(&ours, &jsonwebtoken::DecodingKey::from_secret(b"jws-secret"), &v).unwrap();
        assert_eq!(decoded.claims["sha256"], body_sha(body));
    }

    #[test]
    fn netlify_refusals() {
        let body = br#"{"id":"abc","state":"ready"}"#;
        let good = serde_json::json!({"iss":"netlify","sha256":body_sha(body)});
        let r = |t: &str, b: &[u8]| reason(netlify(b"jws-secret", t, b, now()));

        assert!(r(&jwt(Algorithm::HS256, b"other", good.clone()), body).contains("does not match the secret"));
        assert!(r(&jwt(Algorithm::HS256, b"jws-secret", good.clone()), b"tampered").contains("sha256 claim does not match"));
        assert!(r(&jwt(Algorithm::HS384, b"jws-secret", good.clone()), body).contains("\"HS384\" is not accepted"));
        assert!(r(&jwt(Algorithm::HS512, b"jws-secret", good.clone()), body).contains("only HS256"));
        let wrong_iss = serde_json::json!({"iss":"github","sha256":body_sha(body)});
        assert!(r(&jwt(Algorithm::HS256, b"jws-secret", wrong_iss), body).contains("issuer"));
        let no_iss = serde_json::json!({"sha256":body_sha(body)});
        assert!(r(&jwt(Algorithm::HS256, b"jws-secret", no_iss), body).contains("issuer"));
        let no_sha = serde_json::json!({"iss":"netlify"});
        assert!(r(&jwt(Algorithm::HS256, b"jws-secret", no_sha), body).contains("no sha256 claim"));
        let expired = serde_json::json!({"iss":"netlify","sha256":body_sha(body),"exp": NOW - 3600});
        assert!(r(&jwt(Algorithm::HS256, b"jws-secret", expired), body).contains("expired"));
        // A fractional NumericDate is still a date (it once skipped the check).
        let fractional = serde_json::json!({"iss":"netlify","sha256":body_sha(body),"exp": (NOW - 3600) as f64 + 0.5});
        assert!(r(&jwt(Algorithm::HS256, b"jws-secret", fractional), body).contains("expired"));
        let fresh = serde_json::json!({"iss":"netlify","sha256":body_sha(body),"exp": NOW as f64 + 0.5});
        netlify(b"jws-secret", &jwt(Algorithm::HS256, b"jws-secret", fresh), body, now()).unwrap();
        let text = serde_json::json!({"iss":"netlify","sha256":body_sha(body),"exp": "tomorrow"});
        assert!(r(&jwt(Algorithm::HS256, b"jws-secret", text), body).contains("NumericDate"));

        // alg: none, with and without a signature part.
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(good.to_string());
        assert!(r(&format!("{none_header}.{payload}."), body).contains("\"none\" is not accepted"));
        assert!(r(&format!("{none_header}.{payload}"), body).contains("not a JWS"));
        // A valid HS256 header swapped onto a none-signed token still fails on the MAC.
        let hs_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        assert!(r(&format!("{hs_header}.{payload}."), body).contains("does not match the secret"));
        assert!(r("garbage", body).contains("not a JWS"));
        assert!(r("a.b.c", body).contains("header is not base64url JSON"));
    }

    #[test]
    fn netlify_deploy_carries_only_the_safe_subset() {
        let body = deploy_payload("ready").to_string();
        let ev = normalise(&netlify_src(&[]), Some("application/json"), body.as_bytes(), &Verified::default()).unwrap();
        assert_eq!(ev.channel.as_str(), "deploys");
        assert_eq!(ev.event.as_str(), "deploy.succeeded");
        let keys: Vec<_> = ev.data.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), DEPLOY_FIELDS.len(), "{keys:?}");
        assert_eq!(ev.data["title"], "Update pricing page");
        assert!(!ev.data.to_string().contains("LOGTOKEN"));
        assert!(ev.data.get("admin_url").is_none());
        assert_eq!(ev.delivery_keys, vec!["netlify:deploy:6571ba2f1c3d8a0008f9b2c1:ready"]);
        assert_eq!(ev.content_key, None, "its id is signed with the body");

        for (state, name) in [("building", "deploy.started"), ("error", "deploy.failed"), ("processing", "deploy.processing")] {
            let body = deploy_payload(state).to_string();
            assert_eq!(normalise(&netlify_src(&[]), None, body.as_bytes(), &Verified::default()).unwrap().event.as_str(), name);
        }
    }

    #[test]
    fn deploy_previews_and_branch_deploys_stay_off_production_pages() {
        let mut p = deploy_payload("ready");
        for (context, channel) in
            [("production", "deploys"), ("deploy-preview", "deploys/deploy-preview"), ("branch-deploy", "deploys/branch-deploy")]
        {
            p["context"] = json!(context);
            let ev = normalise(&netlify_src(&[]), None, p.to_string().as_bytes(), &Verified::default()).unwrap();
            assert_eq!(ev.channel.as_str(), channel);
        }
        p.as_object_mut().unwrap().remove("context");
        assert_eq!(
            normalise(&netlify_src(&[]), None, p.to_string().as_bytes(), &Verified::default()).unwrap().channel.as_str(),
            "deploys"
        );
    }
}

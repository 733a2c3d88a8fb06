//! Standard Webhooks: `webhook-id`, `webhook-timestamp` and
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`,
//! keyed with a `whsec_` + base64 secret. The body is anyone's: a
//! `{"channel","event","data"}` envelope, or a native body with `channel` set.
//! Svix signs the same way under `svix-*` names ([`super::svix`]).

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::Mac;
use serde_json::Value;

use super::shared::{check_age, mac, unauthorized, unix_secs};
use super::{Build, BodyShape, Headers, Outgoing, SecretForm, Sender, SignError, SourceKind, Spec};
use crate::error::HookError;
use crate::mapping::{lookup, time_ms};
use crate::secret::{Secret, MIN_SECRET_BYTES};
use crate::webhook::{HookRequest, Verified};

pub const SPEC: Spec = Spec {
    name: "standard",
    body: BodyShape::Envelope,
    secret: SecretForm::Whsec,
    options: &[],
    tolerance: super::always,
    signs_delivery: true,
    delivery_header: super::no_header,
    build,
    content_type: "application/json",
    sample: super::no_sample,
    sign: send_headers,
};

pub struct Options<'a> {
    pub secret: &'a Secret,
    pub tolerance: &'a Duration,
}

fn build(b: &mut Build<'_>) -> Option<SourceKind> {
    let tolerance = b.tolerance(300);
    whsec(b).map(|secret| SourceKind::Standard { secret, tolerance })
}

/// The source's `whsec_` secret, decoded; a problem if it is not one.
pub fn whsec(b: &mut Build<'_>) -> Option<Secret> {
    let s = b.secret.take()?;
    match decode_standard_secret(&s) {
        Ok(secret) => Some(secret),
        Err(why) => {
            b.problem(format!("{}.secret {why}", b.at));
            None
        }
    }
}

/// Decodes a Standard Webhooks secret: `whsec_` + base64.
pub fn decode_standard_secret(s: &str) -> Result<Secret, String> {
    let b64 = s.strip_prefix("whsec_").unwrap_or(s);
    let key = STANDARD.decode(b64).map_err(|_| "must be whsec_ followed by base64".to_owned())?;
    if key.len() < MIN_SECRET_BYTES {
        return Err(format!("decodes to {} bytes; use at least {MIN_SECRET_BYTES} random bytes", key.len()));
    }
    Ok(Secret::new(key))
}

impl Sender for Options<'_> {
    fn verify(&self, req: &HookRequest<'_>, _delivery_header: Option<&str>, now: SystemTime) -> Result<Verified, HookError> {
        verify_signed_id(self.secret, req, now, *self.tolerance)
    }

    fn signed_tolerance(&self) -> Option<Duration> {
        Some(*self.tolerance)
    }

    fn time(&self, body: &Value, _topic: Option<&str>) -> Option<u64> {
        lookup(body, "timestamp").and_then(time_ms)
    }
}

/// A Standard Webhooks delivery (under either set of names): its signed id.
pub fn verify_signed_id(secret: &Secret, req: &HookRequest<'_>, now: SystemTime, tolerance: Duration) -> Result<Verified, HookError> {
    let id = headers(secret.expose(), req, now, tolerance)?;
    Ok(Verified { delivery_id: Some(id), id_signed: true, ..Verified::default() })
}

/// Standard Webhooks under Svix's names or the specification's (`svix-id`
/// or `webhook-id`, …; one set, not a mix). Returns the signed message id.
fn headers(secret: &[u8], req: &HookRequest<'_>, now: SystemTime, tolerance: Duration) -> Result<String, HookError> {
    let prefix = if req.header("svix-id").is_some() { "svix" } else { "webhook" };
    let get = |h: &str| {
        let name = format!("{prefix}-{h}");
        req.header(&name).map(str::to_owned).ok_or_else(|| unauthorized(format!("missing {name} header")))
    };
    let id = get("id")?;
    let ts = get("timestamp")?;
    let sigs = get("signature")?;
    check(prefix, secret, &id, &ts, &sigs, req.body, now, tolerance)?;
    Ok(id)
}

/// Standard Webhooks: any of the space-separated `v1,<base64>` signatures over
/// `id.timestamp.body`, with the timestamp within `tolerance` of `now`. Its
/// refusals name the headers as the delivery did: `names` is `webhook` (the
/// specification's) or `svix` (a Svix sender's, such as Clerk).
#[allow(clippy::too_many_arguments)]
pub fn check(
    names: &str,
    secret: &[u8],
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), HookError> {
    let ts: i64 = timestamp.trim().parse().map_err(|_| unauthorized(format!("{names}-timestamp is not a number")))?;
    check_age(&format!("{names}-timestamp"), ts, unix_secs(now), tolerance)?;
    let mut saw_v1 = false;
    for candidate in signatures.split_whitespace() {
        let Some(b64) = candidate.strip_prefix("v1,") else {
            continue;
        };
        saw_v1 = true;
        let Ok(sig) = STANDARD.decode(b64) else {
            continue;
        };
        let mut m = mac(secret);
        m.update(id.as_bytes());
        m.update(b".");
        m.update(timestamp.trim().as_bytes());
        m.update(b".");
        m.update(body);
        if m.verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    Err(unauthorized(if saw_v1 {
        format!("no {names}-signature matches the body")
    } else {
        format!("{names}-signature has no v1 signature")
    }))
}

/// Standard Webhooks `webhook-signature` value: `v1,<base64>` over `id.timestamp.body`.
pub fn sign(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(format!("{id}.{timestamp}.").as_bytes());
    m.update(body);
    format!("v1,{}", STANDARD.encode(m.finalize().into_bytes()))
}

/// The headers a Standard Webhooks sender sends, under `names` (`webhook` or `svix`).
pub fn send_as(names: &str, out: &Outgoing<'_>, body: &[u8]) -> Result<Headers, SignError> {
    let key = decode_standard_secret(out.secret).map_err(SignError::Secret)?;
    let id = (out.random_id)("msg_");
    let ts = unix_secs(out.now);
    Ok(vec![
        (format!("{names}-signature"), sign(key.expose(), &id, ts, body)),
        (format!("{names}-id"), id),
        (format!("{names}-timestamp"), ts.to_string()),
    ])
}

fn send_headers(out: &Outgoing<'_>, body: &[u8]) -> Result<Headers, SignError> {
    send_as("webhook", out, body)
}

#[cfg(test)]
mod tests {
    use crate::sign;
    use crate::verify::tests::*;
    use std::time::{Duration, UNIX_EPOCH};
    use super::check as standard;

    #[test]
    fn standard_webhooks_spec_vector() {
        let key = crate::config::decode_standard_secret(STD_SECRET).unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1_614_265_330 + 10);
        let tol = Duration::from_secs(300);
        standard("webhook", key.expose(), STD_ID, STD_TS, STD_SIG, STD_BODY, at, tol).unwrap();
        assert_eq!(sign::standard(key.expose(), STD_ID, 1_614_265_330, STD_BODY), STD_SIG);
        // Several signatures, one valid (key rotation), in any position.
        let multi = format!("v1,Zm9vYmFy v2,abc {STD_SIG}");
        standard("webhook", key.expose(), STD_ID, STD_TS, &multi, STD_BODY, at, tol).unwrap();

        let r = |secret: &[u8], id: &str, ts: &str, sig: &str, body: &[u8], at| {
            reason(standard("webhook", secret, id, ts, sig, body, at, tol))
        };
        assert!(r(b"other", STD_ID, STD_TS, STD_SIG, STD_BODY, at).contains("no webhook-signature matches"));
        assert!(r(key.expose(), "msg_other", STD_TS, STD_SIG, STD_BODY, at).contains("matches"));
        assert!(r(key.expose(), STD_ID, STD_TS, STD_SIG, br#"{"test": 2432232315}"#, at).contains("matches"));
        assert!(r(key.expose(), STD_ID, STD_TS, "v1,!!!notbase64", STD_BODY, at).contains("matches"));
        assert!(r(key.expose(), STD_ID, STD_TS, "v2,abc", STD_BODY, at).contains("no v1"));
        assert!(r(key.expose(), STD_ID, "soon", STD_SIG, STD_BODY, at).contains("not a number"));
        let late = UNIX_EPOCH + Duration::from_secs(1_614_265_330 + 301);
        let early = UNIX_EPOCH + Duration::from_secs(1_614_265_330 - 301);
        assert!(r(key.expose(), STD_ID, STD_TS, STD_SIG, STD_BODY, late).contains("tolerance"));
        assert!(r(key.expose(), STD_ID, STD_TS, STD_SIG, STD_BODY, early).contains("tolerance"));
    }
}

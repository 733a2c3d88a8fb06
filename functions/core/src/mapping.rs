//! Mapping a sender's own body to an event without code: dotted paths into
//! the body (`release.tag_name`), channel and event templates
//! (`cms/{sys.contentType.sys.id}`), and the allow-list that builds `data`.
//!
//! A path is a list of object keys separated by `.`; it never indexes an
//! array (the value at the end of a path may be an array or object, and is
//! taken whole). A field may be renamed: `id=deployment.id` puts the body's
//! `deployment.id` at `data.id`.

use serde_json::{Map, Value};

use crate::channel::{Channel, EventName};
use crate::error::HookError;

/// The value at `path` (keys separated by `.`), if every step is an object
/// that has the key. `null` counts as missing.
pub fn lookup<'a>(body: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(body, |v, key| v.as_object()?.get(key)).filter(|v| !v.is_null())
}

/// Why a path or template in the configuration is not one.
pub fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(format!("{path:?} is not a dotted path (keys separated by '.', none empty)"));
    }
    if path.contains(['{', '}', '=', ' ']) {
        return Err(format!("{path:?} is not a dotted path ('{{', '}}', '=' and spaces are not allowed)"));
    }
    Ok(())
}

/// A field entry: `path`, or `name=path` to place it elsewhere in `data`.
fn split_field(field: &str) -> (&str, &str) {
    field.split_once('=').map_or((field, field), |(to, from)| (to.trim(), from.trim()))
}

/// Why a `fields` entry is not one (checked when the configuration is built).
pub fn check_field(field: &str) -> Result<(), String> {
    let (to, from) = split_field(field);
    check_path(to)?;
    check_path(from)
}

/// `data` made of exactly the listed fields, nested as in the body (or as
/// renamed). A path missing from the body (or `null` there) is left out.
pub fn project(body: &Value, fields: &[impl AsRef<str>]) -> Value {
    project_with(body, fields, lookup)
}

/// [`project`] for data a sender wrote for pages (`{"channel","event","data"}`):
/// a listed field that is `null` is kept, as in a merge patch it deletes
/// the key (RFC 7386).
pub fn project_patch(data: &Value, fields: &[impl AsRef<str>]) -> Value {
    project_with(data, fields, |v, path| path.split('.').try_fold(v, |v, key| v.as_object()?.get(key)))
}

fn project_with<'a>(body: &'a Value, fields: &[impl AsRef<str>], find: impl Fn(&'a Value, &str) -> Option<&'a Value>) -> Value {
    let mut data = Map::new();
    for field in fields {
        let (to, from) = split_field(field.as_ref());
        if let Some(v) = find(body, from) {
            insert(&mut data, to, v.clone());
        }
    }
    Value::Object(data)
}

fn insert(obj: &mut Map<String, Value>, path: &str, v: Value) {
    match path.split_once('.') {
        None => {
            obj.insert(path.to_owned(), v);
        }
        Some((head, rest)) => {
            let slot = obj.entry(head.to_owned()).or_insert_with(|| Value::Object(Map::new()));
            // A parent listed whole already carries the child.
            if let Value::Object(inner) = slot {
                insert(inner, rest, v);
            }
        }
    }
}

/// A time in a sender's body as milliseconds since the Unix epoch: an RFC
/// 3339 text (`2020-05-29T14:56:14.401Z`, `2008-01-10T11:00:00-05:00`) or
/// a number of seconds or milliseconds (told apart by size: 10^11 s is
/// the year 5138, 10^11 ms is 1973).
pub fn time_ms(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => {
            let n = n.as_u64().or_else(|| n.as_f64().filter(|f| f.is_finite() && *f >= 0.0).map(|f| f as u64))?;
            Some(if n < 100_000_000_000 { n.checked_mul(1000)? } else { n })
        }
        Value::String(s) => rfc3339_ms(s),
        _ => None,
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, as milliseconds since the epoch.
fn rfc3339_ms(s: &str) -> Option<u64> {
    let b = s.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        part.iter().all(u8::is_ascii_digit).then(|| part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &b[start..i.min(start + 3)];
        millis = digits.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')) * 10i64.pow(3 - digits.len() as u32);
    }
    let offset_min = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'+' {
                h * 60 + m
            } else {
                -(h * 60 + m)
            }
        }
        _ => return None,
    };
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    u64::try_from(secs * 1000 + millis).ok()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Path(String),
}

/// `releases`, or text with `{dotted.path}` holes filled from the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

impl Template {
    pub fn parse(t: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = t;
        while let Some(open) = rest.find('{') {
            let (text, after) = rest.split_at(open);
            if text.contains('}') {
                return Err(format!("{t:?} has a '}}' with no '{{'"));
            }
            if !text.is_empty() {
                parts.push(Part::Text(text.to_owned()));
            }
            let close = after.find('}').ok_or_else(|| format!("{t:?} has a '{{' with no '}}'"))?;
            let path = &after[1..close];
            check_path(path).map_err(|e| format!("in {t:?}: {e}"))?;
            parts.push(Part::Path(path.to_owned()));
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("{t:?} has a '}}' with no '{{'"));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        if parts.is_empty() {
            return Err("a template must not be empty".into());
        }
        Ok(Self { source: t.to_owned(), parts })
    }

    /// A template with no holes.
    pub fn literal(s: &str) -> Self {
        Self { source: s.to_owned(), parts: vec![Part::Text(s.to_owned())] }
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The text with no holes, if it has none.
    pub fn fixed(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// Fills the holes: each path must lead to a string or a number.
    fn render(&self, body: &Value, what: &str) -> Result<String, HookError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Path(p) => match lookup(body, p) {
                    Some(Value::String(s)) => out.push_str(s),
                    Some(Value::Number(n)) => out.push_str(&n.to_string()),
                    Some(_) => {
                        return Err(HookError::BadPayload(format!(
                            "the {what} template {:?} needs {p} to be text or a number",
                            self.source
                        )))
                    }
                    None => {
                        return Err(HookError::BadPayload(format!(
                            "the {what} template {:?} needs {p}, which the body does not have",
                            self.source
                        )))
                    }
                },
            }
        }
        Ok(out)
    }

    pub fn channel(&self, body: &Value) -> Result<Channel, HookError> {
        let name = self.render(body, "channel")?;
        Channel::parse(&name).map_err(|e| {
            HookError::BadPayload(format!("the channel template {:?} built no channel name from the body: {e}", self.source))
        })
    }

    pub fn event(&self, body: &Value) -> Result<EventName, HookError> {
        let name = self.render(body, "event")?;
        EventName::parse(&name).map_err(|e| {
            HookError::BadPayload(format!("the event template {:?} built no event name from the body: {e}", self.source))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_keep_the_body_s_nesting_and_skip_what_is_missing() {
        let body = json!({"release": {"tag_name": "v1", "author": {"email": "a@b.example"}}, "repository": {"full_name": "o/r"}, "n": null});
        let data = project(&body, &["release.tag_name", "repository.full_name", "release.nope", "nope.deeper", "n"]);
        assert_eq!(data, json!({"release": {"tag_name": "v1"}, "repository": {"full_name": "o/r"}}));
        assert_eq!(project(&body, &["tag=release.tag_name"]), json!({"tag": "v1"}));
        // A patch keeps the nulls it lists: they delete keys from a merge state.
        assert_eq!(project_patch(&json!({"a": null, "b": 1, "c": null}), &["a", "b", "x"]), json!({"a": null, "b": 1}));
        // A parent listed whole, and a child of it: the parent once.
        assert_eq!(project(&body, &["repository", "repository.full_name"]), json!({"repository": {"full_name": "o/r"}}));
        // A path never reads into a string or an array.
        assert_eq!(project(&json!({"a": "text", "b": [1]}), &["a.len", "b.0"]), json!({}));
        for bad in ["", "a..b", ".a", "a.", "a b", "{a}"] {
            assert!(check_field(bad).is_err(), "{bad:?}");
        }
        assert!(check_field("id=deployment.id").is_ok());
        assert!(check_field("=deployment.id").is_err());
    }

    #[test]
    fn sender_times_in_every_form_they_come() {
        for (v, want) in [
            (json!("2020-05-29T14:56:14.401Z"), Some(1_590_764_174_401)),
            (json!("2019-05-15T15:20:55Z"), Some(1_557_933_655_000)),
            (json!("2008-01-10T11:00:00-05:00"), Some(1_199_980_800_000)),
            (json!("2008-01-10T16:00:00+00:00"), Some(1_199_980_800_000)),
            (json!("2020-10-02T12:42:30.000123Z"), Some(1_601_642_550_000)),
            (json!("2000-02-29T00:00:00Z"), Some(951_782_400_000)),
            (json!(1_557_933_657), Some(1_557_933_657_000)),
            (json!(1_654_012_591_835u64), Some(1_654_012_591_835)),
            (json!("2020-05-29"), None),
            (json!("2020-05-29T14:56:14"), None),
            (json!("2020-13-29T14:56:14Z"), None),
            (json!("2020-05-29T14:56:14.Z"), None),
            (json!("yesterday"), None),
            (json!(-5), None),
            (json!(null), None),
        ] {
            assert_eq!(time_ms(&v), want, "{v}");
        }
    }

    #[test]
    fn templates_build_channels_or_name_the_path() {
        let body = json!({"sys": {"contentType": {"sys": {"id": "blogpost"}}, "version": 3, "tags": ["x"]}, "sp": "a b"});
        let t = Template::parse("cms/{sys.contentType.sys.id}").unwrap();
        assert_eq!(t.channel(&body).unwrap().as_str(), "cms/blogpost");
        assert_eq!(Template::parse("v{sys.version}").unwrap().channel(&body).unwrap().as_str(), "v3");
        assert_eq!(Template::parse("releases").unwrap().fixed(), Some("releases"));
        let msg = |t: &str| match Template::parse(t).unwrap().channel(&body) {
            Err(HookError::BadPayload(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(msg("cms/{sys.missing.id}").contains("needs sys.missing.id, which the body does not have"));
        assert!(msg("cms/{sys.tags}").contains("needs sys.tags to be text"));
        assert!(msg("cms/{sp}").contains("built no channel name"));
        for bad in ["", "cms/{", "cms/}", "cms/{}", "cms/{a..b}", "a}{b"] {
            assert!(Template::parse(bad).is_err(), "{bad:?}");
        }
    }
}

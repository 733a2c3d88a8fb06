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
/// renamed). A path missing from the body is left out.
pub fn project(body: &Value, fields: &[impl AsRef<str>]) -> Value {
    let mut data = Map::new();
    for field in fields {
        let (to, from) = split_field(field.as_ref());
        if let Some(v) = lookup(body, from) {
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

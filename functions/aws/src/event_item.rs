//! The one owner of a logged event's DynamoDB item: written by the commit,
//! read by history queries and by the stream's dispatcher alike, so a
//! query and a stream image can never decode the same item differently. A
//! channel's events live under their own partition key (`evs#<channel>`),
//! apart from its head (`chan#<channel>`), so the events' writes and reads do
//! not spend the head's partition.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use hookcast_core::protocol::Event;
use hookcast_core::{Channel, EventName};

pub use crate::attr::Item;

/// The partition of a channel's events.
pub fn events_pk(channel: &Channel) -> String {
    format!("evs#{channel}")
}

/// An event's sort key: its seq, zero-padded so keys sort as seqs do.
pub fn event_sk(seq: u64) -> String {
    format!("ev#{seq:020}")
}

/// Why an item is not a logged event, or not one that decodes: an
/// acknowledged event that does not decode would never be pushed, so this
/// fails whatever reads it (a query, the dispatcher's batch), never a skip.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event item {pk:?}/{sk:?}: {what}")]
pub struct DecodeError {
    pub pk: String,
    pub sk: String,
    pub what: String,
}

/// The item for `event`, kept until `ttl` (epoch seconds), committed with
/// the events `commit` (first and last seq, inclusive): the stream's
/// dispatcher makes the same fan-out jobs from it as the commit did.
pub fn encode(event: &Event, at_ms: u64, ttl: u64, commit: (u64, u64)) -> Item {
    HashMap::from([
        ("cb".to_owned(), AttributeValue::N(commit.0.to_string())),
        ("ce".to_owned(), AttributeValue::N(commit.1.to_string())),
        ("pk".to_owned(), AttributeValue::S(events_pk(&event.channel))),
        ("sk".to_owned(), AttributeValue::S(event_sk(event.seq))),
        ("seq".to_owned(), AttributeValue::N(event.seq.to_string())),
        ("event".to_owned(), AttributeValue::S(event.event.as_str().to_owned())),
        ("data".to_owned(), AttributeValue::S(event.data.to_string())),
        ("at".to_owned(), AttributeValue::S(event.at.clone())),
        ("at_ms".to_owned(), AttributeValue::N(at_ms.to_string())),
        ("ttl".to_owned(), AttributeValue::N(ttl.to_string())),
    ])
}

fn s<'a>(i: &'a Item, k: &str) -> Option<&'a str> {
    i.get(k).and_then(|v| v.as_s().ok()).map(String::as_str)
}

/// Whether the item is a logged event (heads, pending appends, dedupe keys,
/// subscriptions and counters are not).
pub fn is_event(item: &Item) -> bool {
    s(item, "pk").is_some_and(|p| p.starts_with("evs#")) && s(item, "sk").is_some_and(|k| k.starts_with("ev#"))
}

/// The event an item holds; every field checked.
pub fn decode(item: &Item) -> Result<Event, DecodeError> {
    let (pk, sk) = (s(item, "pk").unwrap_or_default(), s(item, "sk").unwrap_or_default());
    let bad = |what: &str| DecodeError { pk: pk.to_owned(), sk: sk.to_owned(), what: what.to_owned() };
    let channel = pk.strip_prefix("evs#").ok_or_else(|| bad("not under a channel's events"))?;
    let channel = Channel::parse(channel).map_err(|e| bad(&e.to_string()))?;
    let seq: u64 =
        item.get("seq").and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok()).ok_or_else(|| bad("no numeric seq"))?;
    if sk != event_sk(seq) {
        return Err(bad("its seq and its key disagree"));
    }
    let event = EventName::parse(s(item, "event").ok_or_else(|| bad("no event name"))?).map_err(|e| bad(&e.to_string()))?;
    let data = serde_json::from_str(s(item, "data").ok_or_else(|| bad("no data"))?)
        .map_err(|e| bad(&format!("data is not JSON: {e}")))?;
    let at = s(item, "at").ok_or_else(|| bad("no time"))?.to_owned();
    Ok(Event { channel, seq, event, data, at })
}

/// The commit an event item was written in (first and last seq), if the
/// item says (items written before commits were recorded do not).
pub fn commit_of(item: &Item) -> Option<(u64, u64)> {
    let n = |k: &str| item.get(k).and_then(|v| v.as_n().ok()).and_then(|n| n.parse::<u64>().ok());
    let (b, e) = (n("cb")?, n("ce")?);
    (b <= e).then_some((b, e))
}

/// A stream record's new image (the Lambda event's own AttributeValue form)
/// as an item, to decode with [`decode`].
pub fn from_stream_image(image: &serde_json::Value) -> Option<Item> {
    let obj = image.as_object()?;
    let mut item = Item::new();
    for (k, v) in obj {
        let av = if let Some(s) = v.get("S").and_then(serde_json::Value::as_str) {
            AttributeValue::S(s.to_owned())
        } else if let Some(n) = v.get("N").and_then(serde_json::Value::as_str) {
            AttributeValue::N(n.to_owned())
        } else {
            // Only S and N are written to event items; anything else is not ours.
            continue;
        };
        item.insert(k.clone(), av);
    }
    Some(item)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Event {
        Event {
            channel: Channel::parse("forms/contact").unwrap(),
            seq: 42,
            event: EventName::parse("form.submitted").unwrap(),
            data: json!({"name": "Ada", "n": 1.5}),
            at: "2026-12-07T10:00:00.000Z".into(),
        }
    }

    #[test]
    fn an_item_and_its_stream_image_decode_to_the_same_event() {
        let item = encode(&event(), 1, 2, (40, 43));
        assert!(is_event(&item));
        assert_eq!(commit_of(&item), Some((40, 43)));
        assert_eq!(decode(&item).unwrap(), event());
        // The stream's image is AttributeValue JSON, as Lambda sends it.
        let image: serde_json::Map<String, serde_json::Value> = item
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    AttributeValue::S(s) => json!({ "S": s }),
                    AttributeValue::N(n) => json!({ "N": n }),
                    _ => unreachable!(),
                };
                (k.clone(), v)
            })
            .collect();
        let back = from_stream_image(&serde_json::Value::Object(image)).unwrap();
        assert_eq!(decode(&back).unwrap(), event());
        assert_eq!(commit_of(&back), Some((40, 43)));
    }

    #[test]
    fn an_item_that_does_not_decode_says_why() {
        let mut item = encode(&event(), 1, 2, (40, 43));
        item.insert("seq".into(), AttributeValue::N("41".into()));
        assert!(decode(&item).unwrap_err().what.contains("disagree"));
        item.remove("seq");
        assert!(decode(&item).unwrap_err().what.contains("no numeric seq"));
        let mut item = encode(&event(), 1, 2, (40, 43));
        item.insert("data".into(), AttributeValue::S("{".into()));
        assert!(decode(&item).unwrap_err().what.contains("not JSON"));
    }
}

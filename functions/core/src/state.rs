//! Channel state: what a page that arrives late needs to be current, kept
//! by the log at each channel's head, in the same commit as the event that
//! changed it (so a state and its seq always agree). Configured per channel
//! pattern (`[state]` locally, `StateConfig` on AWS):
//!
//! - `last`: the latest event (`{seq, event, data, at}`);
//! - `merge`: the RFC 7386 merge of every event's data, from the first;
//! - `list:N`: the N newest events, oldest first.
//!
//! Every store computes the next state with [`advance`], so the hosts
//! cannot drift. A state is bounded: a merge that would grow past the
//! limit refuses its event (nothing is stored); a list drops its oldest
//! entries to fit (its newest is always kept: events are bounded too).

use std::fmt;

use serde_json::{json, Map, Value};

use crate::channel::{Channel, ChannelPattern};
use crate::protocol::Event;

/// The most entries a `list:N` keeps.
pub const MAX_LIST: u32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateMode {
    Last,
    Merge,
    List(u32),
}

impl StateMode {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "last" => Ok(Self::Last),
            "merge" => Ok(Self::Merge),
            _ => match s.strip_prefix("list:").map(str::parse::<u32>) {
                Some(Ok(n)) if (1..=MAX_LIST).contains(&n) => Ok(Self::List(n)),
                _ => Err(format!("{s:?} is not a state mode; use \"last\", \"merge\" or \"list:N\" (N from 1 to {MAX_LIST})")),
            },
        }
    }
    /// The mode's family as stored and sent: `last`, `merge` or `list`. A
    /// state kept under another family is not carried on (the config changed).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Last => "last",
            Self::Merge => "merge",
            Self::List(_) => "list",
        }
    }
}

impl fmt::Display for StateMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::List(n) => write!(f, "list:{n}"),
            other => f.write_str(other.kind()),
        }
    }
}

/// What an append needs to carry a channel's state on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateSpec {
    pub mode: StateMode,
    /// The most bytes a state's JSON may take.
    pub max_bytes: usize,
}

/// A channel's state as kept beside its head.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// [`StateMode::kind`] of the mode that made it.
    pub kind: String,
    pub value: Value,
    /// `last` only: the sender's own time (ms) of the event it holds, where
    /// the sender's body said it; an event older than that does not
    /// replace it.
    pub event_ms: Option<u64>,
}

impl State {
    pub fn new(kind: impl Into<String>, value: Value) -> Self {
        Self { kind: kind.into(), value, event_ms: None }
    }
}

/// `[state]`: channel patterns and their modes. An exact name wins over a
/// prefix, and a longer prefix over a shorter one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateRules(Vec<(ChannelPattern, StateMode)>);

impl StateRules {
    pub fn new(mut rules: Vec<(ChannelPattern, StateMode)>) -> Self {
        // Most specific first: exact names, then longer prefixes.
        rules.sort_by_key(|(p, _)| (p.as_str().ends_with('*'), std::cmp::Reverse(p.as_str().len())));
        Self(rules)
    }
    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn mode(&self, channel: &Channel) -> Option<StateMode> {
        self.0.iter().find(|(p, _)| p.matches(channel)).map(|(_, m)| *m)
    }
}

/// The event would grow the channel's state past its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the channel's state would be {size} bytes; the limit is {limit}")]
pub struct StateTooLarge {
    pub size: usize,
    pub limit: usize,
}

/// An event as a state entry: the event frame without its channel.
pub fn entry(ev: &Event) -> Value {
    json!({"seq": ev.seq, "event": ev.event, "data": ev.data, "at": ev.at})
}

/// The state after `ev`, from the state before it (`None` for a channel
/// without one, or one kept under another mode). `event_ms` is the
/// sender's own time for `ev`, where known: a `last` state that holds a
/// newer event keeps it (a late retry or a slow delivery of an older event
/// is still logged and pushed, but pages arriving later see the newest).
pub fn advance(spec: StateSpec, prev: Option<&State>, ev: &Event, event_ms: Option<u64>) -> Result<State, StateTooLarge> {
    let prev = prev.filter(|p| p.kind == spec.mode.kind());
    let value = match spec.mode {
        StateMode::Last => {
            let newer = |p: &&State| matches!((p.event_ms, event_ms), (Some(held), Some(at)) if at < held);
            if let Some(held) = prev.filter(newer) {
                return Ok(held.clone());
            }
            return Ok(State { kind: spec.mode.kind().to_owned(), value: entry(ev), event_ms });
        }
        StateMode::Merge => {
            let v = merge_patch(prev.map(|p| p.value.clone()).unwrap_or(Value::Null), &ev.data);
            let size = v.to_string().len();
            if size > spec.max_bytes {
                return Err(StateTooLarge { size, limit: spec.max_bytes });
            }
            v
        }
        StateMode::List(n) => {
            let mut items: Vec<Value> = prev.and_then(|p| p.value.as_array()).cloned().unwrap_or_default();
            items.push(entry(ev));
            let keep = items.len().saturating_sub(n as usize);
            items.drain(..keep);
            // Oldest out until it fits; the newest stays whatever its size.
            let mut size: usize = items.iter().map(|i| i.to_string().len() + 1).sum::<usize>() + 1;
            while items.len() > 1 && size > spec.max_bytes {
                size -= items.remove(0).to_string().len() + 1;
            }
            Value::Array(items)
        }
    };
    Ok(State::new(spec.mode.kind(), value))
}

/// RFC 7386 JSON Merge Patch: `patch` applied to `target`.
pub fn merge_patch(target: Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else { return patch.clone() };
    let mut out = match target {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    for (k, v) in p {
        if v.is_null() {
            out.remove(k);
        } else {
            let old = out.remove(k).unwrap_or(Value::Null);
            out.insert(k.clone(), merge_patch(old, v));
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::EventName;

    fn ev(seq: u64, data: Value) -> Event {
        Event {
            channel: Channel::parse("c").unwrap(),
            seq,
            event: EventName::parse("e").unwrap(),
            data,
            at: "2026-12-06T00:00:00.000Z".into(),
        }
    }

    fn spec(mode: StateMode) -> StateSpec {
        StateSpec { mode, max_bytes: 1000 }
    }

    /// The examples of RFC 7386, section 3 (and appendix A).
    #[test]
    fn merge_patch_follows_rfc_7386() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (json!({"a":"b","b":"c"}), json!({"a":null}), json!({"b":"c"})),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (json!({"a":{"b":"c"}}), json!({"a":{"b":"d","c":null}}), json!({"a":{"b":"d"}})),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (json!({}), json!({"a":{"bb":{"ccc":null}}}), json!({"a":{"bb":{}}})),
        ];
        for (target, patch, want) in cases {
            assert_eq!(merge_patch(target.clone(), &patch), want, "{target} + {patch}");
        }
    }

    #[test]
    fn modes_parse_and_print() {
        for (s, m) in [("last", StateMode::Last), ("merge", StateMode::Merge), ("list:20", StateMode::List(20))] {
            assert_eq!(StateMode::parse(s).unwrap(), m);
            assert_eq!(m.to_string(), s);
        }
        for bad in ["", "list", "list:0", "list:x", "list:1001", "LAST", "merge "] {
            assert!(StateMode::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_most_specific_rule_wins() {
        let p = |s: &str| ChannelPattern::parse(s).unwrap();
        let rules = StateRules::new(vec![
            (p("*"), StateMode::Last),
            (p("forms/*"), StateMode::List(20)),
            (p("forms/contact"), StateMode::Merge),
            (p("forms/co*"), StateMode::List(5)),
        ]);
        let mode = |c: &str| rules.mode(&Channel::parse(c).unwrap());
        assert_eq!(mode("forms/contact"), Some(StateMode::Merge));
        assert_eq!(mode("forms/comments"), Some(StateMode::List(5)));
        assert_eq!(mode("forms/x"), Some(StateMode::List(20)));
        assert_eq!(mode("deploys"), Some(StateMode::Last));
        assert_eq!(StateRules::default().mode(&Channel::parse("a").unwrap()), None);
    }

    #[test]
    fn last_merge_and_list_advance() {
        let last = advance(spec(StateMode::Last), None, &ev(1, json!({"x":1})), None).unwrap();
        assert_eq!(last.value, json!({"seq":1,"event":"e","data":{"x":1},"at":"2026-12-06T00:00:00.000Z"}));

        let mut s = None;
        for (i, d) in [json!({"a":1,"b":{"c":2}}), json!({"b":{"c":null,"d":3}}), json!({"a":null})].into_iter().enumerate() {
            s = Some(advance(spec(StateMode::Merge), s.as_ref(), &ev(i as u64 + 1, d), None).unwrap());
        }
        assert_eq!(s.unwrap().value, json!({"b":{"d":3}}));

        let mut l = None;
        for i in 1..=5 {
            l = Some(advance(spec(StateMode::List(3)), l.as_ref(), &ev(i, json!(i)), None).unwrap());
        }
        let seqs: Vec<u64> = l.unwrap().value.as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, vec![3, 4, 5], "the newest three, oldest first");
    }

    /// An older event that arrives later (a slow delivery, a retry hours
    /// on) does not take a `last` state back; an equal or newer one, or one
    /// whose sender gives no time, replaces it.
    #[test]
    fn a_last_state_keeps_the_newer_event() {
        let last = spec(StateMode::Last);
        let newer = advance(last, None, &ev(1, json!({"v": "new"})), Some(2_000)).unwrap();
        let kept = advance(last, Some(&newer), &ev(2, json!({"v": "old"})), Some(1_000)).unwrap();
        assert_eq!(kept, newer, "the older event does not replace the newer one");
        assert_eq!(kept.value["seq"], 1);
        let same = advance(last, Some(&newer), &ev(3, json!({"v": "same time"})), Some(2_000)).unwrap();
        assert_eq!((same.value["seq"].clone(), same.event_ms), (json!(3), Some(2_000)));
        let untimed = advance(last, Some(&newer), &ev(4, json!({"v": "no time"})), None).unwrap();
        assert_eq!((untimed.value["seq"].clone(), untimed.event_ms), (json!(4), None));
        let after = advance(last, Some(&untimed), &ev(5, json!({"v": "older, timed"})), Some(1)).unwrap();
        assert_eq!(after.value["seq"], 5, "nothing to compare with: the latest is kept");
    }

    #[test]
    fn a_state_kept_under_another_mode_starts_again() {
        let list = State::new("list", json!([{"seq":1}]));
        let merged = advance(spec(StateMode::Merge), Some(&list), &ev(2, json!({"a":1})), None).unwrap();
        assert_eq!(merged, State::new("merge", json!({"a":1})));
    }

    #[test]
    fn bounds_refuse_a_merge_and_trim_a_list() {
        let big = json!({"k": "x".repeat(600)});
        let one = advance(spec(StateMode::Merge), None, &ev(1, big), None).unwrap();
        let err = advance(spec(StateMode::Merge), Some(&one), &ev(2, json!({"j": "y".repeat(600)})), None).unwrap_err();
        assert_eq!(err.limit, 1000);
        assert!(err.size > 1200, "{err}");
        // A patch that shrinks it again is fine.
        advance(spec(StateMode::Merge), Some(&one), &ev(2, json!({"k": "small"})), None).unwrap();

        let mut l = None;
        for i in 1..=4 {
            l = Some(advance(spec(StateMode::List(10)), l.as_ref(), &ev(i, json!("z".repeat(300))), None).unwrap());
        }
        let l = l.unwrap().value;
        assert!(l.to_string().len() <= 1000, "{}", l.to_string().len());
        assert_eq!(l.as_array().unwrap().last().unwrap()["seq"], 4, "the newest is kept");
        assert_eq!(l.as_array().unwrap().len(), 2);
        // One entry over the limit alone is still kept: it is the latest event.
        let huge = advance(spec(StateMode::List(10)), None, &ev(9, json!("h".repeat(2000))), None).unwrap();
        assert_eq!(huge.value.as_array().unwrap().len(), 1);
    }
}

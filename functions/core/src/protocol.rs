//! Wire protocol v1: JSON text frames (see DESIGN.md). API Gateway routes on
//! `$request.body.action`, so client messages are tagged by `action`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::channel::{Channel, EventName};

/// Client → server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum ClientMsg {
    /// `since` is the last seq the client has seen; the server replays what
    /// it retains after it.
    Subscribe {
        channel: Channel,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
        /// The client reads `batch` frames: the replay and the `subscribed`
        /// reply then come in as few frames as fit (one post each on AWS).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        batch: bool,
        /// A subscribe token, required for private channels.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// The epoch `since` was read in (from an earlier `subscribed`): if
        /// the log's epoch is another, `since` means nothing there, and the
        /// reply is a reset.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<String>,
    },
    Unsubscribe {
        channel: Channel,
    },
    Ping,
    /// How many connections are subscribed to `channel`; the asker must be
    /// one of them, and may ask once per `limits.occupancy_interval_secs`.
    Occupancy {
        channel: Channel,
    },
}

/// One event in a channel's log. Names stay typed from the webhook's parse
/// to the socket; reading one back (a log, a stream record) validates them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub channel: Channel,
    pub seq: u64,
    pub event: EventName,
    pub data: Value,
    /// RFC 3339, UTC, milliseconds.
    pub at: String,
}

/// Server → client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMsg {
    Event(Event),
    /// Sent after any replay; `seq` is the channel's head.
    Subscribed {
        channel: Channel,
        seq: u64,
        /// True when `since` was older than the retained history and no
        /// channel state covers it: events were missed beyond recovery, and
        /// the page should refetch itself.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        reset: bool,
        /// The log's epoch: send it back with `since` on a later subscribe.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        epoch: String,
        /// The replay stopped early (a byte bound) after this seq: subscribe
        /// again with it as `since` for the rest.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<u64>,
    },
    /// The channel's state at `seq` (see [`crate::state`]), before the
    /// `subscribed` reply, to a page that has no `since` or one older than
    /// history keeps: with it, the page is current at `seq`.
    State {
        channel: Channel,
        seq: u64,
        /// `last`, `merge` or `list`.
        mode: String,
        state: Value,
    },
    Pong,
    /// The answer to an `occupancy` request.
    Occupancy {
        channel: Channel,
        count: u64,
    },
    Error {
        code: String,
        message: String,
        /// The channel of the subscribe (or occupancy ask) refused, so a
        /// client with several in flight knows which to ask again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<Channel>,
    },
    /// Several frames in one, in order (only to clients that asked with `batch`).
    Batch {
        frames: Vec<ServerMsg>,
    },
}

/// The most a batch frame carries: inside API Gateway's 128 KB message with room to spare.
pub const MAX_BATCH_BYTES: usize = 96 * 1024;

impl ServerMsg {
    /// Packs frames into as few `batch` frames as fit [`MAX_BATCH_BYTES`],
    /// keeping their order; a frame too big to share travels alone.
    pub fn batched(frames: Vec<ServerMsg>) -> Vec<ServerMsg> {
        let mut out = Vec::new();
        let mut cur: Vec<ServerMsg> = Vec::new();
        let mut size = 0;
        for f in frames {
            let len = f.to_json().len() + 1;
            if !cur.is_empty() && size + len > MAX_BATCH_BYTES {
                out.push(ServerMsg::Batch { frames: std::mem::take(&mut cur) });
                size = 0;
            }
            size += len;
            cur.push(f);
        }
        if !cur.is_empty() {
            out.push(ServerMsg::Batch { frames: cur });
        }
        out
    }
}

impl ServerMsg {
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        Self::Error { code: code.to_owned(), message: message.into(), channel: None }
    }
    /// This error, about `channel`.
    pub fn on(self, of: &Channel) -> Self {
        match self {
            Self::Error { code, message, .. } => Self::Error { code, message, channel: Some(of.clone()) },
            other => other,
        }
    }
    pub fn to_json(&self) -> String {
        // Serialising these types cannot fail: no maps with non-string keys.
        serde_json::to_string(self).expect("ServerMsg serialises")
    }
}

/// Why a client frame was refused; `code` goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadMessage {
    pub code: &'static str,
    pub message: String,
}

impl ClientMsg {
    pub fn parse(text: &str) -> Result<Self, BadMessage> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| BadMessage { code: "bad_json", message: format!("message is not JSON: {e}") })?;
        let action = value
            .get("action")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| BadMessage { code: "bad_message", message: "message needs a string \"action\"".into() })?;
        if !matches!(action.as_str(), "subscribe" | "unsubscribe" | "ping" | "occupancy") {
            return Err(BadMessage {
                code: "unknown_action",
                message: format!("unknown action {action:?}; expected subscribe, unsubscribe, ping or occupancy"),
            });
        }
        // A channel that is not one is its own refusal, whatever else is wrong.
        if let Some(Err(e)) = value.get("channel").and_then(Value::as_str).map(Channel::parse) {
            return Err(BadMessage { code: "invalid_channel", message: e.to_string() });
        }
        serde_json::from_value(value)
            .map_err(|e| BadMessage { code: "bad_message", message: format!("bad {action} message: {e}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ch(name: &str) -> Channel {
        Channel::parse(name).unwrap()
    }

    #[test]
    fn batches_keep_order_and_stay_under_the_limit() {
        let big = |seq| {
            ServerMsg::Event(Event {
                channel: Channel::parse("c").unwrap(),
                seq,
                event: EventName::parse("e").unwrap(),
                data: json!("x".repeat(30 * 1024)),
                at: "t".into(),
            })
        };
        let frames: Vec<ServerMsg> = (1..=7).map(big).collect();
        let batches = ServerMsg::batched(frames.clone());
        assert_eq!(batches.len(), 3, "three 30 KB events per 96 KB batch");
        let mut flat = Vec::new();
        for b in batches {
            assert!(b.to_json().len() <= MAX_BATCH_BYTES + 64);
            let ServerMsg::Batch { frames } = b else { panic!("not a batch") };
            flat.extend(frames);
        }
        assert_eq!(flat, frames);
        assert!(ServerMsg::batched(vec![]).is_empty());
    }

    #[test]
    fn client_messages_match_the_design_doc() {
        let cases = [
            (
                r#"{"action":"subscribe","channel":"deploys","since":41}"#,
                ClientMsg::Subscribe { channel: ch("deploys"), since: Some(41), batch: false, token: None, epoch: None },
            ),
            (
                r#"{"action":"subscribe","channel":"deploys","since":41,"batch":true}"#,
                ClientMsg::Subscribe { channel: ch("deploys"), since: Some(41), batch: true, token: None, epoch: None },
            ),
            (
                r#"{"action":"subscribe","channel":"deploys"}"#,
                ClientMsg::Subscribe { channel: ch("deploys"), since: None, batch: false, token: None, epoch: None },
            ),
            (r#"{"action":"unsubscribe","channel":"deploys"}"#, ClientMsg::Unsubscribe { channel: ch("deploys") }),
            (r#"{"action":"ping"}"#, ClientMsg::Ping),
            (r#"{"action":"occupancy","channel":"deploys"}"#, ClientMsg::Occupancy { channel: ch("deploys") }),
        ];
        for (text, msg) in cases {
            assert_eq!(ClientMsg::parse(text).unwrap(), msg);
            let back: Value = serde_json::to_value(&msg).unwrap();
            assert_eq!(back, serde_json::from_str::<Value>(text).unwrap());
        }
    }

    #[test]
    fn server_messages_match_the_design_doc() {
        let ev = ServerMsg::Event(Event {
            channel: Channel::parse("deploys").unwrap(),
            seq: 42,
            event: EventName::parse("deploy.succeeded").unwrap(),
            data: json!({"state": "ready"}),
            at: "2026-11-23T07:00:00.000Z".into(),
        });
        let cases = [
            (
                ev,
                json!({"type":"event","channel":"deploys","seq":42,"event":"deploy.succeeded",
                        "data":{"state":"ready"},"at":"2026-11-23T07:00:00.000Z"}),
            ),
            (
                ServerMsg::Subscribed { channel: ch("deploys"), seq: 42, reset: false, epoch: String::new(), next: None },
                json!({"type":"subscribed","channel":"deploys","seq":42}),
            ),
            (
                ServerMsg::Subscribed { channel: ch("deploys"), seq: 42, reset: true, epoch: String::new(), next: None },
                json!({"type":"subscribed","channel":"deploys","seq":42,"reset":true}),
            ),
            (
                ServerMsg::State { channel: ch("scores"), seq: 7, mode: "merge".into(), state: json!({"home": 2}) },
                json!({"type":"state","channel":"scores","seq":7,"mode":"merge","state":{"home":2}}),
            ),
            (ServerMsg::Pong, json!({"type":"pong"})),
            (
                ServerMsg::Occupancy { channel: ch("deploys"), count: 12 },
                json!({"type":"occupancy","channel":"deploys","count":12}),
            ),
            (ServerMsg::error("bad_json", "nope"), json!({"type":"error","code":"bad_json","message":"nope"})),
            (
                ServerMsg::Batch {
                    frames: vec![
                        ServerMsg::Pong,
                        ServerMsg::Subscribed { channel: ch("d"), seq: 1, reset: false, epoch: String::new(), next: None },
                    ],
                },
                json!({"type":"batch","frames":[{"type":"pong"},{"type":"subscribed","channel":"d","seq":1}]}),
            ),
        ];
        for (msg, wire) in cases {
            assert_eq!(serde_json::from_str::<Value>(&msg.to_json()).unwrap(), wire);
            assert_eq!(serde_json::from_value::<ServerMsg>(wire).unwrap(), msg);
        }
    }

    #[test]
    fn bad_frames_get_codes() {
        assert_eq!(ClientMsg::parse("{").unwrap_err().code, "bad_json");
        assert_eq!(ClientMsg::parse("[]").unwrap_err().code, "bad_message");
        assert_eq!(ClientMsg::parse(r#"{"action":"dance"}"#).unwrap_err().code, "unknown_action");
        assert_eq!(ClientMsg::parse(r#"{"action":"subscribe"}"#).unwrap_err().code, "bad_message");
        assert_eq!(ClientMsg::parse(r#"{"action":"occupancy"}"#).unwrap_err().code, "bad_message");
        assert_eq!(ClientMsg::parse(r#"{"action":"subscribe","channel":"a","since":-1}"#).unwrap_err().code, "bad_message");
    }
}

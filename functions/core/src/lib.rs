//! hookcast core: everything both hosts (the local binary and the Lambda
//! functions) share. It knows nothing of AWS, Lambda, HTTP servers or storage
//! engines; those live behind the [`ports`].
//!
//! # Layout
//!
//! - Engines, each generic over only the ports it uses:
//!   [`hooks`] (webhook → verify → normalise → append; `Hooks<L: EventLog>`),
//!   [`relay`] (client frames and replays; `Relay<L, S, G>`),
//!   [`fanout`] (one logged event to every subscriber; `Fanout<S, G>`).
//! - Ports and their in-memory parts: [`ports`] (`EventLog`, `Subscriptions`,
//!   `Gateway` and their contracts), [`live`] (subscriptions held in memory).
//! - Decisions and time, shared by the engines: [`policy`] (origins, private
//!   channels), [`catchup`] (the one catch-up rule, for HTTP history and
//!   subscribe alike), [`clock`].
//! - The wire: [`protocol`] (client and server frames), [`error`] (every
//!   refusal's status, code and message; the HTTP edge is `hookcast-http`).
//! - Channel state for late visitors: [`state`] (`last`, `merge`, `list:N`,
//!   carried on by every log in the append's commit).
//! - Webhook input: [`senders`] (each sender kind in one file: its options,
//!   signature check, event names and default fields, dedupe identity and
//!   signing), [`verify`] (the request and what a signature tells),
//!   [`normalize`] (bodies to events), [`mapping`] (paths and templates into
//!   native bodies), [`channel`] (names), [`config`], [`raw`], [`secret`],
//!   [`sign`] (the signers by their old names), [`token`], [`webhook`] (the
//!   request, the verified facts, the body and event every kind shares).
//! - Shared plumbing: [`backoff`], [`metrics`].

pub mod backoff;
pub mod catchup;
pub mod channel;
pub mod clock;
pub mod config;
pub mod error;
pub mod fanout;
pub mod hooks;
pub mod live;
pub mod mapping;
pub mod metrics;
pub mod normalize;
pub mod policy;
pub mod ports;
pub mod protocol;
pub mod raw;
pub mod relay;
pub mod secret;
pub mod senders;
pub mod sign;
pub mod state;
pub mod token;
pub mod verify;
pub mod webhook;

pub use channel::{Channel, EventName};
pub use config::{Config, ConfigError, Source, SourceKind};
pub use error::HookError;
pub use fanout::Fanout;
pub use hooks::{Accepted, Hooks};
pub use live::Live;
pub use ports::{ConnId, Delivery, EventLog, Gateway, StoreError, Subscriptions};
pub use protocol::{ClientMsg, Event, ServerMsg};
pub use relay::Relay;

//! hookcast core: everything both hosts (the local binary and the Lambda
//! functions) share. It knows nothing of AWS, Lambda, HTTP servers or storage
//! engines; those live behind the [`ports`].

pub mod backoff;
pub mod channel;
pub mod config;
pub mod error;
pub mod hooks;
pub mod http;
pub mod metrics;
pub mod normalize;
pub mod ports;
pub mod protocol;
pub mod registry;
pub mod relay;
pub mod secret;
pub mod sign;
pub mod token;
pub mod verify;

#[cfg(any(test, feature = "test-util"))]
pub mod hostile;
#[cfg(any(test, feature = "test-util"))]
pub mod testutil;

pub use channel::{Channel, EventName};
pub use config::{Config, ConfigError, Source, SourceKind};
pub use error::HookError;
pub use hooks::{Accepted, Hooks};
pub use ports::{ConnId, Delivery, EventLog, Gateway, Store, StoreError, Subscriptions};
pub use protocol::{ClientMsg, Event, ServerMsg};
pub use relay::Relay;

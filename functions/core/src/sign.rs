//! Signing exactly as the real senders do, under the names `hookcast send`,
//! the hosts' tests and benches have always used. Each signer lives with its
//! kind under [`crate::senders`]; this module only names them.

pub use crate::senders::contentful::sign as contentful;
pub use crate::senders::github::sign as github;
pub use crate::senders::hmac::sign as hmac_scheme;
pub use crate::senders::netlify::sign as netlify;
pub use crate::senders::sanity::sign as sanity;
pub use crate::senders::shopify::sign as shopify;
pub use crate::senders::standard::sign as standard;
pub use crate::senders::stripe::sign as stripe;
pub use crate::senders::vercel::sign as vercel;

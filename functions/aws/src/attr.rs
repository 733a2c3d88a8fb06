//! DynamoDB attribute values and items, as every module here writes and
//! reads them: one place for the little helpers.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;
use hookcast_core::ports::{StoreError, StoreErrorKind};

/// An item (or a key) as the SDK holds it.
pub type Item = HashMap<String, AttributeValue>;

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
/// The table's key: `pk`, `sk`.
pub(crate) fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}
pub(crate) fn get_s<'a>(item: &'a Item, k: &str) -> Option<&'a str> {
    item.get(k).and_then(|v| v.as_s().ok()).map(String::as_str)
}
pub(crate) fn get_n(item: &Item, k: &str) -> Option<u64> {
    item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

/// The SDK's `Display` says only "service error"; the code and message say
/// why, and the code says what kind of failure it is.
pub(crate) fn sdk_err<E: ProvideErrorMetadata + std::fmt::Display>(e: E) -> StoreError {
    let kind = match e.code() {
        Some(
            "ProvisionedThroughputExceededException" | "ThrottlingException" | "RequestLimitExceeded" | "LimitExceededException",
        ) => StoreErrorKind::Throttled,
        Some("TransactionConflictException") => StoreErrorKind::Conflict,
        Some("ResourceNotFoundException" | "ValidationException" | "AccessDeniedException") => StoreErrorKind::Invalid,
        _ => StoreErrorKind::Unavailable,
    };
    match (e.code(), e.message()) {
        (Some(c), Some(m)) => StoreError::new(kind, format!("{c}: {m}")),
        (Some(c), None) => StoreError::new(kind, c),
        _ => StoreError::new(kind, e.to_string()),
    }
}
/// Whether a request failed its condition (`ConditionalCheckFailedException`).
pub(crate) fn condition_failed<E: ProvideErrorMetadata>(
    e: &aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> bool {
    e.as_service_error().and_then(|s| s.code()) == Some("ConditionalCheckFailedException")
}

/// FNV-1a (32-bit): a stable hash, the same on every instance (a
/// connection's subscriber shard, a channel's subscribe counter).
pub(crate) fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

//! Shared test setup: the real SDK clients pointed at local servers.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_dynamodb::config::{Credentials, Region};
use hookcast_aws::dynamo::DynamoStore;
use hookcast_core::ports::Retention;

/// A DynamoDB-compatible server; ./tests/run starts moto_server and sets this.
pub fn endpoint() -> String {
    std::env::var("HOOKCAST_DYNAMODB_ENDPOINT").expect(
        "HOOKCAST_DYNAMODB_ENDPOINT is not set: run ./tests/run (it starts moto_server), \
         or point it at any DynamoDB-compatible server",
    )
}

pub fn sdk_config(endpoint: Option<String>) -> aws_config::SdkConfig {
    let mut b = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(Credentials::new(
            "test", "test", None, None, "static",
        )));
    if let Some(e) = endpoint {
        b = b.endpoint_url(e);
    }
    b.build()
}

static TABLES: AtomicU32 = AtomicU32::new(0);

/// A store on a fresh table (needs a multi-thread runtime).
pub fn fresh_store(retention: Retention) -> DynamoStore {
    let n = TABLES.fetch_add(1, Ordering::SeqCst);
    let table = format!("hookcast-test-{}-{n}", std::process::id());
    let client = aws_sdk_dynamodb::Client::new(&sdk_config(Some(endpoint())));
    let store = DynamoStore::new(client, table, retention);
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(store.create_table())).unwrap();
    store
}

//! `hookcast emulate`: the SAM template's stack on one machine, as AWS runs
//! it. The built bootstraps run as Lambda runs them ([`runtime`]), behind an
//! API Gateway WebSocket API ([`apigw`]) and HTTP API ([`http_api`]), fed by
//! event sources polled as Lambda polls them ([`sources`]), against moto's
//! DynamoDB, Streams, SQS and Secrets Manager ([`aws`]) behind a DynamoDB
//! front as strict as DynamoDB ([`front`]). [`template`] reads the template;
//! [`stack`] puts it together.

pub mod access_log;
pub mod apigw;
pub mod aws;
pub mod bill;
pub mod front;
pub mod http_api;
pub mod iam;
pub mod keys;
pub mod limits;
pub mod runtime;
pub mod sources;
pub mod stack;
pub mod template;

//! The APIs: the template's WebSocket API (routes, integrations, its stage)
//! served by the API Gateway emulator, and the HTTP API's settings.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use serde_json::{json, Map, Value};

use super::args::EmulateArgs;
use crate::keys::only_keys;
use crate::runtime::Function;
use crate::template::{str_of, Attrs, Template, ACCOUNT};

struct WsRoute {
    key: String,
    integration: String,
}

/// The WebSocket API as the template declares it.
#[derive(Default)]
pub(super) struct WsApi {
    /// Its logical id (one at most).
    id: Option<String>,
    routes: Vec<(String, WsRoute)>,
    integrations: HashMap<String, Map<String, Value>>,
    mock_replies: HashMap<String, String>,
    route_responses: Vec<String>,
    stage_name: Option<String>,
    throttles: crate::limits::Routes,
    access_log: Option<Arc<crate::access_log::AccessLog>>,
}

/// The HTTP API's settings (its routes are its functions' events).
#[derive(Default)]
pub(super) struct HttpApi {
    pub(super) throttles: crate::limits::Routes,
    pub(super) access_log: Option<Arc<crate::access_log::AccessLog>>,
}

/// Both APIs' resources, checked: routes, integrations, stages, throttles
/// and access logs (opened under `logs_dir`).
pub(super) fn read_apis(t: &Template, attrs: &Attrs, logs_dir: &Path) -> Result<(WsApi, HttpApi), String> {
    // The WebSocket API: bound now, so the functions' environment can name it.
    let ws_apis: Vec<_> = t.live().filter(|(_, r)| r.kind == "AWS::ApiGatewayV2::Api").collect();
    if ws_apis.len() > 1 {
        return Err("more than one AWS::ApiGatewayV2::Api: hookcast emulate models one WebSocket API".into());
    }
    let mut ws = WsApi { id: ws_apis.first().map(|(id, _)| (*id).clone()), ..WsApi::default() };
    let mut http = HttpApi::default();
    let access_log = |what: &str, p: &Map<String, Value>| -> Result<Option<Arc<crate::access_log::AccessLog>>, String> {
        let Some(settings) = p.get("AccessLogSettings").and_then(Value::as_object) else { return Ok(None) };
        only_keys(&format!("{what}.AccessLogSettings"), settings, &["DestinationArn", "Format"])?;
        let log =
            crate::access_log::AccessLog::open(logs_dir, &str_of(&settings["DestinationArn"]), &str_of(&settings["Format"]))
                .map_err(|e| e.to_string())?;
        Ok(Some(Arc::new(log)))
    };
    for (id, r) in t.live() {
        let props = || -> Result<Map<String, Value>, String> {
            Ok(t.resolve(&Value::Object(r.properties.clone()), attrs)?.as_object().cloned().unwrap_or_default())
        };
        match r.kind.as_str() {
            "AWS::ApiGatewayV2::Api" => {
                let p = props()?;
                if str_of(&p["ProtocolType"]) != "WEBSOCKET" {
                    return Err(format!("{id}: ProtocolType {} is not modelled (WEBSOCKET is)", p["ProtocolType"]));
                }
                let sel = str_of(&p["RouteSelectionExpression"]);
                if sel != "$request.body.action" {
                    return Err(format!("{id}: RouteSelectionExpression {sel:?} is not modelled ($request.body.action is)"));
                }
            }
            "AWS::ApiGatewayV2::Integration" => {
                ws.integrations.insert(attrs.reference(id)?, props()?);
            }
            "AWS::ApiGatewayV2::Route" => {
                let p = props()?;
                let target = str_of(&p["Target"]);
                let integration = target
                    .strip_prefix("integrations/")
                    .ok_or_else(|| format!("{id}: Target {target:?} is not integrations/<id>"))?;
                if p.get("AuthorizationType").is_some_and(|a| str_of(a) != "NONE") {
                    return Err(format!("{id}: AuthorizationType {} is not modelled", p["AuthorizationType"]));
                }
                ws.routes
                    .push((attrs.reference(id)?, WsRoute { key: str_of(&p["RouteKey"]), integration: integration.to_owned() }));
            }
            "AWS::ApiGatewayV2::IntegrationResponse" => {
                let p = props()?;
                if let Some(reply) = p.get("ResponseTemplates").and_then(|m| m.get("$default")) {
                    ws.mock_replies.insert(str_of(&p["IntegrationId"]), str_of(reply));
                }
            }
            "AWS::ApiGatewayV2::RouteResponse" => {
                ws.route_responses.push(str_of(&props()?["RouteId"]));
            }
            "AWS::Serverless::HttpApi" => {
                let p = props()?;
                only_keys(
                    &format!("{id} (AWS::Serverless::HttpApi)"),
                    &p,
                    &["DefaultRouteSettings", "RouteSettings", "AccessLogSettings", "Description"],
                )?;
                http.throttles = crate::limits::Routes::from_settings(p.get("DefaultRouteSettings"), p.get("RouteSettings"))
                    .map_err(|e| format!("{id}: {e}"))?;
                http.access_log = access_log(id, &p)?;
            }
            "AWS::ApiGatewayV2::Stage" => {
                let p = props()?;
                only_keys(
                    &format!("{id} (AWS::ApiGatewayV2::Stage)"),
                    &p,
                    &[
                        "ApiId",
                        "StageName",
                        "AutoDeploy",
                        "DefaultRouteSettings",
                        "RouteSettings",
                        "AccessLogSettings",
                        "Description",
                    ],
                )?;
                ws.stage_name = Some(str_of(&p["StageName"]));
                ws.throttles = crate::limits::Routes::from_settings(p.get("DefaultRouteSettings"), p.get("RouteSettings"))
                    .map_err(|e| format!("{id}: {e}"))?;
                ws.access_log = access_log(id, &p)?;
            }
            _ => {}
        }
    }
    Ok((ws, http))
}

/// Serves the WebSocket API: each route to its function (found in
/// `functions` once they have started) or its MOCK reply.
pub(super) async fn start_websocket(
    args: &EmulateArgs,
    t: &Template,
    attrs: &Attrs,
    api: WsApi,
    functions: Arc<OnceLock<HashMap<String, Arc<Function>>>>,
    account: &Arc<crate::limits::Account>,
    meter: &Arc<crate::bill::Meter>,
) -> Result<crate::apigw::Emulator, String> {
    // Route key → function logical id, or a MOCK reply.
    let mut route_fn: HashMap<String, String> = HashMap::new();
    let mut mock_routes = vec![];
    // Routes whose function's response body API Gateway sends back (two-way).
    let mut reply_routes = vec![];
    for (route_id, r) in &api.routes {
        let integ =
            api.integrations.get(&r.integration).ok_or_else(|| format!("route {}: no integration {}", r.key, r.integration))?;
        match str_of(&integ["IntegrationType"]).as_str() {
            "AWS_PROXY" => {
                let uri = str_of(&integ["IntegrationUri"]);
                let f = t
                    .live()
                    .filter(|(_, x)| x.kind == "AWS::Serverless::Function")
                    .find(|(fid, _)| {
                        attrs.get_att(fid, "Arn").is_ok_and(|arn| uri.contains(&format!("functions/{arn}/invocations")))
                    })
                    .map(|(fid, _)| fid.clone())
                    .ok_or_else(|| format!("route {}: IntegrationUri {uri} names no function of this template", r.key))?;
                route_fn.insert(r.key.clone(), f);
                if api.route_responses.contains(route_id) {
                    reply_routes.push(r.key.clone());
                }
            }
            "MOCK" => {
                // API Gateway answers a MOCK route itself, with the integration
                // response's template, when the route has a route response.
                // Without a route response it answers nothing.
                if let Some(reply) = api.mock_replies.get(&r.integration).filter(|_| api.route_responses.contains(route_id)) {
                    mock_routes.push((r.key.clone(), reply.clone()));
                }
            }
            other => return Err(format!("route {}: integration type {other} is not modelled", r.key)),
        }
    }
    let route_fn = Arc::new(route_fn);
    let invoke: crate::apigw::Invoke = Arc::new(move |ev: Value| {
        let (fcell, rf) = (functions.clone(), route_fn.clone());
        Box::pin(async move {
            let key = ev["requestContext"]["routeKey"].as_str().unwrap_or("$default").to_owned();
            let Some(f) = rf.get(&key).and_then(|id| fcell.get().and_then(|m| m.get(id))) else {
                // No route: API Gateway accepts a connection without $connect.
                return Ok(json!({"statusCode": 200}));
            };
            match f.invoke(Bytes::from(ev.to_string())).await {
                Ok(out) => Ok(serde_json::from_slice(&out).unwrap_or(json!({"statusCode": 200}))),
                Err(e) => {
                    tracing::warn!(route = %key, error = %e, "WebSocket integration failed");
                    Err(e)
                }
            }
        })
    });
    let stage = api.stage_name.clone().unwrap_or_else(|| "$default".into());
    let ws = crate::apigw::start(
        crate::apigw::Options {
            stage: stage.clone(),
            routes: api.routes.iter().map(|(_, r)| r.key.clone()).filter(|k| !k.starts_with('$')).collect(),
            latency: crate::apigw::Latency { median: args.connections_latency, p99: args.connections_latency_p99 },
            rate_limit: None,
            burst: 0,
            throttle_first: 0,
            mock_routes,
            reply_routes,
            concurrent_frames: true,
            disconnect_on_loss: args.disconnect_on_loss,
            idle_limit: args.idle_limit,
            max_lifetime: args.max_lifetime,
            limits: Some((account.clone(), Arc::new(api.throttles))),
            meter: meter.clone(),
            access_log: api.access_log,
            api_arn: format!(
                "arn:aws:execute-api:{}:{ACCOUNT}:{}",
                args.region,
                api.id.as_ref().map(|id| attrs.reference(id)).transpose()?.unwrap_or_default()
            ),
        },
        invoke,
    )
    .await;
    {
        let ws = ws.clone();
        meter.set_open_connection_ms(move || ws.open_connection_ms());
    }
    Ok(ws)
}

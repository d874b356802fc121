//! The operations endpoints every role serves: `GET /healthz` (liveness), `GET /readyz`
//! (readiness) and `GET /metrics` (Prometheus text). A gateway serves them on its main port,
//! beside the REST API; the persister and presence on their health port; the all-in-one mode
//! once, for all its roles.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chat_bus::Bus;
use chat_gateway::Gateway;
use chat_persister::Store;
use chat_telemetry::prometheus::Metrics;
use serde_json::{json, Map, Value};

/// How long the database may take to answer the readiness query.
const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What readiness depends on in this process.
pub enum Dependency {
    /// The NATS connection (cluster roles, and `all` with `--nats-url`).
    Nats(Arc<dyn Bus>),
    /// The database answers a trivial query (persister, `all`).
    Database(Store),
    /// The gateway has not begun shutting down.
    Gateway(Arc<Gateway>),
}

impl Dependency {
    fn name(&self) -> &'static str {
        match self {
            Dependency::Nats(_) => "nats",
            Dependency::Database(_) => "database",
            Dependency::Gateway(_) => "gateway",
        }
    }

    /// `Ok` when ready, else what is wrong.
    async fn check(&self) -> Result<(), String> {
        match self {
            Dependency::Nats(bus) if bus.is_connected() => Ok(()),
            Dependency::Nats(_) => Err("not connected".into()),
            Dependency::Database(store) => match tokio::time::timeout(DATABASE_CHECK_TIMEOUT, store.ping()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("unreachable: {e}")),
                Err(_) => Err(format!("no answer within {DATABASE_CHECK_TIMEOUT:?}")),
            },
            Dependency::Gateway(gateway) if gateway.is_draining() => Err("shutting down".into()),
            Dependency::Gateway(_) => Ok(()),
        }
    }
}

pub struct Ops {
    pub metrics: Metrics,
    pub dependencies: Vec<Dependency>,
}

pub fn router(ops: Ops) -> Router {
    Router::new()
        .route("/healthz", get(liveness))
        .route("/readyz", get(readiness))
        .route("/metrics", get(metrics))
        // Errors (a wrong method, say) in the REST API's JSON shape, on every role alike.
        .layer(axum::middleware::map_response(chat_gateway::rest::json_errors))
        .with_state(Arc::new(ops))
}

/// The process answers: its roles run (a process whose role stopped exits, see `main`).
async fn liveness() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 while every dependency is ready; 503 naming those that are not.
async fn readiness(State(ops): State<Arc<Ops>>) -> Response {
    let results = futures::future::join_all(ops.dependencies.iter().map(Dependency::check)).await;
    let mut checks = Map::new();
    let mut missing = Vec::new();
    for (dependency, result) in ops.dependencies.iter().zip(results) {
        let status = match result {
            Ok(()) => "ok".to_owned(),
            Err(problem) => {
                missing.push(dependency.name());
                problem
            }
        };
        checks.insert(dependency.name().to_owned(), Value::String(status));
    }
    if missing.is_empty() {
        (StatusCode::OK, Json(json!({ "status": "ready", "checks": checks }))).into_response()
    } else {
        let body = json!({ "status": "not ready", "missing": missing, "checks": checks });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

async fn metrics(State(ops): State<Arc<Ops>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], ops.metrics.render()).into_response()
}

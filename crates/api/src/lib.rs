//! Meridian's control plane: the ngrok API v2, close enough to the real one that the official
//! clients work unmodified. It owns the HTTP shapes and the input checks; what a
//! `resolves_to` list means is `meridian-core`'s, and what is stored is `meridian-store`'s.
//!
//! # Layout
//! - `lib.rs`: [`ApiConfig`], [`router`] and [`serve`].
//! - [`error`]: the one error body.
//! - [`extract`]: the version and API-key guard, bounded JSON bodies.
//! - `resource.rs`: get, list and delete shared by every resource.
//! - `domains.rs`, `addrs.rs`, `credentials.rs`: one resource each.
//! - `pops.rs`: Meridian's own `/pops`, for operators to drain a PoP.
#![warn(missing_docs)]

mod addrs;
mod credentials;
mod domains;
pub mod error;
pub mod extract;
mod pops;
mod resource;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use meridian_core::Hostname;
use meridian_store::{AddrPool, Credential, ReservedAddr, ReservedDomain, Store};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::error::ApiError;
use crate::resource::{delete_one, get_one, list};

/// What the API needs to know about the deployment.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The API's public URL without a trailing slash, e.g. `http://127.0.0.1:4040`. Every `uri`
    /// and `next_page_uri` starts with it.
    pub base_url: String,
    /// The platform's zone: names below it are free subdomains with no CNAME target; the
    /// CNAME targets of custom domains live under `cname.<base_domain>`.
    pub base_domain: Hostname,
    /// Where each PoP hands out TCP addresses, indexed by [`meridian_core::PopCode::index`].
    pub addr_pools: [AddrPool; 8],
}

/// Shared by every handler.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The store.
    pub store: Store,
    /// The deployment.
    pub config: Arc<ApiConfig>,
}

/// A JSON body with the content type the ngrok API answers with.
pub(crate) fn json_response(body: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

/// The whole API.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(
            "/reserved_domains",
            get(list::<ReservedDomain>).post(domains::create),
        )
        .route(
            "/reserved_domains/{id}",
            get(get_one::<ReservedDomain>)
                .patch(domains::update)
                .delete(delete_one::<ReservedDomain>),
        )
        .route(
            "/reserved_domains/{id}/certificate",
            delete(domains::delete_certificate),
        )
        .route(
            "/reserved_domains/{id}/certificate_management_policy",
            delete(domains::delete_policy),
        )
        .route(
            "/reserved_addrs",
            get(list::<ReservedAddr>).post(addrs::create),
        )
        .route(
            "/reserved_addrs/{id}",
            get(get_one::<ReservedAddr>)
                .patch(addrs::update)
                .delete(delete_one::<ReservedAddr>),
        )
        .route(
            "/credentials",
            get(list::<Credential>).post(credentials::create),
        )
        .route(
            "/credentials/{id}",
            get(get_one::<Credential>)
                .patch(credentials::update)
                .delete(delete_one::<Credential>),
        )
        .route("/pops", get(pops::list))
        .route("/pops/{code}", get(pops::get).patch(pops::update))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            extract::guard,
        ))
        .with_state(state)
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "Not Found")
        .detail("path", request.uri().path())
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}.",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

//! `/pops`: Meridian's own extension for operators. Lists the eight PoPs and drains or
//! undrains one: a drained PoP is no longer named by DNS while another PoP of a domain's set is
//! available (a domain pinned only to drained PoPs keeps resolving inside its set). Anyone may
//! read; only the operator's account may drain.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use meridian_core::PopCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::extract::{Caller, JsonBody};
use crate::{ApiState, json_response};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PopBody {
    drained: bool,
}

fn pop_json(state: &ApiState, code: PopCode, drained: bool) -> Value {
    let site = code.location();
    json!({
        "code": code.as_str(),
        "uri": format!("{}/pops/{code}", state.config.base_url),
        "city": site.city,
        "region": site.region,
        "latitude": site.latitude,
        "longitude": site.longitude,
        "drained": drained,
    })
}

fn parse_code(code: &str) -> Result<PopCode, ApiError> {
    code.parse()
        .map_err(|_| ApiError::not_found().detail("known_pops", PopCode::catalog_list()))
}

/// `GET /pops`.
pub(crate) async fn list(State(state): State<ApiState>) -> Response {
    let drained = state.store.snapshot().drained();
    let pops: Vec<Value> = PopCode::ALL
        .into_iter()
        .map(|code| pop_json(&state, code, drained.contains(code)))
        .collect();
    json_response(&json!({
        "pops": pops,
        "uri": format!("{}/pops", state.config.base_url),
        "next_page_uri": null,
    }))
}

/// `GET /pops/{code}`.
pub(crate) async fn get(
    State(state): State<ApiState>,
    Path(code): Path<String>,
) -> Result<Response, ApiError> {
    let code = parse_code(&code)?;
    let drained = state.store.snapshot().drained().contains(code);
    Ok(json_response(&pop_json(&state, code, drained)))
}

/// `PATCH /pops/{code}` with `{"drained": true|false}`.
pub(crate) async fn update(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(code): Path<String>,
    JsonBody(body): JsonBody<PopBody>,
) -> Result<Response, ApiError> {
    let code = parse_code(&code)?;
    if !state.store.is_operator(&caller.account).await? {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "operator_only",
            "Only the operator's account may drain or undrain a PoP.",
        ));
    }
    let drained = state.store.set_drained(code, body.drained).await?;
    tracing::info!(pop = %code, drained = body.drained, "pop drain changed");
    Ok(json_response(&pop_json(
        &state,
        code,
        drained.contains(code),
    )))
}

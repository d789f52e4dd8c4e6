//! What the three resources share: get, list (newest first, `before_id`/`limit`, an absolute
//! `next_page_uri` or `null`) and delete, written once over [`Resource`], plus the field
//! checks every create and update applies.

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use meridian_store::Record;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::extract::Caller;
use crate::{ApiState, json_response};

/// Most items one list page may hold, and the default page size.
pub(crate) const MAX_PAGE: u32 = 100;
/// Longest `metadata` accepted, in bytes (ngrok's limit).
pub(crate) const MAX_METADATA_BYTES: usize = 4096;

/// A stored object as the API shows it.
pub(crate) trait Resource: Record {
    /// The collection's path segment and its key in list bodies.
    const PATH: &'static str;
    /// The object's id.
    fn id(&self) -> &str;
    /// The object's JSON, every key present.
    fn to_json(&self, state: &ApiState) -> Value;
}

/// The object's absolute URL.
pub(crate) fn object_uri(state: &ApiState, path: &str, id: &str) -> String {
    format!("{}/{path}/{id}", state.config.base_url)
}

/// The 201 answer to a create.
pub(crate) fn created(json: &Value) -> Response {
    (StatusCode::CREATED, json_response(json)).into_response()
}

pub(crate) async fn get_one<T: Resource>(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let object: T = state.store.get(&caller.account, &id).await?;
    Ok(json_response(&object.to_json(&state)))
}

pub(crate) async fn delete_one<T: Resource>(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.store.delete::<T>(&caller.account, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    before_id: Option<String>,
    limit: Option<String>,
}

pub(crate) async fn list<T: Resource>(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::bad_request(
            "invalid_query",
            format!("The query string is not valid: {e}."),
        )
    })?;
    let limit = parse_limit(query.limit.as_deref())?;
    let before_id = query.before_id.filter(|b| !b.is_empty());
    if let Some(before) = &before_id
        && !meridian_core::id::is_valid_id(T::KIND, before)
    {
        return Err(ApiError::bad_request(
            "invalid_before_id",
            format!("'{before}' is not a valid {} id.", T::KIND.prefix()),
        ));
    }
    let page = state
        .store
        .list::<T>(&caller.account, before_id.as_deref(), limit)
        .await?;
    let base = format!("{}/{}", state.config.base_url, T::PATH);
    let next_page_uri = match (page.has_more, page.items.last()) {
        (true, Some(last)) => Value::from(format!("{base}?before_id={}&limit={limit}", last.id())),
        _ => Value::Null,
    };
    let items: Vec<Value> = page.items.iter().map(|item| item.to_json(&state)).collect();
    Ok(json_response(&json!({
        T::PATH: items,
        "uri": base,
        "next_page_uri": next_page_uri,
    })))
}

/// `limit` as the clients send it: a string, absent or empty for the default.
fn parse_limit(limit: Option<&str>) -> Result<u32, ApiError> {
    match limit.filter(|l| !l.is_empty()) {
        None => Ok(MAX_PAGE),
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "ERR_NGROK_233",
                    format!(
                        "The page size limit must be between 1 and {MAX_PAGE} but {text} was \
                         provided."
                    ),
                )
            }),
    }
}

/// Refuses over-long `metadata`.
pub(crate) fn check_metadata(metadata: &Option<String>) -> Result<(), ApiError> {
    match metadata {
        Some(m) if m.len() > MAX_METADATA_BYTES => Err(ApiError::bad_request(
            "ERR_NGROK_100",
            format!(
                "Invalid metadata length: {} bytes; the limit is {MAX_METADATA_BYTES} bytes.",
                m.len()
            ),
        )),
        _ => Ok(()),
    }
}

/// Refuses a `description` over `max` bytes.
pub(crate) fn check_description(description: &Option<String>, max: usize) -> Result<(), ApiError> {
    match description {
        Some(d) if d.len() > max => Err(ApiError::bad_request(
            "invalid_description",
            format!(
                "The description is {} bytes long; the limit is {max} bytes.",
                d.len()
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(parse_limit(None).unwrap(), 100);
        assert_eq!(parse_limit(Some("")).unwrap(), 100);
        assert_eq!(parse_limit(Some("1")).unwrap(), 1);
        for bad in ["0", "101", "-1", "ten"] {
            assert_eq!(parse_limit(Some(bad)).unwrap_err().code(), "ERR_NGROK_233");
        }
    }
}

//! `/reserved_addrs`: TCP addresses, each tied for life to the region whose PoP serves it and
//! handed out from that region's port range.

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::Response;
use meridian_core::PopCode;
use meridian_store::ReservedAddr;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::extract::{Caller, JsonBody};
use crate::resource::{Resource, check_description, check_metadata, created, object_uri};
use crate::{ApiState, json_response};

/// Longest `description` of an address, in bytes.
const MAX_DESCRIPTION_BYTES: usize = 4096;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct AddrBody {
    description: Option<String>,
    metadata: Option<String>,
    region: Option<String>,
}

impl Resource for ReservedAddr {
    const PATH: &'static str = "reserved_addrs";

    fn id(&self) -> &str {
        &self.id
    }

    fn to_json(&self, state: &ApiState) -> Value {
        json!({
            "id": self.id,
            "uri": object_uri(state, Self::PATH, &self.id),
            "created_at": meridian_core::time::rfc3339(self.created_at),
            "description": self.description,
            "metadata": self.metadata,
            "addr": self.addr,
            "region": self.region.as_str(),
            "endpoint_configuration": null,
        })
    }
}

fn invalid_region(region: &str) -> ApiError {
    ApiError::bad_request(
        "ERR_NGROK_400",
        format!(
            "The region you specified, {region} is invalid. Use one of the following acceptable \
             values: {}",
            PopCode::catalog_list()
        ),
    )
}

pub(crate) async fn create(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<AddrBody>,
) -> Result<Response, ApiError> {
    check_description(&body.description, MAX_DESCRIPTION_BYTES)?;
    check_metadata(&body.metadata)?;
    // ngrok's default region for addresses is `us`.
    let region = match body.region.as_deref().filter(|r| !r.is_empty()) {
        None => PopCode::Us,
        Some(r) => r.parse().map_err(|_| invalid_region(r))?,
    };
    let pool = &state.config.addr_pools[region.index()];
    let addr = state
        .store
        .create_addr(
            &caller.account,
            region,
            pool,
            body.description.unwrap_or_default(),
            body.metadata.unwrap_or_default(),
        )
        .await?;
    tracing::info!(id = %addr.id, addr = %addr.addr, %region, "reserved address");
    Ok(created(&addr.to_json(&state)))
}

pub(crate) async fn update(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<AddrBody>,
) -> Result<Response, ApiError> {
    check_description(&body.description, MAX_DESCRIPTION_BYTES)?;
    check_metadata(&body.metadata)?;
    if let Some(region) = body.region.filter(|r| !r.is_empty()) {
        let current: ReservedAddr = state.store.get(&caller.account, &id).await?;
        if region != current.region.as_str() {
            return Err(ApiError::bad_request(
                "region_immutable",
                format!(
                    "The region of a reserved address cannot be changed (it is '{}'); reserve \
                     a new address in '{region}' instead.",
                    current.region
                ),
            ));
        }
    }
    let addr = state
        .store
        .update_addr(&caller.account, &id, body.description, body.metadata)
        .await?;
    Ok(json_response(&addr.to_json(&state)))
}

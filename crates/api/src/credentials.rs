//! `/credentials`: agent authtokens. The token is in the create response and nowhere else,
//! ever: only its hash is stored.

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::Response;
use meridian_store::Credential;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::extract::{Caller, JsonBody};
use crate::resource::{Resource, check_description, check_metadata, created, object_uri};
use crate::{ApiState, json_response};

/// Longest `description` of a credential, in bytes (ngrok's limit).
const MAX_DESCRIPTION_BYTES: usize = 255;
/// Most ACL rules on one credential.
const MAX_ACL_RULES: usize = 100;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct CredentialBody {
    description: Option<String>,
    metadata: Option<String>,
    acl: Option<Vec<String>>,
    owner_id: Option<String>,
}

impl Resource for Credential {
    const PATH: &'static str = "credentials";

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
            "token": null,
            "acl": self.acl,
            "owner_id": null,
        })
    }
}

/// Rules are `bind:<domain, wildcard domain or address>`, or `*` for no restriction.
fn check_acl(acl: &Option<Vec<String>>) -> Result<(), ApiError> {
    let Some(rules) = acl else { return Ok(()) };
    if rules.len() > MAX_ACL_RULES {
        return Err(ApiError::bad_request(
            "invalid_acl",
            format!("A credential may have at most {MAX_ACL_RULES} ACL rules."),
        ));
    }
    for rule in rules {
        let ok = rule == "*"
            || rule
                .strip_prefix("bind:")
                .is_some_and(|target| !target.is_empty() && !target.contains(char::is_whitespace));
        if !ok {
            return Err(ApiError::bad_request(
                "invalid_acl",
                format!("The ACL rule '{rule}' is not valid; use 'bind:<domain or address>'."),
            ));
        }
    }
    Ok(())
}

fn check_common(body: &CredentialBody) -> Result<(), ApiError> {
    check_description(&body.description, MAX_DESCRIPTION_BYTES)?;
    check_metadata(&body.metadata)?;
    check_acl(&body.acl)?;
    if body.owner_id.as_deref().is_some_and(|o| !o.is_empty()) {
        return Err(ApiError::bad_request(
            "owner_id_unsupported",
            "Meridian has no users within an account, so owner_id cannot be set.",
        ));
    }
    Ok(())
}

pub(crate) async fn create(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<CredentialBody>,
) -> Result<Response, ApiError> {
    check_common(&body)?;
    let (credential, token) = state
        .store
        .create_credential(
            &caller.account,
            body.description.as_deref().unwrap_or_default(),
            body.metadata.as_deref().unwrap_or_default(),
            body.acl.as_deref().unwrap_or_default(),
        )
        .await?;
    tracing::info!(id = %credential.id, "created credential");
    let mut json = credential.to_json(&state);
    json["token"] = Value::from(token.expose());
    Ok(created(&json))
}

pub(crate) async fn update(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<CredentialBody>,
) -> Result<Response, ApiError> {
    check_common(&body)?;
    let credential = state
        .store
        .update_credential(
            &caller.account,
            &id,
            body.description,
            body.metadata,
            body.acl,
        )
        .await?;
    Ok(json_response(&credential.to_json(&state)))
}

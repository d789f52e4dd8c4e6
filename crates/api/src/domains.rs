//! `/reserved_domains`: reserving names, pinning them with `resolves_to`, and their
//! certificate management policy.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use meridian_core::certificate::CertificatePolicy;
use meridian_core::target::{Target, parse_targets};
use meridian_core::{Hostname, PopCode};
use meridian_store::{DomainChanges, NewDomain, ReservedDomain, random_label};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::extract::{Caller, JsonBody};
use crate::resource::{Resource, check_description, check_metadata, created, object_uri};
use crate::{ApiState, json_response};

/// Longest `description` of a domain, in bytes.
const MAX_DESCRIPTION_BYTES: usize = 4096;
/// Most entries a `resolves_to` list may hold (after dropping repeats): far more than the
/// eight PoPs, room for dedicated IPs.
const MAX_TARGETS: usize = 64;

/// A create or update body. Unknown keys (legacy ones such as the endpoint configuration ids)
/// are tolerated; empty strings mean "not set", as the Python client sends them.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct DomainBody {
    domain: Option<String>,
    /// The legacy create key for `domain`.
    name: Option<String>,
    region: Option<String>,
    description: Option<String>,
    metadata: Option<String>,
    certificate_id: Option<String>,
    certificate_management_policy: Option<PolicyBody>,
    resolves_to: Option<Vec<TargetBody>>,
}

#[derive(Debug, Default, Deserialize)]
struct PolicyBody {
    #[serde(default)]
    authority: String,
    #[serde(default)]
    private_key_type: String,
}

#[derive(Debug, Deserialize)]
struct TargetBody {
    value: String,
}

impl Resource for ReservedDomain {
    const PATH: &'static str = "reserved_domains";

    fn id(&self) -> &str {
        &self.id
    }

    fn to_json(&self, state: &ApiState) -> Value {
        let policy = self.certificate_policy.map(|p| {
            json!({"authority": p.authority.as_str(), "private_key_type": p.private_key_type.as_str()})
        });
        // Managed certificates are not issued by this version of Meridian. The status says so
        // rather than pretend that a job is under way.
        let status = self.certificate_policy.map(|_| {
            json!({
                "renews_at": null,
                "provisioning_job": {
                    "error_code": "NOT_SUPPORTED",
                    "msg": "No certificate has been issued: this Meridian server does not \
                            issue managed certificates yet.",
                    "started_at": null,
                    "retries_at": null,
                },
            })
        });
        json!({
            "id": self.id,
            "uri": object_uri(state, Self::PATH, &self.id),
            "created_at": meridian_core::time::rfc3339(self.created_at),
            "description": self.description,
            "metadata": self.metadata,
            "domain": self.domain.as_str(),
            "region": "",
            "cname_target": self.cname_target.as_ref().map(Hostname::as_str),
            "certificate": null,
            "certificate_management_policy": policy,
            "certificate_management_status": status,
            "acme_challenge_cname_target": null,
            "resolves_to": self.resolves_to.iter()
                .map(|t| json!({"value": t.to_string()}))
                .collect::<Vec<_>>(),
        })
    }
}

pub(crate) async fn create(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<DomainBody>,
) -> Result<Response, ApiError> {
    let name = non_empty(body.domain)
        .or_else(|| non_empty(body.name))
        .ok_or_else(|| {
            ApiError::bad_request("ERR_NGROK_1906", "The 'domain' field is required.")
        })?;
    let domain = Hostname::parse(&name)?;
    check_reservable(&state, &domain)?;
    check_region(body.region.as_deref())?;
    check_description(&body.description, MAX_DESCRIPTION_BYTES)?;
    check_metadata(&body.metadata)?;
    let certificate_policy = policy(body.certificate_id, body.certificate_management_policy)?;
    let resolves_to = match body.resolves_to {
        Some(list) => targets(list)?,
        None => Vec::new(),
    };
    let cname_target = (!domain.is_below(&state.config.base_domain))
        .then(|| {
            Hostname::parse(&format!(
                "{}.cname.{}",
                random_label(),
                state.config.base_domain
            ))
        })
        .transpose()?;
    let new = NewDomain {
        domain,
        description: body.description.unwrap_or_default(),
        metadata: body.metadata.unwrap_or_default(),
        resolves_to,
        certificate_policy,
        cname_target,
    };
    let domain = state.store.create_domain(&caller.account, new).await?;
    tracing::info!(id = %domain.id, domain = %domain.domain, "reserved domain");
    Ok(created(&domain.to_json(&state)))
}

pub(crate) async fn update(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<DomainBody>,
) -> Result<Response, ApiError> {
    check_description(&body.description, MAX_DESCRIPTION_BYTES)?;
    check_metadata(&body.metadata)?;
    let current: ReservedDomain = state.store.get(&caller.account, &id).await?;
    // The feature page's own PATCH example repeats `domain`; that is fine as long as it is
    // the same name.
    if let Some(name) = non_empty(body.domain)
        && Hostname::parse(&name).ok().as_ref() != Some(&current.domain)
    {
        return Err(ApiError::bad_request(
            "domain_immutable",
            format!(
                "The domain of a reservation cannot be changed ('{}' is reserved here, not \
                     '{name}'); reserve the new name instead.",
                current.domain
            ),
        ));
    }
    let certificate_policy = match (&body.certificate_id, &body.certificate_management_policy) {
        (None, None) => None,
        _ => Some(policy(
            body.certificate_id,
            body.certificate_management_policy,
        )?),
    };
    let changes = DomainChanges {
        description: body.description,
        metadata: body.metadata,
        resolves_to: body.resolves_to.map(targets).transpose()?,
        certificate_policy,
    };
    let updated = state
        .store
        .update_domain(&caller.account, &id, changes)
        .await?;
    tracing::info!(id = %updated.id, resolves_to = ?updated.resolves_to, "updated domain");
    Ok(json_response(&updated.to_json(&state)))
}

/// `DELETE /reserved_domains/{id}/certificate_management_policy`.
pub(crate) async fn delete_policy(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let changes = DomainChanges {
        certificate_policy: Some(None),
        ..DomainChanges::default()
    };
    state
        .store
        .update_domain(&caller.account, &id, changes)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /reserved_domains/{id}/certificate`: no certificate is ever attached, so there is
/// nothing to detach; the domain must still exist and be the caller's.
pub(crate) async fn delete_certificate(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let _: ReservedDomain = state.store.get(&caller.account, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// Names the platform uses itself cannot be reserved: the base domain, the zones of CNAME
/// targets and TCP addresses, and a wildcard that would swallow every free name.
fn check_reservable(state: &ApiState, domain: &Hostname) -> Result<(), ApiError> {
    let base = &state.config.base_domain;
    let refused = domain == base
        || domain.as_str() == format!("*.{base}")
        || ["cname", "tcp"].iter().any(|zone| {
            let zone = format!("{zone}.{base}");
            domain.as_str() == zone || domain.as_str().ends_with(&format!(".{zone}"))
        });
    if refused {
        return Err(ApiError::bad_request(
            "ERR_NGROK_404",
            format!("You may not reserve '{domain}': the platform uses that name itself."),
        ));
    }
    Ok(())
}

/// The deprecated `region` field: ignored, but a value that names no PoP is still refused.
fn check_region(region: Option<&str>) -> Result<(), ApiError> {
    match region.filter(|r| !r.is_empty()) {
        Some(r) if r.parse::<PopCode>().is_err() => Err(ApiError::bad_request(
            "ERR_NGROK_400",
            format!(
                "The region you specified, {r} is invalid. Use one of the following acceptable \
                 values: {}",
                PopCode::catalog_list()
            ),
        )),
        _ => Ok(()),
    }
}

fn policy(
    certificate_id: Option<String>,
    policy: Option<PolicyBody>,
) -> Result<Option<CertificatePolicy>, ApiError> {
    match (non_empty(certificate_id), policy) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "invalid_certificate",
            "certificate_id and certificate_management_policy are mutually exclusive.",
        )),
        // No certificate can have been uploaded, so every id names a missing one.
        (Some(id), None) => Err(ApiError::bad_request(
            "ERR_NGROK_380",
            format!("The certificate '{id}' was not found."),
        )),
        (None, Some(p)) => CertificatePolicy::parse(&p.authority, &p.private_key_type)
            .map(Some)
            .map_err(|e| ApiError::bad_request("invalid_certificate_policy", format!("{e}."))),
        (None, None) => Ok(None),
    }
}

/// Parses and checks a `resolves_to` list: the exact `invalid_region_target` answer for a
/// value that is no target at all, and a refusal naming any IP that is not one of the
/// account's dedicated IPs.
fn targets(list: Vec<TargetBody>) -> Result<Vec<Target>, ApiError> {
    let targets = parse_targets(list.iter().map(|t| t.value.as_str()))
        .map_err(|e| ApiError::bad_request("invalid_region_target", e.to_string()))?;
    if targets.len() > MAX_TARGETS {
        return Err(ApiError::bad_request(
            "too_many_targets",
            format!("resolves_to may hold at most {MAX_TARGETS} entries."),
        ));
    }
    // An account owns no dedicated IP until dedicated IPs can be allocated, so every IP
    // target is one the account does not own.
    if let Some(Target::Ip(ip)) = targets.iter().find(|t| matches!(t, Target::Ip(_))) {
        return Err(ApiError::bad_request(
            "dedicated_ip_not_found",
            format!(
                "The IP address '{ip}' is not one of your account's dedicated IPs; a domain \
                 can only resolve to dedicated IPs allocated to its account."
            ),
        )
        .detail("value", ip.to_string()));
    }
    Ok(targets)
}

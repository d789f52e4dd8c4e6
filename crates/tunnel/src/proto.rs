//! The JSON messages agents and edges exchange on typed streams, with the exact key names
//! the ngrok SDKs use (PascalCase, and a few upper-case renames). Requests are read
//! leniently (missing keys take defaults, unknown keys are ignored); responses always carry
//! every key the SDKs require.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Stream type of the Auth RPC (agent → edge).
pub const TYPE_AUTH: u32 = 0;
/// Stream type of the Bind RPC (agent → edge).
pub const TYPE_BIND: u32 = 1;
/// Stream type of the Unbind RPC (agent → edge).
pub const TYPE_UNBIND: u32 = 2;
/// Stream type of a proxied connection (edge → agent).
pub const TYPE_PROXY: u32 = 3;
/// Stream type of the Restart command (edge → agent).
pub const TYPE_RESTART: u32 = 4;
/// Stream type of the Stop command (edge → agent).
pub const TYPE_STOP: u32 = 5;
/// Stream type of the Update command (edge → agent).
pub const TYPE_UPDATE: u32 = 6;
/// Stream type of the legacy labeled-tunnel RPC (agent → edge).
pub const TYPE_START_TUNNEL_WITH_LABEL: u32 = 7;
/// Stream type of the StopTunnel command (edge → agent).
pub const TYPE_STOP_TUNNEL: u32 = 9;
/// Stream type of heartbeats, in either direction.
pub const TYPE_HEARTBEAT: u32 = 0xFFFF_FFFF;

/// Auth request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Auth {
    /// Protocol versions the agent speaks, preferred first.
    pub version: Vec<String>,
    /// Empty on first connect; the previous `ClientId` on reconnect.
    pub client_id: String,
    /// Everything else.
    pub extra: AuthExtra,
}

/// Auth request details.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AuthExtra {
    /// The agent's authtoken.
    pub auth_token: String,
    /// The SDK's version.
    pub version: String,
    /// e.g. `ngrok-python/1.7.0 ngrok-rust/0.18.0`.
    pub user_agent: String,
    /// Echo of the last AuthResp cookie.
    pub cookie: String,
    /// e.g. `ngrok-python`.
    pub client_type: String,
    /// Agent heartbeat interval, nanoseconds.
    pub heartbeat_interval: i64,
    /// Agent heartbeat tolerance, nanoseconds.
    pub heartbeat_tolerance: i64,
    /// Free text from the agent.
    pub metadata: String,
    /// Operating system.
    #[serde(rename = "OS")]
    pub os: String,
    /// CPU architecture.
    pub arch: String,
}

/// Auth response. `Version` and `ClientId` are required by the SDKs.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AuthResp {
    /// The protocol version chosen.
    pub version: String,
    /// The session's id; the agent sends it back on reconnect.
    pub client_id: String,
    /// Details.
    pub extra: AuthRespExtra,
    /// Non-empty on failure; a line `ERR_NGROK_…` carries the code.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// Auth response details.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AuthRespExtra {
    /// Server version.
    pub version: String,
    /// The PoP the agent reached.
    pub region: String,
    /// Opaque value the agent echoes on reconnect.
    pub cookie: String,
    /// The account's name.
    pub account_name: String,
}

/// Bind request: start a public endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Bind {
    /// Empty for a new endpoint; the old id on reconnect.
    pub id: String,
    /// `http`, `https`, `tcp` or `tls`.
    pub proto: String,
    /// Informational.
    pub forwards_to: String,
    /// `""`, `http1` or `http2`.
    pub forwards_proto: String,
    /// Protocol-specific options; echoed back in the response.
    pub opts: Value,
    /// Details.
    pub extra: BindExtra,
}

/// Bind request details.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct BindExtra {
    /// Per-endpoint metadata.
    pub metadata: String,
    /// Whether the agent asks to share the endpoint with other agents.
    pub pooling_enabled: bool,
    /// `public`, `internal`, `kubernetes`; empty means public.
    pub bindings: Vec<String>,
}

/// Bind response. `Opts` must deserialise as the request's options type, so it is the
/// request's, echoed; `Extra.Token` is required.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct BindResp {
    /// The endpoint id; keys every proxied stream.
    pub id: String,
    /// The public URL.
    #[serde(rename = "URL")]
    pub url: String,
    /// The endpoint protocol.
    pub proto: String,
    /// The request's options.
    pub opts: Value,
    /// Details.
    pub extra: BindRespExtra,
    /// Non-empty on failure.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// Bind response details.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct BindRespExtra {
    /// Required by the SDKs; opaque.
    pub token: String,
}

/// Unbind request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Unbind {
    /// The endpoint id.
    pub id: String,
}

/// An empty or error-only response (Unbind, and refusals of RPCs we do not serve).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorResp {
    /// Non-empty on failure.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// The header of a proxied connection (after the type and an i64 little-endian length).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProxyHeader {
    /// The endpoint id from the bind.
    pub id: String,
    /// The visitor, `ip:port`.
    pub client_addr: String,
    /// The endpoint protocol.
    pub proto: String,
    /// A string, not a number: `""`, `"1"` tcp, `"2"` tls, `"3"` https.
    pub edge_type: String,
    /// Whether the bytes are TLS the agent must not unwrap.
    #[serde(rename = "PassthroughTLS")]
    pub passthrough_tls: bool,
}

impl ProxyHeader {
    /// The bytes that follow the stream type: the header length as a little-endian i64 (the
    /// one little-endian number in the protocol), then the JSON.
    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let mut out = Vec::with_capacity(8 + json.len());
        out.extend_from_slice(&(json.len() as i64).to_le_bytes());
        out.extend_from_slice(&json);
        out
    }
}

/// StopTunnel command; the Rust SDK sends no reply.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StopTunnel {
    /// The endpoint id.
    pub id: String,
    /// Why.
    pub message: String,
    /// `ERR_NGROK_…` or null.
    pub error_code: Option<String>,
}

/// An RPC error string the SDKs parse: the message, a blank line, then the code on its own
/// line, from which they extract the code.
pub fn error_text(message: &str, code: &str) -> String {
    format!("{message}\n\n{code}\n")
}

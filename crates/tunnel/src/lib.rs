//! The server side of the ngrok agent protocol: muxado frames and sessions, typed streams,
//! and the JSON RPC messages; and one piece of the agent's side, write coalescing. It knows
//! nothing of domains, accounts or PoPs; the edge does.
//!
//! # Layout
//! - [`frame`]: the wire format of muxado frames.
//! - [`session`]: sessions, streams, flow control.
//! - [`proto`]: the JSON messages and stream types.
//! - [`rpc`]: reading requests and answering them.
//! - [`coalesce`]: write coalescing for the agent's side of a connection.
//! - [`readahead`]: large socket reads under TLS, for both sides.
#![warn(missing_docs)]

pub mod coalesce;
pub mod frame;
pub mod proto;
pub mod readahead;
pub mod rpc;
pub mod session;

pub use session::{Incoming, MuxStream, OpenError, Session, SessionEnd};

/// Per-stream flow-control window in both directions. Fixed by the protocol (nothing is
/// negotiated): the SDKs assume 256 KiB.
pub const WINDOW_SIZE: u32 = 256 * 1024;
/// Most streams an agent may have open at once; more are refused with RST.
pub const MAX_STREAMS: usize = 512;
/// Agent-opened streams waiting to be accepted; more are reset.
pub const ACCEPT_QUEUE: usize = 64;

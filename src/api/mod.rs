//! Transports: the HTTP server (metrics, query API, web page) and the Unix query socket.
//! Handlers only decode requests, call into the library and encode responses.

pub mod http;
pub mod unix;
pub mod web;

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// `[http]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address of the HTTP server (`/metrics`, `/api/v1/*`, the web page).
    pub listen: SocketAddr,
    /// Unix query socket (one query per line, one JSON answer per line); default
    /// `<state_dir>/query.sock`.
    pub query_socket: Option<std::path::PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9180)),
            query_socket: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("query socket {path}: {source}")]
    Socket {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

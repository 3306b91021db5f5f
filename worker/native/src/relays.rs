//! The endpoint's home relays as they stand: connected or not, and why not. A relay that
//! refuses our token keeps refusing, so that is worth telling the user instead of waiting.

use iroh::Watcher;

/// One home relay of an endpoint at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayState {
    pub url: String,
    pub connected: bool,
    /// The last connection error, in words (`None` while connected or before any failure).
    pub error: Option<String>,
    /// The relay's reason if it denied our authentication.
    pub auth_denied: Option<String>,
}

pub fn home_relays(endpoint: &iroh::Endpoint) -> Vec<RelayState> {
    endpoint
        .home_relay_status()
        .get()
        .into_iter()
        .map(|r| RelayState {
            url: r.url().to_string(),
            connected: r.is_connected(),
            error: r.last_error().map(|e| format!("{e:#}")),
            auth_denied: r.auth_denied_reason().map(str::to_string),
        })
        .collect()
}

//! Who acted, as recorded with each operator action.

use std::net::SocketAddr;

/// The OS user running the command line, on this host.
pub fn cli() -> String {
    let user = whoami::username().unwrap_or_else(|_| "unknown user".into());
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    format!("{user}@{host} (cli)")
}

/// Longest name an HTTP client may give: with its address it fits the
/// 255 characters `celerity_action.actor` holds.
pub const MAX_HTTP_NAME: usize = 200;

/// An HTTP client: its address, and the name it gave, if any.
pub fn http(peer: SocketAddr, name: Option<&str>) -> String {
    match name.map(str::trim).filter(|n| !n.is_empty()) {
        Some(name) => format!("{name} (http {peer})"),
        None => format!("http {peer}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_client_is_its_address_and_the_name_it_gave() {
        let peer: SocketAddr = "10.0.0.7:51234".parse().unwrap();
        assert_eq!(http(peer, Some("ops-console")), "ops-console (http 10.0.0.7:51234)");
        assert_eq!(http(peer, Some("  ")), "http 10.0.0.7:51234");
        assert_eq!(http(peer, None), "http 10.0.0.7:51234");
        assert!(cli().ends_with(" (cli)"));
    }
}

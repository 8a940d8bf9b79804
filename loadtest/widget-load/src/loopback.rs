//! The generators' guard: they sign webhooks and mint session tokens with the app secret, so they only ever talk to
//! this machine. A host passes when it is `localhost` or parses as a loopback address (`127.0.0.0/8`, `::1`); a name
//! that merely starts with `127.` does not.

use anyhow::{bail, Context};

/// Refuses a base URL whose host is not loopback; `tool` names the generator in the error.
pub fn require_loopback(base_url: &str, tool: &str) -> anyhow::Result<()> {
    let url = reqwest::Url::parse(base_url).context("base url")?;
    let host = url.host_str().unwrap_or_default();
    let address = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || address
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!("{tool} only targets loopback, not {host}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::require_loopback;

    #[test]
    fn only_loopback_hosts_pass() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://127.3.4.5",
            "http://localhost:1",
            "http://[::1]:80",
        ] {
            assert!(require_loopback(ok, "t").is_ok(), "{ok}");
        }
        for refused in [
            "http://127.example.com",
            "http://10.0.0.1",
            "http://example.com",
            "http://[::2]",
        ] {
            assert!(require_loopback(refused, "t").is_err(), "{refused}");
        }
    }
}

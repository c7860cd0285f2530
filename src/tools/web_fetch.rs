//! `web_fetch`: GET an http(s) URL and return its readable text.
//!
//! Private, loopback, link-local and unspecified addresses are refused unless
//! `tools.web_fetch.allow_private` is set. The host is resolved once, checked,
//! and the connection goes to exactly that address (so DNS rebinding cannot
//! slip past the check); redirects are followed by hand, each hop checked.

use std::net::{IpAddr, SocketAddr};

use futures_util::StreamExt;
use serde::Deserialize;

use super::{ToolContext, ToolOutput, html};
use crate::upstream::http_client;

/// Redirect hops followed.
const MAX_REDIRECTS: usize = 5;

#[derive(Deserialize)]
pub struct FetchArgs {
    url: String,
}

/// True for addresses the agent may not reach without `allow_private`.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64 // CGNAT 100.64/10
                || v4.octets()[0] == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link local
        }
    }
}

/// Resolves `host:port` and returns an address that may be fetched.
async fn resolve(host: &str, port: u16, allow_private: bool) -> Result<SocketAddr, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(format!("{host} has no addresses"));
    }
    if !allow_private && let Some(bad) = addrs.iter().find(|a| is_private(a.ip())) {
        return Err(format!(
            "refused: {host} resolves to {} (a private or loopback address); \
             the operator can allow this with tools.web_fetch.allow_private",
            bad.ip()
        ));
    }
    Ok(addrs[0])
}

/// Fetches the URL.
pub async fn fetch(a: FetchArgs, ctx: &ToolContext) -> ToolOutput {
    let cfg = &ctx.settings.web_fetch;
    let mut url = a.url.trim().to_string();
    for _ in 0..=MAX_REDIRECTS {
        let lower = url.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return ToolOutput::err("only http and https URLs can be fetched");
        }
        let uri: awc::http::Uri = match url.parse() {
            Ok(u) => u,
            Err(e) => return ToolOutput::err(format!("`{url}` is not a valid URL: {e}")),
        };
        let scheme = uri.scheme_str().unwrap_or("");
        if scheme != "http" && scheme != "https" {
            return ToolOutput::err("only http and https URLs can be fetched");
        }
        let Some(host) = uri.host() else {
            return ToolOutput::err(format!("`{url}` has no host"));
        };
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let addr = match resolve(host, port, cfg.allow_private).await {
            Ok(a) => a,
            Err(e) => return ToolOutput::err(e),
        };
        let client = http_client(std::time::Duration::from_secs(10));
        let resp = client
            .get(uri.clone())
            .address(addr)
            .insert_header((
                "User-Agent",
                concat!("hermes-agent/", env!("CARGO_PKG_VERSION")),
            ))
            .insert_header((
                "Accept",
                "text/html,text/plain,application/json;q=0.9,*/*;q=0.5",
            ))
            .send()
            .await;
        let mut resp = match resp {
            Ok(r) => r,
            Err(e) => return ToolOutput::err(format!("fetching {url} failed: {e}")),
        };
        let status = resp.status();
        if status.is_redirection() {
            let Some(loc) = resp.headers().get("location").and_then(|v| v.to_str().ok()) else {
                return ToolOutput::err(format!("{url} answered {status} without a Location"));
            };
            url = join_location(&uri, loc);
            continue;
        }
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let mut body = Vec::new();
        let mut cut = false;
        while let Some(chunk) = resp.next().await {
            match chunk {
                Ok(b) => {
                    let room = cfg.max_bytes.saturating_sub(body.len());
                    body.extend_from_slice(&b[..b.len().min(room)]);
                    if b.len() > room {
                        cut = true;
                        break;
                    }
                }
                Err(e) => return ToolOutput::err(format!("reading {url} failed: {e}")),
            }
        }
        if super::files::looks_binary(&body) && !content_type.contains("text") {
            return ToolOutput::err(format!("{url} is not text ({content_type})"));
        }
        let raw = String::from_utf8_lossy(&body);
        let text = if content_type.contains("html") || raw.trim_start().starts_with('<') {
            html::to_text(&raw)
        } else {
            raw.into_owned()
        };
        let mut out = format!("URL: {url}\nStatus: {}\n\n{text}", status.as_u16());
        if cut {
            out.push_str(&format!("\n[page cut at {} bytes]", cfg.max_bytes));
        }
        return if status.is_success() {
            ToolOutput::ok(out)
        } else {
            ToolOutput::new(false, out)
        };
    }
    ToolOutput::err(format!("more than {MAX_REDIRECTS} redirects"))
}

/// Resolves a `Location` header against the URL it came from.
fn join_location(base: &awc::http::Uri, loc: &str) -> String {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        return loc.to_string();
    }
    let scheme = base.scheme_str().unwrap_or("http");
    let authority = base.authority().map(|a| a.as_str()).unwrap_or("");
    if let Some(rest) = loc.strip_prefix("//") {
        return format!("{scheme}://{rest}");
    }
    if loc.starts_with('/') {
        return format!("{scheme}://{authority}{loc}");
    }
    let path = base.path();
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    format!("{scheme}://{authority}{dir}{loc}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.4",
            "169.254.1.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "100.64.0.1",
        ] {
            assert!(
                is_private(ip.parse().unwrap_or(IpAddr::V4([1, 1, 1, 1].into()))),
                "{ip}"
            );
        }
        for ip in ["1.1.1.1", "93.184.216.34", "2606:4700::1111"] {
            assert!(
                !is_private(ip.parse().unwrap_or(IpAddr::V4([127, 0, 0, 1].into()))),
                "{ip}"
            );
        }
    }

    #[test]
    fn locations() {
        let base: awc::http::Uri = "http://a.example/x/y?q=1".parse().unwrap_or_default();
        assert_eq!(join_location(&base, "/z"), "http://a.example/z");
        assert_eq!(join_location(&base, "z"), "http://a.example/x/z");
        assert_eq!(
            join_location(&base, "https://b.example/"),
            "https://b.example/"
        );
    }
}

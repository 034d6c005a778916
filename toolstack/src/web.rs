//! The operator's web page at `/`: static HTML and JavaScript compiled into the binary (no
//! external fetches). The page logs in over JSON-RPC (`/jsonrpc`), lists the host and its VMs
//! and draws live graphs from `/rrd_updates?json=true` every 5 s.

/// The page's HTML.
pub const INDEX_HTML: &str = include_str!("web/index.html");
/// The page's script.
pub const APP_JS: &str = include_str!("web/app.js");

/// The static file for a GET of `path`: its content type and body; `None` for other paths.
pub fn handle(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/" | "/index.html" => Some(("text/html; charset=utf-8", INDEX_HTML)),
        "/app.js" => Some(("text/javascript; charset=utf-8", APP_JS)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_page_and_script_only() {
        let (ct, body) = handle("/").unwrap();
        assert!(ct.starts_with("text/html"));
        assert!(body.contains("<script src=\"app.js\">"));
        assert!(handle("/app.js").unwrap().1.contains("rrd_updates"));
        assert_eq!(handle("/nope"), None);
        // Nothing is fetched from elsewhere.
        assert!(!body.contains("http://") && !body.contains("https://"));
        assert!(!APP_JS.contains("http://") && !APP_JS.contains("https://"));
    }
}

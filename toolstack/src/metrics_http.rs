//! The metrics' HTTP handlers, as XAPI serves them: `/rrd_updates`, `/host_rrd`, `/vm_rrd`
//! (xcp-rrdd's `rrdd_http_handler.ml`) and Prometheus text at `/metrics`, each behind
//! XAPI's authentication (a `session_id` query parameter or basic authentication).

use std::sync::Arc;

use base64::Engine;

use crate::api::Xapi;

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// `content-type`.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

fn reply(status: u16, content_type: &'static str, body: impl Into<String>) -> Reply {
    Reply {
        status,
        content_type,
        body: body.into(),
    }
}

/// Decodes `%XX` escapes and `+` in a query component.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A query string's `key=value` pairs, in order.
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (unescape(k), unescape(v)),
            None => (unescape(p), String::new()),
        })
        .collect()
}

fn basic(auth: Option<&str>) -> Option<(String, String)> {
    let b64 = auth?.strip_prefix("Basic ")?.trim();
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// Handles a GET of `path` with `query` and the `authorization` header; `None` when the
/// path is not one of the metrics' (or metrics are off).
pub fn handle(
    xapi: &Arc<Xapi>,
    path: &str,
    query: Option<&str>,
    authorization: Option<&str>,
) -> Option<Reply> {
    if !matches!(path, "/rrd_updates" | "/host_rrd" | "/vm_rrd" | "/metrics") {
        return None;
    }
    let q = parse_query(query.unwrap_or(""));
    let get = |k: &str| q.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
    let b = basic(authorization);
    if !xapi.http_authorised(
        get("session_id"),
        b.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
    ) {
        return Some(reply(401, "text/plain", "authentication required\n"));
    }
    let Some(m) = xapi.metrics() else {
        return Some(reply(503, "text/plain", "metrics are not enabled\n"));
    };
    // As xcp-rrdd: the `json` parameter's presence asks for JSON, whatever its value.
    let json = get("json").is_some();
    let ctype = if json { "application/json" } else { "text/xml" };
    Some(match path {
        "/rrd_updates" => {
            let Some(start) = get("start").and_then(|s| s.parse::<i64>().ok()) else {
                return Some(reply(400, "text/plain", "start: an integer is required\n"));
            };
            let cf = match get("cf") {
                None => None,
                Some(c) => match rrd::Cf::parse(c) {
                    Some(c) => Some(c),
                    None => return Some(reply(400, "text/plain", format!("cf: unknown {c}\n"))),
                },
            };
            let interval = get("interval").and_then(|s| s.parse().ok()).unwrap_or(0);
            let host = get("host") == Some("true");
            let vms: Vec<String> = q
                .iter()
                .filter(|(k, _)| k == "vm_uuid")
                .map(|(_, v)| v.clone())
                .collect();
            let filter = (!vms.is_empty()).then_some(vms.as_slice());
            match m.rrd_updates(start, interval, cf, host, filter, json) {
                Ok(body) => reply(200, ctype, body),
                Err(e) => reply(404, "text/plain", format!("{e}\n")),
            }
        }
        "/host_rrd" => match m.host_rrd(json) {
            Some(b) => reply(200, ctype, b),
            None => reply(404, "text/plain", "no host RRD yet\n"),
        },
        "/vm_rrd" => match get("uuid").and_then(|u| m.vm_rrd(u, json)) {
            Some(b) => reply(200, ctype, b),
            None => reply(404, "text/plain", "no RRD for this VM\n"),
        },
        _ => reply(200, "text/plain; version=0.0.4", m.prometheus()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_basic_auth_decode() {
        let q = parse_query("session_id=OpaqueRef%3Aabc&start=-10&host=true&json");
        assert_eq!(q[0], ("session_id".into(), "OpaqueRef:abc".into()));
        assert_eq!(q[1].1, "-10");
        assert_eq!(q[3], ("json".into(), String::new()));
        assert_eq!(unescape("a%2"), "a%2");
        assert_eq!(unescape("%zz"), "%zz");
        assert_eq!(
            basic(Some("Basic cm9vdDpwdw==")),
            Some(("root".into(), "pw".into()))
        );
        assert_eq!(basic(Some("Bearer x")), None);
        assert_eq!(basic(Some("Basic !!!")), None);
    }
}

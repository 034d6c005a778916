//! The XenAPI server: XML-RPC (any path) and JSON-RPC (`/jsonrpc`) over HTTP/1.1, on TCP,
//! HTTPS (a self-signed certificate generated at first start) and a unix socket.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

use crate::api::Xapi;
use crate::db::Read;
use crate::error::ApiError;
use crate::value::Value;
use crate::{xmlrpc, Error};

/// Largest request body accepted.
pub const MAX_BODY: usize = 16 << 20;

/// The wire form of a call's outcome: `{Status: Success, Value}` or `{Status: Failure,
/// ErrorDescription}`.
pub fn wrap_result(r: Result<Value, ApiError>) -> Value {
    let mut m = std::collections::BTreeMap::new();
    match r {
        Ok(v) => {
            m.insert("Status".into(), Value::str("Success"));
            m.insert("Value".into(), v);
        }
        Err(e) => {
            m.insert("Status".into(), Value::str("Failure"));
            m.insert(
                "ErrorDescription".into(),
                Value::Array(e.description().into_iter().map(Value::String).collect()),
            );
        }
    }
    Value::Struct(m)
}

/// Handles one XML-RPC body; the response body.
pub fn handle_xmlrpc(xapi: &Arc<Xapi>, body: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(body) else {
        return xmlrpc::encode_fault(-32700, "request is not UTF-8");
    };
    match xmlrpc::parse_call(text) {
        Ok((method, params)) => {
            tracing::debug!(method, "xml-rpc call");
            if let Some(fast) = xapi.get_all_records_xml(&method, &params) {
                return fast;
            }
            xmlrpc::encode_response(&wrap_result(xapi.call_audited(&method, &params)))
        }
        Err(e) => xmlrpc::encode_fault(-32700, &e.to_string()),
    }
}

/// Handles one JSON-RPC body (XAPI's JSON-RPC: version 1.0 or 2.0); the response body.
pub fn handle_jsonrpc(xapi: &Arc<Xapi>, body: &[u8]) -> String {
    let req: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return serde_json::json!({"jsonrpc": "2.0", "id": null,
                "error": {"code": -32700, "message": "Parse error", "data": [e.to_string()]}})
            .to_string()
        }
    };
    let id = req.get("id").cloned().unwrap_or(serde_json::Value::Null);
    let v2 = req.get("jsonrpc").and_then(|v| v.as_str()) == Some("2.0");
    let Some(method) = req.get("method").and_then(|m| m.as_str()) else {
        return serde_json::json!({"jsonrpc": "2.0", "id": id,
            "error": {"code": -32600, "message": "Invalid Request", "data": []}})
        .to_string();
    };
    let params: Vec<Value> = match req.get("params") {
        Some(serde_json::Value::Array(a)) => a.iter().map(Value::from_json).collect(),
        None => vec![],
        Some(other) => vec![Value::from_json(other)],
    };
    let mut out = Vec::with_capacity(256);
    // The result is written straight into the reply (no JSON tree in between).
    let head = |out: &mut Vec<u8>| {
        out.extend_from_slice(if v2 {
            b"{\"jsonrpc\":\"2.0\",\"result\":"
        } else {
            b"{\"result\":"
        });
    };
    let tail = |out: &mut Vec<u8>| {
        out.extend_from_slice(if v2 {
            b",\"id\":"
        } else {
            b",\"error\":null,\"id\":"
        });
        let _ = serde_json::to_writer(&mut *out, &id);
        out.push(b'}');
    };
    head(&mut out);
    if xapi.get_all_records_json(method, &params, &mut out) {
        tail(&mut out);
    } else {
        out.clear();
        match xapi.call_audited(method, &params) {
            Ok(v) => {
                head(&mut out);
                if let Err(e) = write_json_result(&mut out, method, &v) {
                    return serde_json::json!({"jsonrpc": "2.0", "id": id,
                        "error": {"code": -32603, "message": "Internal error", "data": [e.to_string()]}})
                    .to_string();
                }
                tail(&mut out);
            }
            Err(e) if v2 => {
                return serde_json::json!({"jsonrpc": "2.0", "id": id,
                    "error": {"code": 1, "message": e.code, "data": e.params}})
                .to_string()
            }
            Err(e) => {
                return serde_json::json!({"result": null, "error": e.description(), "id": id})
                    .to_string()
            }
        }
    }
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// Appends a call's result as XAPI's JSON-RPC sends it: typed by the message's result type
/// in the datamodel (`Async.*` calls return a task reference).
pub fn write_json_result(out: &mut Vec<u8>, method: &str, v: &Value) -> serde_json::Result<()> {
    match crate::datamodel::xenapi::message_def(method).and_then(|m| m.result) {
        Some(t) if !method.starts_with("Async.") => {
            serde_json::to_writer(out, &crate::value::Typed(v, t))
        }
        _ => serde_json::to_writer(out, v),
    }
}

async fn service(
    xapi: Arc<Xapi>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, ctype: &str, body: String| {
        Ok(Response::builder()
            .status(status)
            .header("content-type", ctype)
            .body(Full::new(Bytes::from(body)))
            .expect("valid response"))
    };
    if req.method() == Method::GET {
        if let Some((ctype, body)) = crate::web::handle(req.uri().path()) {
            return reply(StatusCode::OK, ctype, body.to_owned());
        }
        let (path, query) = (
            req.uri().path().to_owned(),
            req.uri().query().map(str::to_owned),
        );
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if path == "/domains" {
            // The domains this host runs, for a pool's observer (needs a live session).
            let session = query
                .as_deref()
                .unwrap_or_default()
                .split('&')
                .find_map(|kv| kv.strip_prefix("session_id="))
                .unwrap_or_default()
                .to_owned();
            let x = Arc::clone(&xapi);
            let body = tokio::task::spawn_blocking(move || {
                (x.db().read(|v| v.class_of(&session)) == Some("session"))
                    .then(|| x.domains_json().to_string())
            })
            .await
            .ok()
            .flatten();
            return match body {
                Some(b) => reply(StatusCode::OK, "application/json", b),
                None => reply(
                    StatusCode::FORBIDDEN,
                    "text/plain",
                    "session_id needed\n".into(),
                ),
            };
        }
        let x = Arc::clone(&xapi);
        let r = tokio::task::spawn_blocking(move || {
            crate::metrics_http::handle(&x, &path, query.as_deref(), auth.as_deref())
        })
        .await;
        if let Ok(Some(r)) = r {
            let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
            return reply(status, r.content_type, r.body);
        }
    }
    if req.method() != Method::POST {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "POST XML-RPC or JSON-RPC calls\n".into(),
        );
    }
    let json = req.uri().path() == "/jsonrpc";
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain",
                "request too large\n".into(),
            )
        }
    };
    let out = tokio::task::spawn_blocking(move || {
        if json {
            handle_jsonrpc(&xapi, &body)
        } else {
            handle_xmlrpc(&xapi, &body)
        }
    })
    .await;
    match out {
        Ok(text) if json => reply(StatusCode::OK, "application/json", text),
        Ok(text) => reply(StatusCode::OK, "text/xml", text),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("{e}\n"),
        ),
    }
}

async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(xapi: Arc<Xapi>, io: S) {
    let svc = hyper::service::service_fn(move |req| service(Arc::clone(&xapi), req));
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .await
    {
        tracing::debug!(%e, "connection ended");
    }
}

/// Serves plain HTTP (or HTTPS with `tls`) on a bound TCP listener, forever.
pub async fn serve_tcp(
    listener: TcpListener,
    xapi: Arc<Xapi>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let xapi = Arc::clone(&xapi);
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(acc) => match acc.accept(stream).await {
                    Ok(s) => serve_conn(xapi, s).await,
                    Err(e) => tracing::debug!(%e, "TLS handshake failed"),
                },
                None => serve_conn(xapi, stream).await,
            }
        });
    }
}

/// Serves HTTP on a unix socket, forever.
pub async fn serve_unix(listener: UnixListener, xapi: Arc<Xapi>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let xapi = Arc::clone(&xapi);
        tokio::spawn(serve_conn(xapi, stream));
    }
}

/// Loads `dir/xapi-ssl.pem` (certificate and key), generating a self-signed one first if it
/// does not exist, and builds a TLS acceptor.
pub fn tls_acceptor(dir: &Path, names: Vec<String>) -> Result<tokio_rustls::TlsAcceptor, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let path = dir.join("xapi-ssl.pem");
    if !path.exists() {
        let ck =
            rcgen::generate_simple_self_signed(names).map_err(|e| Error::Tls(e.to_string()))?;
        let pem = format!("{}{}", ck.key_pair.serialize_pem(), ck.cert.pem());
        crate::write_private_file(&path, pem.as_bytes())?;
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
        .map_err(|e| Error::Tls(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Tls(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_file(&path).map_err(|e| Error::Tls(e.to_string()))?;
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| Error::Tls(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

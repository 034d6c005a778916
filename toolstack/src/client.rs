//! A blocking XenAPI client (XML-RPC over HTTP/1.1 on TCP, TLS or a unix socket), used by
//! `xe`, tests and benches.
//!
//! HTTP is `hyper`'s client on a private single-threaded tokio runtime, one kept-alive
//! connection per [`Client`]. Over TLS the server's certificate is verified as
//! [`TlsVerify`] says: against the system's roots by default, against a pool's certificate
//! bundle, or against a pinned SHA-256 fingerprint (as XenCenter pins a host's certificate);
//! only [`TlsVerify::Insecure`] skips the check, and only when asked for.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Bytes};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::value::Value;
use crate::{xmlrpc, Error};

/// The most a reply's announced length reserves before its bytes arrive.
const MAX_PRESIZE: u64 = 256 << 20;

/// Where the server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Plain HTTP.
    Tcp(String, u16),
    /// HTTPS; the certificate is checked as the client's [`TlsVerify`] says.
    Tls(String, u16),
    /// A unix socket.
    Unix(PathBuf),
}

/// How the server's TLS certificate is checked.
#[derive(Clone, PartialEq, Eq)]
pub enum TlsVerify {
    /// The chain leads to one of the system's trusted roots and names the host (the default).
    SystemRoots,
    /// The chain leads to one of these certificates and names the host: a pool's certificate
    /// bundle, or a host's own self-signed certificate.
    Roots(Vec<CertificateDer<'static>>),
    /// The server's certificate has this SHA-256 fingerprint, whatever its issuer and names:
    /// a pinned host certificate.
    Fingerprint([u8; 32]),
    /// No check at all: anyone on the path can read and change the session. Only when asked.
    Insecure,
}

impl fmt::Debug for TlsVerify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsVerify::SystemRoots => f.write_str("SystemRoots"),
            TlsVerify::Roots(r) => write!(f, "Roots({} certificates)", r.len()),
            TlsVerify::Fingerprint(d) => write!(f, "Fingerprint({})", fingerprint_hex(d)),
            TlsVerify::Insecure => f.write_str("Insecure"),
        }
    }
}

impl TlsVerify {
    /// Trusts the certificates of a PEM file (a pool bundle or a host's `xapi-ssl.pem`; a
    /// private key in the same file is ignored).
    pub fn roots_from_pem(path: &Path) -> Result<TlsVerify, Error> {
        use rustls::pki_types::pem::PemObject;
        let bad = |e: &dyn fmt::Display| Error::Tls(format!("{}: {e}", path.display()));
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(&e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&e))?;
        if certs.is_empty() {
            return Err(bad(&"no certificate in the file"));
        }
        Ok(TlsVerify::Roots(certs))
    }

    /// Pins a SHA-256 fingerprint given as 64 hex digits, with or without `:` between bytes
    /// (`AB:CD:...`, as `openssl x509 -fingerprint -sha256` and XenServer print it).
    pub fn fingerprint(text: &str) -> Result<TlsVerify, Error> {
        let hex: String = text.chars().filter(|c| *c != ':').collect();
        let bad = || {
            Error::Tls(format!(
                "{text:?} is not a SHA-256 fingerprint (64 hex digits)"
            ))
        };
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut d = [0u8; 32];
        for (i, b) in d.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(TlsVerify::Fingerprint(d))
    }
}

/// The SHA-256 fingerprint of a DER certificate, as `AB:CD:...`.
pub fn certificate_fingerprint(der: &[u8]) -> String {
    fingerprint_hex(&Sha256::digest(der).into())
}

fn fingerprint_hex(d: &[u8; 32]) -> String {
    d.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Accepts exactly one certificate, by fingerprint; the handshake's signatures are still
/// checked, so the server must hold that certificate's key.
#[derive(Debug)]
struct PinnedVerifier {
    provider: Arc<CryptoProvider>,
    /// `None` accepts any certificate ([`TlsVerify::Insecure`]).
    pin: Option<[u8; 32]>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.pin {
            None => Ok(ServerCertVerified::assertion()),
            Some(pin) if <[u8; 32]>::from(Sha256::digest(end_entity)) == pin => {
                Ok(ServerCertVerified::assertion())
            }
            Some(pin) => Err(rustls::Error::General(format!(
                "the server's certificate has fingerprint {}, not the pinned {}",
                certificate_fingerprint(end_entity),
                fingerprint_hex(&pin)
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn tls_config(verify: &TlsVerify) -> Result<rustls::ClientConfig, Error> {
    let tls = |e: &dyn fmt::Display| Error::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?;
    let roots = |certs: &mut dyn Iterator<Item = CertificateDer<'static>>| {
        let mut store = rustls::RootCertStore::empty();
        let (_, rejected) = store.add_parsable_certificates(certs);
        if store.is_empty() {
            return Err(Error::Tls(format!(
                "no usable trusted certificate ({rejected} rejected)"
            )));
        }
        Ok(store)
    };
    let cfg = match verify {
        TlsVerify::SystemRoots => {
            let found = rustls_native_certs::load_native_certs();
            builder.with_root_certificates(roots(&mut found.certs.into_iter())?)
        }
        TlsVerify::Roots(certs) => {
            builder.with_root_certificates(roots(&mut certs.iter().cloned())?)
        }
        TlsVerify::Fingerprint(pin) => {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                    provider,
                    pin: Some(*pin),
                }))
        }
        TlsVerify::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                provider,
                pin: None,
            })),
    };
    Ok(cfg.with_no_client_auth())
}

/// A connection to a XenAPI server with an optional session.
pub struct Client {
    endpoint: Endpoint,
    verify: TlsVerify,
    tls: Option<tokio_rustls::TlsConnector>,
    rt: tokio::runtime::Runtime,
    conn: Option<SendRequest<Full<Bytes>>>,
    session: Option<String>,
    timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("verify", &self.verify)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `endpoint` (connects lazily, reconnects after errors); over TLS it
    /// checks the server's certificate against the system's roots.
    pub fn new(endpoint: Endpoint) -> Self {
        Client::with_tls(endpoint, TlsVerify::SystemRoots)
    }

    /// A client for `endpoint` that checks a TLS server's certificate as `verify` says.
    pub fn with_tls(endpoint: Endpoint, verify: TlsVerify) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .expect("a current-thread tokio runtime needs no resources that can run out");
        Client {
            endpoint,
            verify,
            tls: None,
            rt,
            conn: None,
            session: None,
            timeout: Duration::from_secs(120),
        }
    }

    /// The session reference, once logged in.
    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    fn connector(&mut self) -> Result<tokio_rustls::TlsConnector, Error> {
        if self.tls.is_none() {
            let cfg = tls_config(&self.verify)?;
            self.tls = Some(tokio_rustls::TlsConnector::from(Arc::new(cfg)));
        }
        Ok(self.tls.clone().expect("set above"))
    }

    async fn handshake<S>(io: S) -> Result<SendRequest<Full<Bytes>>, Error>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| Error::Protocol(format!("HTTP handshake: {e}")))?;
        tokio::spawn(conn);
        Ok(send)
    }

    fn connect(&mut self) -> Result<SendRequest<Full<Bytes>>, Error> {
        let io = |what: &str, e| Error::Io(what.to_owned(), e);
        let connector = match &self.endpoint {
            Endpoint::Tls(..) => Some(self.connector()?),
            _ => None,
        };
        let endpoint = self.endpoint.clone();
        let timeout = self.timeout;
        self.rt.block_on(async move {
            let fut = async {
                match &endpoint {
                    Endpoint::Tcp(h, p) | Endpoint::Tls(h, p) => {
                        let s = tokio::net::TcpStream::connect((h.as_str(), *p))
                            .await
                            .map_err(|e| io(&format!("{h}:{p}"), e))?;
                        s.set_nodelay(true).map_err(|e| io("nodelay", e))?;
                        match connector {
                            None => Client::handshake(s).await,
                            Some(c) => {
                                let name = ServerName::try_from(h.clone())
                                    .map_err(|e| Error::Tls(format!("{h}: {e}")))?;
                                let s = c
                                    .connect(name, s)
                                    .await
                                    .map_err(|e| Error::Tls(format!("{h}:{p}: {e}")))?;
                                Client::handshake(s).await
                            }
                        }
                    }
                    Endpoint::Unix(p) => {
                        let s = tokio::net::UnixStream::connect(p)
                            .await
                            .map_err(|e| io(&p.display().to_string(), e))?;
                        Client::handshake(s).await
                    }
                }
            };
            tokio::time::timeout(timeout, fut)
                .await
                .map_err(|_| Error::Protocol(format!("connecting timed out after {timeout:?}")))?
        })
    }

    fn post(&mut self, path: &str, body: String) -> Result<String, Error> {
        let conn = match self.conn.take() {
            Some(c) if !c.is_closed() => c,
            _ => self.connect()?,
        };
        let (r, conn) = self.post_once(conn, path, body);
        // Keep the connection only after a complete exchange that left it open.
        self.conn = conn;
        r
    }

    fn post_once(
        &mut self,
        mut conn: SendRequest<Full<Bytes>>,
        path: &str,
        body: String,
    ) -> (Result<String, Error>, Option<SendRequest<Full<Bytes>>>) {
        let proto = |m: String| Error::Protocol(m);
        let host = match &self.endpoint {
            Endpoint::Tcp(h, _) | Endpoint::Tls(h, _) => h.clone(),
            Endpoint::Unix(_) => "localhost".to_owned(),
        };
        let ctype = if path == "/jsonrpc" {
            "application/json"
        } else {
            "text/xml"
        };
        let req = hyper::Request::post(path)
            .header(hyper::header::HOST, host)
            .header(hyper::header::CONTENT_TYPE, ctype)
            .header(hyper::header::USER_AGENT, "xen-rs")
            .body(Full::new(Bytes::from(body)));
        let req = match req {
            Ok(r) => r,
            Err(e) => return (Err(proto(format!("bad request: {e}"))), Some(conn)),
        };
        let timeout = self.timeout;
        let r = self.rt.block_on(async {
            let exchange = async {
                conn.ready()
                    .await
                    .map_err(|e| proto(format!("connection: {e}")))?;
                let resp = conn
                    .send_request(req)
                    .await
                    .map_err(|e| proto(format!("request: {e}")))?;
                let status = resp.status();
                // One buffer of the announced length, each frame copied in once as it comes.
                let mut body = resp.into_body();
                let hint = body.size_hint();
                let cap = hint.exact().unwrap_or(hint.lower()).min(MAX_PRESIZE);
                let mut buf = Vec::with_capacity(cap as usize);
                while let Some(frame) = body.frame().await {
                    let frame = frame.map_err(|e| proto(format!("response body: {e}")))?;
                    if let Ok(data) = frame.into_data() {
                        buf.extend_from_slice(&data);
                    }
                }
                Ok::<_, Error>((status, buf))
            };
            tokio::time::timeout(timeout, exchange)
                .await
                .map_err(|_| proto(format!("no response within {timeout:?}")))?
        });
        let (status, body) = match r {
            Ok(x) => x,
            Err(e) => return (Err(e), None),
        };
        let conn = (!conn.is_closed()).then_some(conn);
        let text = match String::from_utf8(body) {
            Ok(t) => t,
            Err(_) => return (Err(proto("response not UTF-8".into())), conn),
        };
        if status != hyper::StatusCode::OK {
            return (
                Err(proto(format!("HTTP {}: {}", status.as_u16(), text.trim()))),
                conn,
            );
        }
        (Ok(text), conn)
    }

    /// Calls `method` with exactly `params` (no session added); returns the `Value` of a
    /// success or the failure as [`Error::Api`].
    pub fn call_raw(&mut self, method: &str, params: &[Value]) -> Result<Value, Error> {
        let text = self.post("/", xmlrpc::encode_call(method, params))?;
        outcome(xmlrpc::parse_response(&text))
    }

    /// `<class>.get_all_records`, reading only `fields` of each record (the reply on the
    /// wire is the whole one; the other fields are skipped as it is parsed).
    pub fn get_all_records_fields(&mut self, class: &str, fields: &[&str]) -> Result<Value, Error> {
        let session = Value::str(self.session.clone().unwrap_or_default());
        let call = xmlrpc::encode_call(&format!("{class}.get_all_records"), &[session]);
        let text = self.post("/", call)?;
        outcome(xmlrpc::parse_records_response(&text, fields))
    }

    /// Calls `method` with the session prepended over JSON-RPC 2.0 (`/jsonrpc`, as the
    /// XenAPI SDKs can): the result typed as XAPI's JSON-RPC sends it (`int` fields as
    /// numbers), or the failure as [`Error::Api`].
    pub fn call_json(&mut self, method: &str, args: &[Value]) -> Result<Value, Error> {
        let session = Value::str(self.session.clone().unwrap_or_default());
        let params: Vec<&Value> = std::iter::once(&session).chain(args).collect();
        let body =
            serde_json::json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1});
        let text = self.post("/jsonrpc", body.to_string())?;
        json_outcome(&text)
    }

    /// Uses an existing session (a pool's sessions are valid on each of its hosts).
    pub fn use_session(&mut self, session: &str) {
        self.session = Some(session.to_owned());
    }

    /// Logs in.
    pub fn login(&mut self, user: &str, password: &str) -> Result<(), Error> {
        let v = self.call_raw(
            "session.login_with_password",
            &[
                Value::str(user),
                Value::str(password),
                Value::str("2.21"),
                Value::str("xen-rs"),
            ],
        )?;
        self.session = Some(
            v.as_str()
                .ok_or_else(|| Error::Protocol("session is not a string".into()))?
                .to_owned(),
        );
        Ok(())
    }

    /// Calls `method` with the session prepended.
    pub fn call(&mut self, method: &str, args: &[Value]) -> Result<Value, Error> {
        let mut p = Vec::with_capacity(args.len() + 1);
        p.push(Value::str(self.session.clone().unwrap_or_default()));
        p.extend_from_slice(args);
        self.call_raw(method, &p)
    }
}

/// The `Value` of a parsed `{Status: Success, Value}` reply, or its failure as [`Error::Api`].
fn outcome(resp: Result<Result<Value, Value>, xmlrpc::XmlError>) -> Result<Value, Error> {
    let resp = resp.map_err(|e| Error::Protocol(e.to_string()))?;
    let v = resp.map_err(|f| Error::Protocol(format!("XML-RPC fault {f:?}")))?;
    let Value::Struct(mut m) = v else {
        return Err(Error::Protocol("response is not a struct".into()));
    };
    match m.get("Status").and_then(Value::as_str) {
        Some("Success") => m
            .remove("Value")
            .ok_or_else(|| Error::Protocol("no Value".into())),
        Some("Failure") => {
            let d: Vec<String> = m
                .get("ErrorDescription")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|x| x.as_str().unwrap_or_default().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            let mut it = d.into_iter();
            let code = it.next().unwrap_or_default();
            Err(Error::Api(ApiError {
                code,
                params: it.collect(),
            }))
        }
        _ => Err(Error::Protocol("no Status".into())),
    }
}

/// The `result` of a JSON-RPC reply, or its `error` as [`Error::Api`] (XAPI's 2.0 form
/// `{code, message: CODE, data: [params]}` or 1.0 form `[CODE, params...]`).
fn json_outcome(text: &str) -> Result<Value, Error> {
    #[derive(serde::Deserialize)]
    struct Reply {
        #[serde(default)]
        result: Option<Value>,
        #[serde(default)]
        error: Option<Value>,
    }
    let r: Reply =
        serde_json::from_str(text).map_err(|e| Error::Protocol(format!("JSON-RPC reply: {e}")))?;
    match (r.result, r.error) {
        (_, Some(e)) if e != Value::Nil => {
            let words: Vec<String> = match &e {
                Value::Struct(m) => m
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .into_iter()
                    .chain(
                        m.get("data")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .map(|x| x.as_str().map_or_else(|| format!("{x:?}"), str::to_owned)),
                    )
                    .collect(),
                Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str().map_or_else(|| format!("{x:?}"), str::to_owned))
                    .collect(),
                other => vec![format!("{other:?}")],
            };
            let mut it = words.into_iter();
            Err(Error::Api(ApiError {
                code: it.next().unwrap_or_default(),
                params: it.collect(),
            }))
        }
        (Some(v), _) => Ok(v),
        (None, _) => Err(Error::Protocol(
            "JSON-RPC reply without result or error".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_with_or_without_colons() {
        let plain = "00".repeat(31) + "ff";
        let colons = ["AB"; 32].join(":");
        assert_eq!(
            TlsVerify::fingerprint(&plain).unwrap(),
            TlsVerify::Fingerprint({
                let mut d = [0; 32];
                d[31] = 0xff;
                d
            })
        );
        assert_eq!(
            TlsVerify::fingerprint(&colons).unwrap(),
            TlsVerify::Fingerprint([0xab; 32])
        );
        for bad in ["", "ab", &"0".repeat(63), &"g".repeat(64), &"é".repeat(32)] {
            assert!(
                matches!(TlsVerify::fingerprint(bad), Err(Error::Tls(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_pem_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty.pem");
        std::fs::write(&p, "not a certificate\n").unwrap();
        assert!(matches!(TlsVerify::roots_from_pem(&p), Err(Error::Tls(_))));
        assert!(TlsVerify::roots_from_pem(&dir.path().join("missing.pem")).is_err());
    }
}

//! A small blocking XenAPI client (XML-RPC over HTTP/1.1 on TCP, TLS or a unix socket), used
//! by `xe`, tests and benches.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::error::ApiError;
use crate::value::Value;
use crate::{xmlrpc, Error};

/// Where the server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Plain HTTP.
    Tcp(String, u16),
    /// HTTPS (the server's certificate is not verified, as `xe` does by default).
    Tls(String, u16),
    /// A unix socket.
    Unix(PathBuf),
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A connection to a XenAPI server with an optional session.
pub struct Client {
    endpoint: Endpoint,
    conn: Option<BufReader<Box<dyn Stream>>>,
    session: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl Client {
    /// A client for `endpoint` (connects lazily, reconnects after errors).
    pub fn new(endpoint: Endpoint) -> Self {
        Client {
            endpoint,
            conn: None,
            session: None,
            timeout: Duration::from_secs(120),
        }
    }

    /// The session reference, once logged in.
    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    fn connect(&self) -> Result<Box<dyn Stream>, Error> {
        let io = |what: &str, e| Error::Io(what.to_owned(), e);
        Ok(match &self.endpoint {
            Endpoint::Tcp(h, p) => {
                let s =
                    TcpStream::connect((h.as_str(), *p)).map_err(|e| io(&format!("{h}:{p}"), e))?;
                s.set_nodelay(true).map_err(|e| io("nodelay", e))?;
                s.set_read_timeout(Some(self.timeout))
                    .map_err(|e| io("timeout", e))?;
                Box::new(s)
            }
            Endpoint::Tls(h, p) => {
                let s =
                    TcpStream::connect((h.as_str(), *p)).map_err(|e| io(&format!("{h}:{p}"), e))?;
                s.set_nodelay(true).map_err(|e| io("nodelay", e))?;
                s.set_read_timeout(Some(self.timeout))
                    .map_err(|e| io("timeout", e))?;
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let cfg = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
                    .with_safe_default_protocol_versions()
                    .map_err(|e| Error::Tls(e.to_string()))?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
                    .with_no_client_auth();
                let name = rustls::pki_types::ServerName::try_from(h.clone())
                    .map_err(|e| Error::Tls(e.to_string()))?;
                let conn = rustls::ClientConnection::new(Arc::new(cfg), name)
                    .map_err(|e| Error::Tls(e.to_string()))?;
                Box::new(rustls::StreamOwned::new(conn, s))
            }
            Endpoint::Unix(p) => {
                let s = UnixStream::connect(p).map_err(|e| io(&p.display().to_string(), e))?;
                s.set_read_timeout(Some(self.timeout))
                    .map_err(|e| io("timeout", e))?;
                Box::new(s)
            }
        })
    }

    fn post(&mut self, path: &str, body: &str) -> Result<String, Error> {
        if self.conn.is_none() {
            self.conn = Some(BufReader::new(self.connect()?));
        }
        let r = self.post_once(path, body);
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    fn post_once(&mut self, path: &str, body: &str) -> Result<String, Error> {
        let conn = self.conn.as_mut().expect("connected");
        let proto = |m: &str| Error::Protocol(m.to_owned());
        let io = |e| Error::Io("xapi connection".into(), e);
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml\r\nUser-Agent: xen-rs\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let w = conn.get_mut();
        w.write_all(head.as_bytes()).map_err(io)?;
        w.write_all(body.as_bytes()).map_err(io)?;
        w.flush().map_err(io)?;
        let mut line = String::new();
        conn.read_line(&mut line).map_err(io)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| proto("bad status line"))?;
        let mut len = None;
        let mut close = false;
        loop {
            line.clear();
            if conn.read_line(&mut line).map_err(io)? == 0 {
                return Err(proto("connection closed in headers"));
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                if k == "content-length" {
                    len = v.trim().parse::<usize>().ok();
                } else if k == "connection" && v.trim().eq_ignore_ascii_case("close") {
                    close = true;
                }
            }
        }
        let len = len.ok_or_else(|| proto("response without content-length"))?;
        let mut buf = vec![0; len];
        conn.read_exact(&mut buf).map_err(io)?;
        if close {
            self.conn = None;
        }
        let text = String::from_utf8(buf).map_err(|_| proto("response not UTF-8"))?;
        if status != 200 {
            return Err(Error::Protocol(format!("HTTP {status}: {}", text.trim())));
        }
        Ok(text)
    }

    /// Calls `method` with exactly `params` (no session added); returns the `Value` of a
    /// success or the failure as [`Error::Api`].
    pub fn call_raw(&mut self, method: &str, params: &[Value]) -> Result<Value, Error> {
        let text = self.post("/", &xmlrpc::encode_call(method, params))?;
        let resp = xmlrpc::parse_response(&text).map_err(|e| Error::Protocol(e.to_string()))?;
        let v = resp.map_err(|f| Error::Protocol(format!("XML-RPC fault {f:?}")))?;
        let m = v
            .as_struct()
            .ok_or_else(|| Error::Protocol("response is not a struct".into()))?;
        match m.get("Status").and_then(Value::as_str) {
            Some("Success") => m
                .get("Value")
                .cloned()
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

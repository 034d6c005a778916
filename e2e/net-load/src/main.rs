//! `net-load`: a small TCP throughput tool, built static for the e2e guest (and for dom0).
//!
//! `net-load serve --listen ADDR` accepts connections until killed; each opens with one
//! byte: `S` (the client sends: the server reads to the end and answers the byte count) or
//! `R` (the client receives: the server writes until the client closes).
//! `net-load send|recv --to ADDR --streams N --ms M` runs N connections at once for M
//! milliseconds and prints one line:
//!
//! ```text
//! net-load dir=send streams=4 bytes=123456789 secs=2.013 mbit_s=490.6
//! ```
//!
//! A send's bytes and time are those the server acknowledged (data still in socket buffers
//! when the client stops is counted only once it arrived); a receive counts what arrived.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

/// TCP throughput between two hosts.
#[derive(Debug, Parser)]
#[command(name = "net-load", version)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve clients until killed.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:5001")]
        listen: SocketAddr,
    },
    /// Send to the server for `--ms`.
    Send(Run),
    /// Receive from the server for `--ms`.
    Recv(Run),
}

#[derive(Debug, clap::Args)]
struct Run {
    /// The server.
    #[arg(long)]
    to: SocketAddr,
    /// Connections at once.
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Milliseconds to run.
    #[arg(long, default_value_t = 2000)]
    ms: u64,
}

/// Bytes per write or read.
const CHUNK: usize = 128 * 1024;
/// How long a client waits to connect, and for the server's count at the end.
const TIMEOUT: Duration = Duration::from_secs(20);

fn serve(listen: SocketAddr) -> Result<String, String> {
    let l = TcpListener::bind(listen).map_err(|e| format!("listen on {listen}: {e}"))?;
    eprintln!("net-load: serving on {listen}");
    for c in l.incoming() {
        let Ok(c) = c else { continue };
        std::thread::spawn(move || {
            if let Err(e) = serve_one(c) {
                eprintln!("net-load: connection: {e}");
            }
        });
    }
    Ok(String::new())
}

fn serve_one(mut c: TcpStream) -> std::io::Result<()> {
    let _ = c.set_nodelay(true);
    let mut mode = [0u8; 1];
    c.read_exact(&mut mode)?;
    let mut buf = vec![0x5au8; CHUNK];
    match mode[0] {
        b'S' => {
            let mut total = 0u64;
            loop {
                match c.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => total += n as u64,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            c.write_all(&total.to_le_bytes())
        }
        b'R' => loop {
            match c.write(&buf) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // The client closed: the run is over.
                Err(_) => return Ok(()),
            }
        },
        m => Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("unknown mode byte {m:#x}"),
        )),
    }
}

/// One stream: the bytes it moved and when the server acknowledged them (sends).
fn stream(to: SocketAddr, send: bool, until: Instant) -> std::io::Result<(u64, Instant)> {
    let mut c = TcpStream::connect_timeout(&to, TIMEOUT)?;
    c.write_all(if send { b"S" } else { b"R" })?;
    let mut buf = vec![0xa5u8; CHUNK];
    let mut total = 0u64;
    // Bounded blocking calls, so that the stream stops near `until`.
    c.set_read_timeout(Some(Duration::from_millis(100)))?;
    c.set_write_timeout(Some(Duration::from_millis(100)))?;
    while Instant::now() < until {
        let r = if send {
            c.write(&buf)
        } else {
            c.read(&mut buf)
        };
        match r {
            Ok(0) => {
                return Err(std::io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ))
            }
            Ok(n) => total += n as u64,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    if !send {
        return Ok((total, Instant::now()));
    }
    c.shutdown(Shutdown::Write)?;
    c.set_read_timeout(Some(TIMEOUT))?;
    let mut n = [0u8; 8];
    c.read_exact(&mut n)?;
    let got = u64::from_le_bytes(n);
    if got != total {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("sent {total} bytes, the server counted {got}"),
        ));
    }
    Ok((got, Instant::now()))
}

fn client(r: &Run, send: bool) -> Result<String, String> {
    if r.streams == 0 {
        return Err("--streams must be at least 1".into());
    }
    if r.ms == 0 {
        return Err("--ms must be at least 1".into());
    }
    let start = Instant::now();
    let until = start + Duration::from_millis(r.ms);
    let results: Vec<std::io::Result<(u64, Instant)>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..r.streams)
            .map(|_| s.spawn(move || stream(r.to, send, until)))
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("stream panicked")))
            })
            .collect()
    });
    let mut bytes = 0;
    let mut end = start;
    for res in results {
        let (b, t) = res.map_err(|e| format!("{}: {e}", r.to))?;
        bytes += b;
        end = end.max(t);
    }
    let secs = end.duration_since(start).as_secs_f64();
    Ok(format!(
        "net-load dir={} streams={} bytes={bytes} secs={secs:.3} mbit_s={:.1}",
        if send { "send" } else { "recv" },
        r.streams,
        bytes as f64 * 8.0 / 1e6 / secs
    ))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let r = match &args.cmd {
        Cmd::Serve { listen } => serve(*listen),
        Cmd::Send(r) => client(r, true),
        Cmd::Recv(r) => client(r, false),
    };
    match r {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("net-load: {e}");
            ExitCode::FAILURE
        }
    }
}

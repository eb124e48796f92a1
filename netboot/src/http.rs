//! The HTTP side of network boot: a small server for a flat directory (the
//! PXE tree) plus files rendered in memory (the boot script), GET and HEAD
//! only, one thread per connection. It logs every finished download with the
//! node's address, the path and the bytes sent, so an administrator sees
//! which PCs booted. It never serves anything outside its directory.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("HTTP address {0} is already in use (choose another port with --http-port)")]
    PortInUse(SocketAddr),
    #[error("binding the HTTP server to {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// What the server serves.
#[derive(Clone, Debug)]
pub struct Site {
    pub root: PathBuf,
    /// Names answered from memory before the directory is looked at.
    pub rendered: BTreeMap<String, Vec<u8>>,
}

pub fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => Error::PortInUse(addr),
        _ => Error::Bind(addr, e),
    })
}

/// Serves `site` on `listener` until the process ends, calling `log` with
/// one line per request.
pub fn serve(listener: TcpListener, site: Site, log: impl Fn(&str) + Send + Sync + 'static) {
    let site = Arc::new(site);
    let log = Arc::new(log);
    for stream in listener.incoming().flatten() {
        let (site, log) = (site.clone(), log.clone());
        std::thread::spawn(move || {
            let peer = stream
                .peer_addr()
                .map_or_else(|_| "?".to_string(), |a| a.ip().to_string());
            if let Some(line) = answer(stream, &site) {
                log(&format!("{peer} {line}"));
            }
        });
    }
}

/// Handles one request; returns its log line, or None if the client went
/// away before asking anything.
fn answer(stream: TcpStream, site: &Site) -> Option<String> {
    // A node that stops talking must not pin a thread for ever.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(60)));
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request = String::new();
    reader.read_line(&mut request).ok()?;
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => break,
            Ok(_) if header.trim().is_empty() => break,
            Ok(_) => {}
        }
    }
    let mut words = request.split_whitespace();
    let (method, path) = (words.next()?, words.next().unwrap_or(""));
    let started = Instant::now();
    let mut stream = stream;
    let (status, sent) = match (method, lookup(site, path)) {
        ("GET" | "HEAD", Ok(body)) => {
            let head = method == "HEAD";
            match send(&mut stream, "200 OK", body, head) {
                Ok(n) => ("200", n),
                Err(e) => return Some(format!("{method} {path} aborted: {e}")),
            }
        }
        ("GET" | "HEAD", Err(status)) => {
            let _ = send(&mut stream, status, Body::Text(status.as_bytes()), false);
            (status, 0)
        }
        _ => {
            let status = "405 Method Not Allowed";
            let _ = send(&mut stream, status, Body::Text(status.as_bytes()), false);
            (status, 0)
        }
    };
    Some(format!(
        "{method} {path} {status} {sent} bytes in {} ms",
        started.elapsed().as_millis()
    ))
}

enum Body<'a> {
    Text(&'a [u8]),
    File(std::fs::File, u64),
}

/// The body for `path`, or the HTTP status saying why there is none.
fn lookup<'a>(site: &'a Site, path: &str) -> Result<Body<'a>, &'static str> {
    let name = path.strip_prefix('/').ok_or("400 Bad Request")?;
    // A flat tree: no directories, no dot files, so no way out of it.
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err("404 Not Found");
    }
    if let Some(text) = site.rendered.get(name) {
        return Ok(Body::Text(text));
    }
    let file = std::fs::File::open(site.root.join(name)).map_err(|_| "404 Not Found")?;
    let meta = file.metadata().map_err(|_| "404 Not Found")?;
    if !meta.is_file() {
        return Err("404 Not Found");
    }
    Ok(Body::File(file, meta.len()))
}

fn send(stream: &mut TcpStream, status: &str, body: Body, head_only: bool) -> std::io::Result<u64> {
    let len = match &body {
        Body::Text(t) => t.len() as u64,
        Body::File(_, len) => *len,
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
    )?;
    if head_only {
        return Ok(0);
    }
    let sent = match body {
        Body::Text(t) => {
            stream.write_all(t)?;
            t.len() as u64
        }
        Body::File(file, _) => std::io::copy(&mut file.take(len), stream)?,
    };
    stream.flush()?;
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        reply
    }

    #[test]
    fn serves_files_and_rendered_text_and_nothing_outside() {
        let root = std::env::temp_dir().join(format!("netboot-http-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("vmlinuz"), b"kernel bytes").unwrap();
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let site = Site {
            root: root.clone(),
            rendered: [("boot.ipxe".to_string(), b"#!ipxe\n".to_vec())].into(),
        };
        std::thread::spawn(move || serve(listener, site, |_| {}));

        let reply = get(addr, "/vmlinuz");
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.contains("Content-Length: 12\r\n"));
        assert!(reply.ends_with("\r\n\r\nkernel bytes"));
        assert!(get(addr, "/boot.ipxe").ends_with("\r\n\r\n#!ipxe\n"));
        for path in ["/missing", "/../etc/passwd", "/", "/.hidden", "relative"] {
            let reply = get(addr, path);
            assert!(reply.starts_with("HTTP/1.1 40"), "{path}: {reply}");
        }
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_port_in_use_is_named() {
        let taken = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = taken.local_addr().unwrap();
        let error = bind(addr).unwrap_err().to_string();
        assert_eq!(
            error,
            format!("HTTP address {addr} is already in use (choose another port with --http-port)")
        );
    }
}

//! The HTTP side of network boot: a server for a flat directory (the PXE
//! tree) plus files rendered in memory (the boot script), GET and HEAD
//! only, one request per connection. It logs every download with the
//! node's address, the path and the bytes sent, so an administrator sees
//! which PCs booted, and every refusal with its client, at a limited rate.
//! It never serves anything outside its directory.
//!
//! It faces the whole lab LAN, so everything a client controls is bounded
//! ([`Limits`]): the request head's size, connections at once in all and
//! per client, the time to send a request, to make progress reading the
//! answer and for the whole exchange. One thread runs an epoll loop over
//! non-blocking sockets, and files go out with sendfile(2), so a client
//! costs a descriptor and at most [`request::MAX_HEAD`] bytes, never a
//! thread.

mod log;
pub mod request;

use std::collections::{BTreeMap, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use log::Kind;
use request::{Method, Refusal, Status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("HTTP address {0} is already in use (choose another port with --http-port)")]
    PortInUse(SocketAddr),
    #[error("binding the HTTP server to {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("setting up the HTTP server's event loop: {0}")]
    Setup(std::io::Error),
}

/// What the server serves.
#[derive(Clone, Debug)]
pub struct Site {
    pub root: PathBuf,
    /// Names answered from memory before the directory is looked at.
    pub rendered: BTreeMap<String, Vec<u8>>,
}

/// Everything a client controls, bounded.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections at once. Beyond it the connection that has waited
    /// longest for its request is closed to make room, or, when every one
    /// is downloading, the new one is refused.
    pub connections: usize,
    /// Connections at once from one address; more are refused.
    pub per_client: usize,
    /// From accepting a connection to its complete request head.
    pub request_time: Duration,
    /// While answering: the longest a client may read nothing.
    pub idle_time: Duration,
    /// The longest one exchange may take, however steadily it reads.
    pub total_time: Duration,
}

impl Default for Limits {
    /// A lab of a few hundred PCs booting at once, each downloading a
    /// kernel and an initramfs of some MB, fits well inside these.
    fn default() -> Self {
        Self {
            connections: 512,
            per_client: 16,
            request_time: Duration::from_secs(10),
            idle_time: Duration::from_secs(30),
            total_time: Duration::from_secs(600),
        }
    }
}

/// Connections the kernel completes before the server takes them on: a
/// lab's PCs arrive all at once, and a connection flood must not fill the
/// queue so that a PC's connection waits out a SYN retransmit (1 s, then
/// 3 s, ...). std listens with 128.
const BACKLOG: i32 = 1024;

pub fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    let listener = TcpListener::bind(addr).map_err(|e| match e.kind() {
        ErrorKind::AddrInUse => Error::PortInUse(addr),
        _ => Error::Bind(addr, e),
    })?;
    // listen(2) again on a listening socket only changes its backlog.
    nix::sys::socket::Backlog::new(BACKLOG)
        .and_then(|backlog| nix::sys::socket::listen(&listener, backlog))
        .map_err(|e| Error::Bind(addr, e.into()))?;
    Ok(listener)
}

/// Serves `site` on `listener` with the default [`Limits`] until the
/// process ends, calling `log` with one line per request or refusal.
/// Returns only if the server cannot start.
pub fn serve(
    listener: TcpListener,
    site: Site,
    log: impl Fn(&str) + Send + Sync + 'static,
) -> Result<(), Error> {
    Server::new(listener, site, Limits::default())?.run(log)
}

/// The server before it runs: set up, so that a failure to start is
/// reported before the caller goes on.
pub struct Server {
    listener: TcpListener,
    site: Site,
    limits: Limits,
    epoll: Epoll,
}

/// epoll's token for the listener; connections count up from 1.
const LISTENER: u64 = 0;
/// How often deadlines are checked: their precision.
const SWEEP: Duration = Duration::from_millis(250);
/// New connections taken per turn, so accepting cannot starve downloads;
/// a quarter of the backlog, which a turn thus drains quickly.
const ACCEPT_BATCH: usize = 256;
/// Bytes sent to one connection per turn, so one fast reader cannot
/// starve the others.
const SEND_BATCH: usize = 1 << 20;
/// After an error answer, what the client still sends is read and dropped
/// for this long (and at most this much), so that it gets the answer
/// rather than a reset.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

impl Server {
    pub fn new(listener: TcpListener, site: Site, limits: Limits) -> Result<Server, Error> {
        listener.set_nonblocking(true).map_err(Error::Setup)?;
        let epoll =
            Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| Error::Setup(e.into()))?;
        epoll
            .add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))
            .map_err(|e| Error::Setup(e.into()))?;
        Ok(Server {
            listener,
            site,
            limits,
            epoll,
        })
    }

    /// Serves until the process ends; returns only if waiting for events
    /// fails for another reason than a signal.
    pub fn run(self, log: impl Fn(&str)) -> Result<(), Error> {
        let now = Instant::now();
        let mut state = Loop {
            server: self,
            conns: HashMap::new(),
            per_client: HashMap::new(),
            next_token: LISTENER,
            log: log::Limited::new(now),
            next_sweep: now + SWEEP,
            accepting: true,
            buffer: vec![0; 16 * 1024],
        };
        let mut events = vec![EpollEvent::empty(); 256];
        loop {
            let timeout = if state.conns.is_empty() {
                EpollTimeout::try_from(log::PERIOD).unwrap_or(EpollTimeout::MAX)
            } else {
                EpollTimeout::try_from(SWEEP).unwrap_or(EpollTimeout::MAX)
            };
            let ready = match state.server.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => 0,
                Err(e) => return Err(Error::Setup(e.into())),
            };
            let now = Instant::now();
            for event in &events[..ready] {
                match event.data() {
                    LISTENER => state.accept(now, &log),
                    token => state.drive(token, now, &log),
                }
            }
            if now >= state.next_sweep {
                state.sweep(now, &log);
            }
        }
    }
}

/// One connection.
struct Conn {
    stream: TcpStream,
    client: IpAddr,
    accepted: Instant,
    /// The last time the client sent or took bytes.
    progress: Instant,
    phase: Phase,
}

enum Phase {
    /// Reading the request head, at most `MAX_HEAD` bytes of it.
    Request(Vec<u8>),
    Answer(Answer),
    /// The error answer is out; dropping what the client still sends.
    Linger {
        until: Instant,
        dropped: usize,
    },
}

struct Answer {
    /// Status line, headers and any body held in memory.
    out: Vec<u8>,
    /// Where the body starts in `out`.
    head_len: usize,
    written: usize,
    file: Option<FileBody>,
    status: Status,
    /// For the log: the request, or why it was refused (and then the
    /// connection lingers after the answer).
    what: String,
    refusal: bool,
    started: Instant,
}

struct FileBody {
    file: std::fs::File,
    offset: i64,
    end: i64,
}

impl Answer {
    /// Body bytes the client was sent.
    fn bytes_sent(&self) -> u64 {
        let in_memory = self.written.saturating_sub(self.head_len) as u64;
        in_memory + self.file.as_ref().map_or(0, |f| f.offset.max(0) as u64)
    }

    /// The log line once the answer is out.
    fn line(&self, now: Instant) -> String {
        if self.refusal {
            return refusal_line(self.status, &self.what);
        }
        format!(
            "{} {} {} bytes in {} ms",
            self.what,
            self.status.code(),
            self.bytes_sent(),
            now.saturating_duration_since(self.started).as_millis()
        )
    }

    fn done(&self) -> bool {
        self.written == self.out.len() && self.file.as_ref().is_none_or(|f| f.offset >= f.end)
    }
}

struct Loop {
    server: Server,
    conns: HashMap<u64, Conn>,
    per_client: HashMap<IpAddr, usize>,
    next_token: u64,
    log: log::Limited,
    next_sweep: Instant,
    /// False while accept fails (out of descriptors): the listener is out
    /// of the epoll set until the next sweep, instead of waking it in a loop.
    accepting: bool,
    buffer: Vec<u8>,
}

/// How a connection goes on after it was driven.
enum Next {
    Keep,
    Close,
}

impl Loop {
    fn accept(&mut self, now: Instant, out: &impl Fn(&str)) {
        for _ in 0..ACCEPT_BATCH {
            match self.server.listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer.ip(), now, out),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // At most once a sweep: no rate limit needed.
                    out(&format!(
                        "accepting connections: {e}; pausing for {} ms",
                        SWEEP.as_millis()
                    ));
                    let _ = self.server.epoll.delete(&self.server.listener);
                    self.accepting = false;
                    return;
                }
            }
        }
    }

    fn admit(&mut self, stream: TcpStream, client: IpAddr, now: Instant, out: &impl Fn(&str)) {
        let from_client = self.per_client.get(&client).copied().unwrap_or(0);
        // Room is made (idle connections closed) only for a client within
        // its own bound.
        let busy = if from_client >= self.server.limits.per_client {
            Some(format!(
                "{from_client} connections from this client already (at most {})",
                self.server.limits.per_client
            ))
        } else if self.conns.len() >= self.server.limits.connections && !self.make_room(now, out) {
            Some(format!(
                "{} connections at once already, all of them downloading",
                self.conns.len()
            ))
        } else {
            None
        };
        if let Some(why) = busy {
            refuse_at_once(stream, Status::Busy, &why);
            self.log.line(
                client,
                Kind::Refusal,
                &refusal_line(Status::Busy, &why),
                now,
                out,
            );
            return;
        }
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let _ = stream.set_nodelay(true);
        self.next_token += 1;
        let token = self.next_token;
        if self
            .server
            .epoll
            .add(&stream, EpollEvent::new(EpollFlags::EPOLLIN, token))
            .is_err()
        {
            return;
        }
        *self.per_client.entry(client).or_default() += 1;
        self.conns.insert(
            token,
            Conn {
                stream,
                client,
                accepted: now,
                progress: now,
                phase: Phase::Request(Vec::new()),
            },
        );
    }

    /// Closes the connection that has waited longest for its request;
    /// false if every connection is past its request.
    fn make_room(&mut self, now: Instant, out: &impl Fn(&str)) -> bool {
        // Tokens count up, so the lowest is the oldest.
        let oldest = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::Request(_)))
            .map(|(token, _)| *token)
            .min();
        let Some(token) = oldest else {
            return false;
        };
        let conn = self.close(token);
        let waited = now.saturating_duration_since(conn.accepted).as_millis();
        self.log.line(
            conn.client,
            Kind::Refusal,
            &format!("dropped: no request in {waited} ms while the server is full"),
            now,
            out,
        );
        true
    }

    fn close(&mut self, token: u64) -> Conn {
        let conn = self.conns.remove(&token).expect("a known connection");
        let _ = self.server.epoll.delete(&conn.stream);
        if let Some(count) = self.per_client.get_mut(&conn.client) {
            *count -= 1;
            if *count == 0 {
                self.per_client.remove(&conn.client);
            }
        }
        conn
    }

    fn drive(&mut self, token: u64, now: Instant, out: &impl Fn(&str)) {
        let Some(mut conn) = self.conns.remove(&token) else {
            return;
        };
        let next = match conn.phase {
            Phase::Request(_) => self.read_request(&mut conn, now, out),
            Phase::Answer(_) => self.write_answer(&mut conn, now, out),
            Phase::Linger { .. } => self.linger(&mut conn),
        };
        let interest = match conn.phase {
            Phase::Answer(_) => EpollFlags::EPOLLOUT,
            _ => EpollFlags::EPOLLIN,
        };
        self.conns.insert(token, conn);
        match next {
            Next::Keep => {
                let conn = &self.conns[&token];
                let mut event = EpollEvent::new(interest, token);
                if self.server.epoll.modify(&conn.stream, &mut event).is_err() {
                    self.close(token);
                }
            }
            Next::Close => {
                self.close(token);
            }
        }
    }

    fn read_request(&mut self, conn: &mut Conn, now: Instant, out: &impl Fn(&str)) -> Next {
        let Phase::Request(head) = &mut conn.phase else {
            unreachable!("called in the request phase");
        };
        loop {
            // One byte beyond the bound is enough to know it is exceeded.
            let room = (request::MAX_HEAD + 1).saturating_sub(head.len());
            let want = room.min(self.buffer.len());
            match conn.stream.read(&mut self.buffer[..want]) {
                Ok(0) => {
                    if !head.is_empty() {
                        self.log.line(
                            conn.client,
                            Kind::Refusal,
                            &format!(
                                "closed the connection after {} bytes of a request",
                                head.len()
                            ),
                            now,
                            out,
                        );
                    }
                    return Next::Close;
                }
                Ok(n) => {
                    head.extend_from_slice(&self.buffer[..n]);
                    conn.progress = now;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Next::Close,
            }
            if head.len() > request::MAX_HEAD {
                break;
            }
        }
        let answer = match request::parse(head) {
            Ok(None) => return Next::Keep,
            Ok(Some(request)) => answer(&self.server.site, request.method, request.path, now),
            Err(refusal) => refused(refusal, now),
        };
        conn.phase = Phase::Answer(answer);
        self.write_answer(conn, now, out)
    }

    fn write_answer(&mut self, conn: &mut Conn, now: Instant, out: &impl Fn(&str)) -> Next {
        let Phase::Answer(answer) = &mut conn.phase else {
            unreachable!("called in the answer phase");
        };
        let mut budget = SEND_BATCH;
        let result = loop {
            if answer.done() || budget == 0 {
                break Ok(());
            }
            let sent = if answer.written < answer.out.len() {
                conn.stream
                    .write(&answer.out[answer.written..])
                    .inspect(|&n| answer.written += n)
            } else {
                let body = answer.file.as_mut().expect("not done: a file body is left");
                let left = usize::try_from(body.end - body.offset).unwrap_or(usize::MAX);
                nix::sys::sendfile::sendfile64(
                    conn.stream.as_fd(),
                    body.file.as_fd(),
                    Some(&mut body.offset),
                    left.min(budget),
                )
                .map_err(std::io::Error::from)
            };
            match sent {
                Ok(0) => break Err(std::io::Error::from(ErrorKind::WriteZero)),
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    conn.progress = now;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = result {
            let line = format!(
                "{} aborted after {} bytes: {e}",
                answer.what,
                answer.bytes_sent()
            );
            self.log.line(conn.client, Kind::Refusal, &line, now, out);
            return Next::Close;
        }
        if !answer.done() {
            return Next::Keep;
        }
        let kind = if answer.refusal {
            Kind::Refusal
        } else {
            Kind::Request
        };
        self.log
            .line(conn.client, kind, &answer.line(now), now, out);
        if !answer.refusal {
            return Next::Close;
        }
        let _ = conn.stream.shutdown(Shutdown::Write);
        conn.phase = Phase::Linger {
            until: now + LINGER_TIME,
            dropped: 0,
        };
        self.linger(conn)
    }

    fn linger(&mut self, conn: &mut Conn) -> Next {
        let Phase::Linger { dropped, .. } = &mut conn.phase else {
            unreachable!("called in the linger phase");
        };
        loop {
            if *dropped > LINGER_BYTES {
                return Next::Close;
            }
            match conn.stream.read(&mut self.buffer) {
                Ok(0) => return Next::Close,
                Ok(n) => *dropped += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Next::Keep,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        }
    }

    /// Closes the connections past a deadline.
    fn sweep(&mut self, now: Instant, out: &impl Fn(&str)) {
        self.next_sweep = now + SWEEP;
        self.log.tick(now, out);
        if !self.accepting
            && self
                .server
                .epoll
                .add(
                    &self.server.listener,
                    EpollEvent::new(EpollFlags::EPOLLIN, LISTENER),
                )
                .is_ok()
        {
            self.accepting = true;
        }
        let limits = &self.server.limits;
        let late: Vec<(u64, Option<String>)> = self
            .conns
            .iter()
            .filter_map(|(token, conn)| {
                let why = match &conn.phase {
                    Phase::Request(head) if now >= conn.accepted + limits.request_time => {
                        Some(format!(
                            "no complete request within {:?} ({} bytes of it)",
                            limits.request_time,
                            head.len()
                        ))
                    }
                    Phase::Answer(a) if now >= conn.progress + limits.idle_time => Some(format!(
                        "{} aborted after {} bytes: the client read nothing for {:?}",
                        a.what,
                        a.bytes_sent(),
                        limits.idle_time
                    )),
                    Phase::Answer(a) if now >= conn.accepted + limits.total_time => Some(format!(
                        "{} aborted after {} bytes: not done within {:?}",
                        a.what,
                        a.bytes_sent(),
                        limits.total_time
                    )),
                    Phase::Linger { until, .. } if now >= *until => None,
                    _ => return None,
                };
                Some((*token, why))
            })
            .collect();
        for (token, why) in late {
            let conn = self.close(token);
            let (Some(why), client) = (why, conn.client) else {
                continue;
            };
            let line = if matches!(conn.phase, Phase::Request(_)) {
                refuse_at_once(conn.stream, Status::RequestTimeout, &why);
                refusal_line(Status::RequestTimeout, &why)
            } else {
                why
            };
            self.log.line(client, Kind::Refusal, &line, now, out);
        }
    }
}

/// The answer to a parsed request.
fn answer(site: &Site, method: Method, path: &str, now: Instant) -> Answer {
    let what = format!("{} {path}", method.name());
    let head_only = method == Method::Head;
    let (status, body, file) = match lookup(site, path) {
        Ok(Body::Text(text)) => (Status::Ok, text.to_vec(), None),
        Ok(Body::File(file, len)) => (Status::Ok, Vec::new(), Some((file, len))),
        Err(status) => (status, format!("{}\n", status.line()).into_bytes(), None),
    };
    let len = file.as_ref().map_or(body.len() as u64, |(_, len)| *len);
    let mut out = head(status, len);
    let head_len = out.len();
    if !head_only {
        out.extend_from_slice(&body);
    }
    Answer {
        out,
        head_len,
        written: 0,
        file: file.filter(|_| !head_only).map(|(file, len)| FileBody {
            file,
            offset: 0,
            end: i64::try_from(len).unwrap_or(i64::MAX),
        }),
        status,
        what,
        refusal: false,
        started: now,
    }
}

/// The answer to a request the server will not serve.
fn refused(refusal: Refusal, now: Instant) -> Answer {
    let text = format!("{}: {}\n", refusal.status.line(), refusal.why);
    let mut out = head(refusal.status, text.len() as u64);
    let head_len = out.len();
    out.extend_from_slice(text.as_bytes());
    Answer {
        out,
        head_len,
        written: 0,
        file: None,
        status: refusal.status,
        what: refusal.why,
        refusal: true,
        started: now,
    }
}

fn head(status: Status, len: u64) -> Vec<u8> {
    format!(
        "HTTP/1.1 {}\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        status.line()
    )
    .into_bytes()
}

fn refusal_line(status: Status, why: &str) -> String {
    format!("refused with {}: {why}", status.code())
}

/// Answers a connection that is not taken on with `status` and closes it;
/// a new connection's send buffer always has room for these few bytes.
fn refuse_at_once(mut stream: TcpStream, status: Status, why: &str) {
    let _ = stream.set_nonblocking(true);
    let text = format!("{}: {why}\n", status.line());
    let mut out = head(status, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
    let _ = stream.write(&out);
}

enum Body<'a> {
    Text(&'a [u8]),
    File(std::fs::File, u64),
}

/// The body for `path`, or the HTTP status saying why there is none.
fn lookup<'a>(site: &'a Site, path: &str) -> Result<Body<'a>, Status> {
    let name = path.strip_prefix('/').ok_or(Status::BadRequest)?;
    // A flat tree: no directories, no dot files, so no way out of it.
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(Status::NotFound);
    }
    if let Some(text) = site.rendered.get(name) {
        return Ok(Body::Text(text));
    }
    let file = std::fs::File::open(site.root.join(name)).map_err(|_| Status::NotFound)?;
    let meta = file.metadata().map_err(|_| Status::NotFound)?;
    if !meta.is_file() {
        return Err(Status::NotFound);
    }
    Ok(Body::File(file, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

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

    /// A server with `limits` for a tree with a 32 MiB file, `big`; its
    /// log lines arrive on the channel.
    fn limited(limits: Limits, tag: &str) -> (SocketAddr, mpsc::Receiver<String>) {
        let root = std::env::temp_dir().join(format!("netboot-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("big"), vec![7; 32 << 20]).unwrap();
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let site = Site {
            root,
            rendered: BTreeMap::new(),
        };
        let server = Server::new(listener, site, limits).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || server.run(move |l| drop(tx.send(l.to_string()))));
        (addr, rx)
    }

    /// Waits for a log line containing `needle`.
    fn logged(log: &mpsc::Receiver<String>, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!("no log line with {needle:?} in 30 s; got {seen:#?}"),
            }
        }
    }

    fn from(source: [u8; 4], addr: SocketAddr) -> TcpStream {
        let stream = crate::clients::connect(addr, Some(source.into())).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream
    }

    fn answer_of(mut stream: TcpStream) -> String {
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        String::from_utf8_lossy(&reply).into_owned()
    }

    #[test]
    fn a_client_that_sends_no_request_gets_408_in_time() {
        let limits = Limits {
            request_time: Duration::from_millis(300),
            ..Limits::default()
        };
        let (addr, log) = limited(limits, "silent");
        let mut stream = from([127, 0, 0, 1], addr);
        stream.write_all(b"GET /big HT").unwrap();
        let reply = answer_of(stream);
        assert!(
            reply.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{reply}"
        );
        let line = logged(&log, "408");
        assert_eq!(
            line,
            "127.0.0.1 refused with 408: no complete request within 300ms (11 bytes of it)"
        );
    }

    #[test]
    fn connections_are_bounded_per_client_and_in_all() {
        let limits = Limits {
            connections: 4,
            per_client: 2,
            ..Limits::default()
        };
        let (addr, log) = limited(limits, "bounded");
        let idle: Vec<TcpStream> = [
            [127, 0, 0, 2],
            [127, 0, 0, 2],
            [127, 0, 0, 3],
            [127, 0, 0, 3],
        ]
        .into_iter()
        .map(|source| from(source, addr))
        .collect();
        let third = answer_of(from([127, 0, 0, 2], addr));
        assert!(third.starts_with("HTTP/1.1 503 "), "{third}");
        assert!(
            third.contains("2 connections from this client already (at most 2)"),
            "{third}"
        );
        logged(
            &log,
            "127.0.0.2 refused with 503: 2 connections from this client",
        );

        // Full: a PC's request makes room by closing the oldest idle one.
        let mut pc = from([127, 0, 0, 4], addr);
        pc.write_all(b"HEAD /big HTTP/1.1\r\n\r\n").unwrap();
        let reply = answer_of(pc);
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.contains("Content-Length: 33554432\r\n"), "{reply}");
        logged(&log, "127.0.0.2 dropped: no request in ");
        logged(&log, "127.0.0.4 HEAD /big 200 0 bytes");
        assert_eq!(
            answer_of(idle.into_iter().next().unwrap()),
            "",
            "the oldest was closed"
        );
    }

    /// A client asking a server with `limits` for the 32 MiB file.
    fn get_big(limits: Limits, tag: &str) -> (TcpStream, mpsc::Receiver<String>) {
        let (addr, log) = limited(limits, tag);
        let mut stream = from([127, 0, 0, 1], addr);
        stream.write_all(b"GET /big HTTP/1.1\r\n\r\n").unwrap();
        (stream, log)
    }

    #[test]
    fn a_client_that_stops_reading_is_dropped() {
        let limits = Limits {
            idle_time: Duration::from_millis(300),
            ..Limits::default()
        };
        let (_stream, log) = get_big(limits, "stalled");
        let line = logged(&log, "aborted");
        assert!(
            line.starts_with("127.0.0.1 GET /big aborted after "),
            "{line}"
        );
        assert!(
            line.ends_with(" bytes: the client read nothing for 300ms"),
            "{line}"
        );
    }

    #[test]
    fn an_exchange_has_a_total_time() {
        let limits = Limits {
            total_time: Duration::from_millis(500),
            ..Limits::default()
        };
        let (mut stream, log) = get_big(limits, "slow");
        // A client that reads steadily, but too slowly to finish.
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reading = done.clone();
        let reader = std::thread::spawn(move || {
            let mut chunk = [0; 4096];
            while !reading.load(std::sync::atomic::Ordering::Relaxed)
                && matches!(stream.read(&mut chunk), Ok(n) if n > 0)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let line = logged(&log, "aborted");
        assert!(line.ends_with(" bytes: not done within 500ms"), "{line}");
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        reader.join().unwrap();
    }

    #[test]
    fn a_head_too_large_is_answered_431() {
        let (addr, log) = limited(Limits::default(), "large");
        let mut stream = from([127, 0, 0, 1], addr);
        let mut head = b"GET /big HTTP/1.1\r\n".to_vec();
        while head.len() <= request::MAX_HEAD {
            head.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        stream.write_all(&head).unwrap();
        let reply = answer_of(stream);
        assert!(
            reply.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{reply}"
        );
        logged(
            &log,
            "127.0.0.1 refused with 431: request head longer than 8192 bytes",
        );
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

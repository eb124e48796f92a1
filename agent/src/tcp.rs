// SPDX-License-Identifier: GPL-3.0-or-later
//! TCP plumbing for many connections at once: outgoing connections from a
//! chosen local address, which std's `TcpStream` cannot bind before it
//! connects (the control-plane bench gives each simulated drone an address
//! of its own on loopback, as each PC of a lab has one on the LAN), and
//! room for a descriptor per connection.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};

use crate::channel::timeout_until;

/// Connects to `target` within `timeout`, from `source` when given (the
/// kernel picks the port), else from the address the kernel picks.
pub fn connect(
    source: Option<Ipv4Addr>,
    target: SocketAddrV4,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect_timeout(&SocketAddr::V4(target), timeout);
    };
    let deadline = Instant::now() + timeout;
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    socket::bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(source, 0)),
    )?;
    match socket::connect(fd.as_raw_fd(), &SockaddrIn::from(target)) {
        Ok(()) => {}
        Err(Errno::EINPROGRESS) => loop {
            let timeout = timeout_until(deadline).ok_or(io::ErrorKind::TimedOut)?;
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
            match poll(&mut fds, timeout) {
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => break,
                Err(e) => return Err(e.into()),
            }
        },
        Err(e) => return Err(e.into()),
    }
    match socket::getsockopt(&fd, sockopt::SocketError)? {
        0 => {}
        error => return Err(io::Error::from_raw_os_error(error)),
    }
    let stream = TcpStream::from(fd);
    // Blocking, like the stream connect_timeout returns.
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Raises this process's soft limit on open files to its hard limit and
/// returns the new limit: a head holds a connection per member, and the
/// usual soft limit of 1024 is a small lab.
pub fn raise_descriptor_limit() -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn connects_from_the_given_address() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let SocketAddr::V4(target) = listener.local_addr().unwrap() else {
            unreachable!("bound to IPv4")
        };
        let source = Ipv4Addr::new(127, 0, 3, 7);
        let stream = connect(Some(source), target, Duration::from_secs(5)).unwrap();
        let (_, from) = listener.accept().unwrap();
        assert_eq!(from.ip(), source);
        assert_eq!(stream.peer_addr().unwrap(), SocketAddr::V4(target));
        let stream = connect(None, target, Duration::from_secs(5)).unwrap();
        assert_eq!(listener.accept().unwrap().1, stream.local_addr().unwrap());
    }

    #[test]
    fn a_refused_connection_is_an_error() {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // The listener is gone: nothing accepts on that port.
        let target = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        let err = connect(
            Some(Ipv4Addr::new(127, 0, 3, 8)),
            target,
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }
}

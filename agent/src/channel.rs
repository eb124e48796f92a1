// SPDX-License-Identifier: GPL-3.0-or-later
//! Framed, optionally Noise-encrypted connections over non-blocking sockets.
//!
//! On the wire every frame is a 16-bit big-endian length and that many bytes
//! (a Noise message at most). A message larger than one frame travels as
//! chunks, each starting with a "more follows" byte, reassembled up to
//! [`MAX_MESSAGE`]. Input and output buffers are bounded, so a peer that
//! floods or stops reading costs a fixed amount of memory before it is
//! dropped. This module never blocks except in the `*_by` helpers, which
//! wait with poll(2) until a caller's deadline and no longer.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// The largest message after reassembly: a status table of `MAX_NODES` rows
/// fits with room to spare.
pub const MAX_MESSAGE: usize = 1 << 20;
/// Noise caps a message at 65535 bytes, 16 of which are its tag.
const MAX_FRAME: usize = u16::MAX as usize;
const CHUNK: usize = MAX_FRAME - 16 - 1;
/// Unsent output beyond this means the peer stopped reading.
const MAX_OUTPUT: usize = 4 << 20;
/// Input is read in while less than this is buffered; frames are taken out
/// as they complete, so this bounds the input buffer.
const INPUT_HIGH_WATER: usize = 2 * (MAX_FRAME + 2);
/// An emptied buffer keeps at most this much of its allocation: one large
/// message (a push in a lab's morning) must not leave every connection
/// holding its size for good. A few heartbeats' worth: at 16 KiB, what
/// 5,000 members kept was most of the head's memory.
const KEEP_CAPACITY: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("connection closed by the peer")]
    Closed,
    #[error("an empty frame (frames carry at least one byte)")]
    EmptyFrame,
    #[error("decryption failed (not from the peer we handshook with, or altered)")]
    Decrypt,
    #[error("a message of more than {MAX_MESSAGE} bytes")]
    TooLarge,
    #[error("chunk flag {0} (expected 0 or 1)")]
    BadChunk(u8),
    #[error("the peer is not reading: {MAX_OUTPUT} bytes unsent")]
    OutputFull,
    #[error("timed out")]
    TimedOut,
}

/// A connection's byte stream cut into frames and messages.
pub struct Channel<S> {
    stream: S,
    input: Vec<u8>,
    output: Vec<u8>,
    cipher: Option<snow::TransportState>,
    partial: Vec<u8>,
    eof: bool,
}

impl<S: Read + Write + AsFd> Channel<S> {
    /// `stream` must already be non-blocking.
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            input: Vec::new(),
            output: Vec::new(),
            cipher: None,
            partial: Vec::new(),
            eof: false,
        }
    }

    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// From now on messages are encrypted with the finished handshake's keys.
    pub fn encrypt(&mut self, transport: snow::TransportState) {
        self.cipher = Some(transport);
    }

    /// Reads what the socket has, up to the input bound. An orderly close
    /// is reported once the buffered frames are taken.
    pub fn read_available(&mut self) -> Result<(), ChannelError> {
        let mut buffer = [0; 16 * 1024];
        while !self.eof && self.input.len() < INPUT_HIGH_WATER {
            match self.stream.read(&mut buffer) {
                Ok(0) => self.eof = true,
                Ok(n) => self.input.extend_from_slice(&buffer[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The next complete frame, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, ChannelError> {
        if self.input.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([self.input[0], self.input[1]]));
            if len == 0 {
                return Err(ChannelError::EmptyFrame);
            }
            if self.input.len() >= 2 + len {
                let frame = self.input[2..2 + len].to_vec();
                self.input.drain(..2 + len);
                release_if_empty(&mut self.input);
                return Ok(Some(frame));
            }
        }
        if self.eof {
            return Err(ChannelError::Closed);
        }
        Ok(None)
    }

    /// The next complete message, decrypted and reassembled, if buffered.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, ChannelError> {
        while let Some(frame) = self.next_frame()? {
            let chunk = match &mut self.cipher {
                Some(cipher) => {
                    let mut plain = vec![0; frame.len()];
                    let len = cipher
                        .read_message(&frame, &mut plain)
                        .map_err(|_| ChannelError::Decrypt)?;
                    plain.truncate(len);
                    plain
                }
                None => frame,
            };
            let (&more, data) = chunk.split_first().ok_or(ChannelError::EmptyFrame)?;
            if self.partial.len() + data.len() > MAX_MESSAGE {
                return Err(ChannelError::TooLarge);
            }
            self.partial.extend_from_slice(data);
            match more {
                0 => return Ok(Some(std::mem::take(&mut self.partial))),
                1 => {}
                flag => return Err(ChannelError::BadChunk(flag)),
            }
        }
        Ok(None)
    }

    /// Queues one raw frame (a handshake message).
    pub fn send_frame(&mut self, frame: &[u8]) -> Result<(), ChannelError> {
        let len = u16::try_from(frame.len()).map_err(|_| ChannelError::TooLarge)?;
        if self.output.len() + frame.len() > MAX_OUTPUT {
            return Err(ChannelError::OutputFull);
        }
        self.output.extend_from_slice(&len.to_be_bytes());
        self.output.extend_from_slice(frame);
        Ok(())
    }

    /// Queues a message, chunked and encrypted once a handshake finished.
    pub fn send_message(&mut self, message: &[u8]) -> Result<(), ChannelError> {
        if message.len() > MAX_MESSAGE {
            return Err(ChannelError::TooLarge);
        }
        // An empty message is still one (empty) chunk.
        let chunks: Vec<&[u8]> = if message.is_empty() {
            vec![&[]]
        } else {
            message.chunks(CHUNK).collect()
        };
        let last = chunks.len() - 1;
        for (i, data) in chunks.into_iter().enumerate() {
            let mut plain = Vec::with_capacity(data.len() + 1);
            plain.push(u8::from(i < last));
            plain.extend_from_slice(data);
            let frame = match &mut self.cipher {
                Some(cipher) => {
                    let mut sealed = vec![0; plain.len() + 16];
                    let len = cipher
                        .write_message(&plain, &mut sealed)
                        .map_err(|_| ChannelError::TooLarge)?;
                    sealed.truncate(len);
                    sealed
                }
                None => plain,
            };
            self.send_frame(&frame)?;
        }
        Ok(())
    }

    /// Writes what the socket takes now.
    pub fn flush(&mut self) -> Result<(), ChannelError> {
        while !self.output.is_empty() {
            match self.stream.write(&self.output) {
                Ok(0) => return Err(ChannelError::Closed),
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        release_if_empty(&mut self.output);
        Ok(())
    }

    pub fn wants_write(&self) -> bool {
        !self.output.is_empty()
    }

    /// What poll(2) should wait on for this channel: input always, room to
    /// write while output is queued.
    pub fn poll_fd(&self) -> PollFd<'_> {
        let mut events = PollFlags::POLLIN;
        if self.wants_write() {
            events |= PollFlags::POLLOUT;
        }
        PollFd::new(self.stream.as_fd(), events)
    }

    /// Blocks until `deadline` for the next raw frame.
    pub fn frame_by(&mut self, deadline: Instant) -> Result<Vec<u8>, ChannelError> {
        self.next_by(deadline, Self::next_frame)
    }

    /// Blocks until `deadline` for the next message.
    pub fn message_by(&mut self, deadline: Instant) -> Result<Vec<u8>, ChannelError> {
        self.next_by(deadline, Self::next_message)
    }

    /// Blocks until `deadline` until `next` (a frame or a message) has
    /// something, sending queued output meanwhile.
    fn next_by(
        &mut self,
        deadline: Instant,
        next: fn(&mut Self) -> Result<Option<Vec<u8>>, ChannelError>,
    ) -> Result<Vec<u8>, ChannelError> {
        loop {
            self.flush()?;
            if let Some(bytes) = next(self)? {
                return Ok(bytes);
            }
            self.wait(deadline)?;
            self.read_available()?;
        }
    }

    /// Blocks until `deadline` until all queued output is written.
    pub fn flush_by(&mut self, deadline: Instant) -> Result<(), ChannelError> {
        loop {
            self.flush()?;
            if !self.wants_write() {
                return Ok(());
            }
            self.wait(deadline)?;
        }
    }

    fn wait(&self, deadline: Instant) -> Result<(), ChannelError> {
        let timeout = timeout_until(deadline).ok_or(ChannelError::TimedOut)?;
        let mut fds = [self.poll_fd()];
        match poll(&mut fds, timeout) {
            Ok(0) => Err(ChannelError::TimedOut),
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(e) => Err(io::Error::from(e).into()),
        }
    }
}

/// Gives back the allocation of an emptied buffer beyond [`KEEP_CAPACITY`].
fn release_if_empty(buffer: &mut Vec<u8>) {
    if buffer.is_empty() && buffer.capacity() > KEEP_CAPACITY {
        *buffer = Vec::new();
    }
}

/// The descriptors one turn of an event loop waits on, each known by the
/// index [`PollSet::add`] gave it.
#[derive(Default)]
pub struct PollSet<'fd> {
    fds: Vec<PollFd<'fd>>,
}

impl<'fd> PollSet<'fd> {
    /// Adds `fd`, waiting for input.
    pub fn input(&mut self, fd: BorrowedFd<'fd>) -> usize {
        self.add(PollFd::new(fd, PollFlags::POLLIN))
    }

    pub fn add(&mut self, fd: PollFd<'fd>) -> usize {
        self.fds.push(fd);
        self.fds.len() - 1
    }

    /// Waits until a descriptor is ready or `timeout` passes; a signal
    /// ending the wait early is no error.
    pub fn wait(&mut self, timeout: PollTimeout) -> std::io::Result<()> {
        match poll(&mut self.fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the descriptor at `index` (if any) has something to say.
    pub fn ready(&self, index: Option<usize>) -> bool {
        index
            .and_then(|i| self.fds.get(i)?.revents())
            .is_some_and(|r| !r.is_empty())
    }
}

/// A poll(2) timeout that ends at `deadline`, rounded up so that we never
/// wake just before it and spin; `None` once it has passed.
pub fn timeout_until(deadline: Instant) -> Option<PollTimeout> {
    let now = Instant::now();
    if now >= deadline {
        return None;
    }
    let millis = (deadline - now).as_nanos().div_ceil(1_000_000);
    Some(PollTimeout::from(u16::try_from(millis).unwrap_or(u16::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    fn pair() -> (Channel<UnixStream>, Channel<UnixStream>) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (Channel::new(a), Channel::new(b))
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn plain_messages_of_every_size_arrive_whole() {
        let (mut a, mut b) = pair();
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7] {
            let message: Vec<u8> = (0..len).map(|i| i as u8).collect();
            a.send_message(&message).unwrap();
            let writer = std::thread::scope(|s| {
                let handle = s.spawn(|| a.flush_by(soon()));
                let got = b.message_by(soon()).unwrap();
                assert_eq!(got, message, "length {len}");
                handle.join().unwrap()
            });
            writer.unwrap();
        }
    }

    #[test]
    fn oversized_and_malformed_input_is_refused() {
        let (a, mut b) = pair();
        let mut raw = a;
        // An empty frame.
        raw.stream.write_all(&[0, 0]).unwrap();
        b.read_available().unwrap();
        assert!(matches!(b.next_frame(), Err(ChannelError::EmptyFrame)));

        let (mut a, mut b) = pair();
        // A chunk flag that is neither 0 nor 1.
        a.send_frame(&[7, 1, 2]).unwrap();
        a.flush().unwrap();
        b.read_available().unwrap();
        assert!(matches!(b.next_message(), Err(ChannelError::BadChunk(7))));

        // Endless "more follows" chunks stop at the message bound.
        let (mut a, mut b) = pair();
        let chunk = vec![1; CHUNK + 1];
        let result = std::thread::scope(|s| {
            s.spawn(move || {
                for _ in 0..(MAX_MESSAGE / CHUNK + 2) {
                    if a.send_frame(&chunk).is_err() || a.flush_by(soon()).is_err() {
                        break;
                    }
                }
            });
            let result = b.message_by(soon());
            // Closing unblocks the writer.
            drop(b);
            result
        });
        assert!(matches!(result, Err(ChannelError::TooLarge)), "{result:?}");
    }

    #[test]
    fn a_truncated_frame_then_close_is_reported_as_closed() {
        let (a, mut b) = pair();
        let mut raw = a;
        raw.stream.write_all(&[0, 10, 1, 2]).unwrap();
        drop(raw);
        assert!(matches!(b.frame_by(soon()), Err(ChannelError::Closed)));
    }

    #[test]
    fn a_silent_peer_times_out_at_the_deadline() {
        let (_a, mut b) = pair();
        let deadline = Instant::now() + Duration::from_millis(20);
        assert!(matches!(b.frame_by(deadline), Err(ChannelError::TimedOut)));
    }
}

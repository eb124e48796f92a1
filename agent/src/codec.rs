// SPDX-License-Identifier: GPL-3.0-or-later
//! The byte-level codec under every tyd message: big-endian integers,
//! length-prefixed strings and lists, and nothing else.
//!
//! Readers never trust a length: every read is bounds-checked, every count is
//! capped before anything is allocated, and a decoding error names the field
//! that was wrong. This module must never panic on any input.

use std::net::{Ipv4Addr, SocketAddrV4};

/// Why bytes did not decode, naming the field being read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{field}: message ends early")]
    Truncated { field: &'static str },
    #[error("{field}: {count} entries, at most {max} allowed")]
    TooMany {
        field: &'static str,
        count: usize,
        max: usize,
    },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("{extra} bytes after the end of the message")]
    Trailing { extra: usize },
}

/// Appends encoded values to a byte vector.
#[derive(Debug, Default)]
pub struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }

    pub fn u8(&mut self, value: u8) -> &mut Self {
        self.bytes.push(value);
        self
    }

    pub fn u16(&mut self, value: u16) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn u32(&mut self, value: u32) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(bytes);
        self
    }

    /// A string of at most 65535 bytes (callers cap theirs far lower); longer
    /// input is cut at a character boundary rather than mis-encoded.
    pub fn str(&mut self, value: &str) -> &mut Self {
        let mut end = value.len().min(usize::from(u16::MAX));
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        self.blob(&value.as_bytes()[..end])
    }

    /// Bytes of at most 65535, length first.
    pub fn blob(&mut self, value: &[u8]) -> &mut Self {
        let len = value.len().min(usize::from(u16::MAX));
        self.u16(len as u16).raw(&value[..len])
    }

    pub fn ipv4(&mut self, address: Ipv4Addr) -> &mut Self {
        self.raw(&address.octets())
    }

    pub fn endpoint(&mut self, endpoint: Option<SocketAddrV4>) -> &mut Self {
        match endpoint {
            None => self.u8(0),
            Some(e) => self.u8(1).ipv4(*e.ip()).u16(e.port()),
        }
    }

    /// A count prefix for a list; the caller writes the entries.
    pub fn count(&mut self, count: usize) -> &mut Self {
        self.u32(u32::try_from(count).unwrap_or(u32::MAX))
    }
}

/// Reads encoded values from a byte slice, front to back.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// Fails unless every byte was read: trailing bytes mean a different
    /// message than the one we decoded.
    pub fn end(&self) -> Result<(), DecodeError> {
        match self.bytes.len() {
            0 => Ok(()),
            extra => Err(DecodeError::Trailing { extra }),
        }
    }

    pub fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < len {
            return Err(DecodeError::Truncated { field });
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, field)?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.array(field).map(u16::from_be_bytes)
    }

    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_be_bytes)
    }

    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.array(field).map(u64::from_be_bytes)
    }

    pub fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::Invalid {
                field,
                reason: format!("{other} is not a boolean (0 or 1)"),
            }),
        }
    }

    /// A UTF-8 string of at most `max` bytes.
    pub fn str(&mut self, field: &'static str, max: usize) -> Result<String, DecodeError> {
        String::from_utf8(self.blob(field, max)?).map_err(|_| DecodeError::Invalid {
            field,
            reason: "not UTF-8".into(),
        })
    }

    /// Bytes of at most `max`, as [`Writer::blob`] wrote them.
    pub fn blob(&mut self, field: &'static str, max: usize) -> Result<Vec<u8>, DecodeError> {
        let len = usize::from(self.u16(field)?);
        if len > max {
            return Err(DecodeError::Invalid {
                field,
                reason: format!("{len} bytes long, at most {max} allowed"),
            });
        }
        Ok(self.take(len, field)?.to_vec())
    }

    pub fn ipv4(&mut self, field: &'static str) -> Result<Ipv4Addr, DecodeError> {
        self.array::<4>(field).map(Ipv4Addr::from)
    }

    pub fn endpoint(&mut self, field: &'static str) -> Result<Option<SocketAddrV4>, DecodeError> {
        if !self.bool(field)? {
            return Ok(None);
        }
        let ip = self.ipv4(field)?;
        Ok(Some(SocketAddrV4::new(ip, self.u16(field)?)))
    }

    /// A list count, capped at `max` and at what the remaining bytes could
    /// hold at `min_entry` bytes each, so a forged count cannot make us
    /// allocate.
    pub fn count(
        &mut self,
        field: &'static str,
        max: usize,
        min_entry: usize,
    ) -> Result<usize, DecodeError> {
        let count = self.u32(field)? as usize;
        if count > max {
            return Err(DecodeError::TooMany { field, count, max });
        }
        if count.saturating_mul(min_entry.max(1)) > self.bytes.len() {
            return Err(DecodeError::Truncated { field });
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let mut w = Writer::new();
        w.u8(7)
            .u16(0x1234)
            .u32(0xdead_beef)
            .u64(u64::MAX - 1)
            .str("höst")
            .ipv4(Ipv4Addr::new(10, 99, 0, 2))
            .endpoint(Some(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 51820)))
            .endpoint(None);
        let bytes = w.finish();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8("a"), Ok(7));
        assert_eq!(r.u16("b"), Ok(0x1234));
        assert_eq!(r.u32("c"), Ok(0xdead_beef));
        assert_eq!(r.u64("d"), Ok(u64::MAX - 1));
        assert_eq!(r.str("e", 64).as_deref(), Ok("höst"));
        assert_eq!(r.ipv4("f"), Ok(Ipv4Addr::new(10, 99, 0, 2)));
        assert_eq!(
            r.endpoint("g"),
            Ok(Some(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 51820)))
        );
        assert_eq!(r.endpoint("h"), Ok(None));
        assert_eq!(r.end(), Ok(()));
    }

    #[test]
    fn every_truncation_is_an_error_naming_the_field() {
        let mut w = Writer::new();
        w.u32(5).str("hostname");
        let bytes = w.finish();
        for cut in 0..bytes.len() {
            let mut r = Reader::new(&bytes[..cut]);
            let result = r.u32("id").and_then(|_| r.str("hostname", 64));
            assert!(
                matches!(result, Err(DecodeError::Truncated { .. })),
                "cut at {cut}: {result:?}"
            );
        }
    }

    #[test]
    fn forged_counts_and_lengths_are_refused_before_allocating() {
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 1, 2]);
        assert_eq!(
            r.count("peers", 10, 1),
            Err(DecodeError::TooMany {
                field: "peers",
                count: u32::MAX as usize,
                max: 10
            })
        );
        let mut r = Reader::new(&[0, 0, 0, 9, 1, 2]);
        assert_eq!(
            r.count("peers", 10, 1),
            Err(DecodeError::Truncated { field: "peers" })
        );
        let mut r = Reader::new(&[0, 65, b'a']);
        assert!(matches!(
            r.str("hostname", 64),
            Err(DecodeError::Invalid {
                field: "hostname",
                ..
            })
        ));
        let mut r = Reader::new(&[2]);
        assert!(matches!(r.bool("flag"), Err(DecodeError::Invalid { .. })));
        let mut r = Reader::new(&[0, 2, 0xc3, 0x28]);
        assert!(matches!(
            r.str("name", 64),
            Err(DecodeError::Invalid { .. })
        ));
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut r = Reader::new(&[1, 2]);
        r.u8("a").unwrap();
        assert_eq!(r.end(), Err(DecodeError::Trailing { extra: 1 }));
    }
}

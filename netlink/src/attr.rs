// SPDX-License-Identifier: GPL-3.0-or-later
//! Netlink attributes as data, for the families no typed crate covers
//! (nf_tables): a value, or attributes nested inside one. Emitted through
//! netlink-packet-core's [`Nla`], which sizes and pads them.

use netlink_packet_core::{Emitable, Nla, NLA_F_NESTED};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr {
    Value(u16, Vec<u8>),
    Nested(u16, Vec<Attr>),
}

impl Attr {
    pub fn bytes(kind: u16, value: &[u8]) -> Self {
        Attr::Value(kind, value.to_vec())
    }

    /// Netfilter's integer attributes are big-endian.
    pub fn be32(kind: u16, value: u32) -> Self {
        Attr::Value(kind, value.to_be_bytes().to_vec())
    }

    pub fn be64(kind: u16, value: u64) -> Self {
        Attr::Value(kind, value.to_be_bytes().to_vec())
    }

    /// A NUL-terminated string.
    pub fn str(kind: u16, value: &str) -> Self {
        let mut bytes = value.as_bytes().to_vec();
        bytes.push(0);
        Attr::Value(kind, bytes)
    }

    pub fn nested(kind: u16, children: Vec<Attr>) -> Self {
        Attr::Nested(kind, children)
    }
}

impl Nla for Attr {
    fn value_len(&self) -> usize {
        match self {
            Attr::Value(_, value) => value.len(),
            Attr::Nested(_, children) => children.as_slice().buffer_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Attr::Value(kind, _) => *kind,
            Attr::Nested(kind, _) => kind | NLA_F_NESTED,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Attr::Value(_, value) => buffer.copy_from_slice(value),
            Attr::Nested(_, children) => children.as_slice().emit(buffer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NlasIterator, NLA_TYPE_MASK};

    #[test]
    fn nested_attributes_are_sized_padded_and_flagged() {
        let attr = Attr::nested(5, vec![Attr::str(1, "wg0"), Attr::bytes(2, &[9])]);
        let mut bytes = vec![0; attr.buffer_len()];
        attr.emit(&mut bytes);
        // 4 (header) + 8 ("wg0\0" with its header) + 8 (one byte, padded).
        assert_eq!(bytes.len(), 20);
        let outer: Vec<_> = NlasIterator::new(&bytes[..]).map(Result::unwrap).collect();
        assert_eq!(outer.len(), 1);
        assert!(outer[0].nested_flag());
        assert_eq!(outer[0].kind() & NLA_TYPE_MASK, 5);
        let inner: Vec<(u16, Vec<u8>)> = NlasIterator::new(outer[0].value())
            .map(|nla| {
                let nla = nla.unwrap();
                (nla.kind(), nla.value().to_vec())
            })
            .collect();
        assert_eq!(inner, [(1, b"wg0\0".to_vec()), (2, vec![9])]);
    }
}

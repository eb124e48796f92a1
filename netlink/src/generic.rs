// SPDX-License-Identifier: GPL-3.0-or-later
//! Generic netlink: a family's id, which the kernel assigns when the family
//! registers, looked up by name from the controller, and the family's typed
//! messages addressed to it.

use std::fmt::Debug;

use netlink_packet_core::Emitable;
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlMessage};

use crate::{Error, Netlink};

/// The id of family `F` on this kernel; the kernel answers ENOENT
/// ([`Error::errno`]) when it has no such family (a module not loaded).
pub fn family_id<F: GenlFamily>(netlink: &mut Netlink) -> Result<u16, Error> {
    let lookup = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(F::family_name().into())],
    });
    let replies: Vec<GenlMessage<GenlCtrl>> = netlink.request(lookup, 0)?;
    replies
        .iter()
        .flat_map(|reply| &reply.payload.nlas)
        .find_map(|attribute| match attribute {
            GenlCtrlAttrs::FamilyId(id) => Some(*id),
            _ => None,
        })
        .ok_or_else(|| {
            Error::Decode(format!(
                "the answer about family {:?} names no id",
                F::family_name()
            ))
        })
}

/// `payload` as a message of the family whose id is `family`.
pub fn message<F: GenlFamily + Emitable + Debug>(family: u16, payload: F) -> GenlMessage<F> {
    let mut message = GenlMessage::from_payload(payload);
    message.set_resolved_family_id(family);
    message
}

//! A block: consecutive audit records stored as one sled value, so that
//! the records of a batch, a wave or a page cost one write, not one each
//! (group commit).
//!
//! Layout: a version byte, then per record: the record's stored value
//! (`u32` little-endian length, then sha256 of the JSON ++ the JSON), a
//! presence byte for its personal payload (0: none or erased, 1: present)
//! and, when present, the payload (`u32` length, then salt ++ JSON). The
//! records' sequence numbers are the block key's first one, then the next
//! ones in order.
//!
//! Beside each block, its subject index: for each record with a personal
//! payload about an employee, the record's position in the block and the
//! employee's id (a version byte, then `u32` position, `u32` length and
//! the id's bytes per record). Erasure reads these small values, not the
//! blocks, to find an employee's payloads.

use switchyard_audit::Sealed;

const VERSION: u8 = 1;

/// One record of a block, borrowed from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Item<'a> {
    /// Hash ++ record JSON.
    pub value: &'a [u8],
    /// Salt ++ payload JSON; `None` when it has none or it was erased.
    pub payload: Option<&'a [u8]>,
}

/// A block's bytes that do not decode: a damaged database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("damaged audit block: {0}")]
pub(crate) struct Damaged(&'static str);

/// Encode records in order.
pub(crate) fn encode<'a>(items: impl IntoIterator<Item = Item<'a>>) -> Vec<u8> {
    let mut out = vec![VERSION];
    for item in items {
        put(&mut out, item.value);
        match item.payload {
            Some(p) => {
                out.push(1);
                put(&mut out, p);
            }
            None => out.push(0),
        }
    }
    out
}

/// Encode sealed records (consecutive, in order).
pub(crate) fn encode_sealed(sealed: &[Sealed]) -> Vec<u8> {
    encode(sealed.iter().map(|s| Item {
        value: &s.value,
        payload: s.personal.as_ref().map(|p| p.payload.as_slice()),
    }))
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    // A record is far below 4 GiB (the engine caps what it is built from).
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&bytes[..len as usize]);
}

/// Decode a block.
pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<Item<'_>>, Damaged> {
    let mut rest = after_version(bytes, "empty", "unknown version")?;
    let mut items = Vec::new();
    while !rest.is_empty() {
        let value = take(&mut rest)?;
        let payload = match rest.split_first() {
            Some((0, tail)) => {
                rest = tail;
                None
            }
            Some((1, tail)) => {
                rest = tail;
                Some(take(&mut rest)?)
            }
            _ => return Err(Damaged("bad payload marker")),
        };
        items.push(Item { value, payload });
    }
    Ok(items)
}

/// The bytes after the version byte, which must be [`VERSION`].
fn after_version<'a>(
    bytes: &'a [u8],
    empty: &'static str,
    unknown: &'static str,
) -> Result<&'a [u8], Damaged> {
    match bytes.split_first() {
        None => Err(Damaged(empty)),
        Some((&VERSION, rest)) => Ok(rest),
        Some(_) => Err(Damaged(unknown)),
    }
}

fn take<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], Damaged> {
    let (len, tail) = rest
        .split_at_checked(4)
        .ok_or(Damaged("truncated length"))?;
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let (bytes, tail) = tail
        .split_at_checked(len)
        .ok_or(Damaged("truncated record"))?;
    *rest = tail;
    Ok(bytes)
}

/// Encode a block's subject index: (position in the block, employee) of
/// each record with a personal payload about an employee.
pub(crate) fn encode_subjects<'a>(subjects: impl IntoIterator<Item = (u32, &'a str)>) -> Vec<u8> {
    let mut out = vec![VERSION];
    for (at, employee) in subjects {
        out.extend_from_slice(&at.to_le_bytes());
        put(&mut out, employee.as_bytes());
    }
    out
}

/// Decode a block's subject index.
pub(crate) fn decode_subjects(bytes: &[u8]) -> Result<Vec<(u32, &str)>, Damaged> {
    let mut rest = after_version(
        bytes,
        "empty subject index",
        "unknown subject index version",
    )?;
    let mut subjects = Vec::new();
    while !rest.is_empty() {
        let (at, tail) = rest
            .split_at_checked(4)
            .ok_or(Damaged("truncated subject index"))?;
        rest = tail;
        let at = u32::from_le_bytes([at[0], at[1], at[2], at[3]]);
        let employee =
            std::str::from_utf8(take(&mut rest)?).map_err(|_| Damaged("subject is not UTF-8"))?;
        subjects.push((at, employee));
    }
    Ok(subjects)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_round_trips_and_damage_is_an_error() {
        let items = [
            Item {
                value: b"first",
                payload: Some(b"salt+json"),
            },
            Item {
                value: b"second",
                payload: None,
            },
            Item {
                value: b"",
                payload: Some(b""),
            },
        ];
        let bytes = encode(items);
        assert_eq!(decode(&bytes).unwrap(), items);
        for cut in 0..bytes.len() {
            let decoded = decode(&bytes[..cut]);
            // Every cut either fails or (at a record boundary) is a prefix.
            if let Ok(prefix) = decoded {
                assert_eq!(prefix[..], items[..prefix.len()]);
            }
        }
        assert_eq!(decode(&[]), Err(Damaged("empty")));
        assert_eq!(decode(&[9]), Err(Damaged("unknown version")));
        let mut bad = bytes.clone();
        bad[1 + 4 + 5] = 7;
        assert_eq!(decode(&bad), Err(Damaged("bad payload marker")));
    }

    #[test]
    fn a_subject_index_round_trips_and_damage_is_an_error() {
        let subjects = [(0, "101"), (7, "émilie-3")];
        let bytes = encode_subjects(subjects);
        assert_eq!(decode_subjects(&bytes).unwrap(), subjects);
        assert!(decode_subjects(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_subjects(&[]).is_err());
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] = 0xff;
        assert_eq!(decode_subjects(&bad), Err(Damaged("subject is not UTF-8")));
    }
}

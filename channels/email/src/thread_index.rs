//! Outlook's `Thread-Index` ([MS-OXOMSG] 2.2.1.3, PidTagConversationIndex): a 22-byte
//! header block (0x01, the top 40 bits of a FILETIME, a conversation GUID) followed by
//! one 5-byte child block per reply. Outlook threads by it, not by References, so our
//! replies extend the resident's index with a child block, or start one.

/// 100-nanosecond intervals between 1601-01-01 (FILETIME's epoch) and 1970-01-01.
const FILETIME_UNIX_OFFSET: u64 = 116_444_736_000_000_000;

/// Now, as a FILETIME.
pub fn filetime_now() -> u64 {
    let since_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    FILETIME_UNIX_OFFSET + (since_unix.as_nanos() / 100) as u64
}

/// A new conversation's index: the header block alone.
pub fn start(now: u64, guid: [u8; 16]) -> Vec<u8> {
    let mut index = Vec::with_capacity(22);
    index.push(0x01);
    index.extend_from_slice(&(now >> 24).to_be_bytes()[3..8]);
    index.extend_from_slice(&guid);
    index
}

/// `parent` with one more child block for a reply made at `now`; `None` if `parent`
/// is not a conversation index.
pub fn reply(parent: &[u8], now: u64, random: u8) -> Option<Vec<u8>> {
    if parent.len() < 22 || !(parent.len() - 22).is_multiple_of(5) || parent.len() > 22 + 5 * 200 {
        return None;
    }
    let mut top = [0u8; 8];
    top[3..8].copy_from_slice(&parent[1..6]);
    let header_time = u64::from_be_bytes(top) << 24;
    let diff = now.saturating_sub(header_time);
    // Short gaps keep finer resolution (bits 18–48); long ones coarser (23–53).
    let (code, delta) = if diff < 1 << 49 {
        (0u32, (diff >> 18) as u32 & 0x7fff_ffff)
    } else {
        (1u32, (diff >> 23) as u32 & 0x7fff_ffff)
    };
    let mut index = parent.to_vec();
    index.extend_from_slice(&((code << 31) | delta).to_be_bytes());
    index.push((random & 0x0f) << 4);
    Some(index)
}

/// The header value (base64) of a reply to a message whose `Thread-Index` was
/// `parent`; a new conversation (from `guid`) when there is none or it is not valid.
pub fn header_for_reply(parent: Option<&str>, guid: [u8; 16]) -> String {
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let now = filetime_now();
    let index = parent
        .and_then(|p| engine.decode(p.trim()).ok())
        .and_then(|p| reply(&p, now, (now as u8) & 0x0f))
        .unwrap_or_else(|| start(now, guid));
    engine.encode(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_adds_one_child_block() {
        // A FILETIME the header holds exactly (its low 24 bits are not kept).
        let now = filetime_now() & !0xff_ffff;
        let header = start(now, [7; 16]);
        assert_eq!(header.len(), 22);
        assert_eq!(header[0], 1);
        let child = reply(&header, now + 10_000_000 * 3600, 5).unwrap();
        assert_eq!(child.len(), 27);
        assert_eq!(&child[..22], &header[..]);
        // An hour: 36e9 intervals >> 18 = 137,329; a short-gap code.
        let word = u32::from_be_bytes(child[22..26].try_into().unwrap());
        assert_eq!(word >> 31, 0);
        assert_eq!(word & 0x7fff_ffff, (36_000_000_000u64 >> 18) as u32);
        assert_eq!(reply(&child, now, 0).unwrap().len(), 32);
        assert_eq!(reply(&[1, 2, 3], now, 0), None);
    }
}

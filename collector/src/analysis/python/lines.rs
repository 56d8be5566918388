//! CPython line tables: the source line of an instruction, decoded from a code object's raw
//! `co_linetable` in its version's format (3.10's pairs, 3.11+'s location table), exactly
//! as the interpreter's own `_PyLineTable_NextAddressRange` walks them.

use leakscope_protocol::python::LineTableFormat;

/// The line of the instruction at `instr` (in 16-bit code units from the start of the
/// bytecode) of a code object whose `co_firstlineno` is `first_line` and whose line table
/// is `table`, or `None` where the table does not cover `instr` (past its end, or cut
/// short). An instruction the table marks as having no line gets the line before it, as
/// the interpreter computes it. `instr < 0` (a frame that has not started) is
/// `first_line`.
pub fn decode(format: LineTableFormat, table: &[u8], first_line: i32, instr: i32) -> Option<i32> {
    if instr < 0 {
        return Some(first_line);
    }
    match format {
        LineTableFormat::Pairs310 => pairs_310(table, first_line, instr),
        LineTableFormat::Locations => locations(table, first_line, instr),
    }
}

/// 3.10 (`Objects/lnotab_notes.txt`): pairs of (bytecode bytes: u8, line delta: i8), the
/// delta -128 meaning "no line". Each pair covers the next `bytes` bytes of bytecode.
fn pairs_310(table: &[u8], first_line: i32, instr: i32) -> Option<i32> {
    let target = i64::from(instr) * 2;
    let (mut end, mut line) = (0i64, first_line);
    for pair in table.chunks_exact(2) {
        end += i64::from(pair[0]);
        let delta = pair[1] as i8;
        if delta != -128 {
            line = line.wrapping_add(i32::from(delta));
        }
        if target < end {
            return Some(line);
        }
    }
    None
}

/// 3.11+ (`Objects/locations.md`): entries led by a byte `1kkkkLLL` (kind `k`, `L + 1` code
/// units); kinds 0–9 keep the line, 10–12 add `k - 10`, 13 and 14 add a signed varint, 15
/// has no location. Column bytes never have the top bit set, so an entry ends where the
/// next byte with it set starts.
fn locations(table: &[u8], first_line: i32, instr: i32) -> Option<i32> {
    let target = i64::from(instr);
    let (mut start, mut line, mut i) = (0i64, first_line, 0usize);
    while i < table.len() {
        let head = table[i];
        if head & 0x80 == 0 {
            return None; // not an entry start: a damaged or cut table
        }
        let kind = (head >> 3) & 15;
        let len = i64::from(head & 7) + 1;
        let delta = match kind {
            10..=12 => i32::from(kind - 10),
            13 | 14 => signed_varint(table.get(i + 1..)?)?,
            _ => 0,
        };
        line = line.wrapping_add(delta);
        if (start..start + len).contains(&target) {
            return Some(line);
        }
        start += len;
        i += 1;
        while i < table.len() && table[i] & 0x80 == 0 {
            i += 1;
        }
    }
    None
}

/// A location-table varint: 6-bit groups, least significant first, 0x40 = more follow.
/// `None` when the bytes end inside it.
fn varint(bytes: &[u8]) -> Option<u32> {
    let (mut value, mut shift) = (0u32, 0u32);
    for &b in bytes {
        if shift < 32 {
            value |= u32::from(b & 63) << shift;
        }
        if b & 64 == 0 {
            return Some(value);
        }
        shift += 6;
    }
    None
}

/// A varint with the sign in bit 0.
fn signed_varint(bytes: &[u8]) -> Option<i32> {
    let u = varint(bytes)?;
    let magnitude = (u >> 1) as i32;
    Some(if u & 1 == 1 { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;
    use LineTableFormat::{Locations, Pairs310};

    #[test]
    fn pairs_310_by_hand() {
        // Bytes 0..4 on line 10 (+0), 4..8 on 12 (+2), 8..10 no line (-128), 10..14 on 11.
        let table = [4, 0, 4, 2, 2, 0x80, 4, 0xff];
        let at = |i| decode(Pairs310, &table, 10, i);
        assert_eq!(
            [at(0), at(1), at(2), at(3)],
            [Some(10), Some(10), Some(12), Some(12)]
        );
        assert_eq!(at(4), Some(12), "no line: the line before");
        assert_eq!([at(5), at(6)], [Some(11), Some(11)]);
        assert_eq!(at(7), None, "past the table");
        assert_eq!(at(-1), Some(10), "not started");
    }

    #[test]
    fn locations_by_hand() {
        let table = [
            0x80 | (13 << 3),     // no columns, 1 unit
            4,                    // line delta +2 (svarint 4)
            0x80 | (10 << 3) | 1, // one-line form, delta 0, 2 units
            5,
            9,
            0x80 | (14 << 3), // long form, 1 unit
            0x40 | 3,         // svarint 3 | 2<<6 = 131 -> -65
            2,
            0,
            1,
            1,
            0x80 | (15 << 3) | 2, // no location, 3 units
            0x80 | (12 << 3),     // +2, 1 unit
            0,
            0,
            0x80 | 3, // short form kind 0, 4 units
            0x11,
        ];
        let at = |i| decode(Locations, &table, 100, i);
        assert_eq!(at(0), Some(102));
        assert_eq!([at(1), at(2)], [Some(102), Some(102)]);
        assert_eq!(at(3), Some(37));
        assert_eq!([at(4), at(5), at(6)], [Some(37); 3]);
        assert_eq!(at(7), Some(39));
        assert_eq!([at(8), at(11)], [Some(39); 2]);
        assert_eq!(at(12), None);
        assert_eq!(at(-1), Some(100));
    }

    #[test]
    fn cut_tables_never_panic_and_stop_at_the_cut() {
        // A long-form entry cut inside its varint.
        let table = [0x80 | (13 << 3), 2, 0x80 | (14 << 3), 0x41];
        assert_eq!(decode(Locations, &table, 5, 0), Some(6));
        assert_eq!(decode(Locations, &table, 5, 1), None);
        assert_eq!(decode(Locations, &[0x12], 5, 0), None, "no entry start");
        assert_eq!(decode(Pairs310, &[4], 5, 0), None, "half a pair");
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            for instr in 0..50 {
                let _ = decode(Locations, &bytes, 1, instr);
                let _ = decode(Pairs310, &bytes, 1, instr);
            }
        }
    }
}

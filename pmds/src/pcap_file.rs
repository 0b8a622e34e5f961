//! pcap and pcapng files, read from a mapped byte slice (no copy, no libpcap) and written
//! as classic pcap with nanosecond timestamps.
//!
//! Reading takes both pcap flavours (microsecond magic `a1b2c3d4`, nanosecond `a1b23c4d`,
//! either byte order) and pcapng (section header, interface description with `if_tsresol`,
//! enhanced and simple packet blocks; other blocks are skipped). Every length is checked
//! against the file: a truncated or malformed record ends the stream with an error that
//! names its offset, after the good records before it.

use std::io::Write;

/// Linktype of Ethernet frames.
pub const LINKTYPE_ETHERNET: u32 = 1;

/// What the file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Classic pcap.
    Pcap {
        /// Timestamps in nanoseconds (else microseconds).
        nanos: bool,
        /// Fields are big-endian (the writer's byte order differs from ours).
        big_endian: bool,
        /// Largest record.
        snaplen: u32,
    },
    /// pcapng.
    PcapNg {
        /// Big-endian section.
        big_endian: bool,
        /// Nanoseconds per timestamp unit of interface 0 (1000 = microseconds).
        ns_per_unit: u64,
    },
}

/// One packet record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Timestamp in nanoseconds since the epoch.
    pub ts_ns: u64,
    /// Captured bytes.
    pub data: &'a [u8],
    /// Length on the wire.
    pub orig_len: u32,
}

/// A file that is not a readable capture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcapError {
    /// Not a pcap or pcapng file.
    #[error("not a pcap or pcapng file (magic {0:#010x})")]
    BadMagic(u32),
    /// Shorter than any capture file header.
    #[error("not a pcap or pcapng file (only {0} bytes)")]
    TooShort(usize),
    /// The file ends inside a header or record.
    #[error("truncated at byte {0}")]
    Truncated(u64),
    /// A length field is impossible.
    #[error("malformed record at byte {0}: {1}")]
    Malformed(u64, &'static str),
}

fn u16_at(d: &[u8], off: usize, be: bool) -> Option<u16> {
    let b: [u8; 2] = d.get(off..off + 2)?.try_into().ok()?;
    Some(if be {
        u16::from_be_bytes(b)
    } else {
        u16::from_le_bytes(b)
    })
}

fn u32_at(d: &[u8], off: usize, be: bool) -> Option<u32> {
    let b: [u8; 4] = d.get(off..off + 4)?.try_into().ok()?;
    Some(if be {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    })
}

/// Reads the file header: the format and the offset of the first record.
///
/// # Errors
/// [`PcapError`] for an unknown magic or a short header.
pub fn open(data: &[u8]) -> Result<(Format, u64), PcapError> {
    if data.len() < 24 {
        return Err(PcapError::TooShort(data.len()));
    }
    let magic = u32_at(data, 0, false).ok_or(PcapError::Truncated(0))?;
    let pcap = |nanos, big_endian| -> Result<(Format, u64), PcapError> {
        let snaplen = u32_at(data, 16, big_endian).ok_or(PcapError::Truncated(0))?;
        Ok((
            Format::Pcap {
                nanos,
                big_endian,
                snaplen,
            },
            24,
        ))
    };
    match magic {
        0xa1b2_c3d4 => pcap(false, false),
        0xd4c3_b2a1 => pcap(false, true),
        0xa1b2_3c4d => pcap(true, false),
        0x4d3c_b2a1 => pcap(true, true),
        0x0a0d_0d0a => {
            let bom = u32_at(data, 8, false).ok_or(PcapError::Truncated(0))?;
            let big_endian = match bom {
                0x1a2b_3c4d => false,
                0x4d3c_2b1a => true,
                _ => return Err(PcapError::Malformed(8, "bad pcapng byte-order magic")),
            };
            let len = u32_at(data, 4, big_endian).ok_or(PcapError::Truncated(4))?;
            if len < 28 || !len.is_multiple_of(4) {
                return Err(PcapError::Malformed(4, "bad section header length"));
            }
            Ok((
                Format::PcapNg {
                    big_endian,
                    ns_per_unit: 1000,
                },
                u64::from(len),
            ))
        }
        other => Err(PcapError::BadMagic(other)),
    }
}

/// Reads the record at `pos`: `Ok(None)` at the end of the file, else the record and the
/// offset of the next one. pcapng interface blocks update `format`'s timestamp unit.
///
/// # Errors
/// [`PcapError::Truncated`] or [`PcapError::Malformed`] naming the offset.
pub fn next_record<'a>(
    data: &'a [u8],
    pos: u64,
    format: &mut Format,
) -> Result<Option<(Record<'a>, u64)>, PcapError> {
    let mut pos = pos;
    loop {
        let at = usize::try_from(pos).map_err(|_| PcapError::Truncated(pos))?;
        if at >= data.len() {
            return Ok(None);
        }
        match *format {
            Format::Pcap {
                nanos,
                big_endian: be,
                snaplen,
            } => {
                let hdr = data.get(at..at + 16).ok_or(PcapError::Truncated(pos))?;
                let sec = u64::from(u32_at(hdr, 0, be).expect("16 bytes"));
                let frac = u64::from(u32_at(hdr, 4, be).expect("16 bytes"));
                let incl = u32_at(hdr, 8, be).expect("16 bytes");
                let orig = u32_at(hdr, 12, be).expect("16 bytes");
                if incl > snaplen.max(262_144) {
                    return Err(PcapError::Malformed(
                        pos,
                        "record longer than the snap length",
                    ));
                }
                let body = data
                    .get(at + 16..at + 16 + incl as usize)
                    .ok_or(PcapError::Truncated(pos))?;
                let ts_ns = sec * 1_000_000_000 + if nanos { frac } else { frac * 1000 };
                return Ok(Some((
                    Record {
                        ts_ns,
                        data: body,
                        orig_len: orig,
                    },
                    pos + 16 + u64::from(incl),
                )));
            }
            Format::PcapNg {
                big_endian: be,
                ns_per_unit,
            } => {
                let btype = u32_at(data, at, be).ok_or(PcapError::Truncated(pos))?;
                let blen = u32_at(data, at + 4, be).ok_or(PcapError::Truncated(pos))? as usize;
                if blen < 12 || !blen.is_multiple_of(4) {
                    return Err(PcapError::Malformed(pos, "bad block length"));
                }
                let block = data.get(at..at + blen).ok_or(PcapError::Truncated(pos))?;
                let next = pos + blen as u64;
                match btype {
                    // Enhanced packet block.
                    6 => {
                        let hi = u64::from(u32_at(block, 12, be).ok_or(PcapError::Truncated(pos))?);
                        let lo = u64::from(u32_at(block, 16, be).ok_or(PcapError::Truncated(pos))?);
                        let cap = u32_at(block, 20, be).ok_or(PcapError::Truncated(pos))?;
                        let orig = u32_at(block, 24, be).ok_or(PcapError::Truncated(pos))?;
                        let body = block
                            .get(28..28 + cap as usize)
                            .filter(|_| 28 + cap as usize + 4 <= blen)
                            .ok_or(PcapError::Malformed(pos, "packet longer than its block"))?;
                        let ts_ns = ((hi << 32) | lo).saturating_mul(ns_per_unit);
                        return Ok(Some((
                            Record {
                                ts_ns,
                                data: body,
                                orig_len: orig,
                            },
                            next,
                        )));
                    }
                    // Simple packet block: no timestamp, captured = block room.
                    3 => {
                        let orig = u32_at(block, 8, be).ok_or(PcapError::Truncated(pos))?;
                        let room = blen - 16;
                        let cap = (orig as usize).min(room);
                        return Ok(Some((
                            Record {
                                ts_ns: 0,
                                data: &block[12..12 + cap],
                                orig_len: orig,
                            },
                            next,
                        )));
                    }
                    // Interface description: look for if_tsresol (option 9).
                    1 => {
                        let mut opt = 16;
                        while opt + 4 <= blen - 4 {
                            let code = u16_at(block, opt, be).unwrap_or(0);
                            let olen = usize::from(u16_at(block, opt + 2, be).unwrap_or(0));
                            if code == 0 {
                                break;
                            }
                            if code == 9 && olen >= 1 {
                                let r = block.get(opt + 4).copied().unwrap_or(6);
                                let units_per_s: u64 = if r & 0x80 != 0 {
                                    1u64.checked_shl(u32::from(r & 0x7f)).unwrap_or(1)
                                } else {
                                    10u64.checked_pow(u32::from(r)).unwrap_or(1)
                                };
                                let ns = (1_000_000_000 / units_per_s.max(1)).max(1);
                                *format = Format::PcapNg {
                                    big_endian: be,
                                    ns_per_unit: ns,
                                };
                            }
                            opt += 4 + olen.next_multiple_of(4);
                        }
                        pos = next;
                    }
                    // Section headers, statistics, name resolution...: skip.
                    _ => pos = next,
                }
            }
        }
    }
}

/// Writes classic pcap (nanosecond timestamps, little endian, Ethernet).
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header.
    ///
    /// # Errors
    /// I/O errors.
    pub fn new(mut out: W) -> std::io::Result<PcapWriter<W>> {
        out.write_all(&file_header())?;
        Ok(PcapWriter { out })
    }

    /// Wraps a writer positioned after an existing header (appending).
    pub fn append(out: W) -> PcapWriter<W> {
        PcapWriter { out }
    }

    /// Writes one record of `len` bytes, the concatenation of `segments`.
    ///
    /// # Errors
    /// I/O errors; `InvalidInput` when the segments do not add up to `len`.
    pub fn write<'s>(
        &mut self,
        ts_ns: u64,
        len: usize,
        segments: impl IntoIterator<Item = &'s [u8]>,
    ) -> std::io::Result<()> {
        let mut hdr = [0u8; 16];
        hdr[0..4].copy_from_slice(&((ts_ns / 1_000_000_000) as u32).to_le_bytes());
        hdr[4..8].copy_from_slice(&((ts_ns % 1_000_000_000) as u32).to_le_bytes());
        hdr[8..12].copy_from_slice(&(len as u32).to_le_bytes());
        hdr[12..16].copy_from_slice(&(len as u32).to_le_bytes());
        self.out.write_all(&hdr)?;
        let mut written = 0;
        for s in segments {
            self.out.write_all(s)?;
            written += s.len();
        }
        if written != len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "segments do not add up to the record length",
            ));
        }
        Ok(())
    }

    /// Flushes.
    ///
    /// # Errors
    /// I/O errors.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// The 24-byte header [`PcapWriter`] writes.
pub fn file_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&0xa1b2_3c4du32.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    h[16..20].copy_from_slice(&262_144u32.to_le_bytes());
    h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(data: &[u8]) -> (Vec<(u64, Vec<u8>)>, Option<PcapError>) {
        let (mut fmt, mut pos) = open(data).unwrap();
        let mut out = Vec::new();
        loop {
            match next_record(data, pos, &mut fmt) {
                Ok(Some((r, next))) => {
                    out.push((r.ts_ns, r.data.to_vec()));
                    pos = next;
                }
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    #[test]
    fn writes_and_reads_nanosecond_pcap() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.write(1_700_000_000_123_456_789, 6, [&b"abc"[..], &b"def"[..]])
            .unwrap();
        w.write(5, 60, [&[7u8; 60][..]]).unwrap();
        let file = w.into_inner();
        let (recs, err) = records(&file);
        assert_eq!(err, None);
        assert_eq!(recs[0], (1_700_000_000_123_456_789, b"abcdef".to_vec()));
        assert_eq!(recs[1], (5, vec![7u8; 60]));
    }

    #[test]
    fn reads_microsecond_and_big_endian_pcap() {
        for be in [false, true] {
            let w32 = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
            let mut f = Vec::new();
            f.extend(w32(0xa1b2_c3d4));
            f.extend(if be {
                2u16.to_be_bytes()
            } else {
                2u16.to_le_bytes()
            });
            f.extend(if be {
                4u16.to_be_bytes()
            } else {
                4u16.to_le_bytes()
            });
            f.extend([0u8; 8]);
            f.extend(w32(65535));
            f.extend(w32(1));
            for (sec, usec, n) in [(10u32, 5u32, 3u32), (11, 999_999, 1)] {
                f.extend(w32(sec));
                f.extend(w32(usec));
                f.extend(w32(n));
                f.extend(w32(n));
                f.extend(vec![0xeeu8; n as usize]);
            }
            let (recs, err) = records(&f);
            assert_eq!(err, None);
            assert_eq!(recs[0].0, 10_000_005_000);
            assert_eq!(recs[1], (11_999_999_000, vec![0xee]));
        }
    }

    #[test]
    fn truncated_and_malformed_files_keep_the_good_records() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        for i in 0..3u8 {
            w.write(u64::from(i), 100, [&[i; 100][..]]).unwrap();
        }
        let file = w.into_inner();
        // Cut inside the third record's data.
        let (recs, err) = records(&file[..file.len() - 10]);
        assert_eq!(recs.len(), 2);
        assert_eq!(err, Some(PcapError::Truncated(24 + 2 * 116)));
        // Cut inside a record header.
        let (recs, err) = records(&file[..24 + 116 + 5]);
        assert_eq!((recs.len(), err), (1, Some(PcapError::Truncated(140))));
        // An absurd length.
        let mut bad = file.clone();
        bad[24 + 8..24 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        let (recs, err) = records(&bad);
        assert!(recs.is_empty() && matches!(err, Some(PcapError::Malformed(24, _))));
        assert_eq!(
            open(b"GIF89a, and then enough bytes to be long"),
            Err(PcapError::BadMagic(0x3846_4947))
        );
        assert_eq!(open(b"ab"), Err(PcapError::TooShort(2)));
    }

    #[test]
    fn reads_pcapng_with_nanosecond_resolution() {
        let mut f = Vec::new();
        let block = |f: &mut Vec<u8>, t: u32, body: &[u8]| {
            let len = 12 + body.len().next_multiple_of(4);
            f.extend(t.to_le_bytes());
            f.extend((len as u32).to_le_bytes());
            f.extend(body);
            f.extend(vec![0u8; body.len().next_multiple_of(4) - body.len()]);
            f.extend((len as u32).to_le_bytes());
        };
        let mut shb = Vec::new();
        shb.extend(0x1a2b_3c4du32.to_le_bytes());
        shb.extend(1u16.to_le_bytes());
        shb.extend(0u16.to_le_bytes());
        shb.extend(u64::MAX.to_le_bytes());
        block(&mut f, 0x0a0d_0d0a, &shb);
        let mut idb = Vec::new();
        idb.extend(1u16.to_le_bytes());
        idb.extend(0u16.to_le_bytes());
        idb.extend(0u32.to_le_bytes());
        idb.extend(9u16.to_le_bytes()); // if_tsresol
        idb.extend(1u16.to_le_bytes());
        idb.extend([9u8, 0, 0, 0]); // 10^-9
        idb.extend(0u32.to_le_bytes()); // end of options
        block(&mut f, 1, &idb);
        let mut epb = Vec::new();
        epb.extend(0u32.to_le_bytes());
        let ts: u64 = 1_700_000_000_000_000_123;
        epb.extend(((ts >> 32) as u32).to_le_bytes());
        epb.extend((ts as u32).to_le_bytes());
        epb.extend(5u32.to_le_bytes());
        epb.extend(5u32.to_le_bytes());
        epb.extend(b"hello");
        block(&mut f, 6, &epb);
        let mut spb = Vec::new();
        spb.extend(2u32.to_le_bytes());
        spb.extend(b"hi");
        block(&mut f, 3, &spb);
        let (recs, err) = records(&f);
        assert_eq!(err, None);
        assert_eq!(recs, vec![(ts, b"hello".to_vec()), (0, b"hi".to_vec())]);
    }
}

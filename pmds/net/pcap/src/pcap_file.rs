//! pcap and pcapng files, read through a buffer a chunk at a time ([`PcapReader`], no
//! libpcap, no mapping a rewritten file could SIGBUS) and written as classic pcap with
//! nanosecond timestamps.
//!
//! Reading takes both pcap flavours (microsecond magic `a1b2c3d4`, nanosecond `a1b23c4d`,
//! either byte order) and pcapng (section header, interface description with `if_tsresol`,
//! enhanced and simple packet blocks; other blocks are skipped). Every length is checked
//! against the file: a truncated or malformed record ends the stream with an error that
//! names its offset, after the good records before it; no input panics the parser (the
//! `pcap` fuzz target and the hostile-input tests keep it so).

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

/// Longest pcapng block the reader takes (a packet block of the largest snap length fits
/// many times over); a longer block is [`PcapError::Malformed`], so a file cannot make a
/// reader buffer by its numbers.
pub const MAX_BLOCK: usize = 4 << 20;

/// Largest classic-pcap record body the reader takes, whatever the file's snap length.
pub const MAX_RECORD: u32 = 262_144;

/// A record found in a buffer: where its bytes are, not a borrow of them.
#[derive(Debug, Clone, Copy)]
struct Found {
    ts_ns: u64,
    data: (usize, usize),
    orig_len: u32,
    next: u64,
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
    Ok(find_record(data, pos, format)?.and_then(|f| {
        let body = data.get(f.data.0..f.data.1)?;
        Some((
            Record {
                ts_ns: f.ts_ns,
                data: body,
                orig_len: f.orig_len,
            },
            f.next,
        ))
    }))
}

/// [`next_record`] without the borrow: every offset and length is checked with `get` and
/// checked arithmetic, so no input can make it index out of bounds or overflow.
fn find_record(data: &[u8], pos: u64, format: &mut Format) -> Result<Option<Found>, PcapError> {
    let mut pos = pos;
    let trunc = |p: u64| PcapError::Truncated(p);
    loop {
        let at = usize::try_from(pos).map_err(|_| trunc(pos))?;
        if at >= data.len() {
            return Ok(None);
        }
        match *format {
            Format::Pcap {
                nanos,
                big_endian: be,
                snaplen: _,
            } => {
                let hdr = data.get(at..at.saturating_add(16)).ok_or(trunc(pos))?;
                let field = |off| u32_at(hdr, off, be).ok_or(trunc(pos));
                let sec = u64::from(field(0)?);
                let frac = u64::from(field(4)?);
                let incl = field(8)?;
                let orig = field(12)?;
                if incl > MAX_RECORD {
                    return Err(PcapError::Malformed(
                        pos,
                        "record longer than the snap length",
                    ));
                }
                let begin = at + 16;
                let end = begin + incl as usize;
                if end > data.len() {
                    return Err(trunc(pos));
                }
                let ts_ns = sec.saturating_mul(1_000_000_000).saturating_add(if nanos {
                    frac
                } else {
                    frac.saturating_mul(1000)
                });
                return Ok(Some(Found {
                    ts_ns,
                    data: (begin, end),
                    orig_len: orig,
                    next: pos + 16 + u64::from(incl),
                }));
            }
            Format::PcapNg {
                big_endian: be,
                ns_per_unit,
            } => {
                let btype = u32_at(data, at, be).ok_or(trunc(pos))?;
                let blen = u32_at(data, at.saturating_add(4), be).ok_or(trunc(pos))? as usize;
                if blen < 12 || !blen.is_multiple_of(4) {
                    return Err(PcapError::Malformed(pos, "bad block length"));
                }
                if blen > MAX_BLOCK {
                    return Err(PcapError::Malformed(pos, "block longer than 4 MiB"));
                }
                let block = data.get(at..at + blen).ok_or(trunc(pos))?;
                let field = |off: usize| {
                    u32_at(block, off, be).ok_or(PcapError::Malformed(pos, "block too short"))
                };
                let next = pos + blen as u64;
                match btype {
                    // Enhanced packet block: type, length, interface, ts high, ts low,
                    // captured length, original length, data, options, length (pcapng 4.3).
                    6 => {
                        let hi = u64::from(field(12)?);
                        let lo = u64::from(field(16)?);
                        let cap = field(20)? as usize;
                        let orig = field(24)?;
                        if 28 + cap + 4 > blen {
                            return Err(PcapError::Malformed(pos, "packet longer than its block"));
                        }
                        let ts_ns = ((hi << 32) | lo).saturating_mul(ns_per_unit);
                        return Ok(Some(Found {
                            ts_ns,
                            data: (at + 28, at + 28 + cap),
                            orig_len: orig,
                            next,
                        }));
                    }
                    // Simple packet block: no timestamp, captured = block room (pcapng 4.4).
                    3 => {
                        let orig = field(8)?;
                        let room = blen.saturating_sub(16);
                        let cap = (orig as usize).min(room);
                        return Ok(Some(Found {
                            ts_ns: 0,
                            data: (at + 12, at + 12 + cap),
                            orig_len: orig,
                            next,
                        }));
                    }
                    // Interface description: look for if_tsresol (option 9, pcapng 4.2).
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

/// Reads a capture file through a buffer of its own, a chunk at a time: a file truncated
/// or rewritten while it is read gives an early end or odd bytes, which the parser checks,
/// never a SIGBUS (as a mapping of it would).
#[derive(Debug)]
pub struct PcapReader {
    file: std::fs::File,
    /// Bytes of the file from offset `buf_off` on.
    buf: Vec<u8>,
    buf_off: u64,
    eof: bool,
    format: Format,
    pos: u64,
}

/// Bytes read from the file at a time.
const CHUNK: usize = 256 << 10;

impl PcapReader {
    /// Opens `path` and reads its header. The first [`PcapReader::next_record`] returns the record
    /// at `resume` if that is past the header (a queue taking up where another stopped).
    ///
    /// # Errors
    /// I/O errors; the [`PcapError`] of a file that is no capture, as `InvalidData`.
    pub fn open(path: &std::path::Path, resume: u64) -> std::io::Result<PcapReader> {
        let file = std::fs::File::open(path)?;
        let mut r = PcapReader {
            file,
            buf: Vec::with_capacity(CHUNK),
            buf_off: 0,
            eof: false,
            format: Format::Pcap {
                nanos: false,
                big_endian: false,
                snaplen: 0,
            },
            pos: 0,
        };
        // Both headers fit in the first 64 bytes (classic 24, pcapng's section header's
        // fixed part 28); the first chunk read normally holds far more.
        while r.buf.len() < 64 && !r.eof {
            r.fill()?;
        }
        let (format, first) =
            open(&r.buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        r.format = format;
        r.pos = first.max(resume);
        Ok(r)
    }

    /// The file offset of the next record.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Makes `pos` (a [`PcapReader::position`] seen before the last [`PcapReader::next_record`])
    /// the next record again: a record that found no mbuf is read again later.
    pub fn rewind_to(&mut self, pos: u64) {
        self.pos = pos;
    }

    /// The next packet record, `Ok(None)` at the end of the file.
    ///
    /// # Errors
    /// [`PcapError`] naming the file offset of a truncated or malformed record (the
    /// records before it were returned); `InvalidData` wraps it, other errors are I/O.
    pub fn next_record(&mut self) -> std::io::Result<Option<Record<'_>>> {
        let found = loop {
            // `pos` never falls behind `buf_off`: the buffer is only ever cut at `pos`.
            let rel = self.pos.saturating_sub(self.buf_off);
            match find_record(&self.buf, rel, &mut self.format) {
                Ok(Some(f)) => break f,
                Ok(None) | Err(PcapError::Truncated(_)) if !self.eof => {
                    // Keep the bytes from `pos` on (a record cut by the chunk's end), or
                    // start afresh at `pos` when it lies past what was read.
                    match usize::try_from(rel) {
                        Ok(keep) if keep <= self.buf.len() => {
                            self.buf.drain(..keep);
                            self.buf_off += keep as u64;
                        }
                        _ => {
                            self.buf.clear();
                            self.buf_off = self.pos;
                        }
                    }
                    self.fill()?;
                }
                Ok(None) => return Ok(None),
                Err(e) => {
                    let at = |p: u64| p.saturating_add(self.buf_off);
                    let e = match e {
                        PcapError::Truncated(p) => PcapError::Truncated(at(p)),
                        PcapError::Malformed(p, why) => PcapError::Malformed(at(p), why),
                        other => other,
                    };
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
                }
            }
        };
        self.pos = self.buf_off + found.next;
        let data = self.buf.get(found.data.0..found.data.1).unwrap_or(&[]);
        Ok(Some(Record {
            ts_ns: found.ts_ns,
            data,
            orig_len: found.orig_len,
        }))
    }

    /// Reads up to one more chunk onto the buffer; sets `eof` when the file has no more.
    fn fill(&mut self) -> std::io::Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        let have = self.buf.len();
        self.buf.resize(have + CHUNK, 0);
        // Read at the offset the buffer ends at: a file rewritten underneath is read anew,
        // never through a stale mapping.
        let end = self.buf_off + have as u64;
        let res = self
            .file
            .seek(SeekFrom::Start(end))
            .and_then(|_| self.file.read(&mut self.buf[have..]));
        let n = match res {
            Ok(n) => n,
            Err(e) => {
                self.buf.truncate(have);
                return Err(e);
            }
        };
        self.buf.truncate(have + n);
        if n == 0 {
            self.eof = true;
        }
        Ok(())
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

    /// A little deterministic generator for the no-panic tests (no dependency).
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    fn pcapng_shb() -> Vec<u8> {
        let mut f = Vec::new();
        f.extend(0x0a0d_0d0au32.to_le_bytes());
        f.extend(28u32.to_le_bytes());
        f.extend(0x1a2b_3c4du32.to_le_bytes());
        f.extend(1u16.to_le_bytes());
        f.extend(0u16.to_le_bytes());
        f.extend(u64::MAX.to_le_bytes());
        f.extend(28u32.to_le_bytes());
        f
    }

    #[test]
    fn a_40_byte_pcapng_with_a_minimal_block_does_not_panic() {
        // The attacker's file: a section header and a 12-byte block of each packet type
        // (a simple packet block this short once underflowed `blen - 16`).
        for btype in [1u32, 3, 6, 0x0a0d_0d0a, 0xdead_beef] {
            let mut f = pcapng_shb();
            f.extend(btype.to_le_bytes());
            f.extend(12u32.to_le_bytes());
            f.extend(12u32.to_le_bytes());
            assert_eq!(f.len(), 40);
            let (recs, err) = records(&f);
            match btype {
                3 => assert_eq!((recs, err), (vec![(0, Vec::new())], None)),
                6 => assert!(recs.is_empty() && matches!(err, Some(PcapError::Malformed(28, _)))),
                _ => assert_eq!((recs.len(), err), (0, None)),
            }
        }
    }

    #[test]
    fn huge_pcapng_blocks_are_refused_not_buffered() {
        let mut f = pcapng_shb();
        f.extend(6u32.to_le_bytes());
        f.extend(0xffff_fff0u32.to_le_bytes());
        f.extend([0u8; 64]);
        let (recs, err) = records(&f);
        assert!(recs.is_empty());
        assert_eq!(
            err,
            Some(PcapError::Malformed(28, "block longer than 4 MiB"))
        );
    }

    /// Every record of `f` until its end or an error; each one moves forward.
    fn walk(f: &[u8]) {
        if let Ok((mut fmt, mut pos)) = open(f) {
            while let Ok(Some((_, next))) = next_record(f, pos, &mut fmt) {
                assert!(next > pos);
                pos = next;
            }
        }
    }

    #[test]
    fn random_and_mutated_files_never_panic() {
        let mut good = pcapng_shb();
        for i in 0..8u8 {
            let mut epb = Vec::new();
            epb.extend(6u32.to_le_bytes());
            epb.extend(48u32.to_le_bytes());
            epb.extend([0u8; 12]);
            epb.extend(16u32.to_le_bytes());
            epb.extend(16u32.to_le_bytes());
            epb.extend([i; 16]);
            epb.extend(48u32.to_le_bytes());
            good.extend(epb);
        }
        let classic = {
            let mut w = PcapWriter::new(Vec::new()).unwrap();
            for i in 0..8u8 {
                w.write(u64::from(i), 30, [&[i; 30][..]]).unwrap();
            }
            w.into_inner()
        };
        let mut st = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..20_000 {
            let base = if round % 2 == 0 { &good } else { &classic };
            let mut f = base.clone();
            let flips = 1 + xorshift(&mut st) % 8;
            for _ in 0..flips {
                let at = (xorshift(&mut st) as usize) % f.len();
                f[at] = xorshift(&mut st) as u8;
            }
            let cut = (xorshift(&mut st) as usize) % (f.len() + 1);
            walk(&f[..cut]);
            walk(&f);
        }
        for len in 0..200 {
            let f: Vec<u8> = (0..len).map(|_| xorshift(&mut st) as u8).collect();
            walk(&f);
        }
    }

    fn temp_file(tag: &str, data: &[u8]) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("pcap-{tag}-{}", std::process::id()));
        std::fs::write(&p, data).unwrap();
        p
    }

    #[test]
    #[cfg_attr(miri, ignore = "file I/O")]
    fn the_file_reader_agrees_with_the_slice_parser_across_chunks() {
        // 40k records of 100 bytes: about 4.6 MB, many chunk boundaries inside records.
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        for i in 0..40_000u32 {
            let b = (i % 251) as u8;
            w.write(u64::from(i), 100, [&[b; 100][..]]).unwrap();
        }
        let data = w.into_inner();
        let path = temp_file("chunks", &data);
        let (want, err) = records(&data);
        assert_eq!(err, None);
        let mut r = PcapReader::open(&path, 0).unwrap();
        let mut got = Vec::new();
        while let Some(rec) = r.next_record().unwrap() {
            got.push((rec.ts_ns, rec.data.to_vec()));
        }
        assert_eq!(got, want);
        // Resuming at a record boundary picks up there; rewinding reads a record again.
        let mut r = PcapReader::open(&path, 24 + 116 * 39_998).unwrap();
        let p = r.position();
        assert_eq!(r.next_record().unwrap().unwrap().ts_ns, 39_998);
        r.rewind_to(p);
        assert_eq!(r.next_record().unwrap().unwrap().ts_ns, 39_998);
        assert_eq!(r.next_record().unwrap().unwrap().ts_ns, 39_999);
        assert!(r.next_record().unwrap().is_none());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    #[cfg_attr(miri, ignore = "file I/O")]
    fn a_file_truncated_while_it_is_read_ends_the_stream_cleanly() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        for i in 0..10_000u32 {
            w.write(u64::from(i), 200, [&[7u8; 200][..]]).unwrap();
        }
        let data = w.into_inner();
        let path = temp_file("trunc", &data);
        let mut r = PcapReader::open(&path, 0).unwrap();
        let mut n = 0;
        while n < 10 {
            r.next_record().unwrap().unwrap();
            n += 1;
        }
        // Cut the file in the middle of a record beyond the first chunk, then rewrite
        // the rest with garbage: a mapping would SIGBUS past the end; we see an error.
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(300_000 + 7).unwrap();
        let end = loop {
            match r.next_record() {
                Ok(Some(_)) => n += 1,
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        let e = end.expect("a cut record is an error");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("truncated at byte"), "{e}");
        assert_eq!(n, (300_000 - 24) / 216);
        let _ = std::fs::remove_file(&path);
    }
}

//! Segment files: the on-disk framing of records and the scanning that recovery, catch-up and
//! reading share.
//!
//! A segment is named by the offset of its first record (`00000000000000000042.log`) and holds
//! frames back to back:
//!
//! ```text
//! payload_len u32 | crc32c u32 (of offset and payload) | offset u64 | payload
//! ```
//!
//! A frame with an empty payload is a *seal*: the segment is complete and the log continues in
//! the segment whose base is the seal's offset. Records never have empty payloads. A frame is
//! valid only if it is complete, its checksum matches, and its offset is the one expected next,
//! so a torn write, appended garbage and zero-filled blocks are all told apart from data.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The largest payload a frame may carry; a corrupt length field never makes us allocate more.
pub const MAX_RECORD_BYTES: usize = 8 * 1024 * 1024;
pub const FRAME_HEADER_BYTES: usize = 16;
const SEGMENT_SUFFIX: &str = ".log";

/// Appends a record frame to `out`.
pub fn put_record(out: &mut Vec<u8>, offset: u64, payload: &[u8]) {
    debug_assert!(!payload.is_empty(), "records are never empty");
    put_frame(out, offset, payload);
}

/// Appends a seal frame to `out`: the log continues in the segment based at `next_offset`.
pub fn put_seal(out: &mut Vec<u8>, next_offset: u64) {
    put_frame(out, next_offset, &[]);
}

fn put_frame(out: &mut Vec<u8>, offset: u64, payload: &[u8]) {
    let offset_bytes = offset.to_le_bytes();
    let mut crc = crc32c::crc32c(&offset_bytes);
    crc = crc32c::crc32c_append(crc, payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&offset_bytes);
    out.extend_from_slice(payload);
}

/// One valid frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Record { offset: u64, payload: Vec<u8> },
    Seal { next_offset: u64 },
}

/// Why scanning stopped before the end of the data it was given.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// The bytes end exactly after the last valid frame.
    End,
    /// A frame starts but its bytes run past the end: a torn write, or one still in progress.
    Incomplete,
    /// The bytes at this position are not a valid frame.
    Corrupt(String),
}

/// Reads frames sequentially from a segment file, up to a fixed length.
pub struct Scanner<'a> {
    reader: io::BufReader<&'a File>,
    /// Byte position of the next frame.
    pub pos: u64,
    limit: u64,
    /// The offset the next record (or seal) must carry.
    pub expected_offset: u64,
}

impl<'a> Scanner<'a> {
    /// Scans `file` from byte `pos` up to byte `limit`, expecting the next frame to carry
    /// `expected_offset`.
    pub fn new(file: &'a File, pos: u64, limit: u64, expected_offset: u64) -> io::Result<Self> {
        let mut handle = file;
        handle.seek(SeekFrom::Start(pos))?;
        Ok(Self {
            reader: io::BufReader::with_capacity(64 * 1024, file),
            pos,
            limit,
            expected_offset,
        })
    }

    /// The next valid frame, or why there is none. I/O errors are returned as such.
    pub fn next_frame(&mut self) -> io::Result<Result<Frame, Stop>> {
        let available = self.limit.saturating_sub(self.pos);
        if available == 0 {
            return Ok(Err(Stop::End));
        }
        if available < FRAME_HEADER_BYTES as u64 {
            return Ok(Err(Stop::Incomplete));
        }
        let mut header = [0u8; FRAME_HEADER_BYTES];
        self.reader.read_exact(&mut header)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let stored_crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let offset_bytes: [u8; 8] = header[8..16].try_into().unwrap_or([0; 8]);
        let offset = u64::from_le_bytes(offset_bytes);
        if len > MAX_RECORD_BYTES {
            return Ok(Err(Stop::Corrupt(format!(
                "frame length {len} exceeds the {MAX_RECORD_BYTES}-byte maximum"
            ))));
        }
        if available < (FRAME_HEADER_BYTES + len) as u64 {
            return Ok(Err(Stop::Incomplete));
        }
        let mut payload = vec![0u8; len];
        self.reader.read_exact(&mut payload)?;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&offset_bytes), &payload);
        if crc != stored_crc {
            return Ok(Err(Stop::Corrupt(format!(
                "checksum mismatch (stored {stored_crc:#010x}, computed {crc:#010x})"
            ))));
        }
        if offset != self.expected_offset {
            return Ok(Err(Stop::Corrupt(format!(
                "frame carries offset {offset}, expected {}",
                self.expected_offset
            ))));
        }
        self.pos += (FRAME_HEADER_BYTES + len) as u64;
        if len == 0 {
            Ok(Ok(Frame::Seal {
                next_offset: offset,
            }))
        } else {
            self.expected_offset += 1;
            Ok(Ok(Frame::Record { offset, payload }))
        }
    }
}

/// The segments of a partition directory as `(base offset, path)`, oldest first.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        if stem.len() == 20
            && let Ok(base) = stem.parse::<u64>()
        {
            segments.push((base, entry.path()));
        }
    }
    segments.sort_unstable_by_key(|(base, _)| *base);
    Ok(segments)
}

pub fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}{SEGMENT_SUFFIX}"))
}

/// fsyncs a directory so that entries created, renamed or removed in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn scan_all(bytes: &[u8], expected: u64) -> (Vec<Frame>, Stop, u64) {
        let mut file = tempfile::tempfile().expect("tempfile");
        file.write_all(bytes).expect("write");
        let mut scanner = Scanner::new(&file, 0, bytes.len() as u64, expected).expect("scanner");
        let mut frames = Vec::new();
        loop {
            match scanner.next_frame().expect("io") {
                Ok(frame) => frames.push(frame),
                Err(stop) => return (frames, stop, scanner.pos),
            }
        }
    }

    #[test]
    fn records_and_seal_round_trip() {
        let mut bytes = Vec::new();
        put_record(&mut bytes, 7, b"alpha");
        put_record(&mut bytes, 8, b"beta");
        put_seal(&mut bytes, 9);
        let (frames, stop, pos) = scan_all(&bytes, 7);
        assert_eq!(
            frames,
            vec![
                Frame::Record {
                    offset: 7,
                    payload: b"alpha".to_vec()
                },
                Frame::Record {
                    offset: 8,
                    payload: b"beta".to_vec()
                },
                Frame::Seal { next_offset: 9 },
            ]
        );
        assert_eq!(stop, Stop::End);
        assert_eq!(pos, bytes.len() as u64);
    }

    #[test]
    fn every_truncation_point_keeps_exactly_the_whole_frames_before_it() {
        let mut bytes = Vec::new();
        put_record(&mut bytes, 0, b"first record");
        let first_end = bytes.len();
        put_record(&mut bytes, 1, b"second record, a little longer");
        for cut in 0..=bytes.len() {
            let (frames, stop, pos) = scan_all(&bytes[..cut], 0);
            let whole = if cut == bytes.len() {
                2
            } else if cut >= first_end {
                1
            } else {
                0
            };
            assert_eq!(frames.len(), whole, "cut at {cut}");
            let expected_pos = match whole {
                0 => 0,
                1 => first_end,
                _ => bytes.len(),
            };
            assert_eq!(pos, expected_pos as u64, "cut at {cut}");
            let clean = cut == 0 || cut == first_end || cut == bytes.len();
            assert_eq!(stop == Stop::End, clean, "cut at {cut}: {stop:?}");
        }
    }

    #[test]
    fn zero_filled_tail_is_corrupt_not_data() {
        let mut bytes = Vec::new();
        put_record(&mut bytes, 0, b"real");
        bytes.extend_from_slice(&[0u8; 64]);
        let (frames, stop, _) = scan_all(&bytes, 0);
        assert_eq!(frames.len(), 1);
        assert!(matches!(stop, Stop::Corrupt(_)), "{stop:?}");
    }

    #[test]
    fn out_of_sequence_offset_is_corrupt() {
        let mut bytes = Vec::new();
        put_record(&mut bytes, 5, b"x");
        let (frames, stop, _) = scan_all(&bytes, 4);
        assert!(frames.is_empty());
        assert!(matches!(stop, Stop::Corrupt(_)));
    }

    #[test]
    fn huge_length_field_is_corrupt_without_allocating() {
        let mut bytes = vec![0xff, 0xff, 0xff, 0x7f];
        bytes.extend_from_slice(&[0u8; 40]);
        let (_, stop, _) = scan_all(&bytes, 0);
        assert!(matches!(stop, Stop::Corrupt(_)));
    }
}

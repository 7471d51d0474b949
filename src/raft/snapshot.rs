//! The snapshot file: every row of the state-machine column families, streamed.
//!
//! ```text
//!   "LRSNAP01"
//!   frame*      = cf index (u8) ‖ key length (u32 BE) ‖ key ‖ value length (u32 BE) ‖ value
//!   0xFF        end of frames
//!   meta        codec-encoded SnapshotMeta
//!   meta length (u32 BE)
//!   CRC-32 of everything before it (u32 BE)
//! ```
//!
//! The metadata sits at the end because it is only known once the point-in-time view has been
//! read; its length comes last so a reader can find it from the end without scanning. Neither
//! writing nor reading holds more than one row in memory.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::SnapshotMeta;
use crate::store::codec;

const MAGIC: &[u8; 8] = b"LRSNAP01";
const END: u8 = 0xFF;
/// Keys and values are small (a link is a few hundred bytes); anything larger is corruption.
const MAX_FIELD: u32 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("snapshot file I/O: {0}")]
    Io(#[from] io::Error),
    #[error("not a linkreg snapshot (bad magic)")]
    Magic,
    #[error("snapshot checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("snapshot is malformed: {0}")]
    Malformed(String),
}

/// Counts a CRC over everything written through it.
struct CrcWriter<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct CrcReader<R> {
    inner: R,
    crc: crc32fast::Hasher,
}

impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

pub struct SnapshotWriter {
    out: CrcWriter<BufWriter<File>>,
}

impl SnapshotWriter {
    pub fn new(file: File) -> Result<SnapshotWriter, SnapshotFileError> {
        let mut out = CrcWriter {
            inner: BufWriter::new(file),
            crc: crc32fast::Hasher::new(),
        };
        out.write_all(MAGIC)?;
        Ok(SnapshotWriter { out })
    }

    pub fn row(&mut self, cf: u8, key: &[u8], value: &[u8]) -> Result<(), SnapshotFileError> {
        if cf == END {
            return Err(SnapshotFileError::Malformed(
                "column family index 255".into(),
            ));
        }
        self.out.write_all(&[cf])?;
        for field in [key, value] {
            let len = u32::try_from(field.len())
                .ok()
                .filter(|n| *n <= MAX_FIELD)
                .ok_or_else(|| SnapshotFileError::Malformed("row larger than 16 MiB".into()))?;
            self.out.write_all(&len.to_be_bytes())?;
            self.out.write_all(field)?;
        }
        Ok(())
    }

    /// Writes the trailer and fsyncs the file.
    pub fn finish(mut self, meta: &SnapshotMeta) -> Result<(), SnapshotFileError> {
        let meta = codec::encode(meta).map_err(|e| SnapshotFileError::Malformed(e.to_string()))?;
        self.out.write_all(&[END])?;
        self.out.write_all(&meta)?;
        let len = u32::try_from(meta.len())
            .map_err(|_| SnapshotFileError::Malformed("metadata too large".into()))?;
        self.out.write_all(&len.to_be_bytes())?;
        let crc = self.out.crc.clone().finalize();
        let mut file = self.out.inner.into_inner().map_err(|e| e.into_error())?;
        file.write_all(&crc.to_be_bytes())?;
        file.sync_all()?;
        Ok(())
    }
}

/// The metadata of a snapshot file, read from its end (no checksum pass).
pub fn read_meta(file: &mut File) -> Result<SnapshotMeta, SnapshotFileError> {
    let size = file.seek(SeekFrom::End(0))?;
    if size < (MAGIC.len() + 1 + 8) as u64 {
        return Err(SnapshotFileError::Malformed("file too short".into()));
    }
    let mut tail = [0u8; 8];
    file.seek(SeekFrom::End(-8))?;
    file.read_exact(&mut tail)?;
    let meta_len = u64::from(u32::from_be_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if meta_len > u64::from(MAX_FIELD) {
        return Err(SnapshotFileError::Malformed(
            "metadata length out of range".into(),
        ));
    }
    let meta_start = size
        .checked_sub(8 + meta_len)
        .filter(|start| *start > MAGIC.len() as u64)
        .ok_or_else(|| SnapshotFileError::Malformed("metadata length out of range".into()))?;
    file.seek(SeekFrom::Start(meta_start))?;
    let mut meta = vec![0u8; meta_len as usize];
    file.read_exact(&mut meta)?;
    file.seek(SeekFrom::Start(0))?;
    codec::decode(&meta).map_err(|e| SnapshotFileError::Malformed(e.to_string()))
}

/// Reads a snapshot file front to back, handing each row to `visit`, and checks the checksum at
/// the end. Returns the metadata. A caller that must not act on a damaged file runs this once
/// with a no-op visitor before acting.
pub fn read_rows(
    path: &Path,
    mut visit: impl FnMut(u8, Vec<u8>, Vec<u8>) -> Result<(), SnapshotFileError>,
) -> Result<SnapshotMeta, SnapshotFileError> {
    let mut file = File::open(path)?;
    let size = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(0))?;
    let body_len = size
        .checked_sub(4)
        .ok_or_else(|| SnapshotFileError::Malformed("file too short".into()))?;
    let mut input = CrcReader {
        inner: BufReader::new((&mut file).take(body_len)),
        crc: crc32fast::Hasher::new(),
    };
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(SnapshotFileError::Magic);
    }
    loop {
        let mut cf = [0u8; 1];
        input.read_exact(&mut cf)?;
        if cf[0] == END {
            break;
        }
        let key = read_field(&mut input)?;
        let value = read_field(&mut input)?;
        visit(cf[0], key, value)?;
    }
    let mut rest = Vec::new();
    input.read_to_end(&mut rest)?;
    let computed = input.crc.clone().finalize();
    let mut stored = [0u8; 4];
    file.read_exact(&mut stored)?;
    let stored = u32::from_be_bytes(stored);
    if stored != computed {
        return Err(SnapshotFileError::Checksum { stored, computed });
    }
    let meta_len = rest
        .len()
        .checked_sub(4)
        .ok_or_else(|| SnapshotFileError::Malformed("no metadata".into()))?;
    let declared = u32::from_be_bytes([
        rest[meta_len],
        rest[meta_len + 1],
        rest[meta_len + 2],
        rest[meta_len + 3],
    ]);
    if declared as usize != meta_len {
        return Err(SnapshotFileError::Malformed(
            "metadata length mismatch".into(),
        ));
    }
    codec::decode(&rest[..meta_len]).map_err(|e| SnapshotFileError::Malformed(e.to_string()))
}

fn read_field(input: &mut impl Read) -> Result<Vec<u8>, SnapshotFileError> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len);
    if len > MAX_FIELD {
        return Err(SnapshotFileError::Malformed(format!(
            "field of {len} bytes"
        )));
    }
    let mut field = vec![0u8; len as usize];
    input.read_exact(&mut field)?;
    Ok(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(openraft::LogId::new(
                openraft::CommittedLeaderId::new(3, 1),
                42,
            )),
            last_membership: Default::default(),
            snapshot_id: "3-42-x".into(),
        }
    }

    fn write(path: &Path, rows: &[(u8, &[u8], &[u8])]) {
        let mut w = SnapshotWriter::new(File::create(path).unwrap()).unwrap();
        for (cf, k, v) in rows {
            w.row(*cf, k, v).unwrap();
        }
        w.finish(&meta()).unwrap();
    }

    #[test]
    fn rows_and_meta_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let rows: [(u8, &[u8], &[u8]); 3] = [(0, b"a", b"1"), (0, b"b", b""), (6, b"", b"xyz")];
        write(&path, &rows);
        let mut seen = Vec::new();
        let m = read_rows(&path, |cf, k, v| {
            seen.push((cf, k, v));
            Ok(())
        })
        .unwrap();
        assert_eq!(m, meta());
        let expected: Vec<_> = rows
            .iter()
            .map(|(c, k, v)| (*c, k.to_vec(), v.to_vec()))
            .collect();
        assert_eq!(seen, expected);
        assert_eq!(read_meta(&mut File::open(&path).unwrap()).unwrap(), meta());
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        write(&path, &[(0, b"key", b"value"), (1, b"k2", b"v2")]);
        let good = std::fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            assert!(
                read_rows(&path, |_, _, _| Ok(())).is_err(),
                "flip at {i} went unnoticed"
            );
        }
        for cut in 0..good.len() {
            std::fs::write(&path, &good[..cut]).unwrap();
            assert!(
                read_rows(&path, |_, _, _| Ok(())).is_err(),
                "cut at {cut} went unnoticed"
            );
        }
    }
}

//! The power-loss report: what a power cut at this instant throws away.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// Counters written as one JSON line when the power is cut (SIGUSR1); the
/// harness reads them back with serde.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct Report {
    /// Files whose pending state (data or size) differs from the backing file.
    pub files_with_unsynced: u64,
    /// Bytes of pending data (the overlays' extents) that the cut loses.
    pub unsynced_bytes: u64,
    /// fsync/fdatasync calls on files since the daemon started.
    pub fsyncs: u64,
    /// Write calls since the daemon started.
    pub writes: u64,
}

impl Report {
    /// One JSON object, without a newline.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"files_with_unsynced\": {}, \"unsynced_bytes\": {}, \"fsyncs\": {}, \"writes\": {}}}",
            self.files_with_unsynced, self.unsynced_bytes, self.fsyncs, self.writes
        )
    }

    /// Replaces `path` with the JSON line, atomically (a reader never sees
    /// half a line).
    pub fn write_to(&self, path: &Path) -> io::Result<()> {
        write_atomically(path, format!("{}\n", self.to_json()).as_bytes())
    }
}

/// Writes `contents` to a temporary file beside `path`, then renames it over
/// `path`.
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = Path::new(&tmp);
    let mut file = fs::File::create(tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line() {
        let r = Report {
            files_with_unsynced: 2,
            unsynced_bytes: 1234,
            fsyncs: 7,
            writes: 99,
        };
        assert_eq!(
            r.to_json(),
            r#"{"files_with_unsynced": 2, "unsynced_bytes": 1234, "fsyncs": 7, "writes": 99}"#
        );
    }

    #[test]
    fn written_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("report.json");
        Report::default().write_to(&path).expect("write");
        Report {
            writes: 1,
            ..Report::default()
        }
        .write_to(&path)
        .expect("write");
        let text = fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains("\"writes\": 1"));
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 1);
    }
}

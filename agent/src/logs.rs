//! Container logs as the runtime writes them (the CRI log format: one
//! `TIMESTAMP STREAM TAG CONTENT` line per chunk, tag `F` for a full line
//! and `P` for part of one), read back for `flt logs`: the last lines, with
//! or without their timestamps, then what comes while the container runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// One line of a container's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// RFC 3339 with nanoseconds, as the runtime wrote it.
    pub timestamp: String,
    /// "stdout" or "stderr".
    pub stream: String,
    /// The text, without its newline.
    pub text: String,
}

/// Parse CRI log lines, joining partial chunks (`P`) into their line.
pub fn parse(data: &str) -> Vec<Line> {
    let mut out: Vec<Line> = Vec::new();
    let mut partial: Option<Line> = None;
    for raw in data.lines() {
        let mut parts = raw.splitn(4, ' ');
        let (Some(ts), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let text = parts.next().unwrap_or("");
        let line = match partial.take() {
            Some(mut p) => {
                p.text.push_str(text);
                p
            }
            None => Line {
                timestamp: ts.to_string(),
                stream: stream.to_string(),
                text: text.to_string(),
            },
        };
        if tag == "P" {
            partial = Some(line);
        } else {
            out.push(line);
        }
    }
    out
}

/// The log files of a container, oldest run first: `<dir>/<attempt>.log`.
pub fn runs(container_dir: &Path) -> Vec<(u32, PathBuf)> {
    let mut v: Vec<(u32, PathBuf)> = std::fs::read_dir(container_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_suffix(".log")?.parse::<u32>().ok()?;
            Some((n, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// The last `tail` lines (all: None) of a file, and the offset read to.
pub async fn read_tail(path: &Path, tail: Option<usize>) -> std::io::Result<(Vec<Line>, u64)> {
    let data = tokio::fs::read(path).await?;
    // Only whole lines: a line still being written is read by the follower.
    let end = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut lines = parse(&String::from_utf8_lossy(&data[..end]));
    if let Some(n) = tail {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    Ok((lines, end as u64))
}

/// Read what was appended to `path` after `offset`: whole lines, and the
/// new offset.
pub async fn read_more(path: &Path, offset: u64) -> std::io::Result<(Vec<Line>, u64)> {
    let mut f = tokio::fs::File::open(path).await?;
    f.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut data = Vec::new();
    f.read_to_end(&mut data).await?;
    let end = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    Ok((
        parse(&String::from_utf8_lossy(&data[..end])),
        offset + end as u64,
    ))
}

/// How often a follower looks for more.
pub const FOLLOW_POLL: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_chunks_join_into_one_line() {
        let data = "2026-01-01T00:00:00.1Z stdout P hel\n2026-01-01T00:00:00.2Z stdout F lo\n2026-01-01T00:00:01Z stderr F oops\n";
        let l = parse(data);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].text, "hello");
        assert_eq!(l[0].timestamp, "2026-01-01T00:00:00.1Z");
        assert_eq!(l[1].stream, "stderr");
    }

    #[tokio::test]
    async fn tail_and_follow_read_whole_lines_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        std::fs::write(&p, "t stdout F a\nt stdout F b\nt stdout F c\nt stdout F d").unwrap();
        let (lines, off) = read_tail(&p, Some(2)).await.unwrap();
        assert_eq!(
            lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
            ["b", "c"]
        );
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        std::io::Write::write_all(&mut f, b"\nt stdout F e\n").unwrap();
        let (more, _) = read_more(&p, off).await.unwrap();
        assert_eq!(
            more.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
            ["d", "e"]
        );
        std::fs::write(dir.path().join("1.log"), "").unwrap();
        assert_eq!(
            runs(dir.path()).iter().map(|r| r.0).collect::<Vec<_>>(),
            [0, 1]
        );
    }
}

//! The per-file overlay of unsynced writes: what a file looks like to readers
//! of the mount while some of its bytes exist only in the daemon's memory.
//!
//! The backing file holds what is durable. An [`Overlay`] records, on top of
//! it, the pending extents (non-overlapping, sorted by offset), the logical
//! size, and how much of the backing file is still visible (`valid`): a
//! truncate below the backing size hides the backing bytes past it, so a
//! shrink followed by a re-extension reads zeros there and never the old
//! backing bytes. [`Overlay::apply`] writes all of it to the backing file at
//! fsync time.
//!
//! Costs: a write is `O(log n)` in the number of extents plus the bytes
//! written (an append to the extent that ends where it starts grows that
//! extent's buffer in place, amortised); a read is `O(log n + k)` for the `k`
//! extents it touches.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::ops::Bound;
use std::os::unix::fs::FileExt;

/// Where the durable bytes of a file live: a backing [`File`] in the daemon,
/// a plain buffer in the unit tests.
pub trait Backing {
    /// Fills `buf` from `offset`; bytes past the end read as zeros.
    fn read_full_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `data` at `offset`, extending the file if needed.
    fn write_full_at(&mut self, data: &[u8], offset: u64) -> io::Result<()>;
    /// Sets the length (truncating or zero-extending).
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

impl Backing for File {
    fn read_full_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    buf[done..].fill(0);
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn write_full_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        self.write_all_at(data, offset)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
}

/// Pending (unsynced) state of one file.
#[derive(Debug, Clone)]
pub struct Overlay {
    /// Size of the backing file when the overlay was started.
    base_size: u64,
    /// Backing bytes below this offset are visible; past it, only extents
    /// (and zeros) are. Never above `base_size`.
    valid: u64,
    /// Logical size of the file as readers of the mount see it.
    size: u64,
    /// Pending data: start offset -> bytes. Non-overlapping, all below `size`.
    extents: BTreeMap<u64, Vec<u8>>,
    /// Sum of the extents' lengths.
    pending_bytes: u64,
}

impl Overlay {
    /// A clean overlay over a backing file of `base_size` bytes.
    pub fn new(base_size: u64) -> Self {
        Overlay {
            base_size,
            valid: base_size,
            size: base_size,
            extents: BTreeMap::new(),
            pending_bytes: 0,
        }
    }

    /// The logical size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes of data held only in memory.
    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }

    /// Number of pending extents.
    pub fn extent_count(&self) -> usize {
        self.extents.len()
    }

    /// True if applying the overlay would change the backing file.
    pub fn is_dirty(&self) -> bool {
        !self.extents.is_empty() || self.size != self.base_size || self.valid != self.base_size
    }

    /// Records a write of `data` at `offset`; the size grows to cover it.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = offset.saturating_add(data.len() as u64);
        // The extent starting at or before `offset` that reaches it, if any:
        // the write continues (or overwrites part of) that extent.
        let first = self
            .extents
            .range(..=offset)
            .next_back()
            .filter(|(start, bytes)| **start + bytes.len() as u64 >= offset)
            .map(|(start, _)| *start);
        // Extents starting inside (offset, end) are overlapped by the write.
        let covered: Vec<u64> = self
            .extents
            .range((Bound::Excluded(offset), Bound::Excluded(end)))
            .map(|(start, _)| *start)
            .collect();
        // Of the last overlapped extent, the part past `end` survives.
        let mut tail: Vec<u8> = Vec::new();
        let mut removed = 0u64;
        for start in &covered {
            if let Some(bytes) = self.extents.remove(start) {
                removed += bytes.len() as u64;
                let bytes_end = *start + bytes.len() as u64;
                if bytes_end > end {
                    tail = bytes[(end - *start) as usize..].to_vec();
                }
            }
        }
        match first.and_then(|start| self.extents.get_mut(&start).map(|b| (start, b))) {
            Some((start, bytes)) => {
                let rel = (offset - start) as usize;
                let before = bytes.len() as u64;
                if rel + data.len() <= bytes.len() {
                    // Entirely inside: overwrite in place (no tail possible).
                    bytes[rel..rel + data.len()].copy_from_slice(data);
                } else {
                    bytes.truncate(rel);
                    bytes.extend_from_slice(data);
                    bytes.extend_from_slice(&tail);
                }
                self.pending_bytes = self.pending_bytes - before - removed + bytes.len() as u64;
            }
            None => {
                let mut bytes = Vec::with_capacity(data.len() + tail.len());
                bytes.extend_from_slice(data);
                bytes.extend_from_slice(&tail);
                self.pending_bytes = self.pending_bytes - removed + bytes.len() as u64;
                self.extents.insert(offset, bytes);
            }
        }
        self.size = self.size.max(end);
    }

    /// Records a size change (truncate or extension). Bytes past a shrink
    /// are gone: growing again exposes zeros, not the old bytes.
    pub fn set_size(&mut self, new_size: u64) {
        if new_size < self.size {
            let beyond: Vec<u64> = self.extents.range(new_size..).map(|(s, _)| *s).collect();
            for start in beyond {
                if let Some(bytes) = self.extents.remove(&start) {
                    self.pending_bytes -= bytes.len() as u64;
                }
            }
            if let Some((start, bytes)) = self.extents.range_mut(..new_size).next_back() {
                let keep = (new_size - *start) as usize;
                if bytes.len() > keep {
                    self.pending_bytes -= (bytes.len() - keep) as u64;
                    bytes.truncate(keep);
                }
            }
            self.valid = self.valid.min(new_size);
        }
        self.size = new_size;
    }

    /// Reads up to `len` bytes at `offset`, clamped to the logical size:
    /// backing bytes (where still visible) overlaid with the pending extents.
    pub fn read<B: Backing + ?Sized>(
        &self,
        backing: &B,
        offset: u64,
        len: usize,
    ) -> io::Result<Vec<u8>> {
        if offset >= self.size || len == 0 {
            return Ok(Vec::new());
        }
        let end = offset.saturating_add(len as u64).min(self.size);
        let mut buf = vec![0u8; (end - offset) as usize];
        if offset < self.valid {
            let base_end = end.min(self.valid);
            backing.read_full_at(&mut buf[..(base_end - offset) as usize], offset)?;
        }
        let first = self
            .extents
            .range(..=offset)
            .next_back()
            .map(|(s, b)| (*s, b));
        let rest = self
            .extents
            .range((Bound::Excluded(offset), Bound::Excluded(end)))
            .map(|(s, b)| (*s, b));
        for (start, bytes) in first.into_iter().chain(rest) {
            let ext_end = start + bytes.len() as u64;
            let lo = start.max(offset);
            let hi = ext_end.min(end);
            if lo >= hi {
                continue;
            }
            buf[(lo - offset) as usize..(hi - offset) as usize]
                .copy_from_slice(&bytes[(lo - start) as usize..(hi - start) as usize]);
        }
        Ok(buf)
    }

    /// Writes the pending state to the backing file: hides what a truncate
    /// hid, writes every extent at its offset, and sets the logical size.
    /// The caller syncs the file afterwards and then drops the overlay.
    pub fn apply<B: Backing + ?Sized>(&self, backing: &mut B) -> io::Result<()> {
        let mut len = self.base_size;
        if self.valid < self.base_size {
            backing.set_len(self.valid)?;
            len = self.valid;
        }
        for (start, bytes) in &self.extents {
            backing.write_full_at(bytes, *start)?;
            len = len.max(*start + bytes.len() as u64);
        }
        if len != self.size {
            backing.set_len(self.size)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory backing file.
    #[derive(Default, Clone, Debug, PartialEq)]
    struct Mem(Vec<u8>);

    impl Backing for Mem {
        fn read_full_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = self.0.get(offset as usize + i).copied().unwrap_or(0);
            }
            Ok(())
        }
        fn write_full_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
            let end = offset as usize + data.len();
            if self.0.len() < end {
                self.0.resize(end, 0);
            }
            self.0[offset as usize..end].copy_from_slice(data);
            Ok(())
        }
        fn set_len(&mut self, len: u64) -> io::Result<()> {
            self.0.resize(len as usize, 0);
            Ok(())
        }
    }

    /// A reference model: the whole file as one buffer.
    fn model_write(model: &mut Vec<u8>, offset: usize, data: &[u8]) {
        if model.len() < offset + data.len() {
            model.resize(offset + data.len(), 0);
        }
        model[offset..offset + data.len()].copy_from_slice(data);
    }

    fn read_all(ov: &Overlay, base: &Mem) -> Vec<u8> {
        ov.read(base, 0, usize::MAX / 2).expect("read")
    }

    /// Checks every view of the overlay against the model, including that
    /// applying it to the backing gives exactly the model.
    fn check(ov: &Overlay, base: &Mem, model: &[u8]) {
        assert_eq!(ov.size(), model.len() as u64);
        assert_eq!(read_all(ov, base), model);
        let sum: u64 = ov.extents.values().map(|b| b.len() as u64).sum();
        assert_eq!(ov.pending_bytes(), sum);
        let mut prev_end = 0;
        for (start, bytes) in &ov.extents {
            assert!(*start >= prev_end, "extents overlap");
            assert!(!bytes.is_empty(), "empty extent");
            prev_end = start + bytes.len() as u64;
        }
        assert!(prev_end <= ov.size(), "extent past the size");
        let mut applied = base.clone();
        ov.apply(&mut applied).expect("apply");
        assert_eq!(applied.0, model);
    }

    #[test]
    fn overlapping_writes() {
        let base = Mem(b"0123456789".to_vec());
        let mut model = base.0.clone();
        let mut ov = Overlay::new(10);
        assert!(!ov.is_dirty());
        let writes: &[(usize, &[u8])] = &[
            (2, b"aa"),
            (6, b"bbb"),
            (3, b"CCCCC"),     // bridges both extents
            (0, b"d"),         // separate, before
            (1, b"e"),         // adjacent to the one at 0 and the one at 2
            (12, b"ff"),       // past the end, leaves a zero gap
            (4, b"ggggggggg"), // covers several, ends inside the last
            (5, b"h"),         // inside an extent
        ];
        for (off, data) in writes {
            ov.write(*off as u64, data);
            model_write(&mut model, *off, data);
            check(&ov, &base, &model);
        }
        assert!(ov.is_dirty());
        assert_eq!(&read_all(&ov, &base), b"deaCghgggggggf");
    }

    #[test]
    fn partial_reads_see_extents_and_backing() {
        let base = Mem(b"abcdefghij".to_vec());
        let mut ov = Overlay::new(10);
        ov.write(3, b"XY");
        ov.write(7, b"Z");
        assert_eq!(ov.read(&base, 2, 3).expect("read"), b"cXY");
        assert_eq!(ov.read(&base, 4, 4).expect("read"), b"YfgZ");
        assert_eq!(ov.read(&base, 8, 100).expect("read"), b"ij");
    }

    #[test]
    fn appends_grow_one_extent_in_place() {
        let base = Mem::default();
        let mut ov = Overlay::new(0);
        let mut model = Vec::new();
        for i in 0..10_000u32 {
            let rec = i.to_le_bytes();
            ov.write(model.len() as u64, &rec);
            model.extend_from_slice(&rec);
        }
        assert_eq!(ov.extent_count(), 1);
        check(&ov, &base, &model);
        // The buffer grew by doubling, not by copying on every append.
        let cap = ov
            .extents
            .values()
            .next()
            .map(|b| b.capacity())
            .unwrap_or(0);
        assert!(cap >= model.len() && cap < 2 * model.len() + 64);
    }

    #[test]
    fn appends_after_backing_data() {
        let base = Mem(b"synced".to_vec());
        let mut ov = Overlay::new(6);
        ov.write(6, b"+one");
        ov.write(10, b"+two");
        check(&ov, &base, b"synced+one+two");
        assert_eq!(ov.pending_bytes(), 8);
    }

    #[test]
    fn shrink_then_extend_reads_zeros() {
        let base = Mem(b"ABCDEFGHIJ".to_vec());
        let mut ov = Overlay::new(10);
        ov.set_size(4);
        check(&ov, &base, b"ABCD");
        ov.set_size(8);
        check(&ov, &base, b"ABCD\0\0\0\0");
        // A write past a hole leaves zeros there too.
        ov.write(9, b"z");
        check(&ov, &base, b"ABCD\0\0\0\0\0z");
        // Same when the shrink cuts a pending extent.
        let mut ov = Overlay::new(10);
        ov.write(2, b"xxxxxx");
        ov.set_size(5);
        check(&ov, &base, b"ABxxx");
        ov.set_size(7);
        check(&ov, &base, b"ABxxx\0\0");
        assert_eq!(ov.pending_bytes(), 3);
        // Shrink to zero then write: nothing of the backing remains.
        let mut ov = Overlay::new(10);
        ov.set_size(0);
        ov.write(3, b"q");
        check(&ov, &base, b"\0\0\0q");
    }

    #[test]
    fn reads_are_clamped_to_size() {
        let base = Mem(b"0123456789".to_vec());
        let mut ov = Overlay::new(10);
        assert_eq!(ov.read(&base, 8, 10).expect("read"), b"89");
        assert!(ov.read(&base, 10, 10).expect("read").is_empty());
        assert!(ov.read(&base, 100, 10).expect("read").is_empty());
        ov.set_size(5);
        assert_eq!(ov.read(&base, 3, 10).expect("read"), b"34");
        ov.write(6, b"w");
        assert_eq!(ov.read(&base, 3, 10).expect("read"), b"34\0w");
        assert!(ov.read(&base, 0, 0).expect("read").is_empty());
    }

    #[test]
    fn extension_without_data_is_dirty_and_zero_filled() {
        let base = Mem(b"ab".to_vec());
        let mut ov = Overlay::new(2);
        ov.set_size(5);
        assert!(ov.is_dirty());
        check(&ov, &base, b"ab\0\0\0");
        assert_eq!(ov.pending_bytes(), 0);
    }

    /// A deterministic pseudo-random mix of writes and truncates against the
    /// whole-buffer model.
    #[test]
    fn random_against_model() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..50 {
            let base_len = next(64) as usize;
            let base = Mem((0..base_len).map(|i| b'a' + (i % 26) as u8).collect());
            let mut model = base.0.clone();
            let mut ov = Overlay::new(base_len as u64);
            for step in 0..60 {
                if next(5) == 0 {
                    let new = next(96) as usize;
                    ov.set_size(new as u64);
                    model.resize(new, 0);
                } else {
                    let off = next(96) as usize;
                    let len = 1 + next(24) as usize;
                    let byte = b'A' + ((round + step) % 26) as u8;
                    let data = vec![byte; len];
                    ov.write(off as u64, &data);
                    model_write(&mut model, off, &data);
                }
                check(&ov, &base, &model);
                let off = next(100);
                let len = next(40) as usize;
                let got = ov.read(&base, off, len).expect("read");
                let lo = (off as usize).min(model.len());
                let hi = (off as usize + len).min(model.len());
                assert_eq!(got, &model[lo..hi]);
            }
        }
    }
}

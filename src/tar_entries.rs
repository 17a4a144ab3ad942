//! What a restored archive may create in a volume, checked before anything is extracted.
//!
//! `tar --extract` runs as root in the engine, so an archive could plant device files, FIFOs or
//! setuid programs in a volume that daemons and jobs then use. The archive's headers are walked
//! on the host (ustar, GNU long names and pax records, as GNU tar writes them) and the first
//! entry that is not a plain file, directory, symlink or hard link inside the volume is named.

use std::io::{self, Read};

/// The size of a tar block.
const BLOCK: usize = 512;
/// Longest GNU long name or pax header accepted: real ones are a few KiB at most.
const MAX_META: u64 = 1 << 20;

/// Why an archive may not be restored: the offending entry (escaped) and what it is.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub entry: String,
    pub why: String,
}

/// Walks the archive's headers from `reader` and refuses the first entry that may not be created.
/// Reading errors are `Err(Err(_))`; a refused entry is `Err(Ok(refusal))`.
pub fn check(mut reader: impl Read) -> Result<(), Result<Refusal, io::Error>> {
    let mut pending = Pending::default();
    let mut header = [0u8; BLOCK];
    loop {
        if !read_block(&mut reader, &mut header).map_err(Err)? || header.iter().all(|b| *b == 0) {
            return Ok(());
        }
        // Both extended names are used up by this entry; the GNU long name wins.
        let (long_name, pax_path) = (pending.long_name.take(), pending.pax_path.take());
        let name = long_name
            .or(pax_path)
            .unwrap_or_else(|| header_name(&header));
        let refuse = |why: String| {
            Err(Ok(Refusal {
                entry: escaped(&name),
                why,
            }))
        };
        if !checksum_matches(&header) {
            return refuse(
                "its header checksum is wrong: this is not an intact tar archive".to_owned(),
            );
        }
        let Some(size) = pending.size.take().or_else(|| number(&header[124..136])) else {
            return refuse("its size field is not a number".to_owned());
        };
        let kind = header[156];
        if matches!(kind, b'L' | b'x' | b'g' | b'K') {
            if size > MAX_META {
                return refuse("its extended header is too large".to_owned());
            }
            let data = read_data(&mut reader, size).map_err(Err)?;
            if let Err(why) = pending.read(kind, &data) {
                return refuse(why.to_owned());
            }
            continue;
        }
        if let Some(why) = refusal(kind, &header, &name) {
            return refuse(why);
        }
        // Links and directories carry no data, whatever their size field says (GNU tar agrees).
        let data = if matches!(kind, b'1' | b'2' | b'5') {
            0
        } else {
            size
        };
        skip_data(&mut reader, data).map_err(Err)?;
    }
}

/// What extended headers say about the entry that follows them.
#[derive(Default)]
struct Pending {
    long_name: Option<String>,
    pax_path: Option<String>,
    size: Option<u64>,
}

impl Pending {
    fn read(&mut self, kind: u8, data: &[u8]) -> Result<(), &'static str> {
        match kind {
            b'L' => self.long_name = Some(c_string(data)),
            b'x' => (self.pax_path, self.size) = pax_records(data),
            b'g' if pax_records(data).1.is_some() => {
                return Err("a global pax header may not set sizes")
            }
            _ => {}
        }
        Ok(())
    }
}

/// Why an entry may not be created in a volume, if it may not: devices, FIFOs, unknown types,
/// setuid or setgid bits, paths or hard links that leave the volume.
fn refusal(kind: u8, header: &[u8; BLOCK], name: &str) -> Option<String> {
    let mode = number(&header[100..108]).unwrap_or(0) & 0o7777;
    let why = match kind {
        b'3' | b'4' => "it is a device file",
        b'6' => "it is a FIFO",
        b'0' | b'\0' | b'7' | b'1' | b'2' | b'5' => {
            if mode & 0o4000 != 0 {
                "it is setuid"
            } else if mode & 0o2000 != 0 && kind != b'5' {
                "it is setgid"
            } else if leaves_the_volume(name) {
                "its path leaves the volume"
            } else if kind == b'1' && leaves_the_volume(&header_link(header)) {
                "it is a hard link to a path outside the volume"
            } else {
                return None;
            }
        }
        other => {
            return Some(format!(
                "its entry type {:?} is not a file, directory or link",
                char::from(other)
            ))
        }
    };
    Some(why.to_owned())
}

/// Reads one block; `false` at a clean end of input.
fn read_block(reader: &mut impl Read, block: &mut [u8; BLOCK]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < BLOCK {
        match reader.read(&mut block[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK as u64) * BLOCK as u64
}

fn read_data(reader: &mut impl Read, size: u64) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    reader.take(padded(size)).read_to_end(&mut data)?;
    if (data.len() as u64) < padded(size) {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    data.truncate(size as usize);
    Ok(data)
}

fn skip_data(reader: &mut impl Read, size: u64) -> io::Result<()> {
    let want = padded(size);
    let skipped = io::copy(&mut reader.take(want), &mut io::sink())?;
    if skipped < want {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// An octal field, or GNU's base-256 form for large values.
fn number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut value: u64 = u64::from(field[0] & 0x7f);
        for byte in &field[1..] {
            value = value.checked_mul(256)?.checked_add(u64::from(*byte))?;
        }
        return Some(value);
    }
    let text: String = field
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| char::from(*b))
        .collect();
    let text = text.trim();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

fn checksum_matches(header: &[u8; BLOCK]) -> bool {
    let sum: u64 = header
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                u64::from(b' ')
            } else {
                u64::from(*b)
            }
        })
        .sum();
    number(&header[148..156]) == Some(sum)
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn header_name(header: &[u8; BLOCK]) -> String {
    let name = c_string(&header[..100]);
    // ustar splits long names into a prefix and a name.
    if &header[257..262] == b"ustar" && header[263] == b'0' {
        let prefix = c_string(&header[345..500]);
        if !prefix.is_empty() {
            return format!("{prefix}/{name}");
        }
    }
    name
}

fn header_link(header: &[u8; BLOCK]) -> String {
    c_string(&header[157..257])
}

/// The `path` and `size` of pax records (`LEN key=value\n` each).
fn pax_records(data: &[u8]) -> (Option<String>, Option<u64>) {
    let (mut path, mut size) = (None, None);
    let mut rest = data;
    while let Some(space) = rest.iter().position(|b| *b == b' ') {
        let Some(len) = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|l| *l > space && *l <= rest.len())
        else {
            break;
        };
        let record = &rest[space + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(eq) = record.iter().position(|b| *b == b'=') {
            let value = String::from_utf8_lossy(&record[eq + 1..]).into_owned();
            match &record[..eq] {
                b"path" => path = Some(value),
                // An unreadable size must not be ignored: the entry would be walked wrongly.
                b"size" => size = Some(value.parse().unwrap_or(u64::MAX)),
                _ => {}
            }
        }
        rest = &rest[len..];
    }
    (path, size)
}

fn leaves_the_volume(path: &str) -> bool {
    path.split('/').any(|part| part == "..")
}

/// The name as it can be shown: control characters and quotes escaped.
fn escaped(name: &str) -> String {
    name.escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One ustar header of `kind` with `mode`, checksummed.
    fn header(name: &str, kind: u8, mode: u32, size: u64) -> Vec<u8> {
        let mut block = vec![0u8; BLOCK];
        block[..name.len()].copy_from_slice(name.as_bytes());
        block[100..108].copy_from_slice(format!("{mode:07o}\0").as_bytes());
        block[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        block[156] = kind;
        block[257..263].copy_from_slice(b"ustar\0");
        block[263..265].copy_from_slice(b"00");
        block[148..156].copy_from_slice(b"        ");
        let sum: u32 = block.iter().map(|b| u32::from(*b)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        block
    }

    fn archive(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes: Vec<u8> = entries.concat();
        bytes.extend([0u8; 2 * BLOCK]);
        bytes
    }

    fn refusal(bytes: &[u8]) -> Refusal {
        match check(bytes) {
            Err(Ok(refusal)) => refusal,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn plain_files_directories_and_links_pass() {
        let mut file = header("./a", b'0', 0o644, 3);
        file.extend(b"hi\n");
        file.resize(2 * BLOCK, 0);
        let bytes = archive(&[
            header("./", b'5', 0o2755, 0),
            file,
            header("./l", b'2', 0o777, 0),
        ]);
        assert_eq!(check(&bytes[..]).map_err(|e| e.ok()), Ok(()));
    }

    #[test]
    fn devices_fifos_and_setuid_files_are_refused_by_name() {
        for (kind, mode, why) in [
            (b'3', 0o600, "device"),
            (b'4', 0o600, "device"),
            (b'6', 0o600, "FIFO"),
            (b'0', 0o4755, "setuid"),
            (b'0', 0o2755, "setgid"),
        ] {
            let refused = refusal(&archive(&[header("./bad\nname", kind, mode, 0)]));
            assert_eq!(refused.entry, "./bad\\nname");
            assert!(refused.why.contains(why), "{refused:?}");
        }
    }

    #[test]
    fn a_pax_path_names_the_entry_and_dot_dot_is_refused() {
        let record = "22 path=./x/../../etc\n";
        let mut pax = header("./PaxHeaders/x", b'x', 0o644, record.len() as u64);
        pax.extend(record.as_bytes());
        pax.resize(2 * BLOCK, 0);
        let refused = refusal(&archive(&[pax, header("./x", b'0', 0o644, 0)]));
        assert_eq!(refused.entry, "./x/../../etc");
    }

    #[test]
    fn garbage_is_not_a_tar_archive() {
        let refused = refusal(&[7u8; BLOCK]);
        assert!(refused.why.contains("checksum"), "{refused:?}");
        assert!(matches!(check(&[0u8; 100][..]), Err(Err(_))));
    }
}

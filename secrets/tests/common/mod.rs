//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Every regular file under `dir`, recursively.
pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let ft = entry.file_type().unwrap();
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() {
                out.push(entry.path());
            }
        }
    }
    out
}

const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Unpadded base64.
pub fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

pub fn base64_std(bytes: &[u8]) -> String {
    base64(bytes, STD)
}

/// The ways a secret could show up in a file: as text, hex (both cases), and base64 (standard and
/// URL-safe) at each of the three alignments it could have inside a longer encoded value.
pub fn encodings(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut url = *STD;
    url[62] = b'-';
    url[63] = b'_';
    let mut out = vec![secret.to_vec(), hex::encode(secret).into_bytes(), hex::encode_upper(secret).into_bytes()];
    for alphabet in [STD, &url] {
        for offset in 0..3usize {
            let mut padded = vec![0u8; offset];
            padded.extend_from_slice(secret);
            let enc = base64(&padded, alphabet);
            // Drop the characters that mix in the zero bytes before or the unknown bytes after.
            let skip = if offset == 0 { 0 } else { offset + 1 };
            let keep_until = (padded.len() / 3) * 4;
            out.push(enc.as_bytes()[skip..keep_until].to_vec());
        }
    }
    out
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Panics naming the file and the encoding if any file under `dir` holds `secret` in any encoding.
pub fn assert_nowhere_under(dir: &Path, secret: &[u8]) {
    let encs = encodings(secret);
    let files = all_files(dir);
    assert!(!files.is_empty(), "no files under {}", dir.display());
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        for (i, enc) in encs.iter().enumerate() {
            assert!(!contains(&bytes, enc), "{} holds the secret (encoding #{i})", file.display());
        }
    }
}

pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

//! The wallet's files beside the database: the seed, and the address indexes of the release
//! before the wallet moved to BDK.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;

use bitcoin::secp256k1::rand::RngCore;
use serde::Deserialize;

use crate::{io_err, WalletError};

/// The next unused index of each branch, as the previous release kept it in
/// [`crate::INDEX_FILE`]: read once, when that wallet moves into the database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct LegacyIndex {
    pub(crate) receive: u32,
    pub(crate) change: u32,
}

/// Reads the previous release's index file, if there is one.
pub(crate) fn read_legacy_index(path: &Path) -> Result<LegacyIndex, WalletError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LegacyIndex::default()),
        Err(e) => return Err(io_err(path)(e)),
    };
    let corrupt = |reason: String| WalletError::Corrupt { path: path.to_owned(), reason };
    let index: LegacyIndex = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if index.receive.max(index.change) >= 1 << 31 {
        return Err(corrupt(format!("index {index:?} is not a normal BIP 32 index")));
    }
    Ok(index)
}

/// Reads the hex seed at `path`, refusing a file others can read. `None` if there is no file.
pub(crate) fn read_seed(path: &Path) -> Result<Option<Vec<u8>>, WalletError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    // The mode of the file we opened, not of whatever the path names a moment later.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata().map_err(io_err(path))?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(WalletError::InsecureSeedFile { path: path.to_owned(), mode });
        }
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io_err(path))?;
    let corrupt = |reason: String| WalletError::Corrupt { path: path.to_owned(), reason };
    let seed: Vec<u8> = bitcoin::hex::FromHex::from_hex(text.trim())
        .map_err(|e: bitcoin::hex::HexToBytesError| corrupt(e.to_string()))?;
    if !(16..=64).contains(&seed.len()) {
        return Err(corrupt(format!("a seed is 16 to 64 bytes, found {}", seed.len())));
    }
    Ok(Some(seed))
}

/// Writes a fresh 32-byte random seed to `path` (mode 0600). If another process created one
/// first, that seed wins and is returned: a seed file is never overwritten.
pub(crate) fn create_seed(path: &Path) -> Result<Vec<u8>, WalletError> {
    let mut seed = vec![0u8; 32];
    bitcoin::secp256k1::rand::thread_rng().fill_bytes(&mut seed);
    let hex = bitcoin::hex::DisplayHex::to_lower_hex_string(&seed[..]);
    write_new(path, hex.as_bytes())?;
    match read_seed(path)? {
        Some(on_disk) => Ok(on_disk),
        None => Err(WalletError::Corrupt { path: path.to_owned(), reason: "vanished".into() }),
    }
}

/// Writes `bytes` to `path` through a fresh temporary file (mode 0600) in the same directory,
/// fsync and rename, so a crash leaves either no file or the whole one. An existing file at
/// `path` is kept and the write is dropped.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), WalletError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err(dir))?;
    tmp.write_all(bytes).and_then(|()| tmp.as_file().sync_all()).map_err(io_err(tmp.path()))?;
    match tmp.persist_noclobber(path) {
        Ok(_) => {}
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(io_err(path)(e.error)),
    }
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

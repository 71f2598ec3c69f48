//! The files a payee serves: read once when `serve` starts.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bitcoin::hashes::{sha256, Hash, HashEngine};

/// The largest chunk: its hex encoding must fit a sealed message
/// ([`paychan_node::net::MAX_MESSAGE`], 65,519 bytes) with room for the rest of the message.
pub const MAX_CHUNK_SIZE: u32 = 31 * 1024;

/// Errors of the catalogue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The chunk size is zero or above [`MAX_CHUNK_SIZE`].
    #[error("chunk size {0} bytes: it must be from 1 to {MAX_CHUNK_SIZE}")]
    ChunkSize(u32),
    /// Reading the directory or a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// What was read.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// One file served: its size and hash, computed when the catalogue was read.
#[derive(Debug)]
pub struct ServedFile {
    /// Its name: the file name in the directory.
    pub name: String,
    path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256.
    pub sha256: sha256::Hash,
    /// The size of every chunk but the last.
    pub chunk_size: u32,
}

impl ServedFile {
    /// Returns the number of chunks (0 for an empty file).
    pub fn chunks(&self) -> u64 {
        self.size.div_ceil(u64::from(self.chunk_size))
    }

    /// A file with no path, for tests of what does not read it.
    #[cfg(test)]
    pub(crate) fn for_tests(name: &str, size: u64, sha256: sha256::Hash, chunk_size: u32) -> Self {
        ServedFile { name: name.into(), path: PathBuf::new(), size, sha256, chunk_size }
    }

    /// Reads chunk `index` from disk.
    ///
    /// # Errors
    /// [`CatalogError::Io`], also when the file has shrunk since the catalogue was read.
    pub fn read_chunk(&self, index: u64) -> Result<Vec<u8>, CatalogError> {
        let io = |source| CatalogError::Io { path: self.path.clone(), source };
        let start = index.saturating_mul(u64::from(self.chunk_size));
        let len = self.size.saturating_sub(start).min(u64::from(self.chunk_size));
        let mut file = File::open(&self.path).map_err(io)?;
        file.seek(SeekFrom::Start(start)).map_err(io)?;
        let mut data = vec![0; len as usize];
        file.read_exact(&mut data).map_err(io)?;
        Ok(data)
    }
}

/// The files of one directory (its regular files, not its subdirectories), by name.
#[derive(Debug, Default)]
pub struct Catalog {
    files: HashMap<String, Arc<ServedFile>>,
}

impl Catalog {
    /// Reads `dir`: every regular file directly in it, hashed now. A file changed later is
    /// served as it then is, and fails the payer's hash check.
    ///
    /// # Errors
    /// [`CatalogError::ChunkSize`], [`CatalogError::Io`].
    pub fn read(dir: &Path, chunk_size: u32) -> Result<Catalog, CatalogError> {
        if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
            return Err(CatalogError::ChunkSize(chunk_size));
        }
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| CatalogError::Io { path, source }
        };
        let mut files = HashMap::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            if !path.is_file() {
                continue;
            }
            let (size, sha256) = hash_file(&path).map_err(io(&path))?;
            let file = ServedFile { name: name.clone(), path, size, sha256, chunk_size };
            files.insert(name, Arc::new(file));
        }
        Ok(Catalog { files })
    }

    /// Returns the file called `name`, if served.
    pub fn file(&self, name: &str) -> Option<Arc<ServedFile>> {
        self.files.get(name).cloned()
    }

    /// Returns how many files are served.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no file is served.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

fn hash_file(path: &Path) -> std::io::Result<(u64, sha256::Hash)> {
    let mut file = File::open(path)?;
    let mut engine = sha256::Hash::engine();
    let mut buf = vec![0; 64 * 1024];
    let mut size = 0;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((size, sha256::Hash::from_engine(engine)));
        }
        engine.input(&buf[..n]);
        size += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_listed_hashed_and_chunked() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("a.bin"), &data).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let catalog = Catalog::read(dir.path(), 1000).unwrap();
        assert_eq!(catalog.len(), 1);
        assert!(catalog.file("sub").is_none() && catalog.file("../a.bin").is_none());
        let f = catalog.file("a.bin").unwrap();
        assert_eq!((f.size, f.chunks()), (2500, 3));
        assert_eq!(f.sha256, sha256::Hash::hash(&data));
        let chunks: Vec<u8> = (0..3).flat_map(|i| f.read_chunk(i).unwrap()).collect();
        assert_eq!(chunks, data);
        assert_eq!(f.read_chunk(2).unwrap().len(), 500);
        assert!(matches!(Catalog::read(dir.path(), 0), Err(CatalogError::ChunkSize(0))));
        assert!(Catalog::read(dir.path(), MAX_CHUNK_SIZE + 1).is_err());
    }
}

//! The content-addressed blob store: uploaded artifacts (app components)
//! under `data_dir/blobs`, each named by the SHA-256 of its bytes, written
//! once (temporary file, then rename) and never changed.

use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Creates `dir` if needed and makes it 0700: what torii keeps (the
/// database, blobs, the server key, compiled code) is nobody else's.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Creates `file` if needed and makes it 0600 (SQLite gives its -wal and
/// -shm files the mode of the database file).
pub fn private_file(file: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(file)?;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))
}

#[derive(Clone)]
pub struct Blobs {
    dir: PathBuf,
}

impl Blobs {
    /// The store in `dir`, made (or kept) readable by torii's user only.
    pub fn new(dir: &Path) -> std::io::Result<Blobs> {
        private_dir(dir)?;
        Ok(Blobs { dir: dir.to_path_buf() })
    }

    pub fn digest(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    /// Stores `bytes`, whose digest the caller computed with
    /// [`Blobs::digest`] (a large upload is hashed once); a no-op when present.
    pub async fn put(&self, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
        if !Blobs::is_digest(digest) {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("not a blob digest: {digest:?}")));
        }
        let path = self.path(digest);
        if tokio::fs::try_exists(&path).await? {
            return Ok(());
        }
        let tmp = path.with_extension(format!("tmp{}-{}", std::process::id(), rand::random::<u32>()));
        let mut file = tokio::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).await?;
        tokio::io::AsyncWriteExt::write_all(&mut file, bytes).await?;
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&tmp, &path).await?;
        Ok(())
    }

    /// Whether `name` has the shape of a blob digest (64 hex digits).
    pub fn is_digest(name: &str) -> bool {
        name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
    }

    pub async fn get(&self, digest: &str) -> std::io::Result<Vec<u8>> {
        if !Blobs::is_digest(digest) {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("not a blob digest: {digest:?}")));
        }
        tokio::fs::read(self.path(digest)).await
    }

    pub async fn contains(&self, digest: &str) -> bool {
        tokio::fs::try_exists(self.path(digest)).await.unwrap_or(false)
    }

    /// Removes a blob nothing refers to (an upload that failed its checks).
    pub async fn remove(&self, digest: &str) -> std::io::Result<()> {
        match tokio::fs::remove_file(self.path(digest)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(digest)
    }
}

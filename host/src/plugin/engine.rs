//! The plugin engine and the compiled-component cache.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter};

use super::ticker::EpochTicker;

pub struct PluginEngine {
    engine: Engine,
    cache_dir: PathBuf,
    ticker: EpochTicker,
}

impl PluginEngine {
    /// `max_memory` is the largest memory cap of any plugin: the pool's slot size.
    pub fn new(max_memory: usize, cache_dir: &Path) -> anyhow::Result<PluginEngine> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(256)
            .total_core_instances(2048)
            .total_memories(512)
            .total_tables(512)
            .max_memory_size(max_memory);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            // Reserve only what a plugin may use instead of 4 GiB per slot:
            // bounds checks become explicit, the address space stays small.
            .memory_reservation(max_memory as u64)
            .memory_guard_size(0)
            .memory_reservation_for_growth(0)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(anyhow::Error::from)?;
        std::fs::create_dir_all(cache_dir)?;

        let ticker = EpochTicker::spawn(vec![engine.clone()], "plugin-epoch")?;
        Ok(PluginEngine { engine, cache_dir: cache_dir.to_path_buf(), ticker })
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The clock of plugin guests: held through each call.
    pub fn ticker(&self) -> &EpochTicker {
        &self.ticker
    }

    /// Compiles `bytes`, or loads the result of an earlier compilation of the
    /// same bytes by a compatible engine from the cache.
    pub fn component(&self, bytes: &[u8]) -> anyhow::Result<Component> {
        cached_component(&self.engine, &self.cache_dir, bytes)
    }
}

/// Raised (as a trap) when a guest tries to grow a memory past its cap, so
/// the failure is named instead of surfacing as a guest abort.
#[derive(Debug, thiserror::Error)]
#[error("memory limit reached")]
pub struct MemoryLimit;

/// Caps every memory of an instance at `bytes` (a refused growth traps with
/// [`MemoryLimit`]) and its tables at `max_table_elements`, and counts the
/// linear memory the instance holds.
pub struct MemoryCap {
    pub bytes: usize,
    pub max_table_elements: usize,
    /// Bytes of linear memory the instance holds, all its memories (a
    /// memory's creation is its first growth, from 0).
    pub held: usize,
}

impl MemoryCap {
    pub fn new(bytes: usize, max_table_elements: usize) -> MemoryCap {
        MemoryCap { bytes, max_table_elements, held: 0 }
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.bytes || maximum.is_some_and(|max| desired > max) {
            return Err(wasmtime::Error::new(MemoryLimit));
        }
        self.held += desired.saturating_sub(current);
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(wasmtime::Error::new(MemoryLimit))
    }

    fn table_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= self.max_table_elements && maximum.is_none_or(|max| desired <= max))
    }
}

/// Compiles `bytes` for `engine`, or loads an earlier compilation of the same
/// bytes by a compatible engine from `cache_dir`
/// (`<sha256>-<engine compatibility hash>.cwasm`).
pub fn cached_component(engine: &Engine, cache_dir: &Path, bytes: &[u8]) -> anyhow::Result<Component> {
    let path = cache_path(engine, cache_dir, bytes);
    if path.exists() {
        // SAFETY: the file was written below by an engine with the same
        // compatibility hash (part of the file name), into a directory only
        // torii writes.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => return Ok(component),
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "discarding unreadable compiled component"),
        }
    }
    let compiled = engine.precompile_component(bytes).map_err(anyhow::Error::from)?;
    // A name of its own per write: threads compiling the same bytes at once
    // must not write into each other's file (a reader could see it half done).
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    std::fs::write(&tmp, &compiled)?;
    drop(compiled);
    std::fs::rename(&tmp, &path)?;
    // From the file, as a later start would: its code is mapped from the
    // page cache instead of copied into anonymous memory (which kept a first
    // start's idle RSS tens of MB above a restart's).
    // SAFETY: as above; we just wrote this file.
    Ok(unsafe { Component::deserialize_file(engine, &path) }.map_err(anyhow::Error::from)?)
}

/// The component compiled earlier from the bytes whose SHA-256 is `digest`,
/// if the cache holds it: no need to read or hash the original bytes.
pub fn compiled_component(engine: &Engine, cache_dir: &Path, digest: &str) -> Option<Component> {
    // Only a SHA-256 in hex names a cache file (the digest may come from a plugin).
    if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return None;
    }
    let path = cache_path_for(engine, cache_dir, digest);
    if !path.exists() {
        return None;
    }
    // SAFETY: as in `cached_component`: written by an engine with the same
    // compatibility hash, into a directory only torii writes.
    unsafe { Component::deserialize_file(engine, &path) }.ok()
}

fn cache_path(engine: &Engine, cache_dir: &Path, bytes: &[u8]) -> PathBuf {
    cache_path_for(engine, cache_dir, &hex::encode(Sha256::digest(bytes)))
}

fn cache_path_for(engine: &Engine, cache_dir: &Path, digest: &str) -> PathBuf {
    let mut compat = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut compat);
    cache_dir.join(format!("{digest}-{:016x}.cwasm", compat.finish()))
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        self.ticker.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_sha256_names_a_compiled_component() {
        let dir = tempfile::TempDir::new().unwrap();
        let engine = Engine::default();
        // The empty component: magic, version 0x0d, layer 1.
        let bytes = b"\0asm\x0d\0\x01\0".to_vec();
        let digest = hex::encode(Sha256::digest(&bytes));
        assert!(compiled_component(&engine, dir.path(), &digest).is_none(), "nothing compiled yet");
        cached_component(&engine, dir.path(), &bytes).unwrap();
        assert!(compiled_component(&engine, dir.path(), &digest).is_some());
        std::fs::write(dir.path().join("evil"), b"not compiled code").unwrap();
        for bad in ["../evil", "evil", &digest.to_uppercase(), &digest[..63]] {
            assert!(compiled_component(&engine, dir.path(), bad).is_none(), "{bad}");
        }
    }
}

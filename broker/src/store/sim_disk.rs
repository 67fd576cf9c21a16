//! A storage double for tests: a file system in memory that keeps what was synced
//! apart from what was only written, the way fault-injecting file systems do. A
//! simulated power cut keeps the synced bytes of every file plus a random prefix of
//! the rest (a torn tail), and only the directory entries whose directory was
//! synced. It can also fail appends under a path (a full or failing disk) and cut
//! the power after a given number of operations (every later call fails, as if the
//! process had died there).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::disk::{temporary_path, AppendFile, Disk};

/// The double; clones share one file system.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    state: Arc<Mutex<SimState>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    File(u64),
    Dir,
}

#[derive(Debug, Default)]
struct SimFile {
    data: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug, Default)]
struct SimState {
    files: HashMap<u64, SimFile>,
    names: BTreeMap<PathBuf, Entry>,
    durable_names: BTreeMap<PathBuf, Entry>,
    next_inode: u64,
    failing: Vec<PathBuf>,
    ops_left: Option<u64>,
    syncs: u64,
    /// Bytes returned by reads.
    read_bytes: u64,
}

impl SimState {
    /// Counts a mutating operation; fails once the power is cut.
    fn step(&mut self) -> io::Result<()> {
        match &mut self.ops_left {
            Some(0) => Err(io::Error::other("simulated power cut")),
            Some(left) => {
                *left -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn exists_dir(&self, dir: &Path) -> bool {
        dir.as_os_str().is_empty() || self.names.get(dir) == Some(&Entry::Dir)
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl SimDisk {
    /// An empty file system.
    pub fn new() -> Self {
        SimDisk::default()
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Appends under `prefix` fail with "no space left on device" from now on.
    pub fn fail_appends_under(&self, prefix: &Path) {
        self.lock().failing.push(prefix.to_path_buf());
    }

    /// Appends work again everywhere.
    pub fn heal(&self) {
        self.lock().failing.clear();
    }

    /// After `operations` more mutating calls, every call fails (the process died).
    pub fn cut_after(&self, operations: u64) {
        self.lock().ops_left = Some(operations);
    }

    /// Bytes returned by reads so far (what a recovery read).
    pub fn bytes_read(&self) -> u64 {
        self.lock().read_bytes
    }

    /// Syncs of files so far.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// The power comes back: every file keeps its synced bytes and a prefix of the
    /// unsynced ones chosen by `seed`; directories keep their synced entries.
    pub fn power_cut(&self, seed: u64) {
        let mut state = self.lock();
        let mut random = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for file in state.files.values_mut() {
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            let keep = if file.data.starts_with(&file.durable) {
                let unsynced = file.data.len() - file.durable.len();
                file.durable.len() + (random as usize) % (unsynced + 1)
            } else {
                file.durable.len()
            };
            let mut restored = file.durable.clone();
            if keep > restored.len() {
                restored.extend_from_slice(&file.data[restored.len()..keep]);
            }
            file.data = restored;
        }
        let durable = state.durable_names.clone();
        // An entry survives only if its directory does.
        state.names = durable
            .iter()
            .filter(|(path, _)| {
                path.ancestors()
                    .skip(1)
                    .filter(|dir| !dir.as_os_str().is_empty() && *dir != Path::new("/"))
                    .all(|dir| durable.get(dir) == Some(&Entry::Dir))
            })
            .map(|(path, entry)| (path.clone(), *entry))
            .collect();
        state.ops_left = None;
    }

    fn create_file(state: &mut SimState, path: &Path) -> u64 {
        if let Some(Entry::File(inode)) = state.names.get(path) {
            return *inode;
        }
        state.next_inode += 1;
        let inode = state.next_inode;
        state.files.insert(inode, SimFile::default());
        state.names.insert(path.to_path_buf(), Entry::File(inode));
        inode
    }
}

#[derive(Debug)]
struct SimAppend {
    disk: SimDisk,
    path: PathBuf,
    inode: u64,
}

impl AppendFile for SimAppend {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.disk.lock();
        state.step()?;
        if state
            .failing
            .iter()
            .any(|prefix| self.path.starts_with(prefix))
        {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on device (simulated)",
            ));
        }
        let file = state
            .files
            .get_mut(&self.inode)
            .ok_or_else(|| not_found(&self.path))?;
        file.data.extend_from_slice(bytes);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut state = self.disk.lock();
        state.step()?;
        state.syncs += 1;
        let file = state
            .files
            .get_mut(&self.inode)
            .ok_or_else(|| not_found(&self.path))?;
        file.durable = file.data.clone();
        Ok(())
    }
}

impl Disk for SimDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.step()?;
        for ancestor in dir.ancestors() {
            if ancestor.as_os_str().is_empty() || ancestor == Path::new("/") {
                continue;
            }
            state.names.insert(ancestor.to_path_buf(), Entry::Dir);
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.lock();
        if !state.exists_dir(dir) {
            return Err(not_found(dir));
        }
        Ok(state
            .names
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.read_from(path, 0)
    }

    fn read_from(&self, path: &Path, offset: u64) -> io::Result<Vec<u8>> {
        let mut state = self.lock();
        let bytes = match state.names.get(path) {
            Some(Entry::File(inode)) => {
                let data = &state.files[inode].data;
                data[data.len().min(offset as usize)..].to_vec()
            }
            _ => return Err(not_found(path)),
        };
        state.read_bytes += bytes.len() as u64;
        Ok(bytes)
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        let mut state = self.lock();
        state.step()?;
        let parent = path.parent().unwrap_or(Path::new(""));
        if !state.exists_dir(parent) {
            return Err(not_found(parent));
        }
        let inode = SimDisk::create_file(&mut state, path);
        Ok(Box::new(SimAppend {
            disk: self.clone(),
            path: path.to_path_buf(),
            inode,
        }))
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let temporary = temporary_path(path);
        let mut file = self.open_append(&temporary)?;
        file.append(bytes)?;
        file.sync()?;
        self.rename(&temporary, path)?;
        self.sync_dir(path.parent().unwrap_or(Path::new("")))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.step()?;
        state.names.remove(path);
        Ok(())
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.step()?;
        state.names.retain(|path, _| !path.starts_with(dir));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.step()?;
        let moved: Vec<(PathBuf, Entry)> = state
            .names
            .iter()
            .filter(|(path, _)| path.starts_with(from))
            .map(|(path, entry)| (path.clone(), *entry))
            .collect();
        if moved.is_empty() {
            return Err(not_found(from));
        }
        state.names.retain(|path, _| !path.starts_with(to));
        for (path, entry) in moved {
            state.names.remove(&path);
            let rest = path.strip_prefix(from).unwrap_or(Path::new(""));
            let target = if rest.as_os_str().is_empty() {
                to.to_path_buf()
            } else {
                to.join(rest)
            };
            state.names.insert(target, entry);
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.step()?;
        let live: Vec<(PathBuf, Entry)> = state
            .names
            .iter()
            .filter(|(path, _)| path.parent() == Some(dir))
            .map(|(path, entry)| (path.clone(), *entry))
            .collect();
        state
            .durable_names
            .retain(|path, _| path.parent() != Some(dir));
        state.durable_names.extend(live);
        Ok(())
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut state = self.lock();
        state.step()?;
        let Some(Entry::File(inode)) = state.names.get(path).copied() else {
            return Err(not_found(path));
        };
        let file = state.files.get_mut(&inode).ok_or_else(|| not_found(path))?;
        file.data.truncate(len as usize);
        file.durable = file.data.clone();
        Ok(())
    }
}

//! Keeping the data folder private: it holds the JWT signing secret and every secret key.
//!
//! The folder is made `0700` and the SQLite files `0600`. The database file is created (empty)
//! with mode `0600` before SQLite opens it, and SQLite gives its `-wal` and `-shm` files the mode
//! of the database file, so no file is ever readable by others, not even for a moment. This
//! does not touch the process umask, which the agent's task processes inherit.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::ServerError;

/// Creates the data folder `0700`, or checks an existing one: a folder others may enter is
/// left as it is (it may be shared on purpose) and reported.
pub fn prepare_data_dir(dir: &Path) -> Result<Vec<String>, ServerError> {
    let err = |e| ServerError::DataDir(dir.to_path_buf(), e);
    let mut warnings = Vec::new();
    match std::fs::metadata(dir) {
        Ok(m) => {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                warnings.push(format!(
                    "the data folder {} is open to other users (mode {mode:03o}); it holds the \
                     server's secrets: `chmod 700 {}` unless that is intended",
                    dir.display(),
                    dir.display()
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(err)?;
            }
            match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(err(e)),
            }
            // The mode given to mkdir is filtered by the umask; 0700 is what is meant.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
        }
        Err(e) => return Err(err(e)),
    }
    Ok(warnings)
}

/// Creates the database file `0600` if it does not exist yet, and narrows the mode of an
/// existing database and its `-wal` / `-shm` files to `0600` (earlier versions left them 0644).
pub fn prepare_db_files(db: &Path) -> Result<Vec<String>, ServerError> {
    let err = |p: &Path, e| ServerError::DataDir(p.to_path_buf(), e);
    let mut warnings = Vec::new();
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(db)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(err(db, e)),
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let path = Path::new(&name);
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| err(path, e))?;
            warnings.push(format!(
                "{} was readable by others (mode {mode:03o}); it is 0600 now",
                path.display()
            ));
        }
    }
    Ok(warnings)
}

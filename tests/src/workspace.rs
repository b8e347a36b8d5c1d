//! Where the workspace is.

use std::path::PathBuf;

/// The workspace root, so tests find `deploy/`, `.venv/` and `target/` wherever cargo runs them.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}

//! Where the repository, the scenarios and the binaries under test are, and building the
//! collector and the shim once per test process with a nested `cargo build`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The repository root (the root package's manifest folder).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/scenarios/`.
pub fn scenarios_dir() -> PathBuf {
    repo_root().join("tests").join("scenarios")
}

/// A file of `tests/scenarios/`.
pub fn scenario(name: &str) -> PathBuf {
    scenarios_dir().join(name)
}

/// The binaries under test.
#[derive(Debug)]
pub struct Binaries {
    /// The collector, `target/<profile>/leakscope`.
    pub leakscope: PathBuf,
    /// The shim, `target/<profile>/libleakscope_shim.so`.
    pub shim: PathBuf,
}

/// Builds the collector and the shim (once per test process, in the profile this test was
/// built in) and returns where they are.
pub fn binaries() -> &'static Binaries {
    static BINARIES: OnceLock<Binaries> = OnceLock::new();
    BINARIES.get_or_init(|| {
        let release = !cfg!(debug_assertions);
        let cargo = std::env::var_os("CARGO")
            .or_else(|| option_env!("CARGO").map(OsString::from))
            .unwrap_or_else(|| OsString::from("cargo"));
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(repo_root())
            .args(["build", "-p", "leakscope-shim", "-p", "leakscope"]);
        if release {
            cmd.arg("--release");
        }
        if std::env::var_os("LEAKSCOPE_TEST_NO_BUILD").is_none_or(|v| v != "1") {
            let out = cmd
                .output()
                .unwrap_or_else(|e| panic!("cannot run {cargo:?} build: {e}"));
            assert!(
                out.status.success(),
                "building the shim and the collector failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|p| {
                if p.is_absolute() {
                    p
                } else {
                    repo_root().join(p)
                }
            })
            .unwrap_or_else(|| repo_root().join("target"));
        let profile = target.join(if release { "release" } else { "debug" });
        let bins = Binaries {
            leakscope: profile.join("leakscope"),
            shim: profile.join("libleakscope_shim.so"),
        };
        assert!(
            bins.leakscope.is_file(),
            "{:?} missing after the build",
            bins.leakscope
        );
        assert!(
            bins.shim.is_file(),
            "{:?} missing after the build",
            bins.shim
        );
        bins
    })
}

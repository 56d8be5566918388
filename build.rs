//! Build script of the protocol crate: computes a fingerprint of the protocol's own
//! source so that a shim and a collector built from different protocol sources can tell
//! (the shim sends it in `Hello`; the collector warns when it differs from its own).

use std::{env, fs, path::Path};

fn main() {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325; // FNV-1a offset basis
    let mut files: Vec<_> = fs::read_dir("src")
        .expect("src/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        for b in fs::read(f)
            .expect("readable source")
            .iter()
            .chain(f.to_string_lossy().as_bytes())
        {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x100_0000_01b3);
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
    let out = Path::new(&env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("fingerprint.rs");
    fs::write(out, format!("0x{hash:016x}")).expect("OUT_DIR is writable");
}

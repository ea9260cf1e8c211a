//! The committed header is what cbindgen generates from the crate: a change to the C API that
//! forgets the header fails here. `IOPF_UPDATE_HEADER=1 cargo test -p iopf-capi --test header`
//! rewrites it.

use std::path::Path;

fn generated() -> Vec<u8> {
    let dir = env!("CARGO_MANIFEST_DIR");
    let config = cbindgen::Config::from_file(Path::new(dir).join("cbindgen.toml"))
        .expect("cbindgen.toml reads");
    let bindings = cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    out
}

#[test]
fn the_committed_header_is_the_generated_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/iopf.h");
    let header = generated();
    if std::env::var_os("IOPF_UPDATE_HEADER").is_some() {
        std::fs::write(&path, &header).expect("write include/iopf.h");
        return;
    }
    let committed = std::fs::read(&path).expect("include/iopf.h is committed");
    assert!(
        committed == header,
        "include/iopf.h differs from what cbindgen generates from src/: run \
         IOPF_UPDATE_HEADER=1 cargo test -p iopf-capi --test header and commit it"
    );
}

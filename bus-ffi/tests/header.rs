//! The checked-in header `include/shmbus.h` is what cbindgen generates from this crate now.
//! Rewrite it with `SHMBUS_BLESS_HEADER=1 cargo test -p bus-ffi --test header`.

use std::path::Path;

#[test]
fn checked_in_header_is_what_cbindgen_generates() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("read cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let generated = String::from_utf8(generated).expect("the header is UTF-8");

    let path = crate_dir.join("include/shmbus.h");
    if std::env::var_os("SHMBUS_BLESS_HEADER").is_some() {
        std::fs::write(&path, &generated).expect("write include/shmbus.h");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    if checked_in != generated {
        let first_difference = checked_in
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map(|i| i + 1)
            .unwrap_or_else(|| checked_in.lines().count().min(generated.lines().count()) + 1);
        panic!(
            "bus-ffi/include/shmbus.h is stale (first difference at line {first_difference}). \
             Regenerate it with: SHMBUS_BLESS_HEADER=1 cargo test -p bus-ffi --test header"
        );
    }
}

//! Marks the test kit's tests whose prerequisites are missing as ignored, when asked to (see
//! `prerequisites.rs`).

include!("prerequisites.rs");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=prerequisites.rs");
    skip_missing_prerequisites();
}

// bpf-linker is a plain binary dependency of the build, not a Rust one: rerun when it changes, so a
// relinked toolchain (`cargo xtask setup`) rebuilds the object.
fn main() {
    if let Ok(path) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

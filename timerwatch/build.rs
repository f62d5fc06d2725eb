//! Builds the eBPF object (`timerwatch-ebpf`) with the nightly toolchain for `bpfel-unknown-none`
//! and leaves it in OUT_DIR, where `src/probe/mod.rs` embeds it. A plain `cargo build` is therefore
//! enough; `cargo xtask setup` installs the nightly's rust-src and a matching bpf-linker.
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let manifest = std::env::var("CARGO_MANIFEST_DIR")?;
    let root = Path::new(&manifest).join("../timerwatch-ebpf");
    let root = root.canonicalize()?;
    let root = root
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {root:?}"))?;
    println!(
        "cargo:rerun-if-changed={}",
        Path::new(&manifest)
            .join("../timerwatch-common/src")
            .display()
    );
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "timerwatch-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}

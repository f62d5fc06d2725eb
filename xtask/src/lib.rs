//! What xtask shares with the benchmark crate (`timerwatch-bench`): process and path helpers,
//! and where `setup` installs Go toolchains. The subcommands themselves live in the binary.

pub mod go_toolchains;
pub mod install;
pub mod util;

// cargo only treats a package as a dependency (for aya-build's rebuild tracking) if it has a library
// target; the probes themselves live in the `timerwatch` binary target (src/main.rs).
#![no_std]
